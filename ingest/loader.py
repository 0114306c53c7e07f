"""The load step: an artifact directory into Neo4j, as one logical unit.

Order: check the schema is current; upsert the Model, the Checkpoint with ``status: 'loading'``
(queries read ``complete`` checkpoints only) and the IngestRun; delete whatever an earlier load
left under this checkpoint; write blocks, subspaces, slices, edges, per-slice flows, activity and
matches in batches of ``UNWIND $rows``; and only then set ``status: 'complete'``. A load that dies
half way leaves a ``loading`` checkpoint no query sees, and the next load of the same artifact
replaces it. Loading the same artifact twice gives the same graph: every id is derived from the
artifact, never from the clock.

Ids: ``Model.id`` = model name; ``Checkpoint.id`` = ``<model>@<label>``; ``Block.id`` =
``<checkpoint id>/<block name>``; ``Subspace.id`` = ``<block id>/<role>``; ``DataSlice.id`` =
``<name>:<token hash>``. A Block also carries its kind's label (``AttentionHead``, ``MLP``,
``Embedding``, ``Unembedding``).

Edges are pruned here, not in the artifact: per reader subspace the ``top_k`` writers by
attribution on the ingest data with attribution at least ``min_attribution``; an edge with a
rank-0 end (attribution and weight both 0) carries nothing and is never loaded.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import neo4j
import numpy as np
import pandas as pd

from circuit_atlas.schema.migrations import require_current_schema

from .artifacts import Artifact, read_artifact
from .channels import KIND_LABELS

BATCH_ROWS = 5000

UPSERT_CHECKPOINT = """
MERGE (m:Model {id: $model.id})
SET m += $model
MERGE (c:Checkpoint {id: $checkpoint.id})
SET c += $checkpoint, c.status = 'loading'
MERGE (m)-[:HAS_CHECKPOINT]->(c)
MERGE (r:IngestRun {id: $run.id})
SET r += $run, r.status = 'loading'
MERGE (r)-[:PRODUCED]->(c)
"""

DELETE_CHECKPOINT_CONTENT = """
MATCH (b:Block {checkpoint_id: $checkpoint_id})
OPTIONAL MATCH (b)-[:HAS_SUBSPACE]->(s:Subspace)
WITH b, collect(s) AS subspaces
CALL (b, subspaces) {
  FOREACH (s IN subspaces | DETACH DELETE s)
  DETACH DELETE b
} IN TRANSACTIONS OF 500 ROWS
"""

CREATE_BLOCKS = """
MATCH (c:Checkpoint {id: $checkpoint_id})
UNWIND $rows AS row
CREATE (b:Block)
SET b = row, b.checkpoint_id = $checkpoint_id, b:$($kind_labels[row.kind])
CREATE (c)-[:HAS_BLOCK]->(b)
"""

CREATE_SUBSPACES = """
UNWIND $rows AS row
MATCH (b:Block {id: row.block_id})
CREATE (s:Subspace)
SET s = row
CREATE (b)-[:HAS_SUBSPACE]->(s)
"""

MERGE_SLICES = """
UNWIND $rows AS row
MERGE (d:DataSlice {id: row.id})
SET d += row
"""

CREATE_SUBSPACE_EDGES = """
UNWIND $rows AS row
MATCH (a:Subspace {id: row.source}), (b:Subspace {id: row.target})
CREATE (a)-[f:$(row.type)]->(b)
SET f = row.properties
"""

CREATE_ACTIVE_ON = """
UNWIND $rows AS row
MATCH (b:Block {id: row.block_id}), (d:DataSlice {id: row.slice_id})
CREATE (b)-[a:ACTIVE_ON]->(d)
SET a = row.properties
"""

CREATE_MATCHES = """
UNWIND $rows AS row
MATCH (before:Block {id: row.before}), (after:Block {id: row.after})
MATCH (:Checkpoint {id: $previous_id, status: 'complete'})-[:HAS_BLOCK]->(before)
CREATE (before)-[m:MATCHES]->(after)
SET m = row.properties
"""

COMPLETE = """
MATCH (c:Checkpoint {id: $checkpoint_id}), (r:IngestRun {id: $run_id})
SET c.status = 'complete', r.status = 'complete'
"""


@dataclass
class LoadSummary:
    checkpoint_id: str
    blocks: int
    subspaces: int
    edges: int
    slice_edges: int


def _chunks(rows: Sequence[dict], size: int = BATCH_ROWS) -> Iterator[list[dict]]:
    for start in range(0, len(rows), size):
        yield list(rows[start:start + size])


def _clean(value):
    """pandas/numpy values as plain Python; NaN and NA as None (Neo4j does not store nulls)."""
    if isinstance(value, (np.ndarray, list, tuple)):
        return [float(v) for v in value]
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value


def _records(frame: pd.DataFrame) -> list[dict]:
    return [{k: _clean(v) for k, v in row.items()} for row in frame.to_dict("records")]


def pruned_edges(edges: pd.DataFrame, top_k: int | None, min_attribution: float) -> pd.DataFrame:
    """Per reader subspace, the ``top_k`` edges by attribution at or above ``min_attribution``."""
    alive = edges[(edges["attribution"] > 0) | (edges["weight"] > 0)]
    alive = alive[alive["attribution"] >= min_attribution]
    ranked = alive.sort_values(["reader", "role", "attribution", "writer"], ascending=[True, True, False, True])
    if top_k is not None:
        ranked = ranked.groupby(["reader", "role"], sort=False).head(top_k)
    return ranked.reset_index(drop=True)


def run_id(artifact: Artifact) -> str:
    m = artifact.manifest
    key = "|".join([m["config_hash"], m["model"]["name"], m["checkpoint"]["label"], m["code_version"],
                    *sorted(s["id"] for s in m["slices"])])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def load_artifact(driver: neo4j.Driver, database: str, path: Path, top_k: int | None = 16,
                  min_attribution: float = 0.0, echo: Callable[[str], None] = print) -> LoadSummary:
    """Write one artifact into the catalog (see module docstring)."""
    require_current_schema(driver, database)
    artifact = read_artifact(path)
    m, t = artifact.manifest, artifact.tables
    model_id = m["model"]["name"]
    checkpoint_id = f"{model_id}@{m['checkpoint']['label']}"
    run = run_id(artifact)
    fidelity = m["fidelity"]
    model_props = {k: v for k, v in m["model"].items() if k != "parallel_attn_mlp"}
    model_props.update(id=model_id, parallel_attn_mlp=bool(m["model"]["parallel_attn_mlp"]))
    checkpoint_props = {"id": checkpoint_id, "model_id": model_id, "label": m["checkpoint"]["label"],
                        "step": m["checkpoint"]["step"], "tokens_seen": m["checkpoint"]["tokens_seen"],
                        "loss": m["checkpoint"]["loss"], "fidelity": fidelity["loss_recovered"],
                        "rank_fraction": fidelity["fraction"], "config_hash": m["config_hash"],
                        "ingest_slice": m["ingest_slice"]}
    run_props = {"id": run, "config_hash": m["config_hash"], "code_version": m["code_version"],
                 "started": m["started"], "finished": m["finished"], "device": m["device"]}
    block_id = {name: f"{checkpoint_id}/{name}" for name in t["blocks"]["name"]}
    slice_id = {s["name"]: s["id"] for s in m["slices"]}

    blocks = t["blocks"].assign(id=lambda f: f["name"].map(block_id), model_id=model_id)
    subspaces = t["subspaces"].assign(
        id=lambda f: f["block"].map(block_id) + "/" + f["role"], block_id=lambda f: f["block"].map(block_id),
        checkpoint_id=checkpoint_id, basis_uri=lambda f: f["basis_key"].map(artifact.basis_uri),
    ).drop(columns=["block", "basis_key"])
    edges = pruned_edges(t["edges"], top_k, min_attribution)
    kept = set(zip(edges["writer"], edges["reader"], edges["role"]))

    def endpoint_rows(frame: pd.DataFrame, relationship: str, properties: list[str]) -> list[dict]:
        return [{"source": f"{block_id[r['writer']]}/out", "target": f"{block_id[r['reader']]}/{r['role']}",
                 "type": relationship, "properties": {p: _clean(r[p]) for p in properties}}
                for r in frame.to_dict("records")]

    feeds = endpoint_rows(edges, "FEEDS", ["role", "attribution", "attribution_signed", "weight", "strength", "flow"])
    slice_edges = t["slice_edges"][[k in kept for k in zip(t["slice_edges"]["writer"], t["slice_edges"]["reader"],
                                                             t["slice_edges"]["role"])]]
    flows = endpoint_rows(slice_edges, "FLOWS_ON", ["slice", "role", "attribution", "attribution_signed"])
    activity = [{"block_id": block_id[r["block"]], "slice_id": slice_id[r["slice"]],
                 "properties": {k: float(r[k]) for k in ("attribution", "attribution_signed", "ablation", "mean_norm")}}
                for r in t["activity"].to_dict("records")]
    previous = t["matches"]["previous_checkpoint"].unique()
    previous_id = f"{model_id}@{previous[0]}" if len(previous) else None
    matches = [{"before": f"{previous_id}/{r['block']}", "after": block_id[r["block"]],
                "properties": {"similarity": float(r["similarity"]), "method": "subspace",
                               "fingerprint_similarity": float(r["fingerprint_similarity"])}}
               for r in t["matches"].to_dict("records")]
    slices = [{k: s[k] for k in ("id", "name", "description", "n_tokens", "metric")} for s in m["slices"]]

    with driver.session(database=database) as session:
        session.execute_write(lambda tx: tx.run(UPSERT_CHECKPOINT, model=model_props, checkpoint=checkpoint_props,
                                                run=run_props).consume())
        session.run(DELETE_CHECKPOINT_CONTENT, checkpoint_id=checkpoint_id).consume()
        steps = [(CREATE_BLOCKS, _records(blocks)), (CREATE_SUBSPACES, _records(subspaces)),
                 (MERGE_SLICES, slices), (CREATE_SUBSPACE_EDGES, feeds), (CREATE_SUBSPACE_EDGES, flows),
                 (CREATE_ACTIVE_ON, activity)]
        for statement, rows in steps:
            for chunk in _chunks(rows):
                session.execute_write(lambda tx, s=statement, c=chunk: tx.run(s, rows=c, checkpoint_id=checkpoint_id,
                                                                                     kind_labels=KIND_LABELS).consume())
        if previous_id is not None:
            for chunk in _chunks(matches):
                session.execute_write(lambda tx, c=chunk: tx.run(CREATE_MATCHES, rows=c, previous_id=previous_id).consume())
        session.execute_write(lambda tx: tx.run(COMPLETE, checkpoint_id=checkpoint_id, run_id=run).consume())
    echo(f"Loaded {checkpoint_id}: {len(blocks)} blocks, {len(subspaces)} subspaces, {len(feeds)} FEEDS "
         f"(of {len(t['edges'])}), {len(flows)} FLOWS_ON.")
    return LoadSummary(checkpoint_id, len(blocks), len(subspaces), len(feeds), len(flows))
