"""The ``circuit-atlas`` command line: options parsed here, the work done elsewhere. The ingest and
everything that reads or writes the catalog through a connection go through :mod:`circuit_atlas.api`;
the other commands call their modules directly: the local server (:mod:`circuit_atlas.local_server`),
the bulk import (:mod:`circuit_atlas.bulk_import`), the export's files (:mod:`circuit_atlas.export`,
of a circuit the API fetched), the query library's listing (:mod:`circuit_atlas.queries`), the
reference models (:mod:`circuit_atlas.reference`) and the demo (:mod:`circuit_atlas.demo`).

Every library error meant for the user is a :class:`UserError`; the root group turns it into a
one-line click error and a non-zero exit.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import neo4j

from . import api
from .connection import server_version
from .errors import UserError
from .formatting import ROW_FORMATS, render
from .ingest.config import IngestConfig
from .local_server import Distribution, LocalServer, ServerSettings, default_server_dir
from .pruning import MIN_ATTRIBUTION, TOP_K

if TYPE_CHECKING:
    import pandas as pd


class OneLineUsageError(click.ClickException):
    """An option of the wrong type or out of range, as one line (click's usage errors take four)."""

    exit_code = 2


class AtlasGroup(click.Group):
    """A click group that reports :class:`UserError`, an option click refuses, and a server that stops
    answering, as a clean one-line CLI error."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as error:
            raise click.ClickException(str(error)) from error
        except click.UsageError as error:
            where = error.ctx.command_path if error.ctx else ctx.command_path
            raise OneLineUsageError(f"{error.format_message()} See `{where} --help`.") from error
        except (neo4j.exceptions.ServiceUnavailable, neo4j.exceptions.SessionExpired) as error:
            raise click.ClickException(
                f"Lost the connection to Neo4j ({str(error).splitlines()[0]}). Check that the server runs "
                f"(`circuit-atlas neo4j status`) and retry."
            ) from error


@click.group(cls=AtlasGroup)
@click.version_option(package_name="circuit-atlas")
def cli() -> None:
    """Circuit Atlas: the circuits inside transformer models, cataloged in Neo4j."""


# --- connection -------------------------------------------------------------------------------

server_dir_option = click.option(
    "--dir",
    "server_dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="CIRCUIT_ATLAS_NEO4J_DIR",
    default=default_server_dir,
    show_default="~/.circuit-atlas/neo4j",
    help="Folder of the local Neo4j server (its data, logs and password).",
)


def connection_options(command):
    """Add --uri --user --password --database --neo4j-dir; pass ``connection: Connection``.

    Settings are resolved only when a command connects, so a command that may not need the
    catalog (``ingest`` without ``--load``) works without a password.
    """

    @click.option(
        "--uri",
        envvar="NEO4J_URI",
        help="Bolt URI of the catalog  [env NEO4J_URI; "
        "default: the local server of --neo4j-dir, else bolt://127.0.0.1:7687]",
    )
    @click.option(
        "--user", envvar="NEO4J_USER", default="neo4j", show_default=True, help="Neo4j user  [env NEO4J_USER]"
    )
    @click.option(
        "--password",
        envvar="NEO4J_PASSWORD",
        help="Neo4j password  [env NEO4J_PASSWORD; default: the local server's password file]",
    )
    @click.option(
        "--database",
        envvar="NEO4J_DATABASE",
        default="neo4j",
        show_default=True,
        help="Neo4j database  [env NEO4J_DATABASE]",
    )
    @click.option(
        "--neo4j-dir",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="CIRCUIT_ATLAS_NEO4J_DIR",
        default=default_server_dir,
        show_default="~/.circuit-atlas/neo4j",
        help="Local server folder to take the URI and password from when not given.",
    )
    @functools.wraps(command)
    def wrapper(uri, user, password, database, neo4j_dir, **kwargs):
        return command(connection=Connection(uri, user, password, database, neo4j_dir), **kwargs)

    return wrapper


@dataclass(frozen=True)
class Connection:
    """The connection options as given; :meth:`open` fills in what is missing and connects."""

    uri: str | None
    user: str
    password: str | None
    database: str
    neo4j_dir: Path

    def open(self) -> api.Catalog:
        return api.Catalog(api.resolve_settings(self.uri, self.user, self.password, self.database, self.neo4j_dir))


# --- neo4j: the local server ------------------------------------------------------------------


@cli.group("neo4j", cls=AtlasGroup)
def neo4j_group() -> None:
    """Run a local Neo4j Community server assembled from Maven Central (no Docker needed)."""


@neo4j_group.command("install")
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="CIRCUIT_ATLAS_CACHE",
    help="Where the jars go  [env CIRCUIT_ATLAS_CACHE; default ~/.cache/circuit-atlas]",
)
def neo4j_install(cache_dir: Path | None) -> None:
    """Download the Neo4j server jars with Maven (once; later calls reuse them)."""
    Distribution.in_cache(cache_dir).install(echo=click.echo)


@neo4j_group.command("start")
@server_dir_option
@click.option(
    "--bolt-port", type=click.IntRange(1, 65535), default=7687, show_default=True, help="Bolt port on 127.0.0.1."
)
@click.option(
    "--http-port",
    type=click.IntRange(1, 65535),
    default=7474,
    show_default=True,
    help="HTTP (Browser) port on 127.0.0.1.",
)
@click.option("--heap", default=ServerSettings.heap, show_default=True, help="JVM heap size (e.g. 512m, 2g).")
@click.option(
    "--pagecache", default=ServerSettings.pagecache, show_default=True, help="Neo4j page cache size (e.g. 512m, 2g)."
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=180.0,
    show_default=True,
    help="Seconds to wait for Bolt to answer.",
)
def neo4j_start(server_dir: Path, bolt_port: int, http_port: int, heap: str, pagecache: str, timeout: float) -> None:
    """Start the local server in the background and wait until Bolt answers."""
    server = LocalServer(server_dir, Distribution.in_cache())
    settings = server.start(ServerSettings(bolt_port, http_port, heap, pagecache), timeout, echo=click.echo)
    click.echo(f"Neo4j is running (pid {server.pid()}), data in {server.directory}")
    click.echo(f"  Bolt:     {settings.bolt_uri}")
    click.echo(f"  Browser:  {settings.browser_url}  (user neo4j)")
    click.echo(f"  Password: in {server.password_file} (owner-only)")


@neo4j_group.command("stop")
@server_dir_option
def neo4j_stop(server_dir: Path) -> None:
    """Shut the local server down cleanly."""
    server = LocalServer(server_dir, Distribution.in_cache())
    if server.stop():
        click.echo(f"Neo4j in {server.directory} stopped.")
    else:
        click.echo(f"Neo4j in {server.directory} was not running.")


@neo4j_group.command("status")
@server_dir_option
def neo4j_status(server_dir: Path) -> None:
    """Say whether the local server runs, and where."""
    server = LocalServer(server_dir, Distribution.in_cache())
    pid, settings = server.pid(), server.settings()
    if pid is None:
        click.echo(f"Neo4j in {server.directory} is not running.")
        raise SystemExit(3)
    if settings is None:
        raise UserError(f"Neo4j is running (pid {pid}) but {server.settings_file} is missing.")
    click.echo(f"Neo4j is running (pid {pid}), data in {server.directory}")
    click.echo(f"  Bolt:     {settings.bolt_uri}")
    click.echo(f"  Browser:  {settings.browser_url}")


# --- schema -----------------------------------------------------------------------------------


@cli.group("schema", cls=AtlasGroup)
def schema_group() -> None:
    """The catalog's constraints and indexes, as versioned migrations."""


@schema_group.command("migrate")
@connection_options
@click.option("--list", "list_only", is_flag=True, help="Show applied and pending migrations; change nothing.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(ROW_FORMATS),
    default="table",
    show_default=True,
    help="Output format of --list.",
)
def schema_migrate(connection: Connection, list_only: bool, fmt: str) -> None:
    """Apply the pending schema migrations (a no-op when up to date)."""
    with connection.open() as catalog:
        if list_only:
            click.echo(render(catalog.migrations().to_dict("records"), fmt))
            return
        applied = catalog.migrate()
        where = f"{catalog.settings.uri} (Neo4j {server_version(catalog.driver)}, database {catalog.database})"
        if applied:
            click.echo(f"Applied {', '.join(applied)} on {where}.")
        else:
            click.echo(f"Schema already at {catalog.migrations()['version'].iloc[-1]} on {where}; nothing to apply.")


# --- ingest and load ---------------------------------------------------------------------------

prune_options = [
    click.option(
        "--top-k",
        type=int,
        default=TOP_K,
        show_default=True,
        help="Load at most this many edges per reader subspace, by attribution.",
    ),
    click.option(
        "--min-attribution",
        default=MIN_ATTRIBUTION,
        show_default=True,
        help="Load only edges with at least this attribution (loss units).",
    ),
]


def with_options(options):
    def decorate(command):
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def setting_options(command):
    """One option per :class:`IngestConfig` setting (``--n-seq`` for ``n_seq``), with the setting's
    default, type and help (``ingest/config.py``): no default is written twice."""
    types = {"int": int, "float": float, "str": str}
    for setting in reversed(fields(IngestConfig)):
        kind = types[setting.type.split(" | ")[0]]
        choices = setting.metadata.get("choices")
        command = click.option(
            "--" + setting.name.replace("_", "-"),
            setting.name,
            type=click.Choice(choices) if choices else kind,
            default=setting.default,
            show_default=setting.default is not None,
            metavar=setting.metadata.get("metavar"),
            help=setting.metadata["help"],
        )(command)
    return command


@cli.command("ingest")
@click.argument("model")
@click.option(
    "--checkpoint",
    "checkpoints",
    multiple=True,
    help="A checkpoint: a local model directory, a hub revision of MODEL (e.g. step1000), or a weights "
    "file when MODEL is a TransformerLens config. Repeatable.",
)
@click.option(
    "--weights",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The state dict (torch.save) of the TransformerLens config given as MODEL.",
)
@click.option(
    "--data",
    "data",
    multiple=True,
    required=True,
    help="A slice: random, repeated, PATH.npy/.pt/.txt, a task file PATH.jsonl/.parquet, or NAME=SOURCE. Repeatable.",
)
@click.option(
    "--out",
    "out",
    required=True,
    help="Folder for the artifact directories (one per checkpoint), or an fsspec URL (s3://bucket/run, gs://...): "
    "each artifact is uploaded there when whole, manifest last.",
)
@click.option("--load", "load", is_flag=True, help="Load each artifact into Neo4j as soon as it is written.")
@click.option("--name", help="Model name in the catalog  [default: the checkpoint's or MODEL's name]")
@click.option(
    "--label",
    help="The checkpoint's label in the catalog, MODEL@LABEL (one checkpoint)  [default: its folder's, revision's "
    "or weights file's name]",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@setting_options
@click.option("--force", is_flag=True, help="Recompute checkpoints whose artifact is already complete.")
@click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value="local",
    default=None,
    metavar="[ADDRESS]",
    help="Compute each checkpoint as a Ray task (pip install 'circuit-atlas[ray]'): alone, on a local Ray "
    "runtime; with ADDRESS (HOST:6379, ray://HOST:10001), on that cluster. Artifacts are written here in step order.",
)
@click.option("--ray-cpus", default=1.0, show_default=True, help="CPUs Ray reserves per checkpoint task.")
@click.option("--ray-gpus", type=float, help="GPUs per task  [default: 1 with --device cuda or auto on a GPU, else 0]")
@click.option("--ray-memory", type=float, help="GiB of memory Ray reserves per task  [default: none reserved]")
@click.option("--ray-retries", default=3, show_default=True, help="Retries of a task whose worker died.")
@click.option(
    "--ray-threads",
    type=int,
    help="Torch threads per task  [default: this process's, which makes the artifacts bitwise a sequential run's]",
)
@with_options(prune_options)
@connection_options
def ingest_command(
    connection: Connection,
    model: str,
    checkpoints: tuple[str, ...],
    weights: Path | None,
    data: tuple[str, ...],
    out: Path,
    load: bool,
    name: str | None,
    label: str | None,
    device: str,
    force: bool,
    ray_address: str | None,
    ray_cpus: float,
    ray_gpus: float | None,
    ray_memory: float | None,
    ray_retries: int,
    ray_threads: int | None,
    top_k: int,
    min_attribution: float,
    **settings,
) -> None:
    """Compress MODEL's channels on the data, score their edges, write artifacts (and load them).

    A checkpoint whose artifact under --out is already complete for the same settings and data is
    skipped (unless --force), so an interrupted run resumes where it stopped."""
    config = IngestConfig(**settings)
    ray = None
    if ray_address is not None:
        from circuit_atlas.ingest.sweep import RaySweep

        gpus = ray_gpus if ray_gpus is not None else float(api.resolve_device(device).startswith("cuda"))
        address = None if ray_address == "local" else ray_address
        ray = RaySweep(address, ray_cpus, gpus, ray_memory, ray_retries, ray_threads)
    options: dict[str, Any] = dict(
        checkpoints=checkpoints,
        weights=weights,
        name=name,
        label=label,
        device=device,
        echo=click.echo,
        force=force,
        ray=ray,
    )
    if not load:
        api.ingest_model(model, data, out, config, **options)
        return
    with connection.open() as catalog:
        catalog.ingest(model, data, out, config, top_k=top_k, min_attribution=min_attribution, **options)


@cli.command("load")
@click.argument("path")
@with_options(prune_options)
@connection_options
def load_command(connection: Connection, path: str, top_k: int, min_attribution: float) -> None:
    """Load an artifact directory (or every one under PATH, a folder or an fsspec URL) into Neo4j, in
    step order."""
    with connection.open() as catalog:
        catalog.load(path, top_k, min_attribution, echo=click.echo)


@neo4j_group.command("import")
@click.argument("path")
@server_dir_option
@click.option("--replace", is_flag=True, help="Replace the database the folder already holds.")
@with_options(prune_options)
def neo4j_import(path: str, server_dir: Path, replace: bool, top_k: int, min_attribution: float) -> None:
    """A large first load: every artifact under PATH (a folder or an fsspec URL) into a new database of
    the stopped local server (neo4j-admin database import; then start it and run `schema migrate`)."""
    from .bulk_import import bulk_import

    bulk_import(LocalServer(server_dir, Distribution.in_cache()), path, top_k, min_attribution, replace, click.echo)


# --- queries -------------------------------------------------------------------------------------


def _parse_params(query, pairs: tuple[str, ...]) -> dict:
    """``key=value`` pairs, each value read by the type the query's header declares for it, then
    checked (unknown, missing and ill-typed parameters are a :class:`UserError`)."""
    texts = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"-p {pair!r}: write parameters as key=value, e.g. -p checkpoint=model@step-01000.")
        if key in texts:
            raise UserError(f"-p {key}= is given twice; give each parameter once.")
        texts[key] = value
    return query.check(query.from_text(texts))


