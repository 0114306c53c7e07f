"""The README's main job on the built-in default: nothing from a model hub.

Start (or reuse) the local Neo4j, migrate the schema, train (or reuse) the reference induction
model's checkpoints, ingest every checkpoint on the slices ``repeated`` and ``random``, load them, and print per checkpoint the
top head -> head edges, the connected components and the circuit on each slice, then where to
look in Neo4j Browser.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from circuit_atlas import queries
from circuit_atlas.schema.migrations import migrate

from .connection import Neo4jSettings, open_driver
from .formatting import render
from .loader import load_artifact
from .neo4j_runtime import USER, Distribution, LocalServer, ServerSettings
from .pipeline import IngestConfig, PreviousCheckpoint, ingest_checkpoint, resolve_checkpoints
from .reference import InductionRecipe, default_reference_dir, train_induction

SLICES = ["repeated", "random"]
CIRCUIT = {"min_effect": 0.1, "min_attribution": 0.02}  # nats: ablation effect, edge attribution
COMPONENT_WEIGHT = 0.2


def run_demo(server_dir: Path, artifacts: Path, echo: Callable[[str], None] = print) -> None:
    server = LocalServer(server_dir, Distribution.in_cache())
    server_settings = server.start(ServerSettings(), echo=echo)
    settings = Neo4jSettings(server_settings.bolt_uri, USER, server.password())
    driver = open_driver(settings)
    try:
        migrate(driver, settings.database)
        checkpoints = train_induction(InductionRecipe(), default_reference_dir(), echo=echo)
        config = IngestConfig()
        previous: PreviousCheckpoint | None = None
        ids = []
        for checkpoint in resolve_checkpoints(str(checkpoints[-1]), [str(c) for c in checkpoints]):
            path, previous = ingest_checkpoint(checkpoint, SLICES, artifacts, config, "cpu", previous=previous,
                                               echo=echo)
            summary = load_artifact(driver, settings.database, path, echo=echo)
            ids.append(summary.checkpoint_id)
        library = queries.library()
        for checkpoint_id in ids:
            echo(f"\n=== {checkpoint_id}")
            edges = queries.run(driver, settings.database, library["top_edges"],
                                {"checkpoint": checkpoint_id, "by": "flow", "limit": 1000})
            head_edges = [e for e in edges if e["writer"].startswith("L") and "H" in e["writer"]
                          and e["reader"].startswith("L") and "H" in e["reader"]][:3]
            echo("top head -> head edges by flow:\n" + render(head_edges))
            components = queries.run(driver, settings.database, library["components"],
                                     {"checkpoint": checkpoint_id, "min_weight": COMPONENT_WEIGHT})
            echo(f"components (weight >= {COMPONENT_WEIGHT}): " +
                 "; ".join(f"{{{', '.join(c['channels'])}}}" for c in components))
            for slice_name in SLICES:
                rows = queries.run(driver, settings.database, library["circuit"],
                                   {"checkpoint": checkpoint_id, "slice": slice_name, **CIRCUIT})
                members = list(dict.fromkeys(r["writer"] for r in rows))
                echo(f"circuit on {slice_name}: {', '.join(members) or '(none)'}")
    finally:
        driver.close()
    echo(f"\nNeo4j Browser: {server_settings.browser_url}  (user {USER}, password in {server.password_file})")
    echo("Paste there, one command at a time, to style the catalog and draw the final checkpoint's circuit "
         "on repeated sequences:")
    echo(queries.style_command())
    echo(f":params {{checkpoint: '{ids[-1]}', slice: 'repeated', min_effect: {CIRCUIT['min_effect']}, "
         f"min_attribution: {CIRCUIT['min_attribution']}}}")
    echo(library["circuit_view"].body)
