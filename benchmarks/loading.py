"""Loading and querying at scale: loader throughput against a bare script, the bare rate by statement
shape and batch size, the bulk import, query cost on 1 and 100 checkpoints, and 10 million edges.

    python benchmarks/loading.py throughput [--repeats 5] [--heap 1g --pagecache 512m]
    python benchmarks/loading.py shapes     [--heap ... --pagecache ...]
    python benchmarks/loading.py bulk       [--checkpoints 20]
    python benchmarks/loading.py scale      [--checkpoints 152] [--probe-at 1 --probe-at 100]

Every subcommand starts its own local Neo4j (the project's runtime, ``--heap``/``--pagecache``) in a
temporary folder on free ports, so each figure is taken on a fresh server, and stops it at the end.
Checkpoints are synthetic and GPT-2-small-shaped (158 channels: embed, pos_embed, 12 layers of 12
heads and an MLP, unembed), written as artifacts by ``tests/synthetic_artifacts.py`` with every
edge a GPT-2 small artifact holds (32,936: each reader subspace fed by every earlier writer) and one
slice, so loading one with ``--top-k`` off writes 65,872 FEEDS and FLOWS_ON, the figure of issue 9.
Each checkpoint matches the previous one on every channel.

- ``throughput``: the loader (``load_artifact``: read, check, stage, publish) against a bare
  ``UNWIND $rows AS row MATCH (a:Subspace {id: row.source}), (b:Subspace {id: row.target}) CREATE
  (a)-[r:FEEDS]->(b) SET r = row.properties`` writing the same relationships between the same
  nodes, in batches of 5,000; relationships per second of each and their ratio (best and median).
- ``shapes``: the bare rate by statement shape and batch size.
- ``bulk``: ``neo4j-admin database import`` of N artifacts into a new database, and its rate.
- ``scale``: loads checkpoints one by one through the loader, timing ``circuit``, ``components`` and
  ``channel_timeline`` after the 1st and the 100th; prints the load time, the relationships, and the
  peak resident memory of Neo4j (its JVM) and of the loader (this process).

Benchmarks print figures; they are never tests.
"""

from __future__ import annotations

import random
import resource
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the synthetic-artifact builder
import synthetic_artifacts
from synthetic_artifacts import Checkpoint, Edge, SyntheticChannel

from circuit_atlas import queries
from circuit_atlas.connection import Neo4jSettings, open_driver
from circuit_atlas.ingest.artifact import read_artifact, write_artifact
from circuit_atlas.loader import (
    FEEDS_PROPERTIES,
    FLOWS_ON_PROPERTIES,
    CheckpointRows,
    checkpoint_rows,
    edge_rows,
    load_artifact,
)
from circuit_atlas.local_server import Distribution, LocalServer, ServerSettings, free_port
from circuit_atlas.queries import load_statements
from circuit_atlas.schema.migrations import migrate

LAYERS, HEADS = 12, 12  # GPT-2 small
MODEL = "gpt2-small-synthetic"
BARE = (
    "UNWIND $rows AS row MATCH (a:Subspace {id: row.source}), (b:Subspace {id: row.target}) "
    "CREATE (a)-[r:FEEDS]->(b) SET r = row.properties"
)


