"""`circuit-atlas export` on the hand-made catalog: JSON with the known circuit, SVG and PNG pictures."""

import json
import struct
import xml.etree.ElementTree as ElementTree

from click.testing import CliRunner

from circuit_atlas.cli import cli


def export(cli_env, *args):
    return CliRunner().invoke(cli, ["export", *args], env=cli_env)


def test_export_writes_the_known_circuit_as_json_svg_and_png(catalog, cli_env, tmp_path):
    paths = [tmp_path / "rep.json", tmp_path / "rep.svg", tmp_path / "pictures" / "rep.png"]
    result = export(
        cli_env,
        "m@1",
        "rep",
        "--min-effect",
        "0.5",
        "--min-attribution",
        "0.1",
        *[arg for path in paths for arg in ("-o", str(path))],
    )
    assert result.exit_code == 0, result.output
    assert "3 channels, 2 edges" in result.output

    circuit = json.loads(paths[0].read_text())
    assert (circuit["checkpoint"], circuit["slice"], circuit["min_effect"]) == ("m@1", "rep", 0.5)
    assert [(c["name"], c["layer"], c["effect"]) for c in circuit["channels"]] == [
        ("A", 0, 1.0),
        ("B", 1, 0.8),
        ("C", 2, 0.6),
    ]
    assert [(e["writer"], e["reader"], e["role"], e["attribution"]) for e in circuit["edges"]] == [
        ("A", "B", "k", 0.25),
        ("B", "C", "v", 0.15),
    ]

    svg = ElementTree.parse(paths[1]).getroot()
    assert svg.tag == "{http://www.w3.org/2000/svg}svg"
    texts = ["".join(t.itertext()) for t in svg.iter("{http://www.w3.org/2000/svg}text")]
    assert {"A", "+1.00", "B", "+0.80", "C", "+0.60", "k 0.25", "v 0.15"} <= set(texts)

    png = paths[2].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width > height > 100


def test_export_is_the_same_picture_twice(catalog, cli_env, tmp_path):
    for name in ("first.svg", "second.svg"):
        assert export(cli_env, "m@1", "rnd", "--min-effect", "0.4", "-o", str(tmp_path / name)).exit_code == 0
    assert (tmp_path / "first.svg").read_text() == (tmp_path / "second.svg").read_text()


def test_export_explains_what_is_wrong(catalog, cli_env, tmp_path):
    unknown = export(cli_env, "m@9", "rep", "-o", str(tmp_path / "x.json"))
    assert unknown.exit_code == 1 and "No complete checkpoint 'm@9'" in unknown.output
    loading = export(cli_env, "m@3", "rep", "-o", str(tmp_path / "x.json"))
    assert loading.exit_code == 1 and "catalog_overview" in loading.output
    empty = export(cli_env, "m@1", "no-such-slice", "-o", str(tmp_path / "x.json"))
    assert empty.exit_code == 1 and "slice 'no-such-slice'" in empty.output and "--min-effect" in empty.output
    suffix = export(cli_env, "m@1", "rep", "-o", str(tmp_path / "x.pdf"))
    assert suffix.exit_code == 1 and ".json, .graphml, .svg, .png" in suffix.output
    assert list(tmp_path.iterdir()) == []


def test_export_writes_graphml_that_reads_back_as_the_same_typed_graph(catalog, cli_env, tmp_path):
    """GraphML (Gephi, Cytoscape): networkx reads back the circuit's channels and edges with their
    attributes and types; what has no value (an MLP's head, a patched effect not measured) is absent."""
    import networkx

    path = tmp_path / "rep.graphml"
    result = export(cli_env, "m@1", "rep", "--min-effect", "0.5", "--min-attribution", "0.1", "-o", str(path))
    assert result.exit_code == 0, result.output
    graph = networkx.read_graphml(path)
    assert graph.is_directed() and (graph.graph["checkpoint"], graph.graph["slice"]) == ("m@1", "rep")
    assert graph.graph["min_effect"] == 0.5
    assert [(name, data["layer"], data["effect"]) for name, data in graph.nodes(data=True)] == [
        ("A", 0, 1.0),
        ("B", 1, 0.8),
        ("C", 2, 0.6),
    ]
    assert all(isinstance(data["layer"], int) and isinstance(data["kind"], str) for _, data in graph.nodes(data=True))
    edges = {(w, r): data for w, r, data in graph.edges(data=True)}
    assert set(edges) == {("A", "B"), ("B", "C")}
    assert edges["A", "B"]["roles"] == "k" and edges["A", "B"]["attribution"] == 0.25
    assert edges["A", "B"]["attribution_k"] == 0.25 and edges["B", "C"]["attribution_v"] == 0.15
    written = path.read_text()
    assert '<key id="d' in written and 'attr.type="double"' in written and 'attr.type="long"' in written


def test_export_without_a_slice_writes_the_checkpoints_whole_graph_as_graphml(catalog, cli_env, tmp_path):
    """Every channel and every edge of the checkpoint (one per read role), as the queries give them;
    anything but GraphML without a slice is refused."""
    import networkx

    path = tmp_path / "whole.graphml"
    result = export(cli_env, "m@1", "-o", str(path))
    assert result.exit_code == 0, result.output
    graph = networkx.read_graphml(path, force_multigraph=True)  # the edges' ids are their read roles
    channels = catalog("checkpoint_channels", checkpoint="m@1")
    edges = catalog("top_edges", checkpoint="m@1", by="weight", limit=10**6)
    assert list(graph.nodes) == [c["channel"] for c in channels]
    assert graph.number_of_edges() == len(edges) > 0
    for row in edges:
        data = graph.edges[row["writer"], row["reader"], row["role"]]
        assert data["weight"] == row["weight"] and data["attribution"] == row["attribution"]
    assert {data["kind"] for _, data in graph.nodes(data=True)} == {c["kind"] for c in channels}
    refused = export(cli_env, "m@1", "-o", str(tmp_path / "whole.svg"))
    assert refused.exit_code == 1 and "GraphML only" in refused.output