@cli.command("query")
@click.argument("name", required=False)
@click.option("-p", "--param", "pairs", multiple=True, help="A query parameter, key=value. Repeatable.")
@click.option("--list", "list_only", is_flag=True, help="List every query with its header.")
@click.option(
    "--style",
    "style_only",
    is_flag=True,
    help="Print the Neo4j Browser stylesheet as a :style command to paste into Browser.",
)
@click.option(
    "--format", "fmt", type=click.Choice(ROW_FORMATS), default="table", show_default=True, help="Output format."
)
@connection_options
def query_command(
    connection: Connection, name: str | None, pairs: tuple[str, ...], list_only: bool, style_only: bool, fmt: str
) -> None:
    """Run a query of the Cypher library by NAME (read-only), or list them."""
    from circuit_atlas import queries

    if style_only:
        click.echo(queries.style_command())
        return
    if list_only or name is None:
        for query in queries.library().values():
            click.echo(f"{query.name}({query.signature()})\n  {query.description}\n  returns: {query.returns}")
        return
    params = _parse_params(api.library_query(name), pairs)  # checked before connecting
    with connection.open() as catalog:
        rows = catalog.rows(name, **params)
    click.echo(render(rows, fmt))


#: A circuit's threshold, for the commands that fetch one (its default is the ``circuit`` query's).
MIN_EFFECT_OPTION = click.option(
    "--min-effect",
    type=float,
    help="Nats of slice loss a channel's ablation must add to be in the circuit  [default: the circuit query's, "
    f"{api.circuit_default('min_effect')}]",
)


