"""The ``circuit-atlas`` command line. It only wires the modules together.

Every library error meant for the user is a :class:`UserError`; the root group turns it into a
one-line click error and a non-zero exit.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from pathlib import Path

import click

from circuit_atlas.schema import migrations

from .connection import Neo4jSettings, open_driver, server_version
from .errors import UserError
from .formatting import FORMATS, render
from .neo4j_runtime import Distribution, LocalServer, ServerSettings, default_server_dir


class AtlasGroup(click.Group):
    """A click group that reports :class:`UserError` as a clean CLI error."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as error:
            raise click.ClickException(str(error)) from error


@click.group(cls=AtlasGroup)
@click.version_option(package_name="circuit-atlas")
def cli() -> None:
    """Circuit Atlas: the circuits inside transformer models, cataloged in Neo4j."""


# --- connection -------------------------------------------------------------------------------

server_dir_option = click.option(
    "--dir", "server_dir", type=click.Path(file_okay=False, path_type=Path),
    envvar="CIRCUIT_ATLAS_NEO4J_DIR", default=default_server_dir, show_default="~/.circuit-atlas/neo4j",
    help="Folder of the local Neo4j server (its data, logs and password).")


def connection_options(command):
    """Add --uri --user --password --database --neo4j-dir and pass ``settings: Neo4jSettings``."""

    @click.option("--uri", envvar="NEO4J_URI", help="Bolt URI of the catalog  [env NEO4J_URI; "
                  "default: the local server of --neo4j-dir, else bolt://127.0.0.1:7687]")
    @click.option("--user", envvar="NEO4J_USER", default="neo4j", show_default=True,
                  help="Neo4j user  [env NEO4J_USER]")
    @click.option("--password", envvar="NEO4J_PASSWORD",
                  help="Neo4j password  [env NEO4J_PASSWORD; default: the local server's password file]")
    @click.option("--database", envvar="NEO4J_DATABASE", default="neo4j", show_default=True,
                  help="Neo4j database  [env NEO4J_DATABASE]")
    @click.option("--neo4j-dir", type=click.Path(file_okay=False, path_type=Path),
                  envvar="CIRCUIT_ATLAS_NEO4J_DIR", default=default_server_dir,
                  show_default="~/.circuit-atlas/neo4j",
                  help="Local server folder to take the URI and password from when not given.")
    @functools.wraps(command)
    def wrapper(uri, user, password, database, neo4j_dir, **kwargs):
        settings = resolve_settings(uri, user, password, database, neo4j_dir)
        return command(settings=settings, **kwargs)

    return wrapper


def resolve_settings(uri: str | None, user: str, password: str | None, database: str,
                     neo4j_dir: Path) -> Neo4jSettings:
    """Explicit options and env vars win; a local server folder fills in what is missing."""
    server = LocalServer(neo4j_dir, Distribution.in_cache())
    local = server.settings()
    if uri is None:
        uri = local.bolt_uri if local else "bolt://127.0.0.1:7687"
    if password is None and local is not None and uri == local.bolt_uri:
        password = server.password()
    if password is None:
        raise UserError(f"No Neo4j password for {uri}: pass --password or set NEO4J_PASSWORD, or "
                        f"start a local server with `circuit-atlas neo4j start` (found through "
                        f"--neo4j-dir).")
    return Neo4jSettings(uri=uri, user=user, password=password, database=database)


@contextmanager
def catalog(settings: Neo4jSettings):
    driver = open_driver(settings)
    try:
        yield driver
    finally:
        driver.close()


# --- neo4j: the local server ------------------------------------------------------------------

@cli.group("neo4j", cls=AtlasGroup)
def neo4j_group() -> None:
    """Run a local Neo4j Community server assembled from Maven Central (no Docker needed)."""


@neo4j_group.command("install")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), envvar="CIRCUIT_ATLAS_CACHE",
              help="Where the jars go  [env CIRCUIT_ATLAS_CACHE; default ~/.cache/circuit-atlas]")
def neo4j_install(cache_dir: Path | None) -> None:
    """Download the Neo4j server jars with Maven (once; later calls reuse them)."""
    Distribution.in_cache(cache_dir).install(echo=click.echo)


@neo4j_group.command("start")
@server_dir_option
@click.option("--bolt-port", default=7687, show_default=True, help="Bolt port on 127.0.0.1.")
@click.option("--http-port", default=7474, show_default=True, help="HTTP (Browser) port on 127.0.0.1.")
@click.option("--heap", default="1g", show_default=True, help="JVM heap size.")
@click.option("--pagecache", default="512m", show_default=True, help="Neo4j page cache size.")
@click.option("--timeout", default=180.0, show_default=True, help="Seconds to wait for Bolt to answer.")
def neo4j_start(server_dir: Path, bolt_port: int, http_port: int, heap: str, pagecache: str,
                timeout: float) -> None:
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
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
              help="Output format of --list.")
def schema_migrate(settings: Neo4jSettings, list_only: bool, fmt: str) -> None:
    """Apply the pending schema migrations (a no-op when up to date)."""
    with catalog(settings) as driver:
        if list_only:
            rows = [{"version": f"V{s.version:03d}", "name": s.name, "status": s.status,
                     "applied_at": s.applied_at, "checksum": s.checksum[:12]}
                    for s in migrations.migration_states(driver, settings.database)]
            click.echo(render(rows, fmt))
            return
        applied = migrations.migrate(driver, settings.database)
        latest = migrations.available_migrations()[-1]
        where = f"{settings.uri} (Neo4j {server_version(driver)}, database {settings.database})"
        if applied:
            click.echo(f"Applied {', '.join(m.filename for m in applied)} on {where}.")
        else:
            click.echo(f"Schema already at V{latest.version:03d} on {where}; nothing to apply.")


def main() -> None:
    cli(prog_name="circuit-atlas")
