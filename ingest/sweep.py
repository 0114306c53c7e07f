"""Sweeps on Ray: a run's checkpoints computed in parallel, one Ray task each, and placed in their
series in step order here, on the driver.

A checkpoint's heavy part (:func:`.pipeline.compute_checkpoint`: statistics, compression, scores,
patching, steering) needs its own model only; its place in the series (lineages, similarities to the
series' ends, matches with the checkpoint before) needs the checkpoints before it and costs little.
So each checkpoint is one Ray task with the resource request of :class:`RaySweep` (the series' last
checkpoint's rank search first, when the series compresses at its fraction), and the driver places
and writes each artifact as soon as the ones before it are written: the artifacts are those of a
sequential run (the same computation, at the driver's number of torch threads), and with ``--load``
each is published in step order, so its MATCHES are the sequential ones.

Without an address Ray starts a local runtime on this machine for the sweep and stops it at its end
(or uses the one this process already joined, and leaves it); with one (``HOST:6379`` or
``ray://HOST:10001``), the driver joins that cluster for the sweep, whose workers must see the same
model and data paths and have this package installed. A worker killed mid-task is retried
(``retries`` times) and computes the same result again; a task that fails on bad input fails the
sweep with its own one-line error, and nothing is left half-written (artifacts are written by the
driver, each whole or not at all). The other tasks are not cancelled: a runtime the sweep started
stops with it, and on a cluster they finish and are dropped (Ray 2.60 aborts the driver when a
cancellation races with a task's end, which a test run hit). While a task runs, the host and
pid of its worker are in ``<out>/.sweep/<label>.running``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from circuit_atlas.errors import UserError

from .checkpoints import CheckpointSource
from .config import IngestConfig
from .model_adapter import load_model
from .pipeline import ComputedCheckpoint, Series, compute_checkpoint, search_series

#: Where a running task names its worker, under the sweep's output folder.
RUNNING = ".sweep"


@dataclass(frozen=True)
class RaySweep:
    """Where and with what each checkpoint's task runs: the cluster (None: a local runtime), and per
    task the CPUs, GPUs and memory (GiB; None: no reservation) Ray reserves, how often a task whose
    worker died is retried, and its torch threads (None: the driver's, so that the artifacts are
    bitwise the driver's own sequential run's; other counts round the last bits of some scores
    differently)."""

    address: str | None = None
    cpus: float = 1.0
    gpus: float = 0.0
    memory: float | None = None
    retries: int = 3
    threads: int | None = None

    def options(self) -> dict:
        memory = {} if self.memory is None else {"memory": int(self.memory * 2**30)}
        return {"num_cpus": self.cpus, "num_gpus": self.gpus, "max_retries": self.retries, **memory}


def _worker_device(device: str) -> str:
    """``auto``: this worker's GPU when Ray gave it one, else its CPU."""
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def _search_task(checkpoint: CheckpointSource, data_args, config, device, threads) -> tuple[float, dict[str, Tensor]]:
    torch.set_num_threads(threads)
    model = load_model(checkpoint.source, checkpoint.revision, _worker_device(device))
    return search_series(model, data_args, config, checkpoint.label, progress=False)


def _compute_task(
    checkpoint: CheckpointSource, data_args, config, device, name, series, threads, running: Path
) -> ComputedCheckpoint:
    torch.set_num_threads(threads)
    marker = running / f"{checkpoint.label}.running"
    try:
        running.mkdir(parents=True, exist_ok=True)
        marker.write_text(f"{socket.gethostname()}:{os.getpid()}\n")
    except OSError:
        marker = None  # type: ignore[assignment]  # a worker that cannot see the folder still computes
    try:
        model = load_model(checkpoint.source, checkpoint.revision, _worker_device(device))
        return compute_checkpoint(model, checkpoint, data_args, config, name, progress=False, series=series)
    finally:
        if marker is not None:
            marker.unlink(missing_ok=True)


class RayRunner:
    """:class:`~.pipeline.CheckpointRunner` on Ray (see the module docstring)."""

    def __init__(
        self,
        sweep: RaySweep,
        data_args: list[str],
        config: IngestConfig,
        device: str,
        names: dict[str, str],
        out_root: Path,
        echo: Callable[[str], None],
    ):
        try:
            import ray
        except ImportError as error:
            raise UserError(
                "--ray needs Ray: install circuit-atlas with its extra, pip install 'circuit-atlas[ray]'."
            ) from error
        self.ray, self.sweep, self.echo = ray, sweep, echo
        self.data_args, self.config, self.device, self.names = data_args, config, device, names
        self.running = out_root / RUNNING
        self.threads = sweep.threads or torch.get_num_threads()
        self.started = not ray.is_initialized()  # a runtime this sweep started, it also stops
        if self.started:
            try:
                ray.init(address=sweep.address, include_dashboard=False, log_to_driver=True)
            except (ConnectionError, RuntimeError, ValueError) as error:
                where = sweep.address or "a local runtime"
                raise UserError(f"Cannot start or join Ray at {where}: {str(error).splitlines()[0]}") from error

    def _remote(self, function):
        return self.ray.remote(function).options(**self.sweep.options())

    def _get(self, refs: list) -> list:
        """``ray.get`` with a task's own error (a :class:`UserError` stays one line)."""
        try:
            return self.ray.get(refs)
        except self.ray.exceptions.RayTaskError as error:
            cause = error.cause if isinstance(error.cause, Exception) else error
            if isinstance(cause, UserError):
                raise UserError(str(cause)) from None
            raise

    def search(self, checkpoint: CheckpointSource) -> tuple[float, dict[str, Tensor]]:
        self.echo(f"[sweep] {checkpoint.label}: the series' rank search, on Ray")
        ref = self._remote(_search_task).remote(checkpoint, self.data_args, self.config, self.device, self.threads)
        return self._get([ref])[0]

    def computed(self, checkpoints: list[CheckpointSource], series: Series | None) -> Iterator[ComputedCheckpoint]:
        task = self._remote(_compute_task)
        refs = [
            task.remote(
                c, self.data_args, self.config, self.device, self.names[c.label], series, self.threads, self.running
            )
            for c in checkpoints
        ]
        if refs:
            self.echo(f"[sweep] {len(refs)} checkpoint(s) submitted to Ray ({self.sweep.options()})")
        results: dict = {}  # finished, not yet placed (each fetched once)
        waiting = list(refs)
        try:
            for done, (checkpoint, ref) in enumerate(zip(checkpoints, refs), 1):
                while ref not in results:
                    finished, waiting = self.ray.wait(waiting, num_returns=1)
                    results.update(zip(finished, self._get(finished)))  # a failed task fails the sweep now
                    self.echo(f"[sweep] {len(refs) - len(waiting)}/{len(refs)} computed")
                yield results.pop(ref)
                self.echo(f"[sweep] {checkpoint.label} placed ({done}/{len(refs)})")
        finally:
            if self.started:
                self.ray.shutdown()