@cli.command("export")
@click.argument("checkpoint")
@click.argument("slice_name", metavar="[SLICE]", required=False)
@click.option(
    "-o",
    "--out",
    "paths",
    multiple=True,
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A file to write: .json, .graphml, .svg or .png. Repeatable.",
)
@MIN_EFFECT_OPTION
@click.option(
    "--min-attribution",
    type=float,
    help="Slice attribution (nats) an edge between circuit channels must carry  [default: the circuit query's, "
    f"{api.circuit_default('min_attribution')}]",
)
@connection_options
def export_command(
    connection: Connection,
    checkpoint: str,
    slice_name: str | None,
    paths: tuple[Path, ...],
    min_effect: float | None,
    min_attribution: float | None,
) -> None:
    """Export the circuit of CHECKPOINT on data slice SLICE as JSON or GraphML and as a picture (SVG, PNG);
    without SLICE, the checkpoint's whole graph as GraphML."""
    from .circuits import write_graphml
    from .export import check_paths, export

    check_paths(list(paths))  # before connecting: a bad path writes nothing
    if slice_name is None:
        if any(p.suffix.lower() != ".graphml" for p in paths) or min_effect is not None or min_attribution is not None:
            raise UserError(
                "Without SLICE, export writes the checkpoint's whole graph, as GraphML only (-o x.graphml, no "
                "--min-effect or --min-attribution); give SLICE for a circuit as JSON, SVG or PNG."
            )
        with connection.open() as catalog:
            graph = catalog.checkpoint_graph(checkpoint)
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_graphml(graph, path)
        click.echo(
            f"{graph.number_of_nodes()} channels, {graph.number_of_edges()} edges -> {', '.join(map(str, paths))}"
        )
        return
    api.check_circuit_params(checkpoint, slice_name, min_effect, min_attribution)
    with connection.open() as catalog:
        circuit = catalog.circuit(checkpoint, slice_name, min_effect, min_attribution)
    export(circuit, list(paths))
    click.echo(f"{len(circuit.channels)} channels, {len(circuit.edges)} edges -> {', '.join(map(str, paths))}")


