"""What a series of checkpoints costs against ingesting one, and what its rank rule adds.

    python benchmarks/series.py [--device cpu] [--n-seq 64]

The reference model's checkpoints (``reference/induction.py``, 7 of them, steps 0 to 3000) on
repeated and random tokens, ingested three ways in one process: the last checkpoint alone; the
series with each checkpoint searching its own rank fraction (``--series-ranks each``); and the
series under the default rule (``last``: the last checkpoint is compressed first, its searched
fraction compresses every one, and each also runs its own search to record beside it). Prints the
wall and CPU seconds of each, the series' per-checkpoint cost over the single ingest's, and the
stages the rule adds (the series' "load model", "statistics" and "rank search" over the ``each``
run's). A first ingest, untimed, warms the process up. CPU time is steadier than wall time on a
shared machine.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import click
import torch

from circuit_atlas.ingest.config import IngestConfig
from circuit_atlas.ingest.pipeline import ingest
from circuit_atlas.reference import default_reference_dir
from circuit_atlas.reference.induction import InductionRecipe, train_induction
from ingest import Meter

ADDED = ("load model", "statistics", "rank search")  # the stages the series' rule runs more of


def timed(checkpoints: list[Path], config: IngestConfig, device: str, out: Path) -> tuple[float, float, Meter]:
    """(wall seconds, CPU seconds, the stages) of one ingest run of ``checkpoints``."""
    meter = Meter(device)
    started, cpu = time.perf_counter(), time.process_time()
    ingest(
        str(checkpoints[-1]),
        [str(c) for c in checkpoints],
        ["repeated", "random"],
        out,
        config,
        device,
        progress=False,
        echo=lambda _: None,
        profile=meter,
        force=True,
    )
    return time.perf_counter() - started, time.process_time() - cpu, meter


@click.command()
@click.option("--device", default="cuda" if torch.cuda.is_available() else "cpu", show_default=True)
@click.option("--n-seq", default=64, show_default=True, help="Sequences per slice.")
def main(device: str, n_seq: int) -> None:
    torch.manual_seed(0)
    checkpoints = train_induction(InductionRecipe(), default_reference_dir(), progress=False, echo=lambda _: None)
    config = IngestConfig(n_seq=n_seq, examples=0)
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch)
        timed(checkpoints[-1:], config, device, out / "warm-up")  # first-call costs (imports, allocator)
        runs = {
            "last checkpoint alone": timed(checkpoints[-1:], config, device, out / "one"),
            "series, each its own": timed(
                checkpoints, IngestConfig(n_seq=n_seq, examples=0, series_ranks="each"), device, out / "each"
            ),
            "series, rule 'last'": timed(checkpoints, config, device, out / "last"),
        }
    n = len(checkpoints)
    click.echo(f"reference model, {n} checkpoints, repeated and random x {n_seq} sequences, {device}")
    click.echo(f"{'run':<24}{'wall s':>9}{'CPU s':>9}{'per checkpoint / alone (CPU)':>31}")
    alone = runs["last checkpoint alone"][1]
    for name, (wall, cpu, _) in runs.items():
        per = cpu / (1 if name.endswith("alone") else n)
        click.echo(f"{name:<24}{wall:>9.2f}{cpu:>9.2f}{per / alone:>31.2f}")
    each, last = runs["series, each its own"][2], runs["series, rule 'last'"][2]
    for stage in ADDED:
        added = last.stages[stage].cpu_seconds - each.stages[stage].cpu_seconds
        click.echo(f"the rule adds to {stage!r}: {added:+.2f} CPU s ({added / runs['series, each its own'][1]:+.1%})")


if __name__ == "__main__":
    main()
