"""Loads that run at once, again, out of order, fail half way or are killed, against the real server:
each ends in exactly the graph one sequential load gives (MATCHES and ANALOGOUS included), and no failure ever
takes away the published version of a checkpoint."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import neo4j
import pytest
from empty_database import empty_database
from snapshots import count, graph_snapshot
from synthetic_artifacts import Checkpoint, Edge, SyntheticChannel, write

from circuit_atlas import queries
from circuit_atlas.ingest.artifact import read_artifact
from circuit_atlas.loader import checkpoint_rows, load_artifact, write_checkpoint
from circuit_atlas.schema.migrations import migrate

STEPS = {"t": (500, 1000, 1500, 2000, 2500), "u": (500, 1000)}  # by model: its ANALOGOUS links join t's
NAMES = ["embed", *(f"L{layer}H{head}" for layer in range(2) for head in range(2)), "unembed"]
EXPECTED_MATCHES = sum(len(s) - 1 for s in STEPS.values()) * len(NAMES)  # every later checkpoint's blocks matched
SLOW_LOADER = str(Path(__file__).resolve().parents[1] / "slow_loader.py")


def checkpoint(model: str, step: int, previous: int | None, heads: int = 2, layers: int = 2) -> Checkpoint:
    """A checkpoint of ``model`` whose every block matches the same block of ``previous``."""
    rng = random.Random(f"{model}{step}")

    def prints() -> tuple[float, ...]:
        return (rng.random(), rng.random(), rng.random())

    channels = [SyntheticChannel("embed", "embed", -1, fingerprint=prints())]
    channels += [
        SyntheticChannel(f"L{l}H{h}", "attn_head", l, h, fingerprint=prints())
        for l in range(layers)
        for h in range(heads)
    ]
    channels.append(SyntheticChannel("unembed", "unembed", layers, fingerprint=prints()))
    edges = [
        Edge(w.name, r.name, role, rng.random(), rng.random(), rng.random())
        for i, r in enumerate(channels)
        for w in channels[:i]
        if w.kind != "unembed" and r.kind != "embed" and w.layer < r.layer
        for role in (("in",) if r.kind == "unembed" else ("q", "k", "v"))
    ]
    effects = {"s": {c.name: rng.random() for c in channels}}
    slice_attribution = {"s": {(e.writer, e.reader): rng.random() for e in edges}}
    matches = [(c.name, 0.9) for c in channels] if previous else []
    label = f"step-{step:05d}"
    previous_label = f"step-{previous:05d}" if previous else None
    return Checkpoint(model, label, step, channels, edges, effects, slice_attribution, previous_label, matches)


def write_all(root: Path) -> list[Path]:
    """The artifacts of every checkpoint of :data:`STEPS` under ``root``, by model and step."""
    return [
        write(checkpoint(model, step, steps[i - 1] if i else None), root)
        for model, steps in STEPS.items()
        for i, step in enumerate(steps)
    ]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> list[Path]:
    return write_all(tmp_path_factory.mktemp("timeline"))


@pytest.fixture(scope="module")
def sequential(artifacts, neo4j_driver, neo4j_settings, tmp_path_factory):
    """The graph of one sequential load of every checkpoint in step order (computed once)."""
    db = neo4j_settings.database
    _load_one_by_one(neo4j_driver, db, artifacts)
    assert count(neo4j_driver, db, "()-[:MATCHES]->()") == EXPECTED_MATCHES
    assert count(neo4j_driver, db, "()-[:ANALOGOUS]->()") > 0
    return graph_snapshot(neo4j_driver, db)


def _empty(driver, database: str) -> None:
    """A migrated catalog with nothing in it, whatever the test before left (a newer schema too)."""
    empty_database(driver, database)
    migrate(driver, database)


def _load_one_by_one(driver, database: str, paths: list[Path]) -> None:
    """Empty the catalog, then load ``paths`` one after the other."""
    _empty(driver, database)
    for path in paths:
        load_artifact(driver, database, path, echo=lambda _: None)


def _load_all_at_once(driver, database: str, paths: list[Path], threads: int) -> list[BaseException]:
    """Load ``paths`` from ``threads`` threads at once (each takes the next path from a shared queue)."""
    queue, errors, start = list(paths), [], threading.Barrier(threads)
    lock = threading.Lock()

    def worker():
        start.wait()
        while True:
            with lock:
                if not queue:
                    return
                path = queue.pop()
            try:
                load_artifact(driver, database, path, echo=lambda _: None)
            except BaseException as error:  # reported by the test
                errors.append(error)

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return errors


@pytest.mark.parametrize("trial", range(3))
def test_parallel_loads_in_any_order_give_the_sequential_graph(
    trial, artifacts, sequential, neo4j_driver, neo4j_settings
):
    db = neo4j_settings.database
    _empty(neo4j_driver, db)
    order = random.Random(trial).sample(artifacts, len(artifacts))
    assert _load_all_at_once(neo4j_driver, db, order, threads=len(order)) == []
    assert count(neo4j_driver, db, "()-[:MATCHES]->()") == EXPECTED_MATCHES
    assert graph_snapshot(neo4j_driver, db) == sequential


def test_every_checkpoint_loaded_twice_at_once_gives_the_sequential_graph(
    artifacts, sequential, neo4j_driver, neo4j_settings
):
    db = neo4j_settings.database
    _empty(neo4j_driver, db)
    paths = random.Random(7).sample(artifacts * 2, 2 * len(artifacts))
    assert _load_all_at_once(neo4j_driver, db, paths, threads=4) == []
    assert graph_snapshot(neo4j_driver, db) == sequential


def test_reloading_a_checkpoint_keeps_its_neighbours_matches(artifacts, sequential, neo4j_driver, neo4j_settings):
    """The issue's case: steps loaded in order, then an inner step loaded again (and the first, and the last)."""
    db = neo4j_settings.database
    _load_one_by_one(neo4j_driver, db, artifacts)
    for again in (artifacts[1], artifacts[0], artifacts[-1]):
        load_artifact(neo4j_driver, db, again, echo=lambda _: None)
        assert count(neo4j_driver, db, "()-[:MATCHES]->()") == EXPECTED_MATCHES
    assert graph_snapshot(neo4j_driver, db) == sequential