def gpt2_small(step: int, previous: int | None, seed: int) -> Checkpoint:
    """A GPT-2-small-shaped checkpoint: every writer feeds every reader role of a later stage."""
    rng = random.Random(seed)
    channels = [SyntheticChannel("embed", "embed", -1), SyntheticChannel("pos_embed", "embed", -1)]
    stage = {"embed": 0, "pos_embed": 0}
    for layer in range(LAYERS):
        for head in range(HEADS):
            channels.append(
                SyntheticChannel(f"L{layer}H{head}", "attn_head", layer, head, (rng.random(), rng.random(), 1.0))
            )
            stage[f"L{layer}H{head}"] = 2 * layer + 1
        channels.append(SyntheticChannel(f"L{layer}.mlp", "mlp", layer))
        stage[f"L{layer}.mlp"] = 2 * layer + 2
    channels.append(SyntheticChannel("unembed", "unembed", LAYERS))
    stage["unembed"] = 2 * LAYERS + 1
    edges = [
        Edge(writer.name, reader.name, role, rng.random(), rng.random(), rng.random())
        for reader in channels
        for role in synthetic_artifacts.ROLES[reader.kind]
        if role != "out"
        for writer in channels
        if writer.kind != "unembed" and stage[writer.name] < stage[reader.name]
    ]
    effects = {"s": {c.name: rng.random() for c in channels}}
    pairs = {(e.writer, e.reader) for e in edges}
    slice_attribution = {"s": {pair: rng.random() for pair in pairs}}
    return Checkpoint(
        MODEL,
        f"step-{step:06d}",
        step,
        channels,
        edges,
        effects,
        slice_attribution,
        f"step-{previous:06d}" if previous is not None else None,
        [(c.name, 0.9) for c in channels] if previous is not None else [],
    )


def write_checkpoints(root: Path, count: int) -> list[Path]:
    """``count`` GPT-2-small-shaped artifacts under ``root`` (steps 0, 1000, ...), each matched to the
    previous: the second is built like the first, the others are copies of it relabelled (the same
    scores under another step; building 32,936 edges anew for each would only cost time)."""
    paths = [synthetic_artifacts.write(gpt2_small(0, None, seed=0), root)]
    if count > 1:
        paths.append(synthetic_artifacts.write(gpt2_small(1000, 0, seed=1), root))
    template = read_artifact(paths[-1]) if count > 2 else None
    for i in range(2, count):
        manifest = {k: v for k, v in template.manifest.items() if k not in ("format_version", "files")}
        manifest["checkpoint"] = {**manifest["checkpoint"], "label": f"step-{1000 * i:06d}", "step": 1000 * i}
        tables = {
            **template.tables,
            "matches": template.tables["matches"].assign(previous_checkpoint=f"step-{1000 * (i - 1):06d}"),
        }
        paths.append(write_artifact(root / f"{MODEL}__{i:04d}", manifest, tables, template.bases()))
    return paths


@contextmanager
def running(server: LocalServer, heap: str, pagecache: str):
    """``server`` started on free ports and migrated; yields a driver; stops it at the end."""
    settings = server.start(
        ServerSettings(bolt_port=free_port(), http_port=free_port(), heap=heap, pagecache=pagecache),
        echo=lambda _: None,
    )
    driver = open_driver(Neo4jSettings(settings.bolt_uri, "neo4j", server.password()))
    try:
        migrate(driver, "neo4j")
        driver.execute_query("CALL db.awaitIndexes(600)")
        yield driver
    finally:
        driver.close()
        server.stop()


@contextmanager
def fresh_server(heap: str, pagecache: str):
    """A local Neo4j on free ports in a temporary folder, migrated; yields (driver, server)."""
    with tempfile.TemporaryDirectory(prefix="loading-benchmark-") as folder:
        server = LocalServer(Path(folder) / "neo4j", Distribution.in_cache())
        with running(server, heap, pagecache) as driver:
            yield driver, server


def peak_rss_mib(pid: int) -> float:
    """A process's peak resident memory (VmHWM) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def implicit(driver, statement: str, **params) -> None:
    """A statement that batches itself (``CALL ... IN TRANSACTIONS``), in an implicit transaction."""
    with driver.session(database="neo4j") as session:
        session.run(statement, params).consume()


def delete_relationships(driver, checkpoint_id: str) -> None:
    implicit(
        driver,
        "MATCH (:Subspace {checkpoint_id: $id})-[r:FEEDS|FLOWS_ON]->() "
        "CALL (r) { DELETE r } IN TRANSACTIONS OF 20000 ROWS",
        id=checkpoint_id,
    )


def delete_everything(driver) -> None:
    implicit(driver, "MATCH (n) WHERE NOT n:SchemaMigration CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF 2000 ROWS")


def published_rows(path: Path) -> CheckpointRows:
    """The loader's rows of the artifact at ``path``, with the published node ids."""
    artifact = read_artifact(path)
    checkpoint_id = f"{artifact.manifest['model']['name']}@{artifact.manifest['checkpoint']['label']}"
    return checkpoint_rows(artifact, top_k=None, node_checkpoint_id=checkpoint_id)