@cli.command("compare")
@click.argument("checkpoint")
@click.argument("slice_name", metavar="SLICE")
@click.argument("reference", type=click.Path(dir_okay=False, path_type=Path))
@MIN_EFFECT_OPTION
@click.option(
    "--format", "fmt", type=click.Choice(ROW_FORMATS), default="table", show_default=True, help="Output format."
)
@connection_options
def compare_command(
    connection: Connection, checkpoint: str, slice_name: str, reference: Path, min_effect: float | None, fmt: str
) -> None:
    """Score the circuits of CHECKPOINT on SLICE against the circuit in REFERENCE (JSON: channels, edges)."""
    from .comparison import Reference

    known = Reference.read(reference)  # before connecting: a bad file asks nothing of the server
    with connection.open() as catalog:
        rows = catalog.compare(checkpoint, slice_name, known, min_effect).rows()
    click.echo(render(rows, fmt))


@cli.command("steer")
@click.argument("checkpoint")
@click.option(
    "--intervene",
    "specs",
    multiple=True,
    required=True,
    help="An intervention on a stored write subspace: 'L1H2/out[0] += 3' (standard deviations; '3 raw' for "
    "raw units), 'L1H2/out[0] = -1', 'project L1H2/out[0,2]', 'patch L1H2/out from SLICE' (a slice or a discovered "
    "situation), 'ablate L1H2'. "
    "Repeatable: several run as batched variants, each against the clean model.",
)
@click.option(
    "--data",
    "slices",
    multiple=True,
    help="A slice or discovered situation of the checkpoint to measure on (default: all). Repeatable.",
)
@click.option("--device", default="cpu", show_default=True, help="Torch device.")
@click.option("--seed", default=0, show_default=True, help="Seed of the prompt order a patch resamples.")
@click.option("--save", is_flag=True, help="Also keep the measurements in the catalog (query: interventions).")
@click.option("--generate", "prompt", help="Also continue this text clean and under each intervention (text models).")
@click.option("--tokens", "n_tokens", default=20, show_default=True, help="Tokens each continuation samples.")
@connection_options
def steer_command(
    connection: Connection,
    checkpoint: str,
    specs: tuple[str, ...],
    slices: tuple[str, ...],
    device: str,
    seed: int,
    save: bool,
    prompt: str | None,
    n_tokens: int,
) -> None:
    """Intervene on CHECKPOINT's stored write subspaces and print, per slice, each intervention's loss
    change with its standard error, accuracy change (task slices), KL from the clean output, and the
    output tokens it promotes and suppresses. CHECKPOINT is a catalog id (model@label) or an artifact
    folder (no server needed unless --save)."""
    from .steering import Steering, checkpoint_id, effect_lines, save_effects

    def report(folder: Path) -> pd.DataFrame:
        opened = Steering(folder, device)  # the model and slices loaded once for both
        effects = opened.effects(list(specs), list(slices) or None, seed)
        click.echo("\n".join(effect_lines(effects)))
        if prompt is not None:
            first = slices[0] if slices else None
            click.echo(f"continuations of {prompt!r} ({n_tokens} tokens, seed {seed}):")
            for label, text in opened.continuations(list(specs), prompt, n_tokens, first, seed):
                click.echo(f"  {label}: {text!r}")
        return effects

    if Path(checkpoint).is_dir() and not save:
        report(Path(checkpoint))
        return
    with connection.open() as catalog:
        catalog.require_current_schema()
        folder = Path(checkpoint) if Path(checkpoint).is_dir() else catalog.artifact(checkpoint)
        effects = report(folder)
        if save:
            identity = checkpoint_id(folder)
            saved = save_effects(catalog.driver, catalog.database, identity, effects, seed)
            click.echo(f"Saved {effects['spec'].nunique()} intervention(s) on {identity}: {saved} measurement(s).")


