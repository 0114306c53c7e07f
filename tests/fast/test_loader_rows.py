"""The loader's rows of an artifact (no database): ids, edge lists, and a checkpoint without edges."""

from hand_made_catalog import CHANNELS, EDGES, EFFECTS, SLICE_ATTRIBUTION
from synthetic_artifacts import Checkpoint, Edge, SyntheticChannel, write

from circuit_atlas.ingest.artifact import read_artifact
from circuit_atlas.loader import FEEDS_PROPERTIES, checkpoint_rows, edge_rows


def test_edges_are_rows_whose_ends_are_positions_in_the_subspace_ids(tmp_path):
    rows = checkpoint_rows(
        read_artifact(write(Checkpoint("m", "1", 1, CHANNELS, EDGES, EFFECTS, SLICE_ATTRIBUTION), tmp_path)), top_k=None
    )
    assert rows.node_checkpoint_id.startswith("m@1~staging-")
    first = dict(zip(("source", "target", *FEEDS_PROPERTIES), edge_rows(rows.feeds)[0]))
    assert rows.subspace_ids[first["source"]] == f"{rows.node_checkpoint_id}/A/out"
    assert rows.subspace_ids[first["target"]] == f"{rows.node_checkpoint_id}/B/k"
    assert (first["role"], first["weight"], first["attribution"]) == ("k", 0.9, 0.3)
    assert len(rows.flows) == 2 * len(rows.feeds)  # two slices


def test_a_checkpoint_without_edges_has_no_edge_rows(tmp_path):
    rows = checkpoint_rows(read_artifact(write(Checkpoint("m", "2", 2, CHANNELS), tmp_path)), node_checkpoint_id="m@2")
    assert len(rows.feeds) == len(rows.flows) == 0 and rows.subspace_ids[0] == "m@2/A/q"


def test_pruning_keeps_every_edge_measured_by_patching(tmp_path):
    """--top-k 1 keeps each reader role's largest edge by attribution, and also an edge below
    --min-attribution whose exact effect was patched (its attribution undercounts it)."""
    edges = [
        Edge("A", "D", "in", 0.5, 0.5, 0.30),
        Edge("B", "D", "in", 0.5, 0.5, 0.20),
        Edge("C", "D", "in", 0.5, 0.5, 0.001, patched=0.7),
    ]
    attribution = {s: {(e.writer, e.reader): e.attribution for e in edges} for s in EFFECTS}
    artifact = read_artifact(write(Checkpoint("m", "1", 1, CHANNELS, edges, EFFECTS, attribution), tmp_path))
    rows = checkpoint_rows(artifact, top_k=1, min_attribution=0.01)
    kept = [dict(zip(("source", "target", *FEEDS_PROPERTIES), row)) for row in edge_rows(rows.feeds)]
    writers = {rows.subspace_ids[row["source"]].split("/")[-2]: row["patched"] for row in kept}
    assert writers == {"A": None, "C": 0.7}
    assert len(rows.flows) == 2 * len(kept)  # each kept edge on both slices


def test_top_k_keeps_each_reader_roles_largest_edges_by_attribution(tmp_path):
    """20 writers feed one MLP: --top-k 16 keeps the 16 with the largest attribution, whatever their
    weight, and every edge of the other reader roles (fewer than 16 each)."""
    writers = [SyntheticChannel(f"W{i:02d}", "attn_head", 0, i) for i in range(20)]
    channels = [*writers, SyntheticChannel("M", "mlp", 1, None), SyntheticChannel("R", "attn_head", 2, 0)]
    attribution = {f"W{i:02d}": ((7 * i) % 20 + 1) / 100 for i in range(20)}  # a permutation of 0.01 .. 0.20
    edges = [Edge(w, "M", "in", 1 - a, 0.5, a) for w, a in attribution.items()]
    edges += [Edge(w, "R", "q", 0.5, 0.5, a) for w, a in list(attribution.items())[:5]]
    effects = {"s": {c.name: 0.5 for c in channels}}
    on_slice = {"s": {(e.writer, e.reader): e.attribution for e in edges}}
    artifact = read_artifact(write(Checkpoint("m", "1", 1, channels, edges, effects, on_slice), tmp_path))
    rows = checkpoint_rows(artifact, top_k=16)
    kept = [dict(zip(("source", "target", *FEEDS_PROPERTIES), row)) for row in edge_rows(rows.feeds)]
    reader = {row["target"]: rows.subspace_ids[row["target"]].split("/")[-2] for row in kept}
    into_m = sorted(row["attribution"] for row in kept if reader[row["target"]] == "M")
    assert into_m == sorted(attribution.values())[-16:]
    assert sum(reader[row["target"]] == "R" for row in kept) == 5
