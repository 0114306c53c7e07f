"""A large first load: artifacts written straight into a new database by ``neo4j-admin database import``.

The loader writes through Cypher transactions (tens of thousands of relationships a second); the
offline importer of Neo4j writes store files directly, an order of magnitude faster, but only into
a database that it creates, with the server stopped. :func:`bulk_import` turns artifacts into the
importer's CSV files, written from Arrow columns with no Python loop over the rows (the same rows
as the loader's :func:`~circuit_atlas.loader.checkpoint_rows`, with the published ids). Worker
processes read and check the artifacts, one at a time each, and append the edges, nearly all of the
rows, to edge files of their own; the other rows come back as Arrow tables, written one file per
kind. The importer runs on the local runtime's jars (``org.neo4j.server.startup.Neo4jAdminCommand``,
arguments in an owner-only ``@FILE``), and the CSV files are deleted. The result is the graph the
loader gives for the same artifacts loaded one by one in step order; start the server and run
``circuit-atlas schema migrate`` to create the constraints and indexes.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from circuit_atlas.ingest.artifact import find_artifacts, read_artifact, read_manifest
from circuit_atlas.ingest.channels import KIND_LABELS
from circuit_atlas.ingest.storage import local_artifacts

from .analogous import Fingerprinted, analogous_links
from .errors import UserError
from .loader import FEEDS_PROPERTIES, FLOWS_ON_PROPERTIES, CheckpointRows, checkpoint_rows
from .local_server import LocalServer
from .pruning import MIN_ATTRIBUTION, TOP_K, check_pruning

DATABASE = "neo4j"


@dataclass
class ImportSummary:
    checkpoints: int
    nodes: int
    relationships: int
    seconds: float  # end to end: artifacts read and checked, files written, the importer run
    importer_seconds: float  # neo4j-admin alone, on the files written


#: Between the elements of an array cell: the unit separator, which no stored text holds (the manifest's
#: names are printable, :func:`circuit_atlas.ingest.artifact.read_manifest`), where ``;`` split names.
ARRAY_DELIMITER = "\x1f"
#: The importer's node files: name -> id space (each node's ``id`` is its ``:ID`` in that space).
NODE_FILES = {
    "models": "Model",
    "slices": "DataSlice",
    "runs": "IngestRun",
    "checkpoints": "Checkpoint",
    "blocks": "Block",
    "subspaces": "Subspace",
    "examples": "Example",
}
#: Its relationship files: name -> (type, start space, end space).
RELATIONSHIP_FILES = {
    "has_checkpoint": ("HAS_CHECKPOINT", "Model", "Checkpoint"),
    "produced": ("PRODUCED", "IngestRun", "Checkpoint"),
    "has_block": ("HAS_BLOCK", "Checkpoint", "Block"),
    "has_subspace": ("HAS_SUBSPACE", "Block", "Subspace"),
    "has_example": ("HAS_EXAMPLE", "Block", "Example"),
    "active_on": ("ACTIVE_ON", "Block", "DataSlice"),
    "steered_on": ("STEERED_ON", "Subspace", "DataSlice"),
    "matches": ("MATCHES", "Block", "Block"),
    "analogous": ("ANALOGOUS", "Block", "Block"),
    "feeds": ("FEEDS", "Subspace", "Subspace"),
    "flows_on": ("FLOWS_ON", "Subspace", "Subspace"),
}
#: The edge files (nearly all of the rows), written by the workers: their name and properties.
EDGE_FILES = (("feeds", FEEDS_PROPERTIES), ("flows_on", FLOWS_ON_PROPERTIES))
ENDS = (":START_ID", ":END_ID")


def _neo4j_type(kind: pa.DataType) -> str:
    """The importer's type for an Arrow column (``string`` for one of nulls only)."""
    if pa.types.is_list(kind):
        return f"{_neo4j_type(kind.value_type)}[]"
    if pa.types.is_boolean(kind):
        return "boolean"
    if pa.types.is_integer(kind):
        return "long"
    return "double" if pa.types.is_floating(kind) else "string"