@cli.command("interventions")
@click.option("--model", help="Only this model's.")
@click.option("--channel", help="Only interventions on this channel.")
@click.option("--data", "slice_name", help="Only measurements on this slice.")
@click.option(
    "--format", "fmt", type=click.Choice(ROW_FORMATS), default="table", show_default=True, help="Output format."
)
@connection_options
def interventions_command(
    connection: Connection, model: str | None, channel: str | None, slice_name: str | None, fmt: str
) -> None:
    """The interventions saved by steer --save: per checkpoint, channel, spec and slice, the loss change
    with its standard error, accuracy change, KL, and whether it still measures the loaded checkpoint."""
    with connection.open() as catalog:
        rows = catalog.rows("interventions", model=model, channel=channel, slice=slice_name)
    click.echo(render(rows, fmt))


@cli.command("directions")
@click.argument("checkpoint")
@click.option("--data", "slice_name", required=True, help="The slice whose steering (ingest --steer) is shown.")
@click.option("--channel", help="Only this channel's write directions.")
@click.option(
    "--format", "fmt", type=click.Choice(ROW_FORMATS), default="table", show_default=True, help="Output format."
)
@connection_options
def directions_command(connection: Connection, checkpoint: str, slice_name: str, channel: str | None, fmt: str) -> None:
    """What each write direction of CHECKPOINT does: the output tokens it promotes and suppresses directly,
    and, where the ingest measured it (--steer), the loss change, accuracy change, KL and share of top
    tokens changed on the slice when it is pushed up and down. Largest loss change first."""
    with connection.open() as catalog:
        rows = catalog.rows("directions", checkpoint=checkpoint, slice=slice_name, channel=channel)
    click.echo(render(rows, fmt))