def bare_rows(rows: CheckpointRows) -> list[dict]:
    """FEEDS and FLOWS_ON as the classic bare script takes them: one map per relationship."""
    ids = rows.subspace_ids
    return [
        {"type": kind, "source": ids[r[0]], "target": ids[r[1]], "properties": dict(zip(names, r[2:]))}
        for kind, names, lists in (
            ("FEEDS", FEEDS_PROPERTIES, edge_rows(rows.feeds)),
            ("FLOWS_ON", FLOWS_ON_PROPERTIES, edge_rows(rows.flows)),
        )
        for r in lists
    ]


def run_batches(driver, statement: str, rows: list, batch: int, **params) -> float:
    """Seconds to write ``rows`` with ``statement`` in transactions of ``batch`` rows."""
    start = time.perf_counter()
    with driver.session(database="neo4j") as session:
        for first in range(0, len(rows), batch):
            chunk = rows[first : first + batch]
            session.execute_write(lambda tx, chunk=chunk: tx.run(statement, rows=chunk, **params).consume())
    return time.perf_counter() - start


def bare_by_type(driver, rows: list[dict], batch: int, statement: str = BARE) -> float:
    """The bare script: FEEDS rows, then FLOWS_ON rows, each type fixed in its statement."""
    feeds = [r for r in rows if r["type"] == "FEEDS"]
    flows = [r for r in rows if r["type"] == "FLOWS_ON"]
    return run_batches(driver, statement, feeds, batch) + run_batches(
        driver, statement.replace(":FEEDS", ":FLOWS_ON"), flows, batch
    )


@click.group()
def cli() -> None:
    """Loading and querying benchmarks (see the module docstring)."""


server_options = [
    click.option("--heap", default=ServerSettings.heap, show_default=True, help="Heap of the benchmark's server."),
    click.option(
        "--pagecache", default=ServerSettings.pagecache, show_default=True, help="Page cache of the benchmark's server."
    ),
]


def with_server_options(command):
    for option in reversed(server_options):
        command = option(command)
    return command


@cli.command()
@with_server_options
@click.option("--repeats", default=5, show_default=True, help="Timed repeats of each.")
@click.option("--batch", default=5000, show_default=True, help="Rows per transaction of the bare script.")
def throughput(heap: str, pagecache: str, repeats: int, batch: int) -> None:
    """Loader relationships/s divided by the bare script's, on one GPT-2-small-shaped artifact.
    The two alternate, each repeat on a catalog holding that checkpoint's nodes only; the best and
    the median of the repeats are printed (on a shared machine the best is the least disturbed)."""
    with tempfile.TemporaryDirectory() as root, fresh_server(heap, pagecache) as (driver, _):
        [path] = write_checkpoints(Path(root), 1)
        published = published_rows(path)
        checkpoint_id, rows = published.checkpoint_id, bare_rows(published)
        load_artifact(driver, "neo4j", path, top_k=None, echo=lambda _: None)  # warm-up: plans, JIT, caches
        loader_s, bare_s = [], []
        for _ in range(repeats):
            delete_everything(driver)
            start = time.perf_counter()
            load_artifact(driver, "neo4j", path, top_k=None, echo=lambda _: None)
            loader_s.append(time.perf_counter() - start)
            delete_relationships(driver, checkpoint_id)
            bare_s.append(bare_by_type(driver, rows, batch))
        click.echo(f"server heap {heap}, page cache {pagecache}; {len(rows):,} FEEDS and FLOWS_ON per load")
        for name, pick in (("best", min), ("median", statistics.median)):
            loader, bare = pick(loader_s), pick(bare_s)
            click.echo(
                f"{name:6s}: loader {loader:.2f} s ({len(rows) / loader:,.0f}/s), bare {bare:.2f} s "
                f"({len(rows) / bare:,.0f}/s), loader / bare {bare / loader:.2f}"
            )
        click.echo(f"runs: loader {_fmt(loader_s)}; bare {_fmt(bare_s)}")


