"""The bulk path: artifacts imported by neo4j-admin into a new database give the loader's graph."""

import random

from click.testing import CliRunner
from snapshots import count, graph_snapshot
from test_concurrent_loads import write_all

from circuit_atlas.cli import cli
from circuit_atlas.connection import Neo4jSettings, open_driver
from circuit_atlas.loader import load_artifact
from circuit_atlas.local_server import Distribution, LocalServer, ServerSettings, free_port
from circuit_atlas.schema.migrations import migrate


def test_a_bulk_import_gives_the_graph_of_loading_one_by_one(migrated, neo4j_settings, tmp_path, monkeypatch):
    root = tmp_path / "artifacts"
    paths = write_all(root)
    for path in random.Random(3).sample(paths, len(paths)):
        load_artifact(migrated, neo4j_settings.database, path, echo=lambda _: None)
    loaded = graph_snapshot(migrated, neo4j_settings.database)
    assert count(migrated, neo4j_settings.database, "()-[:ANALOGOUS]->()") > 0
    assert count(migrated, neo4j_settings.database, "(:Subspace)-[:STEERED_ON]->(:DataSlice)") > 0

    folder = tmp_path / "server"
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["neo4j", "import", str(root), "--dir", str(folder)])
    assert result.exit_code == 0, result.output
    assert (folder / "logs" / "import.report").is_file() and not (tmp_path / "import.report").exists()
    assert f"Imported {len(paths)} checkpoints" in result.output
    again = CliRunner().invoke(cli, ["neo4j", "import", str(root), "--dir", str(folder)])
    assert again.exit_code == 1 and "--replace" in again.output

    server = LocalServer(folder, Distribution.in_cache())
    settings = server.start(
        ServerSettings(free_port(), free_port(), heap="512m", pagecache="128m"), echo=lambda _: None
    )
    try:
        driver = open_driver(Neo4jSettings(settings.bolt_uri, "neo4j", server.password()))
        with driver:
            migrate(driver, "neo4j")
            assert graph_snapshot(driver, "neo4j") == loaded
    finally:
        server.stop()