@cli.group("plot")
def plot_group() -> None:
    """Figures drawn from the catalog."""


@plot_group.command("timeline")
@click.argument("model")
@click.option("--data", "slice_name", required=True, help="The slice whose effects are followed.")
@click.option("--channel", "channels", multiple=True, help="A channel to follow (default: the last circuit's).")
@click.option(
    "--edge", "edges", multiple=True, help="An edge WRITER:READER:ROLE to follow (default: the last 3 strongest)."
)
@click.option(
    "-o", "--out", "path", required=True, type=click.Path(dir_okay=False, path_type=Path), help=".svg or .png"
)
@connection_options
def plot_timeline_command(
    connection: Connection, model: str, slice_name: str, channels: tuple[str, ...], edges: tuple[str, ...], path: Path
) -> None:
    """Draw MODEL's channels' ablation effects and edges' patched effects on a slice against the
    training step (by default the last checkpoint's circuit by faithfulness and its strongest edges)."""
    from .timeline import check_plot_path, parse_edge

    check_plot_path(path)  # before connecting: a bad path or edge writes nothing
    parsed = [parse_edge(e) for e in edges] or None
    with connection.open() as catalog:
        frame = catalog.training_timeline(model, slice_name, list(channels) or None, parsed, path)
    click.echo(
        f"{frame['name'].nunique()} channels and edges over {frame['step'].nunique()} checkpoints drawn -> {path}"
    )


@cli.command("timeline")
@click.argument("model")
@click.argument("channel")
@click.option(
    "--plot", type=click.Path(dir_okay=False, path_type=Path), help="Also draw it to this file (.svg or .png)."
)
@click.option(
    "--format", "fmt", type=click.Choice(ROW_FORMATS), default="table", show_default=True, help="Output format."
)
@connection_options
def timeline_command(connection: Connection, model: str, channel: str, plot: Path | None, fmt: str) -> None:
    """CHANNEL of MODEL across its checkpoints: effect per slice, circuit, lineage, similarities, ranks."""
    from .timeline import check_plot_path

    if plot is not None:
        check_plot_path(plot)  # before connecting: a bad path writes nothing
    with connection.open() as catalog:
        rows = catalog.timeline(model, channel, plot)
    click.echo(render(rows.to_dict("records"), fmt))
    if plot is not None:
        click.echo(f"drawn -> {plot}")


