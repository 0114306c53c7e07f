"""The load step: an artifact directory into Neo4j, as one logical unit that never loses data.

:func:`checkpoint_rows` turns an artifact into the rows the write statements of ``queries/load/``
take; :func:`write_checkpoint` runs them in two phases:

1. **Stage.** Everything is written under a private checkpoint node of its own id
   (``<checkpoint>~staging-<token>``, ``status: 'staging'``, no Model): blocks, subspaces, slices,
   edges, per-slice flows, activity, examples and steering, in batches of ``UNWIND $rows``. Queries read ``complete``
   checkpoints only, so nothing staged is visible, and the published version of the checkpoint (if
   any) stays as it was: a load that fails or is killed here changes nothing anyone sees.
2. **Publish**, in one transaction that first takes the catalog's publish lock (a write lock on
   the one ``PublishLock`` node, so publish transactions run one at a time and each sees what the
   others published): delete the published version's blocks, move the staged blocks under the
   Checkpoint node with their final ids, mark it ``complete``, create its ``MATCHES`` in both
   directions (from its previous checkpoint, if complete, and to every complete checkpoint whose
   artifact named it as previous) and its ``ANALOGOUS`` links with the complete checkpoints of other
   models (:mod:`circuit_atlas.analogous`). A block keeps its match to the previous checkpoint as
   properties (``match_similarity``, ``match_fingerprint_similarity``), so whichever of two
   neighbours is published last makes the link, and the analogous links of two checkpoints depend
   on those two alone. Any set of loads, concurrent or repeated, in any order, therefore ends in the
   graph one sequential load gives.

A staging checkpoint whose owner (``host:pid``) is gone, or whose heartbeat is older than
:data:`STALE_SECONDS`, is claimed and deleted by the next load of the same checkpoint.

Ids: ``Model.id`` = model name; ``Checkpoint.id`` = ``<model>@<label>``; ``Block.id`` =
``<checkpoint id>/<block name>``; ``Subspace.id`` = ``<block id>/<role>``; ``Example.id`` =
``<block id>/<slice name>/<ranking>/<rank>``; ``DataSlice.id`` =
``<name>:<token hash>``. A Block also carries its kind's label (``AttentionHead``, ``MLP``,
``Embedding``, ``Unembedding``).

Edges are pruned here, not in the artifact: per reader subspace the ``top_k`` writers by
attribution on the ingest data with attribution at least ``min_attribution``; an edge with a
rank-0 end (attribution and weight both 0) carries nothing and is never loaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import neo4j
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from circuit_atlas.analogous import Fingerprinted, analogous_links
from circuit_atlas.errors import UserError
from circuit_atlas.ingest.artifact import Artifact, read_artifact, subspace_positions
from circuit_atlas.ingest.channels import KIND_LABELS
from circuit_atlas.processes import owner_is_gone, this_process
from circuit_atlas.pruning import MIN_ATTRIBUTION, TOP_K, check_pruning
from circuit_atlas.queries import load_statements
from circuit_atlas.schema.migrations import require_current_schema

BATCH_ROWS = 5000
#: The properties of FEEDS and FLOWS_ON, in the order of the row lists of create_feeds and create_flows_on.
FEEDS_PROPERTIES = ("role", "attribution", "attribution_signed", "weight", "strength", "flow", "patched")
FLOWS_ON_PROPERTIES = ("slice", "role", "attribution", "attribution_signed", "patched")
ACTIVE_ON_PROPERTIES = (
    "attribution",
    "attribution_signed",
    "ablation",
    "ablation_se",
    "mean_norm",
    "effect_rank",
    "faithfulness",
    "in_circuit",
)
STEERED_ON_PROPERTIES = ("direction", "push", "loss_delta", "loss_se", "accuracy_delta", "kl", "flipped")
STALE_SECONDS = 3600  # a staging checkpoint without a heartbeat for this long is abandoned
HEARTBEAT_SECONDS = 60
STAGING = "~staging-"


@dataclass
class LoadSummary:
    checkpoint_id: str
    blocks: int
    subspaces: int
    edges: int
    slice_edges: int


@dataclass
class CheckpointRows:
    """Everything one checkpoint writes, as the parameters of the ``queries/load`` statements.

    Node ids are built under ``node_checkpoint_id``: the staging id the rows are written under
    (the published ids replace it when the checkpoint is published). ``feeds`` and ``flows`` are
    frames of columns ``source, target, *properties`` (:data:`FEEDS_PROPERTIES`,
    :data:`FLOWS_ON_PROPERTIES`) whose ends are positions in ``subspace_ids``; :func:`edge_rows`
    turns them into the statements' row lists a batch at a time, and the bulk import writes them
    whole.
    """

    model: dict
    checkpoint: dict
    run: dict
    node_checkpoint_id: str
    blocks: list[dict]
    subspaces: list[dict]
    slices: list[dict]
    subspace_ids: list[str]
    feeds: pd.DataFrame
    flows: pd.DataFrame
    activity: list[dict]
    examples: list[dict]
    steering: list[dict]

    @property
    def checkpoint_id(self) -> str:
        return self.checkpoint["id"]

    def summary(self) -> LoadSummary:
        return LoadSummary(self.checkpoint_id, len(self.blocks), len(self.subspaces), len(self.feeds), len(self.flows))


def _chunks(rows: Sequence[dict] | pd.DataFrame, size: int = BATCH_ROWS) -> Iterator[list]:
    """``rows`` in batches of ``size``; an edge frame's as row lists (:func:`edge_rows`)."""
    for start in range(0, len(rows), size):
        part = rows[start : start + size]
        yield edge_rows(part) if isinstance(part, pd.DataFrame) else list(part)