def _header(name: str, schema: pa.Schema) -> str:
    """The importer's header line of file ``name`` with these columns: ``id`` is a node's ``:ID``, the
    ends a relationship's, ``:LABEL`` the labels; every other column a typed property."""
    space = NODE_FILES.get(name)
    _, *spaces = RELATIONSHIP_FILES.get(name, (None, None, None))

    def field(column: pa.Field) -> str:
        if column.name == "id" and space:
            return f"id:ID({space})"
        if column.name in ENDS:
            return f"{column.name}({spaces[ENDS.index(column.name)]})"
        return column.name if column.name == ":LABEL" else f"{column.name}:{_neo4j_type(column.type)}"

    return ",".join(map(field, schema)) + "\n"


def _table(rows: list[dict], columns: tuple[str, ...]) -> pa.Table:
    """``rows`` as Arrow columns, each typed by its values; with no rows, ``columns`` of strings."""
    if not rows:
        return pa.table({c: pa.array([], pa.string()) for c in columns})
    return pa.Table.from_pylist(rows)


def _relationships(rows: Iterable[tuple[str, str, dict]]) -> pa.Table:
    return _table([{ENDS[0]: a, ENDS[1]: b, **properties} for a, b, properties in rows], ENDS)


def _cells(table: pa.Table) -> pa.Table:
    """``table`` as the importer reads it: arrays joined by :data:`ARRAY_DELIMITER`, null columns as strings."""
    columns = []
    for column in table.columns:
        if pa.types.is_list(column.type):
            column = pc.binary_join(pc.cast(column, pa.list_(pa.string())), ARRAY_DELIMITER)
        columns.append(column.cast(pa.string()) if pa.types.is_null(column.type) else column)
    return pa.Table.from_arrays(columns, names=table.column_names)


def _checkpoint_tables(rows: CheckpointRows) -> dict[str, pa.Table]:
    """The node and relationship files' rows of one checkpoint (published ids)."""
    blocks = [
        {**b, "checkpoint_id": rows.checkpoint_id, ":LABEL": f"Block{ARRAY_DELIMITER}{KIND_LABELS[b['kind']]}"}
        for b in rows.blocks
    ]
    return {
        "blocks": _table(blocks, ("id",)),
        "subspaces": _table([{**s, ":LABEL": "Subspace"} for s in rows.subspaces], ("id",)),
        "examples": _table([{**e["properties"], ":LABEL": "Example"} for e in rows.examples], ("id",)),
        "has_block": _relationships((rows.checkpoint_id, b["id"], {}) for b in rows.blocks),
        "has_subspace": _relationships((s["block_id"], s["id"], {}) for s in rows.subspaces),
        "has_example": _relationships((e["block_id"], e["properties"]["id"], {}) for e in rows.examples),
        "active_on": _relationships((a["block_id"], a["slice_id"], a["properties"]) for a in rows.activity),
        "steered_on": _relationships((r["subspace_id"], r["slice_id"], r["properties"]) for r in rows.steering),
    }


def _edge_schema(names: tuple[str, ...]) -> pa.Schema:
    """The columns of an edge file: its ends (subspace ids) and the properties ``names``, typed."""
    kinds = [pa.field(n, pa.string() if n in ("role", "slice") else pa.float64()) for n in names]
    return pa.schema([pa.field(ENDS[0], pa.string()), pa.field(ENDS[1], pa.string()), *kinds])


def _prepared(
    job: tuple[Path, Path, int | None, float],
) -> tuple[CheckpointRows, dict[str, pa.Table], dict[str, int]]:
    """One artifact read, checked and turned into the loader's rows (published ids); its FEEDS and
    FLOWS_ON appended to this worker process's own edge files in ``folder`` (Arrow columns, the ends
    taken from the subspace ids by position: no Python loop over the edges). Returns the rows without
    the edges and nodes written elsewhere, the tables of its other files' rows, and how many edges it
    wrote to each edge file."""
    path, folder, top_k, min_attribution = job
    artifact = read_artifact(path)
    checkpoint_id = f"{artifact.manifest['model']['name']}@{artifact.manifest['checkpoint']['label']}"
    rows = checkpoint_rows(artifact, top_k, min_attribution, node_checkpoint_id=checkpoint_id)
    ids = pa.array(rows.subspace_ids, pa.string())
    options = pacsv.WriteOptions(include_header=False)
    for (name, names), edges in zip(EDGE_FILES, (rows.feeds, rows.flows)):
        schema = _edge_schema(names)
        columns = [
            ids.take(pa.array(edges["source"].to_numpy(np.int64))),
            ids.take(pa.array(edges["target"].to_numpy(np.int64))),
            *(pa.array(edges[n], schema.field(n).type, from_pandas=True) for n in names),
        ]
        with (folder / f"{name}-{os.getpid()}.csv").open("ab") as out:
            pacsv.write_csv(pa.Table.from_arrays(columns, schema=schema), out, options)
    written = {name: len(edges) for (name, _), edges in zip(EDGE_FILES, (rows.feeds, rows.flows))}
    tables = _checkpoint_tables(rows)
    rows.feeds, rows.flows = rows.feeds.iloc[:0], rows.flows.iloc[:0]
    rows.subspaces, rows.subspace_ids, rows.examples, rows.activity, rows.steering = [], [], [], [], []
    return rows, tables, written