# --- the reference models and the demo ---------------------------------------------------------------


@cli.group("reference", cls=AtlasGroup)
def reference_group() -> None:
    """Reference models with known circuits, trained here (no model hub needed)."""


reference_out_option = click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the checkpoints  [default: $CIRCUIT_ATLAS_CACHE/reference-models]",
)
reference_seed_option = click.option(
    "--seed", default=0, show_default=True, help="Training seed (several seeds, several models)."
)


@reference_group.command("train")
@reference_out_option
@reference_seed_option
@click.option("--steps", default=3000, show_default=True, type=click.IntRange(min=1), help="Training steps.")
@click.option("--layers", default=2, show_default=True, type=click.IntRange(1, 12), help="Layers.")
@click.option("--heads", type=click.IntRange(1, 16), help="Heads per layer  [default: 2; 4 with --attn-only]")
@click.option(
    "--attn-only",
    is_flag=True,
    help="Train the attention-only induction model instead: no MLPs, LayerNorm, learned absolute "
    "positions, saved as TransformerLens-native checkpoints (hooked_transformer_config.json plus a "
    "state dict step-NNNNN.pt per checkpoint; ingest with CONFIG.json --checkpoint STEP.pt).",
)
@click.option(
    "--retrain",
    is_flag=True,
    help="Train here even where the package ships this recipe trained (training differs across CPUs).",
)
def reference_train(
    out: Path | None, seed: int, steps: int, layers: int, heads: int | None, attn_only: bool, retrain: bool
) -> None:
    """Train (or reuse) the induction model and save its checkpoints as HF directories, or with
    --attn-only the attention-only induction model as TransformerLens-native checkpoints. The recipes
    the demo and the tests use are shipped trained and copied, the same on every machine; a recipe
    other than the default trains into a folder of its own (its name with a hash of the recipe)."""
    from circuit_atlas.reference import default_reference_dir

    out = out or default_reference_dir()
    if attn_only:
        from circuit_atlas.reference.attention_only import NATIVE_CONFIG, AttentionOnlyRecipe, train_attention_only

        attn_recipe = AttentionOnlyRecipe(seed=seed, steps=steps, n_layers=layers, n_heads=heads or 4)
        files = train_attention_only(attn_recipe, out, echo=click.echo, retrain=retrain)
        root = files[0].parent
        click.echo(
            f"{len(files)} checkpoints in {root}; ground truth in {root / 'head_scores.json'}. Ingest with: "
            f"circuit-atlas ingest {root / NATIVE_CONFIG} --checkpoint {files[-1]} --data repeated --out DIR"
        )
        return
    from circuit_atlas.reference.induction import InductionRecipe, train_induction

    recipe = InductionRecipe(seed=seed, steps=steps, n_layers=layers, n_heads=heads or 2)
    folders = train_induction(recipe, out, echo=click.echo, retrain=retrain)
    click.echo(
        f"{len(folders)} checkpoints in {folders[0].parent}; ground truth in {folders[0].parent / 'head_scores.json'}"
    )


@reference_group.command("match-seeds")
@reference_out_option
@click.option(
    "--artifacts",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder for the artifacts of the variants' final checkpoints.",
)
def reference_match_seeds(out: Path | None, artifacts: Path) -> None:
    """Train (or reuse) the induction model at seeds 0 and 1 and 4 heads wide, ingest their final
    checkpoints, and print how well fingerprints match their previous token and induction heads."""
    from circuit_atlas.reference import default_reference_dir
    from circuit_atlas.reference.seeds import measure

    click.echo("\n".join(measure(out or default_reference_dir(), artifacts).lines()))


