"""The export's picture layout: residual-stream order, empty columns and rows dropped."""

import xml.etree.ElementTree as ElementTree

from circuit_atlas.circuits import Circuit, CircuitChannel, Edge
from circuit_atlas.export import draw, layout, position

# A sparse circuit of a 12-layer model: embed, L3H7, L3.mlp, L10H2, unembed.
CHANNELS = [
    CircuitChannel("embed", 0, "embed", -1, None, 0.5, 1.0),
    CircuitChannel("L3H7", 44, "attn_head", 3, 7, 0.4, 0.99),
    CircuitChannel("L3.mlp", 49, "mlp", 3, None, 0.3, 0.98),
    CircuitChannel("L10H2", 133, "attn_head", 10, 2, 0.2, 0.97),
    CircuitChannel("unembed", 157, "unembed", 12, None, 0.6, 1.0),
]
EDGES = [
    Edge("embed", "L3H7", "q", 0.1),
    Edge("embed", "L3H7", "k", 0.05),
    Edge("L3H7", "L10H2", "v", 0.2),
    Edge("L3.mlp", "unembed", "in", 0.3),
    Edge("L10H2", "unembed", "in", 0.1),
]
CIRCUIT = Circuit("m@1", "rep", 0.1, 0.01, CHANNELS, EDGES, 0.9)


def test_positions_follow_the_residual_stream():
    assert [position(c) for c in CHANNELS] == [(0, 0), (7, 7), (8, 0), (21, 2), (25, 0)]


def test_layout_keeps_only_occupied_columns_and_rows():
    assert layout(CIRCUIT) == {"embed": (0, 0), "L3H7": (1, 2), "L3.mlp": (2, 0), "L10H2": (3, 1), "unembed": (4, 0)}


def test_a_sparse_circuit_of_a_deep_model_draws_at_a_readable_size(tmp_path):
    draw(CIRCUIT, tmp_path / "c.svg")
    svg = ElementTree.parse(tmp_path / "c.svg").getroot()
    width, height = (float(svg.get(key).removesuffix("pt")) for key in ("width", "height"))
    assert width < 1000 and height < 500, (width, height)  # points; 25 columns would be about 3,400 wide
    texts = {"".join(t.itertext()) for t in svg.iter("{http://www.w3.org/2000/svg}text")}
    assert {"q,k 0.15", "v 0.20", "in 0.30"} <= texts  # one arrow per pair, roles in q, k, v order
