"""Time the three connected-components queries on synthetic channel graphs of real model sizes.

    python benchmarks/components.py [--neo4j-dir DIR | NEO4J_URI=... NEO4J_PASSWORD=...]

Per size it writes one checkpoint ``components-benchmark@<channels>`` (attention heads and MLPs
by layer, each reader subspace fed by ``--fan-in`` random earlier channels, weights uniform in
[0, 1]), runs ``components``, ``components_apoc`` and ``components_gds`` at ``--min-weight``
(median of ``--repeats`` runs after a warm-up run, each in a read transaction like
``circuit-atlas query``), checks
that all three return the same rows, prints the times and their ratios, and deletes the
checkpoint. A variant whose plugin is missing is reported as such.
"""

from __future__ import annotations

import random
import statistics
import time

import click

from circuit_atlas import queries
from circuit_atlas.cli import Connection, catalog, connection_options
from circuit_atlas.errors import UserError

# (layers, heads per layer): GPT-2 small, GPT-2 medium, GPT-2 XL.
SHAPES = [(12, 12), (24, 16), (48, 25)]
VARIANTS = ("components", "components_apoc", "components_gds")

WRITE_GRAPH = """
MERGE (c:Checkpoint {id: $checkpoint}) SET c.status = 'complete'
WITH c
UNWIND $blocks AS blk
CREATE (b:Block {id: $checkpoint + '/' + blk.name, checkpoint_id: $checkpoint, name: blk.name, kind: blk.kind,
                 layer: blk.layer, head: blk.head})
CREATE (c)-[:HAS_BLOCK]->(b)
FOREACH (role IN blk.roles |
  CREATE (b)-[:HAS_SUBSPACE]->(:Subspace {id: b.id + '/' + role, checkpoint_id: $checkpoint, role: role}))
"""
WRITE_EDGES = """
UNWIND $edges AS e
MATCH (a:Subspace {id: e.source}), (b:Subspace {id: e.target})
CREATE (a)-[:FEEDS {role: e.role, weight: e.weight}]->(b)
"""
DELETE = """
MATCH (:Checkpoint {id: $checkpoint})-[:HAS_BLOCK]->(b)-[:HAS_SUBSPACE]->(s)
DETACH DELETE s
WITH DISTINCT b DETACH DELETE b
"""


def synthetic_graph(layers: int, heads: int, fan_in: int, rng: random.Random) -> tuple[list[dict], list[dict]]:
    """Blocks in forward order and FEEDS rows: every reader role gets ``fan_in`` earlier writers."""
    blocks = [{"name": "embed", "kind": "embed", "layer": -1, "head": None, "roles": ["out"]}]
    for layer in range(layers):
        blocks += [{"name": f"L{layer}H{h}", "kind": "attn_head", "layer": layer, "head": h,
                    "roles": ["q", "k", "v", "out"]} for h in range(heads)]
        blocks.append({"name": f"L{layer}.mlp", "kind": "mlp", "layer": layer, "head": None, "roles": ["in", "out"]})
    edges = []
    for position, reader in enumerate(blocks):
        writers = blocks[:position]
        for role in (r for r in reader["roles"] if r != "out"):
            for writer in rng.sample(writers, min(fan_in, len(writers))):
                edges.append({"source": f"{{ck}}/{writer['name']}/out", "target": f"{{ck}}/{reader['name']}/{role}",
                              "role": role, "weight": rng.random()})
    return blocks, edges


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
@click.option("--min-weight", default=0.9, show_default=True, help="Edge weight threshold of the components.")
@click.option("--repeats", default=3, show_default=True, help="Runs per variant; the median is reported.")
@click.option("--seed", default=0, show_default=True)
@connection_options
def main(connection: Connection, fan_in: int, min_weight: float, repeats: int, seed: int) -> None:
    library = queries.library()
    settings = connection.settings()
    with catalog(settings) as driver:
        db = settings.database
        click.echo(f"fan-in {fan_in}, min weight {min_weight}, median of {repeats} runs; server {settings.uri}")
        click.echo(f"{'channels':>8} {'edges':>6} {'kept':>5} {'components':>10}  " +
                   "  ".join(f"{v:>16}" for v in VARIANTS) + "  apoc/pure  gds/pure")
        for layers, heads in SHAPES:
            blocks, edges = synthetic_graph(layers, heads, fan_in, random.Random(seed))
            checkpoint = f"components-benchmark@{len(blocks)}"
            rows = [{**e, "source": e["source"].format(ck=checkpoint), "target": e["target"].format(ck=checkpoint)}
                    for e in edges]
            driver.execute_query(WRITE_GRAPH, checkpoint=checkpoint, blocks=blocks, database_=db)
            for start in range(0, len(rows), 5000):
                driver.execute_query(WRITE_EDGES, edges=rows[start:start + 5000], database_=db)
            try:
                params = {"checkpoint": checkpoint, "min_weight": min_weight}
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
                ratios = [f"{results[v][0] / base:9.2f}" if v in results else f"{'-':>9}"
                          for v in ("components_apoc", "components_gds")]
                kept = sum(e["weight"] >= min_weight for e in edges)
                click.echo(f"{len(blocks):>8} {len(edges):>6} {kept:>5} {len(results['components'][1]):>10}  " +
                           "  ".join(cells) + "  " + " ".join(ratios))
            finally:
                driver.execute_query(DELETE, checkpoint=checkpoint, database_=db)
                driver.execute_query("MATCH (c:Checkpoint {id: $checkpoint}) DELETE c", checkpoint=checkpoint,
                                     database_=db)


if __name__ == "__main__":
    main()
