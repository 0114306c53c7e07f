"""A large first load: artifacts written straight into a new database by ``neo4j-admin database import``.

The loader writes through Cypher transactions (tens of thousands of relationships a second); the
offline importer of Neo4j writes store files directly, an order of magnitude faster, but only into
a database that it creates, with the server stopped. :func:`bulk_import` turns artifacts into the
importer's CSV files (the same rows as the loader's :func:`~circuit_atlas.loader.checkpoint_rows`,
with the published ids; the edges, nearly all of the rows, written as Arrow columns by worker
processes, one artifact each, and appended in order to one file per type), runs it through the
local runtime's jars
(``org.neo4j.server.startup.Neo4jAdminCommand``, arguments in an owner-only ``@FILE``), and
deletes the CSV files. The result is the graph the loader gives for the same artifacts loaded one
by one in step order; start the server and run ``circuit-atlas schema migrate`` to create the
constraints and indexes.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import shutil
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
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
#: The edge files: their name, relationship type and properties (the loader's FEEDS and FLOWS_ON rows).
EDGE_FILES = (("feeds", "FEEDS", FEEDS_PROPERTIES), ("flows_on", "FLOWS_ON", FLOWS_ON_PROPERTIES))


@dataclass
class ImportSummary:
    checkpoints: int
    nodes: int
    relationships: int
    seconds: float  # end to end: artifacts read and checked, files written, the importer run
    importer_seconds: float  # neo4j-admin alone, on the files written


def _neo4j_type(values: Iterable) -> str | None:
    """The importer's type for a column of Python values (None when every value is null)."""
    values = list(values)
    kinds = {type(v) for v in values if v is not None}
    if not kinds:
        return None
    if kinds == {bool}:
        return "boolean"
    if kinds <= {int}:
        return "long"
    if kinds <= {int, float}:
        return "double"
    if kinds <= {list, tuple}:
        items = {type(x) for v in values if v for x in v}
        return "string[]" if str in items else "long[]" if items == {int} else "double[]"
    return "string"


#: Between the elements of an array cell: the unit separator, which no stored text holds (the manifest's
#: names are printable, :func:`circuit_atlas.ingest.artifact.read_manifest`), where ``;`` split names.
ARRAY_DELIMITER = "\x1f"


def _cell(value, kind: str | None) -> str:
    """One CSV cell; empty for null (the loader stores no empty list either: :func:`circuit_atlas.loader._clean`)."""
    if value is None:
        return ""
    if kind == "boolean":
        return "true" if value else "false"
    if kind == "double":
        return repr(float(value)) if math.isfinite(value) else str(value)
    if kind in ("double[]", "long[]", "string[]"):
        return ARRAY_DELIMITER.join(repr(float(x)) if kind == "double[]" else str(x) for x in value)
    return str(value)


