"""The README's main job on the built-in default: nothing from a model hub.

Start (or reuse) the local Neo4j, migrate the schema, train (or reuse) the reference induction
model's checkpoints, ingest every checkpoint on the slices ``repeated`` and ``random`` (each
loaded as soon as its artifact is written), and print per checkpoint the top head -> head edges,
the connected components (by edge attribution, on all the data and on each slice) and the circuit on
each slice, then where to look in Neo4j Browser.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from circuit_atlas import queries
from circuit_atlas.reference import default_reference_dir
from circuit_atlas.reference.induction import InductionRecipe, train_induction

from .api import Catalog, circuit_default, resolve_settings
from .formatting import fixed, render
from .local_server import USER, Distribution, LocalServer, ServerSettings

SLICES = ["repeated", "random"]
CIRCUIT = {name: circuit_default(name) for name in ("min_effect", "min_attribution")}  # nats: the query's defaults
COMPONENT_SHARE = 0.2  # of the largest edge attribution; on a slice, the circuit's channels take part
EDGE_COLUMNS = ["writer", "reader", "role", "patched", "attribution", "flow", "weight"]


def run_demo(server_dir: Path, artifacts: Path, echo: Callable[[str], None] = print) -> None:
    server = LocalServer(server_dir, Distribution.in_cache())
    server_settings = server.start(ServerSettings(), echo=echo)
    checkpoints = train_induction(InductionRecipe(), default_reference_dir(), echo=echo)
    with Catalog(resolve_settings(server_dir=server_dir)) as catalog:
        catalog.migrate()
        paths = catalog.ingest(
            str(checkpoints[-1]), SLICES, artifacts, checkpoints=[str(c) for c in checkpoints], device="cpu", echo=echo
        )
        ids = catalog.checkpoints(InductionRecipe().name)["checkpoint"].tolist()
        assert len(ids) == len(paths), "every ingested checkpoint is loaded"
        for checkpoint_id in ids:
            echo(f"\n=== {checkpoint_id}")
            edges = catalog.rows("top_edges", checkpoint=checkpoint_id, by="patched", limit=1000)
            head_edges = [e for e in edges if e["writer_kind"] == e["reader_kind"] == "attn_head"][:3]
            echo("top head -> head edges by patched effect:\n" + render(head_edges, columns=EDGE_COLUMNS))
            for slice_name in [None, *SLICES]:
                components = catalog.rows(
                    "components",
                    checkpoint=checkpoint_id,
                    slice=slice_name,
                    min_share=COMPONENT_SHARE,
                    min_effect=CIRCUIT["min_effect"] if slice_name else None,
                )
                echo(
                    f"components on {slice_name or 'all the data'}: "
                    + ("; ".join(f"{{{', '.join(c['channels'])}}}" for c in components) or "(none)")
                )
            for slice_name in SLICES:
                rows = catalog.rows("circuit", checkpoint=checkpoint_id, slice=slice_name, **CIRCUIT)
                members = list(dict.fromkeys(r["writer"] for r in rows))
                kept = (
                    f" (faithfulness {fixed(rows[0]['faithfulness'], 2)})"
                    if rows and rows[0]["faithfulness"] is not None
                    else ""
                )
                echo(f"circuit on {slice_name}{kept}: {', '.join(members) or '(none)'}")
                [faithful] = catalog.rows("faithful_circuit", checkpoint=checkpoint_id, slice=slice_name)
                value = faithful["faithfulness"]
                reached = "" if value is None else f"faithfulness {fixed(value, 2)}, "
                echo(
                    f"circuit on {slice_name} by faithfulness {faithful['target']} ({reached}{faithful['size']} "
                    f"channels): {', '.join(faithful['channels']) or faithful['reason']}"
                )
    echo(f"\nNeo4j Browser: {server_settings.browser_url}  (user {USER}, password in {server.password_file})")
    echo(
        "Paste there, one command at a time, to style the catalog and draw the final checkpoint's circuit "
        "on repeated sequences:"
    )
    echo(queries.style_command())
    echo(
        f":params {{checkpoint: '{ids[-1]}', slice: 'repeated', min_effect: {CIRCUIT['min_effect']}, "
        f"min_attribution: {CIRCUIT['min_attribution']}}}"
    )
    echo(queries.library()["circuit_view"].body)
