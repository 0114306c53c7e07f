"""A large first load: artifacts written straight into a new database by ``neo4j-admin database import``.

The loader writes through Cypher transactions (tens of thousands of relationships a second); the
offline importer of Neo4j writes store files directly, an order of magnitude faster, but only into
a database that it creates, with the server stopped. :func:`bulk_import` turns artifacts into the
importer's CSV files (the same rows as the loader's :func:`~circuit_atlas.loader.checkpoint_rows`,
with the published ids), runs it through the local runtime's jars
(``org.neo4j.server.startup.Neo4jAdminCommand``, arguments in an owner-only ``@FILE``), and
deletes the CSV files. The result is the graph the loader gives for the same artifacts loaded one
by one in step order; start the server and run ``circuit-atlas schema migrate`` to create the
constraints and indexes.
"""

from __future__ import annotations

import csv
import math
import shutil
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from circuit_atlas.ingest.artifact import find_artifacts, read_artifact, read_manifest
from circuit_atlas.ingest.channels import KIND_LABELS

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
    seconds: float


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
        """Writers of FEEDS and FLOWS_ON, a checkpoint at a time (10 M edges do not fit in memory
        as Python rows); their properties' types are the artifact's columns'."""
        handles, writers = [], {}
        for name, kind, names in (
            ("feeds.csv", "FEEDS", FEEDS_PROPERTIES),
            ("flows_on.csv", "FLOWS_ON", FLOWS_ON_PROPERTIES),
        ):
            handle = (self.folder / name).open("w", newline="")
            handles.append(handle)
            writer = csv.writer(handle)
            kinds = ["string" if n in ("role", "slice") else "double" for n in names]
            writer.writerow(
                [":START_ID(Subspace)", ":END_ID(Subspace)", ":TYPE", *(f"{n}:{k}" for n, k in zip(names, kinds))]
            )
            writers[kind] = (writer, kinds)
            self.arguments.append(f"--relationships={self.folder / name}")
        try:
            yield lambda rows: self._write_edges(rows, writers)
        finally:
            for handle in handles:
                handle.close()

    def _write_edges(self, rows: CheckpointRows, writers: dict) -> None:
        ids = rows.subspace_ids
        for kind, edges in (("FEEDS", rows.feeds), ("FLOWS_ON", rows.flows)):
            writer, kinds = writers[kind]
            writer.writerows([ids[r[0]], ids[r[1]], kind, *(_cell(v, k) for v, k in zip(r[2:], kinds))] for r in edges)
            self.relationships += len(edges)


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
    path: Path,
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
    paths = sorted(find_artifacts(Path(path)), key=order)
    for artifact_path in paths:  # every artifact whole before anything is written
        read_artifact(artifact_path)
    server.prepare_for_admin()
    folder = server.directory / "import" / "bulk"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    try:
        files = _Files(folder)
        all_rows: list[CheckpointRows] = []
        with files.edge_files() as write_edges:
            for artifact_path in paths:
                artifact = read_artifact(artifact_path)
                checkpoint_id = f"{artifact.manifest['model']['name']}@{artifact.manifest['checkpoint']['label']}"
                if any(rows.checkpoint_id == checkpoint_id for rows in all_rows):
                    raise UserError(f"Two artifacts under {path} are checkpoint {checkpoint_id}; import one of them.")
                rows = checkpoint_rows(artifact, top_k, min_attribution, node_checkpoint_id=checkpoint_id)
                write_edges(rows)
                rows.feeds, rows.flows = [], []  # written: only the nodes are kept for the files below
                all_rows.append(rows)
        write_import_files(files, all_rows)
        echo(f"Importing {len(all_rows)} checkpoints: {files.nodes:,} nodes, {files.relationships:,} relationships ...")
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
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    summary = ImportSummary(len(all_rows), files.nodes, files.relationships, time.perf_counter() - start)
    echo(
        f"Imported {summary.checkpoints} checkpoints ({summary.nodes:,} nodes, {summary.relationships:,} "
        f"relationships) in {summary.seconds:.1f} s. Start the server and run `circuit-atlas schema migrate`."
    )
    return summary
