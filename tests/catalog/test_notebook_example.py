"""docs/notebook_example.py runs as written against the real catalog and pulls the induction circuit."""

import runpy
from pathlib import Path

import networkx as nx

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "notebook_example.py"


def test_the_notebook_example_pulls_the_induction_circuit(
    migrated, neo4j_settings, reference_checkpoints, tmp_path, monkeypatch
):
    for key, value in {
        "NEO4J_URI": neo4j_settings.uri,
        "NEO4J_USER": neo4j_settings.user,
        "NEO4J_PASSWORD": neo4j_settings.password,
        "NEO4J_DATABASE": neo4j_settings.database,
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    cells = runpy.run_path(str(EXAMPLE))
    table, graph = cells["table"], cells["graph"]
    assert set(table["writer"]) == set(graph.nodes)
    key_edges = [
        (w, r)
        for w, r, d in graph.edges(data=True)
        if "k" in d["roles"]
        and graph.nodes[w]["kind"] == graph.nodes[r]["kind"] == "attn_head"
        and graph.nodes[w]["layer"] == 0
        and graph.nodes[r]["layer"] == 1
    ]
    assert key_edges, "the previous-token head -> induction head key edge is in the circuit"
    component = cells["component"]
    assert set(component.nodes) <= set(graph.nodes), "a slice's components hold channels of its circuit"
    assert {(component.nodes[n]["kind"], component.nodes[n]["layer"]) for n in component} >= {
        ("attn_head", 0),
        ("attn_head", 1),
    }
    assert nx.is_connected(component)
    assert (tmp_path / "induction-circuit.png").stat().st_size > 1000