SHAPES = {
    "classic: a map per row, SET r = row.properties": (BARE, "nested"),
    "the loader's: a list per row, ends in $ids": (None, "lists"),
    "grouped by writer (one seek per writer)": (
        "UNWIND $rows AS g MATCH (a:Subspace {id: g.source}) UNWIND g.edges AS row "
        "MATCH (b:Subspace {id: row.target}) CREATE (a)-[r:FEEDS]->(b) SET r = row.properties",
        "grouped",
    ),
    "by element id (no index seek)": (
        "UNWIND $rows AS row MATCH (a) WHERE elementId(a) = row.source MATCH (b) WHERE elementId(b) = row.target "
        "CREATE (a)-[r:FEEDS]->(b) SET r = row.properties",
        "element_id",
    ),
}


def shaped(rows: list[dict], shape: str, element_ids: dict[str, str]) -> list[dict]:
    """``rows`` in the form a statement shape takes."""
    if shape == "nested":
        return rows
    if shape == "element_id":
        return [{**r, "source": element_ids[r["source"]], "target": element_ids[r["target"]]} for r in rows]
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["source"], []).append({"target": r["target"], "properties": r["properties"]})
    return [{"source": source, "edges": edges} for source, edges in groups.items()]


@cli.command()
@with_server_options
@click.option("--batch", "batches", multiple=True, type=int, default=(1000, 5000, 20000), show_default=True)
@click.option("--repeats", default=2, show_default=True, help="Timed repeats; the best is reported.")
def shapes(heap: str, pagecache: str, batches: tuple[int, ...], repeats: int) -> None:
    """The bare rate by statement shape and rows per transaction, on one GPT-2-small-shaped artifact.
    (A grouped row holds one writer's edges, so its batches count writers.)"""
    with tempfile.TemporaryDirectory() as root, fresh_server(heap, pagecache) as (driver, _):
        [path] = write_checkpoints(Path(root), 1)
        published = published_rows(path)
        checkpoint_id, rows = published.checkpoint_id, bare_rows(published)
        load_artifact(driver, "neo4j", path, top_k=None, echo=lambda _: None)
        element_ids = {
            r["id"]: r["e"]
            for r in driver.execute_query(
                "MATCH (s:Subspace {checkpoint_id: $id}) RETURN s.id AS id, elementId(s) AS e", id=checkpoint_id
            ).records
        }
        click.echo(f"server heap {heap}, page cache {pagecache}; {len(rows):,} FEEDS and FLOWS_ON")
        for name, (statement, shape) in SHAPES.items():
            for batch in batches:
                seconds = []
                for _ in range(repeats):
                    delete_relationships(driver, checkpoint_id)
                    if shape == "lists":
                        seconds.append(loader_statements(driver, published, batch))
                        continue
                    seconds.append(
                        sum(
                            run_batches(
                                driver,
                                statement.replace(":FEEDS", f":{kind}"),
                                shaped([r for r in rows if r["type"] == kind], shape, element_ids),
                                batch if shape != "grouped" else max(1, batch // 75),
                            )
                            for kind in ("FEEDS", "FLOWS_ON")
                        )
                    )
                click.echo(f"{name:42s} batch {batch:6,d}: {len(rows) / min(seconds):8,.0f} relationships/s")


def loader_statements(driver, rows: CheckpointRows, batch: int) -> float:
    """Seconds the loader's own relationship statements take to write ``rows``' FEEDS and FLOWS_ON."""
    statements = load_statements()
    return run_batches(
        driver, statements["create_feeds"].text, edge_rows(rows.feeds), batch, ids=rows.subspace_ids
    ) + run_batches(driver, statements["create_flows_on"].text, edge_rows(rows.flows), batch, ids=rows.subspace_ids)


SCALE_QUERIES = {
    "circuit": {"slice": "s", "min_effect": 0.5, "min_attribution": 0.5},
    "components": {"slice": None, "by": "weight", "min_share": 0.9, "min_effect": None},
    "channel_timeline": {"channel": "L5H5"},
}


def db_hits(plan: dict) -> int:
    """Database hits of a profiled plan and its children: the work a query does, whatever the load."""
    return plan.get("dbHits", 0) + sum(db_hits(child) for child in plan.get("children", []))


def time_queries(driver, checkpoint_id: str, repeats: int) -> dict[str, tuple[float, int, int]]:
    """Median seconds (after a warm-up run), rows and profiled database hits of each query of
    :data:`SCALE_QUERIES`."""
    library, timings = queries.library(), {}
    for name, params in SCALE_QUERIES.items():
        query, params = library[name], {"checkpoint": checkpoint_id, **params}
        rows = queries.run(driver, "neo4j", query, params)
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            rows = queries.run(driver, "neo4j", query, params)
            seconds.append(time.perf_counter() - start)
        with driver.session(database="neo4j") as session:
            result = session.run("PROFILE " + query.text, params)
            list(result)  # the server gives profile statistics of a result read to its end
            profile = result.consume().profile
        timings[name] = (statistics.median(seconds), len(rows), db_hits(profile))
    return timings


@cli.command()
@with_server_options
@click.option("--checkpoints", default=152, show_default=True, help="How many (152 x 65,872 = 10.0 M edges).")
@click.option("--probe-at", "probes", multiple=True, type=int, default=(1, 100), show_default=True)
@click.option("--repeats", default=5, show_default=True, help="Timed runs per query; the median is reported.")
def scale(heap: str, pagecache: str, checkpoints: int, probes: tuple[int, ...], repeats: int) -> None:
    """Load checkpoints one by one; query cost after some of them; time and peak memory."""
    with tempfile.TemporaryDirectory() as root, fresh_server(heap, pagecache) as (driver, server):
        start = time.perf_counter()
        paths = write_checkpoints(Path(root), checkpoints)
        click.echo(f"wrote {len(paths)} artifacts in {time.perf_counter() - start:.0f} s")
        first = f"{MODEL}@step-000000"
        loading_s, relationships, timings = 0.0, 0, {}
        for i, path in enumerate(paths, start=1):
            begin = time.perf_counter()
            summary = load_artifact(driver, "neo4j", path, top_k=None, echo=lambda _: None)
            loading_s += time.perf_counter() - begin
            relationships += summary.edges + summary.slice_edges
            if i in probes or i == len(paths):
                timings[i] = time_queries(driver, first, repeats)
                click.echo(
                    f"after {i} checkpoints ({relationships:,} FEEDS and FLOWS_ON, loaded in {loading_s:.0f} s, "
                    f"{relationships / loading_s:,.0f}/s): "
                    + ", ".join(f"{n} {t * 1000:.0f} ms ({r} rows, {h:,} hits)" for n, (t, r, h) in timings[i].items())
                )
        matches = driver.execute_query("MATCH ()-[m:MATCHES]->() RETURN count(m) AS n").records[0]["n"]
        click.echo(f"server heap {heap}, page cache {pagecache}; MATCHES {matches:,}")
        click.echo(
            f"peak resident memory: Neo4j {peak_rss_mib(server.pid()):,.0f} MiB, loader "
            f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB"
        )
        store = sum(f.stat().st_size for f in (server.directory / "data").rglob("*") if f.is_file())
        click.echo(f"store on disk {store / 2**30:.2f} GiB")
        low, high = min(timings), max(t for t in timings if t <= max(probes)) if len(timings) > 1 else min(timings)
        for name in SCALE_QUERIES:
            (a, ra, ha), (b, rb, hb) = timings[low][name], timings[high][name]
            click.echo(
                f"{name}: {b / a:.2f}x from {low} to {high} checkpoints ({ra} -> {rb} rows, {ha:,} -> {hb:,} db hits)"
            )


@cli.command()
@click.option("--checkpoints", default=20, show_default=True, help="Artifacts imported at once.")
def bulk(checkpoints: int) -> None:
    """neo4j-admin database import of GPT-2-small-shaped artifacts into a new database: its rate."""
    from circuit_atlas.bulk_import import bulk_import

    with tempfile.TemporaryDirectory() as root:
        write_checkpoints(Path(root) / "artifacts", checkpoints)
        server = LocalServer(Path(root) / "neo4j", Distribution.in_cache())
        summary = bulk_import(server, Path(root) / "artifacts", top_k=None, echo=lambda _: None)
        rate, importer = summary.relationships / summary.seconds, summary.relationships / summary.importer_seconds
        click.echo(
            f"{summary.checkpoints} checkpoints, {summary.nodes:,} nodes, {summary.relationships:,} relationships "
            f"in {summary.seconds:.1f} s (artifacts read, CSV written, neo4j-admin run): {rate:,.0f} relationships/s; "
            f"neo4j-admin alone on the same files {summary.importer_seconds:.1f} s, {importer:,.0f} relationships/s; "
            f"end to end / importer alone: {rate / importer:.2f}"
        )


@contextmanager
def imported_server(artifacts: Path, folder: Path, heap: str, pagecache: str):
    """A local Neo4j whose database is the bulk import of ``artifacts``, migrated; yields (driver,
    server, import summary, peak resident MiB of the importer)."""
    from circuit_atlas.bulk_import import bulk_import

    server = LocalServer(folder, Distribution.in_cache())
    summary = bulk_import(server, artifacts, top_k=None, replace=True, echo=lambda _: None)
    importer_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    with running(server, heap, pagecache) as driver:
        yield driver, server, summary, importer_mib


@cli.command("scale-bulk")
@with_server_options
@click.option("--checkpoints", default=152, show_default=True, help="How many (152 x 65,872 = 10.0 M edges).")
@click.option("--repeats", default=5, show_default=True, help="Timed runs per query; the median is reported.")
def scale_bulk(heap: str, pagecache: str, checkpoints: int, repeats: int) -> None:
    """The catalogs of ``scale`` built by the bulk import (the loader's rate makes 10 M edges an
    hour's load on a shared 2-core machine): query cost on 1 checkpoint and on all of them, the
    import's time, and the peak memory of the importer and of Neo4j while querying."""
    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        start = time.perf_counter()
        paths = write_checkpoints(root / "all", checkpoints)
        (root / "one").mkdir()
        paths[0].rename(root / "one" / paths[0].name)
        click.echo(f"wrote {len(paths)} artifacts in {time.perf_counter() - start:.0f} s")
        timings = {}
        with imported_server(root / "one", root / "neo4j-one", heap, pagecache) as (driver, _, summary, _):
            timings[1] = time_queries(driver, f"{MODEL}@step-000000", repeats)
        (root / "one" / paths[0].name).rename(paths[0])
        with imported_server(root / "all", root / "neo4j-all", heap, pagecache) as (driver, server, summary, mib):
            click.echo(
                f"bulk import of {summary.checkpoints} checkpoints: {summary.nodes:,} nodes, "
                f"{summary.relationships:,} relationships in {summary.seconds:.0f} s "
                f"({summary.relationships / summary.seconds:,.0f}/s); importer peak {mib:,.0f} MiB"
            )
            timings[checkpoints] = time_queries(driver, f"{MODEL}@step-000000", repeats)
            neo4j_mib = peak_rss_mib(server.pid())
            store = sum(f.stat().st_size for f in (server.directory / "data").rglob("*") if f.is_file())
        click.echo(f"server heap {heap}, page cache {pagecache}; store on disk {store / 2**30:.2f} GiB")
        click.echo(f"peak resident memory: Neo4j {neo4j_mib:,.0f} MiB while querying")
        for name in SCALE_QUERIES:
            (a, ra, ha), (b, rb, hb) = timings[1][name], timings[checkpoints][name]
            click.echo(
                f"{name}: {a * 1000:.0f} ms on 1 checkpoint ({ra} rows, {ha:,} db hits), {b * 1000:.0f} ms on "
                f"{checkpoints} ({rb} rows, {hb:,} db hits): {b / a:.2f}x time, {hb / ha:.2f}x db hits"
            )


def _fmt(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


if __name__ == "__main__":
    cli()