def test_a_later_checkpoint_loaded_first_is_linked_when_its_previous_arrives(
    artifacts, sequential, neo4j_driver, neo4j_settings
):
    db = neo4j_settings.database
    _load_one_by_one(neo4j_driver, db, artifacts[::-1])
    assert graph_snapshot(neo4j_driver, db) == sequential


def test_a_reload_that_fails_half_way_leaves_the_published_version(artifacts, neo4j_driver, neo4j_settings):
    """The new version's last activity row carries a map value Neo4j cannot store: its write fails
    after blocks, subspaces and edges were staged, and the catalog is exactly what it was."""
    db = neo4j_settings.database
    _load_one_by_one(neo4j_driver, db, artifacts[:3])
    before = graph_snapshot(neo4j_driver, db)
    rows = checkpoint_rows(read_artifact(artifacts[1]))
    last = rows.activity[-1]
    rows.activity[-1] = {**last, "properties": {**last["properties"], "ablation": {"not": "storable"}}}
    with pytest.raises(neo4j.exceptions.CypherTypeError):
        write_checkpoint(neo4j_driver, db, rows)
    assert graph_snapshot(neo4j_driver, db) == before


def test_a_load_killed_half_way_leaves_the_published_version_and_the_next_load_collects_it(
    artifacts, sequential, neo4j_driver, neo4j_settings, cli_env
):
    db = neo4j_settings.database
    _load_one_by_one(neo4j_driver, db, artifacts)
    process = subprocess.Popen(
        [sys.executable, SLOW_LOADER, "1.0", "load", str(artifacts[2])],
        env={**os.environ, **cli_env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    staged = "(:Checkpoint {status: 'staging'})-[:HAS_BLOCK]->(:Block)-[:HAS_SUBSPACE]->(:Subspace)-[:FEEDS]->()"
    deadline = time.monotonic() + 120
    while count(neo4j_driver, db, staged) < 20 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert count(neo4j_driver, db, staged) >= 20, "the load was killed while writing edges"
    assert count(neo4j_driver, db, "(:Checkpoint {status: 'staging'})") == 1
    nodes, relationships = graph_snapshot(neo4j_driver, db)
    assert [line for line in nodes if "staging" not in line] == sequential[0]
    assert [line for line in relationships if "staging" not in line] == sequential[1]

    load_artifact(neo4j_driver, db, artifacts[2], echo=lambda _: None)
    assert count(neo4j_driver, db, "(:Checkpoint {status: 'staging'})") == 0
    assert graph_snapshot(neo4j_driver, db) == sequential


@pytest.fixture(scope="module")
def second_version(tmp_path_factory) -> Path:
    """t@step-01000 once more, with 3 heads a layer where the first version has 2 (other blocks and edges)."""
    return write(checkpoint("t", 1000, 500, heads=3), tmp_path_factory.mktemp("second_version"))


def _blocks_and_edges(tx, checkpoint_id: str) -> tuple[int, int]:
    """Two reads a query could make one after the other: the checkpoint's blocks, then its edges."""
    blocks = tx.run(
        "MATCH (:Checkpoint {id: $c})-[:HAS_BLOCK]->(b:Block) RETURN count(b) AS n", c=checkpoint_id
    ).single()["n"]
    edges = tx.run(
        "MATCH (:Checkpoint {id: $c})-[:HAS_BLOCK]->(:Block)-[:HAS_SUBSPACE]->()-[f:FEEDS]->() RETURN count(f) AS n",
        c=checkpoint_id,
    ).single()["n"]
    return blocks, edges


def test_a_read_transaction_sees_the_version_it_started_with_while_that_checkpoint_is_reloaded(
    artifacts, second_version, neo4j_driver, neo4j_settings
):
    """A reload that publishes between two reads of one transaction waits for it to end (reads take the
    publish lock shared, the publish takes it exclusively); under Neo4j's read-committed isolation alone
    the second read would see the new version."""
    db, checkpoint_id = neo4j_settings.database, "t@step-01000"
    _load_one_by_one(neo4j_driver, db, artifacts[:2])
    old = queries.read_transaction(neo4j_driver, db, lambda tx: _blocks_and_edges(tx, checkpoint_id))
    reload = threading.Thread(target=load_artifact, args=(neo4j_driver, db, second_version), kwargs={"echo": print})
    timeline = {}

    def two_reads_with_a_reload_between(tx):
        first = _blocks_and_edges(tx, checkpoint_id)
        reload.start()
        reload.join(timeout=5)  # a load of this size publishes in well under a second when nothing holds it
        timeline["reload alive after 5 s"] = reload.is_alive()
        return first, _blocks_and_edges(tx, checkpoint_id)

    first, second = queries.read_transaction(neo4j_driver, db, two_reads_with_a_reload_between)
    reload.join()
    assert first == second == old
    assert timeline["reload alive after 5 s"], "the publish did not wait for the read transaction"
    new = queries.read_transaction(neo4j_driver, db, lambda tx: _blocks_and_edges(tx, checkpoint_id))
    assert new[0] == len(NAMES) + 2 and new != old


def _answers(driver, database: str, checkpoint_id: str) -> tuple:
    """The library's answers that a partly replaced checkpoint got wrong, each from its own query: every
    block with its ranks, every edge, and the components."""
    library = queries.library()

    def rows(name: str, **params) -> list[str]:
        result = queries.run(driver, database, library[name], {"checkpoint": checkpoint_id, **params})
        return sorted(repr(sorted(row.items())) for row in result)

    return (
        rows("checkpoint_channels"),
        rows("top_edges", by="weight", limit=1000),
        rows("components", slice=None, by="weight", min_share=0.5, min_effect=None),
    )


def test_queries_during_reloads_see_the_old_or_the_new_checkpoint(
    artifacts, second_version, neo4j_driver, neo4j_settings
):
    """The issue's trial: queries run while one checkpoint is reloaded again and again, its two versions
    in turn; every answer is the whole of one version."""
    db, checkpoint_id = neo4j_settings.database, "t@step-01000"
    _load_one_by_one(neo4j_driver, db, [artifacts[0], second_version])
    answer_second = _answers(neo4j_driver, db, checkpoint_id)
    load_artifact(neo4j_driver, db, artifacts[1], echo=lambda _: None)
    answer_first = _answers(neo4j_driver, db, checkpoint_id)
    assert answer_first != answer_second
    done, errors = threading.Event(), []

    def reload_in_turn():
        try:
            for i in range(8):
                load_artifact(neo4j_driver, db, (second_version, artifacts[1])[i % 2], echo=lambda _: None)
        except BaseException as error:  # reported by the test
            errors.append(error)
        finally:
            done.set()

    reloads = threading.Thread(target=reload_in_turn)
    reloads.start()
    answers = []
    while not done.is_set():
        answers.append(_answers(neo4j_driver, db, checkpoint_id))
    reloads.join()
    assert errors == []
    assert len(answers) >= 8
    # each query ran in its own transaction: each answer is one version's (the three may differ)
    wrong = [
        (i, answer[i])
        for answer in answers
        for i in range(len(answer))
        if answer[i] not in (answer_first[i], answer_second[i])
    ]
    assert wrong == [], f"{len(wrong)} of {3 * len(answers)} answers mixed two versions"


def test_a_load_killed_inside_its_publish_transaction_leaves_the_published_version(
    artifacts, second_version, sequential, neo4j_driver, neo4j_settings, cli_env
):
    """Killed after the publish transaction deleted the old blocks and adopted the new ones, before it
    commits: the server rolls it back, the catalog holds the old version (the staged one waits for the
    next load to collect it), and that next load publishes the new version whole."""
    db = neo4j_settings.database
    _load_one_by_one(neo4j_driver, db, artifacts)
    process = subprocess.Popen(
        [sys.executable, SLOW_LOADER, "0", "--pause-in-publish", "load", str(second_version)],
        env={**os.environ, **cli_env},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout.readline().strip() == "publishing", "the load did not reach its publish transaction"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    process.stdout.close()
    nodes, relationships = graph_snapshot(neo4j_driver, db)
    assert [line for line in nodes if "staging" not in line] == sequential[0]
    assert [line for line in relationships if "staging" not in line] == sequential[1]

    load_artifact(neo4j_driver, db, second_version, echo=lambda _: None)
    assert count(neo4j_driver, db, "(:Checkpoint {status: 'staging'})") == 0
    assert count(neo4j_driver, db, "(:Checkpoint {id: 't@step-01000'})-[:HAS_BLOCK]->()") == len(NAMES) + 2
