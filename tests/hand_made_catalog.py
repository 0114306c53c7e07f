"""A hand-made catalog whose components and circuits are known, written through the loader.

Checkpoints ``m@1`` and ``m@2`` are complete; ``m@3`` is ``loading``, as a load by circuit-atlas
0.2 (which wrote under the checkpoint's own id) left it when interrupted, and a load of ``m@4`` is
still staged. Each has the channels A, B, C (attention heads), D (an MLP) and E (a head), at layers
0..4 in that order. Only ``m@1`` has edges and slices; ``MATCHES`` link A across ``m@1``,
``m@2`` and ``m@3``.
"""

from pathlib import Path

from synthetic_artifacts import Checkpoint, Edge, SyntheticChannel, load

# Edges of m@1 (writer out -> reader role) with weight, flow and attribution on the ingest data.
EDGES = [
    Edge("A", "B", "k", 0.9, 0.5, 0.30),
    Edge("B", "C", "v", 0.8, 0.4, 0.20),
    Edge("D", "E", "q", 0.7, 0.3, 0.10),
    Edge("C", "D", "in", 0.05, 0.1, 0.01),
]
# Ablation effect per slice (nats) and slice attribution per edge:
EFFECTS = {
    "rep": {"A": 1.0, "B": 0.8, "C": 0.6, "D": 0.01, "E": 0.02},
    "rnd": {"A": 0.02, "B": -0.1, "C": 0.5, "D": 0.03, "E": 0.01},
}
SLICE_ATTRIBUTION = {
    "rep": {("A", "B"): 0.25, ("B", "C"): 0.15, ("D", "E"): 0.05, ("C", "D"): 0.001},
    "rnd": {("A", "B"): 0.01, ("B", "C"): 0.02, ("D", "E"): 0.01, ("C", "D"): 0.001},
}
FINGERPRINTS = {
    "A": (1.0, 0.0, 0.0),
    "B": (0.0, 1.0, 0.0),
    "C": (0.9, 0.1, 0.0),
    "D": (0.0, 0.0, 1.0),
    "E": (0.1, 0.0, 1.0),
}
CHANNELS = [
    SyntheticChannel(
        name,
        "mlp" if name == "D" else "attn_head",
        layer,
        None if name == "D" else 0,
        FINGERPRINTS[name],
        induction=layer * 0.1,
    )
    for layer, name in enumerate("ABCDE")
]


def build(driver, database: str, root: Path) -> None:
    """Write the catalog into an empty, migrated database (artifacts under ``root``)."""
    load(driver, database, Checkpoint("m", "1", 1, CHANNELS, EDGES, EFFECTS, SLICE_ATTRIBUTION), root)
    load(driver, database, Checkpoint("m", "2", 2, CHANNELS, previous="1", matches=[("A", 0.9)]), root)
    load(driver, database, Checkpoint("m", "3", 3, CHANNELS, previous="2", matches=[("A", 0.8)]), root)
    driver.execute_query("MATCH (c:Checkpoint {id: 'm@3'}) SET c.status = 'loading'", database_=database)
    load(driver, database, Checkpoint("m", "4", 4, CHANNELS, previous="3", matches=[("A", 0.7)]), root, complete=False)
