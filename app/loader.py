"""The load step: an artifact directory into Neo4j, as one logical unit.

:func:`checkpoint_rows` turns an artifact into the rows the write statements of
``queries/load/`` take; :func:`write_checkpoint` runs them in order: check the schema is
current; upsert the Model, the Checkpoint with ``status: 'loading'`` (queries read ``complete``
checkpoints only) and the IngestRun; delete whatever an earlier load left under this checkpoint;
write blocks, subspaces, slices, edges, per-slice flows, activity and matches in batches of
``UNWIND $rows``; and only then set ``status: 'complete'``. A load that dies half way leaves a
``loading`` checkpoint no query sees, and the next load of the same artifact replaces it.
Loading the same artifact twice gives the same graph: every id is derived from the artifact.

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
from dataclasses import dataclass, field
from pathlib import Path

import neo4j
import numpy as np
import pandas as pd

from circuit_atlas.ingest.artifact import Artifact, read_artifact
from circuit_atlas.ingest.channels import KIND_LABELS
from circuit_atlas.queries import load_statements
from circuit_atlas.schema.migrations import require_current_schema

BATCH_ROWS = 5000


@dataclass
class LoadSummary:
    checkpoint_id: str
    blocks: int
    subspaces: int
    edges: int
    slice_edges: int


@dataclass
class CheckpointRows:
    """Everything one checkpoint writes, as the parameters of the ``queries/load`` statements."""

    model: dict
    checkpoint: dict
    run: dict
    blocks: list[dict]
    subspaces: list[dict]
    slices: list[dict]
    feeds: list[dict]
    flows: list[dict]
    activity: list[dict]
    matches: list[dict] = field(default_factory=list)
    previous_id: str | None = None  # the checkpoint the matches come from

    @property
    def checkpoint_id(self) -> str:
        return self.checkpoint["id"]

    def summary(self) -> LoadSummary:
        return LoadSummary(self.checkpoint_id, len(self.blocks), len(self.subspaces), len(self.feeds), len(self.flows))


def _chunks(rows: Sequence[dict], size: int = BATCH_ROWS) -> Iterator[list[dict]]:
    for start in range(0, len(rows), size):
        yield list(rows[start : start + size])


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


def run_id(manifest: dict) -> str:
    key = "|".join(
        [
            manifest["config_hash"],
            manifest["model"]["name"],
            manifest["checkpoint"]["label"],
            manifest["code_version"],
            *sorted(s["id"] for s in manifest["slices"]),
        ]
    )
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def checkpoint_rows(artifact: Artifact, top_k: int | None = 16, min_attribution: float = 0.0) -> CheckpointRows:
    """The rows one artifact writes (edges pruned by ``top_k`` and ``min_attribution``)."""
    m, t = artifact.manifest, artifact.tables
    model_id = m["model"]["name"]
    checkpoint_id = f"{model_id}@{m['checkpoint']['label']}"
    fidelity = m["fidelity"]
    model = {**m["model"], "id": model_id, "parallel_attn_mlp": bool(m["model"]["parallel_attn_mlp"])}
    checkpoint = {
        "id": checkpoint_id,
        "model_id": model_id,
        "label": m["checkpoint"]["label"],
        "step": m["checkpoint"]["step"],
        "tokens_seen": m["checkpoint"]["tokens_seen"],
        "loss": m["checkpoint"]["loss"],
        "fidelity": fidelity["loss_recovered"],
        "rank_fraction": fidelity["fraction"],
        "config_hash": m["config_hash"],
        "ingest_slice": m["ingest_slice"],
        "fingerprint_features": m["fingerprint_features"],
    }
    run = {
        "id": run_id(m),
        "config_hash": m["config_hash"],
        "code_version": m["code_version"],
        "started": m["started"],
        "finished": m["finished"],
        "device": m["device"],
    }
    block_id = {name: f"{checkpoint_id}/{name}" for name in t["blocks"]["name"]}
    slice_id = {s["name"]: s["id"] for s in m["slices"]}

    blocks = t["blocks"].assign(id=lambda f: f["name"].map(block_id), model_id=model_id)
    subspaces = (
        t["subspaces"]
        .assign(
            id=lambda f: f["block"].map(block_id) + "/" + f["role"],
            block_id=lambda f: f["block"].map(block_id),
            checkpoint_id=checkpoint_id,
            basis_uri=lambda f: f["basis_key"].map(artifact.basis_uri),
        )
        .drop(columns=["block", "basis_key"])
    )
    edges = pruned_edges(t["edges"], top_k, min_attribution)
    kept = set(zip(edges["writer"], edges["reader"], edges["role"]))

    def endpoint_rows(frame: pd.DataFrame, relationship: str, properties: list[str]) -> list[dict]:
        return [
            {
                "source": f"{block_id[r['writer']]}/out",
                "target": f"{block_id[r['reader']]}/{r['role']}",
                "type": relationship,
                "properties": {p: _clean(r[p]) for p in properties},
            }
            for r in frame.to_dict("records")
        ]

    slice_edges = t["slice_edges"][
        [k in kept for k in zip(t["slice_edges"]["writer"], t["slice_edges"]["reader"], t["slice_edges"]["role"])]
    ]
    previous = t["matches"]["previous_checkpoint"].unique()
    previous_id = f"{model_id}@{previous[0]}" if len(previous) else None
    return CheckpointRows(
        model=model,
        checkpoint=checkpoint,
        run=run,
        blocks=_records(blocks),
        subspaces=_records(subspaces),
        slices=[{k: s[k] for k in ("id", "name", "description", "n_tokens", "metric", "scored")} for s in m["slices"]],
        feeds=endpoint_rows(
            edges, "FEEDS", ["role", "attribution", "attribution_signed", "weight", "strength", "flow"]
        ),
        flows=endpoint_rows(slice_edges, "FLOWS_ON", ["slice", "role", "attribution", "attribution_signed"]),
        activity=[
            {
                "block_id": block_id[r["block"]],
                "slice_id": slice_id[r["slice"]],
                "properties": {k: float(r[k]) for k in ("attribution", "attribution_signed", "ablation", "mean_norm")},
            }
            for r in t["activity"].to_dict("records")
        ],
        matches=[
            {
                "before": f"{previous_id}/{r['block']}",
                "after": block_id[r["block"]],
                "properties": {
                    "similarity": float(r["similarity"]),
                    "method": "subspace",
                    "fingerprint_similarity": float(r["fingerprint_similarity"]),
                },
            }
            for r in t["matches"].to_dict("records")
        ],
        previous_id=previous_id,
    )


def write_checkpoint(driver: neo4j.Driver, database: str, rows: CheckpointRows, complete: bool = True) -> LoadSummary:
    """Write ``rows`` (see module docstring); with ``complete=False`` the checkpoint stays ``loading``."""
    statements = {name: query.text for name, query in load_statements().items()}
    checkpoint_id = rows.checkpoint_id

    def write(name: str, **params) -> None:
        with driver.session(database=database) as session:
            session.execute_write(lambda tx: tx.run(statements[name], params).consume())

    write("begin_checkpoint", model=rows.model, checkpoint=rows.checkpoint, run=rows.run)
    with driver.session(database=database) as session:  # CALL ... IN TRANSACTIONS: an implicit transaction
        session.run(statements["delete_checkpoint_content"], checkpoint_id=checkpoint_id).consume()
    for chunk in _chunks(rows.blocks):
        write("create_blocks", rows=chunk, checkpoint_id=checkpoint_id, kind_labels=KIND_LABELS)
    for name, all_rows in (
        ("create_subspaces", rows.subspaces),
        ("merge_slices", rows.slices),
        ("create_subspace_edges", rows.feeds),
        ("create_subspace_edges", rows.flows),
        ("create_active_on", rows.activity),
    ):
        for chunk in _chunks(all_rows):
            write(name, rows=chunk)
    if rows.previous_id is not None:
        for chunk in _chunks(rows.matches):
            write("create_matches", rows=chunk, previous_id=rows.previous_id)
    if complete:
        write("complete_checkpoint", checkpoint_id=checkpoint_id, run_id=rows.run["id"])
    return rows.summary()


def load_artifact(
    driver: neo4j.Driver,
    database: str,
    path: Path,
    top_k: int | None = 16,
    min_attribution: float = 0.0,
    echo: Callable[[str], None] = print,
) -> LoadSummary:
    """Write one artifact into the catalog (see module docstring)."""
    require_current_schema(driver, database)
    artifact = read_artifact(path)
    summary = write_checkpoint(driver, database, checkpoint_rows(artifact, top_k, min_attribution))
    echo(
        f"Loaded {summary.checkpoint_id}: {summary.blocks} blocks, {summary.subspaces} subspaces, "
        f"{summary.edges} FEEDS (of {len(artifact.tables['edges'])}), {summary.slice_edges} FLOWS_ON."
    )
    return summary