class _Files:
    """CSV files for the importer under ``folder``, with the ``--nodes``/``--relationships`` arguments."""

    def __init__(self, folder: Path):
        self.folder, self.nodes, self.relationships = folder, 0, 0
        self.arguments: list[str] = []

    def nodes_file(self, name: str, space: str, rows: list[dict], labels: Callable[[dict], str]) -> None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
        kinds = {c: _neo4j_type(row.get(c) for row in rows) for c in columns}
        header = [f"id:ID({space})" if c == "id" else f"{c}:{kinds[c] or 'string'}" for c in columns]
        self._write(
            name, [*header, ":LABEL"], ([*(_cell(r.get(c), kinds[c]) for c in columns), labels(r)] for r in rows)
        )
        self.arguments.append(f"--nodes={self.folder / name}")
        self.nodes += len(rows)

    def relationships_file(
        self, name: str, kind: str, spaces: tuple[str, str], rows: list[tuple[str, str, dict]]
    ) -> None:
        columns = list(dict.fromkeys(key for _, _, properties in rows for key in properties))
        kinds = {c: _neo4j_type(p.get(c) for _, _, p in rows) for c in columns}
        header = [f":START_ID({spaces[0]})", f":END_ID({spaces[1]})", ":TYPE"]
        header += [f"{c}:{kinds[c] or 'string'}" for c in columns]
        lines = ([a, b, kind, *(_cell(p.get(c), kinds[c]) for c in columns)] for a, b, p in rows)
        self._write(name, header, lines)
        self.arguments.append(f"--relationships={self.folder / name}")
        self.relationships += len(rows)

    def _write(self, name: str, header: list[str], lines: Iterable[list[str]]) -> None:
        with (self.folder / name).open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(lines)

    @contextmanager
    def edge_files(self):
        """FEEDS and FLOWS_ON, each one file (the importer reads one file of 10 M edges 1.7 x as fast
        as 152): a header, then each part of :func:`_prepared` appended, in order, as it comes."""
        with contextlib.ExitStack() as stack:
            outs = {}
            for name, kind, names in EDGE_FILES:
                whole = self.folder / f"{name}.csv"
                outs[name] = stack.enter_context(whole.open("wb"))
                outs[name].write((",".join(field.name for field in _edge_schema(names)) + "\n").encode())
                self.arguments.append(f"--relationships={kind}={whole}")

            def append(index: int) -> None:
                for name, out in outs.items():
                    part = self.folder / f"{name}-{index}.csv"
                    with part.open("rb") as source:
                        shutil.copyfileobj(source, out, 1 << 24)
                    part.unlink()

            yield append


def _edge_schema(names: tuple[str, ...]) -> pa.Schema:
    """The importer's columns of an edge file: its ends (subspace ids) and ``names``, typed."""
    ends = [pa.field(f"{c}(Subspace)", pa.string()) for c in (":START_ID", ":END_ID")]
    kinds = [pa.field(f"{n}:{'string' if _arrow(n) == pa.string() else 'double'}", _arrow(n)) for n in names]
    return pa.schema([*ends, *kinds])


def _prepared(job: tuple[Path, Path, int, int | None, float]) -> tuple[CheckpointRows, int]:
    """One artifact read, checked and turned into the loader's rows (published ids), its FEEDS and
    FLOWS_ON written to ``folder`` as part ``index`` of their files (Arrow columns, the ends taken
    from the subspace ids by position: no Python loop over the edges); the rows without them, and
    how many edges were written. Runs in a worker process, one artifact at a time."""
    path, folder, index, top_k, min_attribution = job
    artifact = read_artifact(path)
    checkpoint_id = f"{artifact.manifest['model']['name']}@{artifact.manifest['checkpoint']['label']}"
    rows = checkpoint_rows(artifact, top_k, min_attribution, node_checkpoint_id=checkpoint_id)
    ids = pa.array(rows.subspace_ids, pa.string())
    options = pacsv.WriteOptions(include_header=False)
    for (name, _, names), edges in zip(EDGE_FILES, (rows.feeds, rows.flows)):
        columns = [
            ids.take(pa.array(edges["source"].to_numpy(np.int64))),
            ids.take(pa.array(edges["target"].to_numpy(np.int64))),
            *(pa.array(edges[n], _arrow(n), from_pandas=True) for n in names),
        ]
        table = pa.Table.from_arrays(columns, schema=_edge_schema(names))
        pacsv.write_csv(table, str(folder / f"{name}-{index}.csv"), options)
    written = len(rows.feeds) + len(rows.flows)
    rows.feeds, rows.flows = rows.feeds.iloc[:0], rows.flows.iloc[:0]
    return rows, written


def _arrow(name: str) -> pa.DataType:
    return pa.string() if name in ("role", "slice") else pa.float64()


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