def _graph(all_rows: list[CheckpointRows]) -> dict:
    """What the loader's statements would leave for these checkpoints loaded in this order."""
    models: dict[str, dict] = {}
    slices: dict[str, dict] = {}
    runs: dict[str, dict] = {}
    for rows in all_rows:
        models.setdefault(rows.model["id"], {}).update(rows.model)  # SET m += $model
        for s in rows.slices:
            slices.setdefault(s["id"], {}).update(s)  # SET d += row
        runs[rows.run["id"]] = {**rows.run, "status": "complete"}  # SET r = $run
    return {"models": models, "slices": slices, "runs": runs}


def _matches(all_rows: list[CheckpointRows]) -> list[tuple[str, str, dict]]:
    """MATCHES as link_matches makes them: from the previous checkpoint's block of the same name."""
    names = {rows.checkpoint_id: {b["name"] for b in rows.blocks} for rows in all_rows}
    found = []
    for rows in all_rows:
        earlier = rows.checkpoint["previous_id"]
        for block in rows.blocks if earlier in names else ():
            if block.get("match_similarity") is not None and block["name"] in names[earlier]:
                properties = {
                    "similarity": block["match_similarity"],
                    "fingerprint_similarity": block["match_fingerprint_similarity"],
                    "method": "subspace",
                }
                found.append((f"{earlier}/{block['name']}", block["id"], properties))
    return found


def _analogous(all_rows: list[CheckpointRows]) -> list[tuple[str, str, dict]]:
    """ANALOGOUS as the loader makes them: each checkpoint against the ones published before it."""
    found: dict[tuple[str, str], dict] = {}
    published: list[tuple[object, Fingerprinted]] = []  # (fingerprint features, block)
    for rows in all_rows:
        features = rows.checkpoint["fingerprint_features"]
        mine = [
            Fingerprinted(b["id"], rows.checkpoint_id, rows.model["id"], b["kind"], b["fingerprint"])
            for b in rows.blocks
        ]
        comparable = [block for f, block in published if f == features]
        for link in analogous_links(comparable + mine, rows.checkpoint_id, features):
            found[link["source"], link["target"]] = {"similarity": link["similarity"], "features": link["features"]}
        published += [(features, block) for block in mine]
    return [(source, target, properties) for (source, target), properties in found.items()]


def _shared_tables(all_rows: list[CheckpointRows]) -> dict[str, pa.Table]:
    """The files' rows that depend on the whole series (``all_rows``: published ids, in load order)."""
    shared = _graph(all_rows)
    checkpoints = [{**rows.checkpoint, "status": "complete"} for rows in all_rows]
    return {
        "models": _table([{**m, ":LABEL": "Model"} for m in shared["models"].values()], ("id",)),
        "slices": _table([{**d, ":LABEL": "DataSlice"} for d in shared["slices"].values()], ("id",)),
        "runs": _table([{**r, ":LABEL": "IngestRun"} for r in shared["runs"].values()], ("id",)),
        "checkpoints": _table([{**c, ":LABEL": "Checkpoint"} for c in checkpoints], ("id",)),
        "has_checkpoint": _relationships((c["model_id"], c["id"], {}) for c in checkpoints),
        "produced": _relationships((rows.run["id"], rows.checkpoint_id, {}) for rows in all_rows),
        "matches": _relationships(_matches(all_rows)),
        "analogous": _relationships(_analogous(all_rows)),
    }


