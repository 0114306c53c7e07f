"""What a sweep on Ray gains: N checkpoints of the reference induction series ingested sequentially
in one process, and as Ray tasks on a local runtime of 1 and of 2 workers (``ingest/sweep.py``).

    python benchmarks/sweep.py [--checkpoints 7] [--n-seq 256] [--device cpu]

Each configuration runs once from scratch (``--force``) and its wall seconds include what a sweep
really pays: starting the Ray runtime, each worker importing torch and loading its checkpoint, and
the series' rank search on the last checkpoint before the others start. Every run uses one torch
thread per checkpoint (the sequential one too, so that its artifacts are the reference the sweeps'
must equal bit for bit); the sequential run at this machine's own thread count is timed beside.
Prints the seconds, the speed-up of 2 workers over 1 and over the sequential runs, and whether every
artifact's files are the one-thread sequential run's.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import click
import torch

from circuit_atlas.ingest.artifact import read_manifest
from circuit_atlas.ingest.config import IngestConfig
from circuit_atlas.ingest.pipeline import ingest
from circuit_atlas.ingest.sweep import RaySweep
from circuit_atlas.reference import default_reference_dir
from circuit_atlas.reference.induction import InductionRecipe, train_induction


@click.command()
@click.option("--checkpoints", "count", default=7, show_default=True, help="Checkpoints of the series, spread.")
@click.option("--n-seq", default=256, show_default=True, help="Sequences per slice.")
@click.option("--device", default="cpu", show_default=True)
def main(count: int, n_seq: int, device: str) -> None:
    import ray

    series = train_induction(InductionRecipe(), default_reference_dir(), echo=print)
    chosen = [str(series[round(i * (len(series) - 1) / (count - 1))]) for i in range(count)]
    config = IngestConfig(n_seq=n_seq)
    print(f"{count} checkpoints of {InductionRecipe().name}, {n_seq} sequences per slice, on {device}")
    seconds, artifacts = {}, {}
    own = torch.get_num_threads()
    runs = (
        (f"sequential, {own} threads", 0, own),
        ("sequential", 0, 1),
        ("ray, 1 worker", 1, 1),
        ("ray, 2 workers", 2, 1),
    )
    with tempfile.TemporaryDirectory() as scratch:
        for label, workers, threads in runs:
            torch.set_num_threads(threads)
            if workers:
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
            started = time.perf_counter()
            paths = ingest(
                chosen[-1],
                chosen,
                ["repeated", "random"],
                Path(scratch) / label,
                config,
                device,
                progress=False,
                echo=lambda _: None,
                force=True,
                ray=RaySweep(threads=1) if workers else None,
            )
            seconds[label] = time.perf_counter() - started
            artifacts[label] = [read_manifest(p)["files"] for p in paths]
            if workers:
                ray.shutdown()
            print(f"{label:>16}: {seconds[label]:7.1f} s")
    same = all(artifacts[label] == artifacts["sequential"] for label, workers, _ in runs if workers)
    two = seconds["ray, 2 workers"]
    print(f"2 workers over 1: {seconds['ray, 1 worker'] / two:.2f}x faster")
    print(f"2 workers over sequential (1 thread): {seconds['sequential'] / two:.2f}x faster")
    print(f"2 workers over sequential ({own} threads): {seconds[runs[0][0]] / two:.2f}x faster")
    print(f"the sweeps' artifacts are the one-thread sequential run's, bit for bit: {same}")


if __name__ == "__main__":
    main()