@reference_group.command("train-text")
@reference_out_option
@reference_seed_option
@click.option("--steps", default=800, show_default=True, type=click.IntRange(min=1), help="Training steps.")
def reference_train_text(out: Path | None, seed: int, steps: int) -> None:
    """Train (or reuse) a byte-level model of this Python's standard library source text."""
    from circuit_atlas.reference import default_reference_dir
    from circuit_atlas.reference.stdlib_text import HELDOUT_FILE, StdlibTextRecipe, train_stdlib_text

    recipe = StdlibTextRecipe(seed=seed, steps=steps)
    folders = train_stdlib_text(recipe, out or default_reference_dir(), echo=click.echo)
    click.echo(
        f"{len(folders)} checkpoints in {folders[0].parent}; held-out text (a token file for --data) in "
        f"{folders[0].parent / HELDOUT_FILE}"
    )


@reference_group.command("train-first-unique")
@reference_out_option
@click.option("--seed", default=3, show_default=True, help="Training seed (several seeds, several models).")
@click.option("--retrain", is_flag=True, help="Train here even where a cached or shipped copy exists.")
def reference_train_first_unique(out: Path | None, seed: int, retrain: bool) -> None:
    """Train (or reuse) the first-unique-character model, whose layer-1 heads each serve their own
    answer letters, and print each head's letter group (measured by mean ablation)."""
    from circuit_atlas.reference import default_reference_dir
    from circuit_atlas.reference.attention_only import NATIVE_CONFIG
    from circuit_atlas.reference.first_unique import LETTER_EFFECTS, FirstUniqueRecipe, train_first_unique

    files = train_first_unique(
        FirstUniqueRecipe(seed=seed), out or default_reference_dir(), echo=click.echo, retrain=retrain
    )
    truth = json.loads((files[-1].parent / LETTER_EFFECTS).read_text())[files[-1].stem]
    for head, letters in truth["groups"].items():
        click.echo(f"{head} serves the answers {' '.join(chr(ord('a') + letter) for letter in letters) or '(none)'}")
    click.echo(
        f"{len(files)} checkpoints in {files[-1].parent} (config {NATIVE_CONFIG}); ground truth in {LETTER_EFFECTS}"
    )


@reference_group.command("train-modular-addition")
@reference_out_option
@reference_seed_option
@click.option("--retrain", is_flag=True, help="Train here even where a cached or shipped copy exists.")
def reference_train_modular_addition(out: Path | None, seed: int, retrain: bool) -> None:
    """Train (or reuse) the modular-addition series, which memorises its training pairs before it
    forms the algorithm, write its training and held-out pairs as task files, and print its progress."""
    from circuit_atlas.reference import default_reference_dir
    from circuit_atlas.reference.attention_only import NATIVE_CONFIG
    from circuit_atlas.reference.modular_addition import (
        PROGRESS,
        ModularAdditionRecipe,
        train_modular_addition,
        write_slices,
    )

    recipe = ModularAdditionRecipe(seed=seed)
    files = train_modular_addition(recipe, out or default_reference_dir(), echo=click.echo, retrain=retrain)
    root = files[-1].parent
    truth = json.loads((root / PROGRESS).read_text())
    for label, row in truth["checkpoints"].items():
        click.echo(
            f"{label}: training loss {row['train_loss']:.3f}, held-out loss {row['held_out_loss']:.3f} "
            f"(chance {math.log(recipe.p):.2f}), key-frequency share {row['key_share']:.2f}"
        )
    data = write_slices(root / "pairs", recipe)
    click.echo(
        f"{len(files)} checkpoints in {root} (config {NATIVE_CONFIG}); ground truth in {PROGRESS}. Ingest the series "
        f"with: circuit-atlas ingest {root / NATIVE_CONFIG} "
        + " ".join(f"--checkpoint {f}" for f in files[:2])
        + " ... "
        + " ".join(f"--data {d}" for d in data)
        + " --out DIR"
    )


@cli.command("demo")
@server_dir_option
@click.option(
    "--artifacts",
    type=click.Path(file_okay=False, path_type=Path),
    default=lambda: default_server_dir().parent / "artifacts",
    show_default="~/.circuit-atlas/artifacts",
    help="Folder for the artifact directories.",
)
def demo_command(server_dir: Path, artifacts: Path) -> None:
    """The main job on the built-in reference model: train, ingest, load, and show the circuits."""
    from .demo import run_demo

    run_demo(server_dir, artifacts, echo=click.echo)


def main() -> None:
    # The driver logs a lost connection at ERROR level before raising it; the CLI reports the error
    # itself in one line, so the driver's records are not printed (Python's last-resort handler).
    logging.getLogger("neo4j").addHandler(logging.NullHandler())
    cli(prog_name="circuit-atlas")