def write_import_files(files: _Files, all_rows: list[CheckpointRows]) -> None:
    """The importer's node files and its files of every relationship but FEEDS and FLOWS_ON (which
    :meth:`_Files.edge_files` writes) for ``all_rows`` (published ids, in load order)."""
    shared = _graph(all_rows)
    files.nodes_file("models.csv", "Model", list(shared["models"].values()), lambda _: "Model")
    files.nodes_file("slices.csv", "DataSlice", list(shared["slices"].values()), lambda _: "DataSlice")
    files.nodes_file("runs.csv", "IngestRun", list(shared["runs"].values()), lambda _: "IngestRun")
    checkpoints = [{**rows.checkpoint, "status": "complete"} for rows in all_rows]
    files.nodes_file("checkpoints.csv", "Checkpoint", checkpoints, lambda _: "Checkpoint")
    blocks = [{**b, "checkpoint_id": rows.checkpoint_id} for rows in all_rows for b in rows.blocks]
    files.nodes_file("blocks.csv", "Block", blocks, lambda b: f"Block{ARRAY_DELIMITER}{KIND_LABELS[b['kind']]}")
    subspaces = [s for rows in all_rows for s in rows.subspaces]
    files.nodes_file("subspaces.csv", "Subspace", subspaces, lambda _: "Subspace")
    examples = [e for rows in all_rows for e in rows.examples]
    files.nodes_file("examples.csv", "Example", [e["properties"] for e in examples], lambda _: "Example")

    def pairs(space_rows, start, end):
        return [(r[start], r[end], {}) for r in space_rows]

    files.relationships_file(
        "has_checkpoint.csv", "HAS_CHECKPOINT", ("Model", "Checkpoint"), pairs(checkpoints, "model_id", "id")
    )
    produced: list[tuple[str, str, dict]] = [(rows.run["id"], rows.checkpoint_id, {}) for rows in all_rows]
    files.relationships_file("produced.csv", "PRODUCED", ("IngestRun", "Checkpoint"), produced)
    files.relationships_file(
        "has_block.csv", "HAS_BLOCK", ("Checkpoint", "Block"), pairs(blocks, "checkpoint_id", "id")
    )
    files.relationships_file(
        "has_subspace.csv", "HAS_SUBSPACE", ("Block", "Subspace"), pairs(subspaces, "block_id", "id")
    )
    has_example: list[tuple[str, str, dict]] = [(e["block_id"], e["properties"]["id"], {}) for e in examples]
    files.relationships_file("has_example.csv", "HAS_EXAMPLE", ("Block", "Example"), has_example)
    active = [(a["block_id"], a["slice_id"], a["properties"]) for rows in all_rows for a in rows.activity]
    files.relationships_file("active_on.csv", "ACTIVE_ON", ("Block", "DataSlice"), active)
    steered = [(r["subspace_id"], r["slice_id"], r["properties"]) for rows in all_rows for r in rows.steering]
    files.relationships_file("steered_on.csv", "STEERED_ON", ("Subspace", "DataSlice"), steered)
    files.relationships_file("matches.csv", "MATCHES", ("Block", "Block"), _matches(all_rows))
    files.relationships_file("analogous.csv", "ANALOGOUS", ("Block", "Block"), _analogous(all_rows))


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
        files = _Files(folder)
        jobs = [(artifact, folder, i, top_k, min_attribution) for i, artifact in enumerate(paths)]
        all_rows: list[CheckpointRows] = []
        workers = max(1, min(os.cpu_count() or 1, len(jobs)))
        with ProcessPoolExecutor(max_workers=workers) as pool, files.edge_files() as append:
            for index, (rows, written) in enumerate(pool.map(_prepared, jobs)):  # in order, as they come
                if any(rows.checkpoint_id == earlier.checkpoint_id for earlier in all_rows):
                    raise UserError(
                        f"Two artifacts under {path} are checkpoint {rows.checkpoint_id}; import one of them."
                    )
                append(index)
                files.relationships += written
                all_rows.append(rows)
        write_import_files(files, all_rows)
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