class _Files:
    """The importer's files under ``folder`` and its ``--nodes``/``--relationships`` arguments."""

    def __init__(self, folder: Path):
        self.folder, self.nodes, self.relationships = folder, 0, 0
        self.arguments: list[str] = []

    def add(self, name: str, header: str, parts: list[Path], rows: int) -> None:
        """File ``name``: a header file, then its ``parts`` (header-less CSV) in order."""
        (self.folder / f"{name}.header.csv").write_text(header)
        files = ",".join(str(f) for f in [self.folder / f"{name}.header.csv", *parts])
        if name in NODE_FILES:
            self.arguments.append(f"--nodes={files}")
            self.nodes += rows
        else:
            self.arguments.append(f"--relationships={RELATIONSHIP_FILES[name][0]}={files}")
            self.relationships += rows

    def write(self, name: str, tables: list[pa.Table]) -> None:
        """File ``name`` from ``tables`` (their columns united; a number column of integers in one
        table and fractions in another becomes fractions)."""
        table = pa.concat_tables(tables, promote_options="permissive")
        part = self.folder / f"{name}.csv"
        pacsv.write_csv(_cells(table), part, pacsv.WriteOptions(include_header=False))
        self.add(name, _header(name, table.schema), [part], table.num_rows)


def bulk_import(
    server: LocalServer,
    path: str | Path,
    top_k: int | None = TOP_K,
    min_attribution: float = MIN_ATTRIBUTION,
    replace: bool = False,
    echo: Callable[[str], None] = print,
) -> ImportSummary:
    """Import every artifact under ``path`` into a new ``neo4j`` database of the stopped local ``server``."""
    check_pruning(top_k, min_attribution)
    if server.pid() is not None:
        raise UserError(f"Neo4j runs in {server.directory}: stop it first (`circuit-atlas neo4j stop`).")
    if (server.directory / "data" / "databases" / DATABASE).exists() and not replace:
        raise UserError(
            f"{server.directory} already holds database {DATABASE!r}; pass --replace to replace it with "
            f"the imported one, or use `circuit-atlas load` to add to it."
        )

    def order(artifact: Path):
        manifest = read_manifest(artifact)
        return manifest["model"]["name"], manifest["checkpoint"]["step"]

    start = time.perf_counter()
    paths = sorted(find_artifacts(local_artifacts(path)), key=order)
    server.prepare_for_admin()
    folder = server.directory / "import" / "bulk"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    try:
        all_rows: list[CheckpointRows] = []
        edges = dict.fromkeys((name for name, _ in EDGE_FILES), 0)  # rows in the workers' edge files
        tables: dict[str, list[pa.Table]] = {n: [] for n in (*NODE_FILES, *RELATIONSHIP_FILES) if n not in edges}
        jobs = [(artifact, folder, top_k, min_attribution) for artifact in paths]
        with ProcessPoolExecutor(max_workers=max(1, min(os.cpu_count() or 1, len(jobs)))) as pool:
            for rows, own, written in pool.map(_prepared, jobs):  # in order, as they come
                if any(rows.checkpoint_id == earlier.checkpoint_id for earlier in all_rows):
                    raise UserError(
                        f"Two artifacts under {path} are checkpoint {rows.checkpoint_id}; import one of them."
                    )
                all_rows.append(rows)
                for name, table in own.items():
                    tables[name].append(table)
                for name in edges:
                    edges[name] += written[name]
        for name, table in _shared_tables(all_rows).items():
            tables[name].append(table)
        files = _Files(folder)
        for name, parts in tables.items():
            files.write(name, parts)
        for name, names in EDGE_FILES:
            files.add(name, _header(name, _edge_schema(names)), sorted(folder.glob(f"{name}-*.csv")), edges[name])
        echo(f"Importing {len(all_rows)} checkpoints: {files.nodes:,} nodes, {files.relationships:,} relationships ...")
        importer_started = time.perf_counter()
        server.admin(
            "database",
            "import",
            "full",
            DATABASE,
            "--overwrite-destination=true",
            "--multiline-fields=true",
            f"--array-delimiter=U+{ord(ARRAY_DELIMITER):04X}",
            f"--report-file={server.directory / 'logs' / 'import.report'}",  # not the working directory
            *files.arguments,
        )
        importer_seconds = time.perf_counter() - importer_started
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    seconds = time.perf_counter() - start
    summary = ImportSummary(len(all_rows), files.nodes, files.relationships, seconds, importer_seconds)
    echo(
        f"Imported {summary.checkpoints} checkpoints ({summary.nodes:,} nodes, {summary.relationships:,} "
        f"relationships) in {summary.seconds:.1f} s. Start the server and run `circuit-atlas schema migrate`."
    )
    return summary
