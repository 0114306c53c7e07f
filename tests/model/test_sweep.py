"""Sweeps on Ray (ingest/sweep.py) on a local Ray runtime with 2 workers: a 4-checkpoint sweep of the
reference induction series gives the sequential run's artifacts, file for file (the same SHA-256 of
every table and of the bases) and, loaded as its tasks finish, the catalog of loading the sequential
run; a worker killed mid-task by its pid is retried to the same result; a checkpoint that fails on
bad input fails the sweep with its own line and leaves no artifact of it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
from empty_database import empty_database
from snapshots import graph_snapshot

from circuit_atlas.api import Catalog
from circuit_atlas.errors import UserError
from circuit_atlas.ingest.artifact import read_manifest
from circuit_atlas.ingest.config import IngestConfig
from circuit_atlas.ingest.pipeline import ingest
from circuit_atlas.ingest.sweep import RUNNING, RaySweep

CONFIG = IngestConfig(n_seq=32, examples=2)
SLICES = ["repeated", "random"]
PLACE_AND_TIME = {"basis_uri", "started", "finished"}  # a Subspace's bases folder, an IngestRun's clock


@pytest.fixture(scope="module")
def ray_runtime():
    """A local Ray runtime of 2 CPUs (two checkpoint tasks at a time), for this module."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def series(reference_checkpoints) -> list[str]:
    """4 checkpoints of the induction series, before, during and after the induction heads form."""
    return [str(reference_checkpoints[i]) for i in (0, 2, 4, -1)]


@pytest.fixture(scope="module")
def sequential(series, tmp_path_factory) -> list[Path]:
    return ingest(series[-1], series, SLICES, tmp_path_factory.mktemp("sequential"), CONFIG, echo=lambda _: None)


def files(paths: list[Path]) -> list[dict[str, str]]:
    """Each artifact's files and their SHA-256 (every table and the bases)."""
    return [read_manifest(path)["files"] for path in paths]


def test_a_sweep_on_two_workers_gives_the_sequential_artifacts_in_step_order(ray_runtime, series, sequential, tmp_path):
    published = []
    paths = ingest(
        series[-1], series, SLICES, tmp_path, CONFIG, echo=lambda _: None, on_artifact=published.append, ray=RaySweep()
    )
    assert published == paths and [p.name for p in paths] == [p.name for p in sequential]
    assert files(paths) == files(sequential)
    assert not any((tmp_path / RUNNING).iterdir())  # every task's marker is gone


@pytest.mark.neo4j
def test_a_sweep_loaded_as_it_goes_gives_the_catalog_of_the_sequential_run(
    ray_runtime, series, sequential, empty_catalog, neo4j_settings, tmp_path
):
    """``Catalog.ingest(..., ray=...)`` publishes each artifact as the driver places it, in step order:
    the catalog (every node, relationship and property, MATCHES included) is the sequential run's
    artifacts loaded one by one, but for where the bases are stored and when each run started and
    finished."""

    def where_and_when_left_out(snapshot):
        nodes, relationships = snapshot
        parsed = (json.loads(line) for line in nodes)
        kept = (json.dumps([labels, {k: v for k, v in p.items() if k not in PLACE_AND_TIME}]) for labels, p in parsed)
        return sorted(kept), relationships

    with Catalog(neo4j_settings) as catalog:
        catalog.migrate()
        catalog.ingest(series[-1], SLICES, tmp_path, CONFIG, checkpoints=series, echo=lambda _: None, ray=RaySweep())
        swept = where_and_when_left_out(graph_snapshot(catalog.driver, catalog.database))
        empty_database(catalog.driver, catalog.database)
        catalog.migrate()
        for path in sequential:
            catalog.load(path, echo=lambda _: None)
        loaded = where_and_when_left_out(graph_snapshot(catalog.driver, catalog.database))
    assert any('"MATCHES"' in line for line in loaded[1])
    assert swept == loaded


def test_a_worker_killed_mid_task_is_retried_to_the_same_result(ray_runtime, series, sequential, tmp_path):
    marker = tmp_path / RUNNING / f"{Path(series[-1]).name}.running"
    outcome: dict = {}

    def sweep() -> None:
        try:
            outcome["paths"] = ingest(series[-1], series, SLICES, tmp_path, CONFIG, echo=lambda _: None, ray=RaySweep())
        except BaseException as error:  # reported by the test below
            outcome["error"] = error

    thread = threading.Thread(target=sweep)
    thread.start()
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and thread.is_alive() and time.monotonic() < deadline:
        if marker.exists() and marker.read_text().strip():
            killed = int(marker.read_text().split(":")[-1])
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.02)
    thread.join(timeout=600)
    assert killed is not None, "the last checkpoint's task was never seen running"
    assert "error" not in outcome, outcome.get("error")
    assert files(outcome["paths"]) == files(sequential)


def test_a_checkpoint_with_nan_weights_fails_the_sweep_with_its_line_and_leaves_no_artifact_of_it(
    ray_runtime, series, tmp_path
):
    folder = tmp_path / "series"
    copies = [shutil.copytree(path, folder / Path(path).name) for path in series]
    weights = Path(copies[1]) / "model.safetensors"
    from safetensors.torch import load_file, save_file

    state = load_file(weights)
    name = next(k for k in state if k.endswith("attention.dense.weight"))
    state[name][0, 0] = torch.nan
    save_file(state, weights, metadata={"format": "pt"})
    with pytest.raises(UserError) as raised:
        ingest(
            str(copies[-1]),
            [str(c) for c in copies],
            SLICES,
            tmp_path / "out",
            CONFIG,
            echo=lambda _: None,
            ray=RaySweep(),
        )
    assert "\n" not in str(raised.value) and "NaN" in str(raised.value), raised.value
    written = [p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".sweep")]
    assert not any(Path(copies[1]).name in name for name in written), written
    assert not any(".partial" in name for name in written), written


def test_a_sweep_that_starts_ray_stops_it_at_its_end(series, tmp_path):
    """Run in a process of its own (this module's other tests share one runtime): the sweep starts a
    local runtime, and none is left once it returns."""
    import subprocess
    import sys

    script = (
        "import ray, sys\n"
        "from pathlib import Path\n"
        "from circuit_atlas.ingest.config import IngestConfig\n"
        "from circuit_atlas.ingest.pipeline import ingest\n"
        "from circuit_atlas.ingest.sweep import RaySweep\n"
        "series = sys.argv[1:]\n"
        f"ingest(series[-1], series, ['random'], Path({str(tmp_path)!r}), IngestConfig(n_seq=16), "
        "echo=lambda _: None, ray=RaySweep())\n"
        "print('still initialized' if ray.is_initialized() else 'stopped')\n"
    )
    done = subprocess.run([sys.executable, "-c", script, *series[-2:]], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "stopped"