def _records(frame: pd.DataFrame) -> list[dict]:
    """``frame``'s rows as dicts of plain Python values; NaN, NA and an empty list as None (Neo4j stores
    no nulls, and the bulk import cannot write an empty array, so a property without elements is absent
    on both paths). Converted by Arrow, column by column."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    columns = [
        pc.if_else(pc.equal(pc.list_value_length(c), 0), pa.scalar(None, c.type), c) if pa.types.is_list(c.type) else c
        for c in table.columns
    ]
    return pa.Table.from_arrays(columns, names=table.column_names).to_pylist()


def edge_rows(frame: pd.DataFrame) -> list[list]:
    """``frame``'s rows as lists of plain Python values, NaN as None (Neo4j stores no nulls)."""
    if frame.isna().to_numpy().any():
        frame = frame.astype(object).where(frame.notna(), None)
    return frame.to_numpy(dtype=object).tolist()


EDGE_KEY = ["writer", "reader", "role"]


def pruned_edges(
    edges: pd.DataFrame, top_k: int | None, min_attribution: float, patched: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Per reader subspace, the ``top_k`` edges by attribution at or above ``min_attribution``, and
    every edge of ``patched`` (rows with ``writer``, ``reader``, ``role``: measured by patching on some
    slice, so kept whatever its attribution)."""
    check_pruning(top_k, min_attribution)
    alive = edges[(edges["attribution"] > 0) | (edges["weight"] > 0)]
    alive = alive[alive["attribution"] >= min_attribution]
    ranked = alive
    if top_k is not None:
        ranked = alive.sort_values(["reader", "role", "attribution", "writer"], ascending=[True, True, False, True])
        ranked = ranked.groupby(["reader", "role"], sort=False).head(top_k)
    if patched is not None and len(patched):
        measured = edges.merge(patched[EDGE_KEY].drop_duplicates(), on=EDGE_KEY)
        ranked = pd.concat([ranked, measured]).drop_duplicates(EDGE_KEY)
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


def staging_id(checkpoint_id: str) -> str:
    """A fresh private id to stage a load of ``checkpoint_id`` under."""
    return f"{checkpoint_id}{STAGING}{secrets.token_hex(6)}"


def checkpoint_rows(
    artifact: Artifact,
    top_k: int | None = TOP_K,
    min_attribution: float = MIN_ATTRIBUTION,
    node_checkpoint_id: str | None = None,
) -> CheckpointRows:
    """The rows one artifact writes (edges pruned by ``top_k`` and ``min_attribution``), with node ids
    under ``node_checkpoint_id`` (default: a fresh staging id; the published checkpoint id for a bulk
    import, which writes the final graph directly)."""
    m, t = artifact.manifest, artifact.tables
    model_id = m["model"]["name"]
    checkpoint_id = f"{model_id}@{m['checkpoint']['label']}"
    under = node_checkpoint_id or staging_id(checkpoint_id)
    rank_search = m["fidelity"]
    searched = m["ranks"]["searched"] or rank_search  # this checkpoint's own search (when the series rule is another)
    model = {**m["model"], "id": model_id, "parallel_attn_mlp": bool(m["model"]["parallel_attn_mlp"])}
    previous = t["matches"]["previous_checkpoint"].unique()
    checkpoint = {
        "id": checkpoint_id,
        "model_id": model_id,
        "label": m["checkpoint"]["label"],
        "step": m["checkpoint"]["step"],
        "tokens_seen": m["checkpoint"]["tokens_seen"],
        "loss": m["checkpoint"]["loss"],
        "fidelity": rank_search["loss_recovered"],  # the all-at-once recovery
        "fidelity_reason": rank_search["reason"],  # why it is null
        "rank_fraction": rank_search["fraction"],
        "rank_rule": m["ranks"]["rule"],
        "searched_rank_fraction": searched["fraction"],
        "searched_fidelity": searched["loss_recovered"],
        "importance": m["config"].get("importance", "fisher"),  # artifacts from before the option used the Fisher
        "config_hash": m["config_hash"],
        "ingest_slice": m["ingest_slice"],
        "fingerprint_features": m["fingerprint_features"],
        "previous_id": f"{model_id}@{previous[0]}" if len(previous) else None,
    }
    run = {
        "id": run_id(m),
        "config_hash": m["config_hash"],
        "code_version": m["code_version"],
        "started": m["started"],
        "finished": m["finished"],
        "device": m["device"],
    }
    block_id = {name: f"{under}/{name}" for name in t["blocks"]["name"]}
    slice_id = {s["name"]: s["id"] for s in m["slices"]}
    ablation = {s["name"]: s.get("ablation") for s in m["slices"]}  # absent before ablation baselines
    flat = {s["name"]: s.get("flat_gradients") for s in m["slices"]}  # absent before edge patching
    circuit = {  # the slice's circuit by faithfulness, on each of its ACTIVE_ON
        s["name"]: {
            "circuit_target": s["circuit"]["target"],
            "circuit_faithfulness": s["circuit"]["faithfulness"],
            "circuit_reason": s["circuit"]["reason"],
        }
        for s in m["slices"]
        if isinstance(s.get("circuit"), dict)
    }
    matched = t["matches"].set_index("block")

    blocks = t["blocks"].assign(
        id=lambda f: f["name"].map(block_id),
        model_id=model_id,
        match_similarity=lambda f: f["name"].map(matched["similarity"]),
        match_fingerprint_similarity=lambda f: f["name"].map(matched["fingerprint_similarity"]),
    )
    subspaces = (
        t["subspaces"]
        .assign(
            id=lambda f: f["block"].map(block_id) + "/" + f["role"],
            block_id=lambda f: f["block"].map(block_id),
            checkpoint_id=under,
            basis_uri=lambda f: artifact.basis_uri("") + f["basis_key"],  # the folder resolved once
        )
        .drop(columns=["block", "basis_key"])
    )
    slice_edges = t["slice_edges"]
    edges = pruned_edges(t["edges"], top_k, min_attribution, slice_edges[slice_edges["patched"].notna()])
    subspace_ids = subspaces["id"].tolist()

    def ends(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Each edge's ends: the positions of its writer's out subspace and its reader's subspace."""
        readers = subspace_positions(t["subspaces"], frame["reader"], frame["role"])
        return subspace_positions(t["subspaces"], frame["writer"], "out"), readers

    def endpoint_rows(
        frame: pd.DataFrame, at: tuple[np.ndarray, np.ndarray], properties: tuple[str, ...]
    ) -> pd.DataFrame:
        return pd.concat(
            [pd.DataFrame({"source": at[0], "target": at[1]}), frame[list(properties)].reset_index(drop=True)], axis=1
        )

    edge_ends, slice_ends = ends(edges), ends(slice_edges)
    pair = len(subspace_ids)  # (writer, reader subspace) as one number: the edge's key, its role in the reader's
    kept = np.isin(slice_ends[0] * pair + slice_ends[1], edge_ends[0] * pair + edge_ends[1])
    slice_edges, slice_ends = slice_edges.loc[kept], (slice_ends[0][kept], slice_ends[1][kept])
    return CheckpointRows(
        model=model,
        checkpoint=checkpoint,
        run=run,
        node_checkpoint_id=under,
        blocks=_records(blocks),
        subspaces=_records(subspaces),
        slices=[
            {
                **{k: s[k] for k in ("id", "name", "description", "n_tokens", "metric", "scored")},
                "discovered": bool(s.get("discovered")),
            }
            for s in m["slices"]
        ],
        subspace_ids=subspace_ids,
        feeds=endpoint_rows(edges, edge_ends, FEEDS_PROPERTIES),
        flows=endpoint_rows(slice_edges, slice_ends, FLOWS_ON_PROPERTIES),
        activity=[
            {
                "block_id": block_id[r["block"]],
                "slice_id": slice_id[r["slice"]],
                "properties": {k: r[k] for k in ACTIVE_ON_PROPERTIES}
                | ({"ablation_baseline": ablation[r["slice"]]} if ablation[r["slice"]] else {})
                | ({"flat_gradients": flat[r["slice"]]} if flat[r["slice"]] is not None else {})
                | circuit.get(r["slice"], {}),
            }
            for r in _records(t["activity"])
        ],
        examples=[
            {
                "block_id": block_id[r["block"]],
                "properties": {
                    "id": f"{block_id[r['block']]}/{r['slice']}/{r['ranking']}/{r['rank']}",
                    **{k: v for k, v in r.items() if k != "block"},
                },
            }
            for r in _records(t["examples"])
        ],
        steering=[
            {
                "subspace_id": f"{block_id[r['block']]}/out",
                "slice_id": slice_id[r["slice"]],
                "properties": {k: r[k] for k in STEERED_ON_PROPERTIES},
            }
            for r in _records(t["steering"])
        ],
    )


class _Writer:
    """Runs the ``queries/load`` statements on one driver and database."""

    def __init__(self, driver: neo4j.Driver, database: str):
        self.driver, self.database = driver, database
        self.statements = {name: query.text for name, query in load_statements().items()}

    def write(self, name: str, **params) -> list[dict]:
        with self.driver.session(database=self.database) as session:
            return session.execute_write(lambda tx: [r.data() for r in tx.run(self.statements[name], params)])

    def implicit(self, name: str, **params) -> None:
        """A statement that batches itself (``CALL ... IN TRANSACTIONS``): an implicit transaction."""
        with self.driver.session(database=self.database) as session:
            session.run(self.statements[name], params).consume()

    def discard(self, staged: str) -> None:
        """Delete a staging checkpoint and everything under it."""
        self.implicit("delete_checkpoint_content", checkpoint_id=staged)
        self.write("drop_checkpoint_node", staging_id=staged)

    def collect_abandoned(self, checkpoint_id: str, staged: str) -> list[str]:
        """Claim and delete the staging checkpoints of ``checkpoint_id`` whose writers are gone."""
        collected = []
        for row in self.write("stagings", checkpoint_id=checkpoint_id, staging_id=staged, stale_seconds=STALE_SECONDS):
            if (row["expired"] or owner_is_gone(row["owner"])) and self.write(
                "claim_staging", staging_id=row["id"], owner=row["owner"], new_owner=this_process()
            ):
                self.discard(row["id"])
                collected.append(row["id"])
        return collected

    def publish(self, rows: CheckpointRows) -> None:
        """The publish transaction (see the module docstring)."""
        checkpoint_id, staged = rows.checkpoint_id, rows.node_checkpoint_id

        def work(tx) -> None:
            tx.run(self.statements["lock_catalog"], model_id=rows.model["id"]).consume()
            tx.run(self.statements["delete_live_content"], checkpoint_id=checkpoint_id).consume()
            tx.run(
                self.statements["publish_checkpoint"], model=rows.model, checkpoint=rows.checkpoint, run=rows.run
            ).consume()
            tx.run(self.statements["adopt_blocks"], staging_id=staged, checkpoint_id=checkpoint_id).consume()
            tx.run(self.statements["drop_checkpoint_node"], staging_id=staged).consume()
            tx.run(self.statements["link_matches"], checkpoint_id=checkpoint_id).consume()
            candidates = tx.run(self.statements["analogous_candidates"], checkpoint_id=checkpoint_id)
            blocks = [Fingerprinted(**record.data()) for record in candidates]
            links = analogous_links(blocks, checkpoint_id, rows.checkpoint["fingerprint_features"])
            for chunk in _chunks(links):
                tx.run(self.statements["create_analogous"], rows=chunk).consume()

        with self.driver.session(database=self.database) as session:
            session.execute_write(work)


def write_checkpoint(driver: neo4j.Driver, database: str, rows: CheckpointRows, complete: bool = True) -> LoadSummary:
    """Stage ``rows`` and publish them (see the module docstring). With ``complete=False`` the rows
    stay staged and unpublished, as a load killed before its end leaves them.

    A failure while staging deletes what was staged (best effort) and re-raises; the published
    version of the checkpoint is untouched either way.
    """
    writer = _Writer(driver, database)
    staged = rows.node_checkpoint_id
    writer.write("begin_staging", staging_id=staged, checkpoint_id=rows.checkpoint_id, owner=this_process())
    try:
        beat = time.monotonic()
        writer.collect_abandoned(rows.checkpoint_id, staged)
        for chunk in _chunks(rows.blocks):
            writer.write("create_blocks", rows=chunk, checkpoint_id=staged, kind_labels=KIND_LABELS)
        ids = {"ids": rows.subspace_ids}
        for name, all_rows, extra in (
            ("create_subspaces", rows.subspaces, {}),
            ("merge_slices", rows.slices, {}),
            ("create_feeds", rows.feeds, ids),
            ("create_flows_on", rows.flows, ids),
            ("create_active_on", rows.activity, {}),
            ("create_examples", rows.examples, {}),
            ("create_steered_on", rows.steering, {}),
        ):
            for chunk in _chunks(all_rows):
                if time.monotonic() - beat > HEARTBEAT_SECONDS:
                    writer.write("heartbeat", staging_id=staged)
                    beat = time.monotonic()
                writer.write(name, rows=chunk, **extra)
        if complete:
            writer.publish(rows)
    except (neo4j.exceptions.ServiceUnavailable, neo4j.exceptions.SessionExpired):
        raise  # the server is gone: the next load of this checkpoint collects what was staged
    except BaseException:
        if complete:
            with contextlib.suppress(neo4j.exceptions.Neo4jError, neo4j.exceptions.DriverError):
                writer.discard(staged)
        raise
    return rows.summary()


def load_artifact(
    driver: neo4j.Driver,
    database: str,
    path: Path,
    top_k: int | None = TOP_K,
    min_attribution: float = MIN_ATTRIBUTION,
    echo: Callable[[str], None] = print,
) -> LoadSummary:
    """Write one artifact into the catalog (see module docstring)."""
    check_pruning(top_k, min_attribution)
    require_current_schema(driver, database)
    artifact = read_artifact(path)
    rows = checkpoint_rows(artifact, top_k, min_attribution)
    try:
        summary = write_checkpoint(driver, database, rows)
    except (neo4j.exceptions.ServiceUnavailable, neo4j.exceptions.SessionExpired) as error:
        raise UserError(
            f"Lost the connection to Neo4j while loading {rows.checkpoint_id} ({str(error).splitlines()[0]}); "
            f"the catalog still "
            f"holds its previous version, if any. Load {path} again once the server is back."
        ) from error
    echo(
        f"Loaded {summary.checkpoint_id}: {summary.blocks} blocks, {summary.subspaces} subspaces, "
        f"{summary.edges} FEEDS (of {len(artifact.tables['edges'])}), {summary.slice_edges} FLOWS_ON."
    )
    return summary
