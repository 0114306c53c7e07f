"""Planted models: the catalog must recover ranks and edges that were built into the weights."""

import pytest
from builders import PLANTED_HEAD_EDGES, PLANTED_RANKS, planted_gpt2

from circuit_atlas.ingest.artifact import read_artifact
from circuit_atlas.ingest.config import IngestConfig
from circuit_atlas.ingest.pipeline import ingest

HEADS = [f"L{l}H{h}" for l in range(2) for h in range(4)]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    model = planted_gpt2(root / "model")
    config = IngestConfig(seq_len=16, n_seq=96, energy=0.9999)
    [path] = ingest(
        str(model), [], ["random", "repeated"], root / "out", config, "cpu", progress=False, echo=lambda _: None
    )
    return read_artifact(path)


def test_recovered_head_ranks_equal_the_planted_ones(planted):
    ranks = {(r.block, r.role): r.rank for r in planted.tables["subspaces"].itertuples()}
    for head in HEADS:
        assert ranks[(head, "q")] == ranks[(head, "k")] == PLANTED_RANKS.get((head, "qk"), 0), head
        assert ranks[(head, "v")] == ranks[(head, "out")] == PLANTED_RANKS.get((head, "ov"), 0), head
    assert ranks[("L0.mlp", "in")] == ranks[("L0.mlp", "out")] == 0  # the zero MLPs are dormant


@pytest.mark.parametrize("score", ["weight", "flow", "attribution"])
def test_the_top_head_to_head_edges_are_exactly_the_planted_ones(planted, score):
    edges = planted.tables["edges"]
    head_edges = edges[edges["writer"].isin(HEADS) & edges["reader"].isin(HEADS)]
    top = head_edges.sort_values(score, ascending=False).head(len(PLANTED_HEAD_EDGES))
    assert set(zip(top["writer"], top["reader"], top["role"])) == PLANTED_HEAD_EDGES
    largest = top[score].min()
    rest = head_edges.drop(top.index)[score]
    assert largest > 0.05 * head_edges[score].max() and (rest < 1e-3 * largest).all(), rest.max()


def test_planted_writers_write_where_they_were_planted(planted):
    from builders import _directions

    basis = _directions(0)
    bases = planted.bases()
    for head, planted_span in (("L0H0", basis[:, 8:10]), ("L0H1", basis[:, 10:13])):
        written = bases[f"{head}/out"]
        overlap = (planted_span.T @ written).square().sum() / written.shape[1]
        assert overlap > 0.999, (head, overlap)
