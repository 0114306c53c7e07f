"""Time the three connected-components queries on synthetic channel graphs of real model sizes.

    python benchmarks/components.py [--catalog DIR_OR_BOLT_URI]   (NEO4J_PASSWORD for a Bolt URI)

Per size it loads one synthetic checkpoint ``components-benchmark@<channels>`` through an
artifact and the loader, as an ingest would (attention heads and MLPs by layer, each reader
subspace fed by ``--fan-in`` random earlier channels, scores uniform in [0, 1]; on one slice, an
ablation effect per channel uniform in [-0.5, 1] and an attribution per edge uniform in [0, 1]),
runs ``components``, ``components_apoc`` and ``components_gds`` at ``--min-share`` on all the data
(by attribution) and on the slice with ``--min-effect`` (median of ``--repeats`` runs after a
warm-up run, each in a read transaction like ``circuit-atlas query``), checks that all three return
the same rows, prints the times and their ratios, and deletes the checkpoint. A variant whose plugin
is missing is reported as such.
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the synthetic-artifact builder
import synthetic_artifacts

import circuit_atlas as ca
from circuit_atlas import queries
from circuit_atlas.errors import UserError

# (layers, heads per layer): GPT-2 small, GPT-2 medium, GPT-2 XL.
SHAPES = [(12, 12), (24, 16), (48, 25)]
VARIANTS = ("components", "components_apoc", "components_gds")
SLICE = "s"
ROLES = synthetic_artifacts.ROLES
DELETE = """
MATCH (c:Checkpoint {id: $checkpoint})
OPTIONAL MATCH (c)-[:HAS_BLOCK]->(b)
OPTIONAL MATCH (b)-[:HAS_SUBSPACE]->(s)
DETACH DELETE s, b, c
"""


def synthetic_checkpoint(layers: int, heads: int, fan_in: int, rng: random.Random) -> synthetic_artifacts.Checkpoint:
    """Channels in channel order, every reader role fed by ``fan_in`` random earlier writers."""
    channels = [synthetic_artifacts.SyntheticChannel("embed", "embed", -1)]
    for layer in range(layers):
        channels += [synthetic_artifacts.SyntheticChannel(f"L{layer}H{h}", "attn_head", layer, h) for h in range(heads)]
        channels.append(synthetic_artifacts.SyntheticChannel(f"L{layer}.mlp", "mlp", layer))
    edges = []
    for position, reader in enumerate(channels):
        writers = channels[:position]
        for role in (r for r in ROLES[reader.kind] if r != "out"):
            for writer in rng.sample(writers, min(fan_in, len(writers))):
                weight = rng.random()
                edges.append(synthetic_artifacts.Edge(writer.name, reader.name, role, weight, weight, weight))
    effects = {c.name: rng.uniform(-0.5, 1.0) for c in channels}
    on_slice = {(e.writer, e.reader): rng.random() for e in edges}
    return synthetic_artifacts.Checkpoint(
        "components-benchmark",
        str(len(channels)),
        len(channels),
        channels,
        edges,
        effects={SLICE: effects},
        slice_attribution={SLICE: on_slice},
    )


def timed(driver, database: str, query: queries.Query, params: dict, repeats: int) -> tuple[float, list[dict]]:
    """Median seconds of ``repeats`` runs after one untimed warm-up run (query plan and JIT), and the rows."""
    rows = queries.run(driver, database, query, params)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        rows = queries.run(driver, database, query, params)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), rows


@click.command()
@click.option("--fan-in", default=8, show_default=True, help="Writers per reader subspace.")
@click.option("--min-share", default=0.9, show_default=True, help="Share of the largest score an edge needs.")
@click.option("--min-effect", default=0.25, show_default=True, help="Ablation effect a channel needs on the slice.")
@click.option("--repeats", default=3, show_default=True, help="Runs per variant; the median is reported.")
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--catalog",
    "where",
    envvar="NEO4J_URI",
    help="A Bolt URI or a local server's folder  [env NEO4J_URI; default: the default local server]",
)
def main(where: str | None, fan_in: int, min_share: float, min_effect: float, repeats: int, seed: int) -> None:
    library = queries.library()
    with ca.open_catalog(where) as catalog, tempfile.TemporaryDirectory() as artifacts:
        driver, db = catalog.driver, catalog.database
        click.echo(
            f"fan-in {fan_in}, min share {min_share}, min effect on the slice {min_effect}, "
            f"median of {repeats} runs; server {catalog.settings.uri}"
        )
        click.echo(
            f"{'channels':>8} {'data':>8} {'edges':>6} {'kept':>5} {'components':>10}  "
            + "  ".join(f"{v:>16}" for v in VARIANTS)
            + "  apoc/pure  gds/pure"
        )
        for layers, heads in SHAPES:
            synthetic = synthetic_checkpoint(layers, heads, fan_in, random.Random(seed))
            checkpoint, blocks, edges = synthetic.id, synthetic.channels, synthetic.edges
            synthetic_artifacts.load(driver, db, synthetic, Path(artifacts))
            try:
                for slice_name in (None, SLICE):
                    params = {
                        "checkpoint": checkpoint,
                        "slice": slice_name,
                        "by": None,
                        "min_share": min_share,
                        "min_effect": min_effect if slice_name else None,
                    }
                    results = {}
                    for variant in VARIANTS:
                        try:
                            results[variant] = timed(driver, db, library[variant], params, repeats)
                        except UserError as error:
                            click.echo(f"  {variant}: not run ({str(error).splitlines()[0][:100]})")
                    answers = {v: r for v, (_, r) in results.items()}
                    if len({repr(a) for a in answers.values()}) > 1:
                        raise SystemExit(f"The variants disagree on {checkpoint}: {answers}")
                    base = results["components"][0]
                    cells = [f"{results[v][0] * 1000:13.1f} ms" if v in results else f"{'-':>16}" for v in VARIANTS]
                    ratios = [
                        f"{results[v][0] / base:9.2f}" if v in results else f"{'-':>9}"
                        for v in ("components_apoc", "components_gds")
                    ]
                    on_slice = synthetic.slice_attribution[SLICE]
                    scores = [e.attribution if slice_name is None else on_slice[e.writer, e.reader] for e in edges]
                    kept = sum(s >= min_share * max(scores) for s in scores)
                    click.echo(
                        f"{len(blocks):>8} {slice_name or 'all':>8} {len(edges):>6} {kept:>5} "
                        f"{len(results['components'][1]):>10}  " + "  ".join(cells) + "  " + " ".join(ratios)
                    )
            finally:
                driver.execute_query(DELETE, checkpoint=checkpoint, database_=db)


if __name__ == "__main__":
    main()
