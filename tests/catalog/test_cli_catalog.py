"""The CLI against the real server: migrate, list, and clear errors for bad connections."""

import json

from click.testing import CliRunner

from circuit_atlas.cli import cli
from circuit_atlas.local_server import free_port
from circuit_atlas.schema.migrations import available_migrations


def invoke(args, env):
    return CliRunner().invoke(cli, args, env=env)


def test_migrate_then_migrate_again_then_list(empty_catalog, cli_env):
    first = invoke(["schema", "migrate"], cli_env)
    assert first.exit_code == 0, first.output
    assert "Applied V001__unique_ids.cypher" in first.output
    second = invoke(["schema", "migrate"], cli_env)
    assert second.exit_code == 0, second.output
    assert "nothing to apply" in second.output
    listed = invoke(["schema", "migrate", "--list", "--format", "json"], cli_env)
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)
    assert [r["version"] for r in rows] == [f"V{m.version:03d}" for m in available_migrations()]
    assert {r["status"] for r in rows} == {"applied"}


def test_list_on_an_empty_catalog_shows_pending(empty_catalog, cli_env):
    listed = invoke(["schema", "migrate", "--list"], cli_env)
    assert listed.exit_code == 0, listed.output
    assert listed.output.count("pending") == len(available_migrations())


def test_wrong_password_is_a_clear_error(empty_catalog, cli_env):
    result = invoke(["schema", "migrate"], {**cli_env, "NEO4J_PASSWORD": "not-the-password"})
    assert result.exit_code == 1
    assert "refused the credentials of user 'neo4j'" in result.output
    assert "Traceback" not in result.output


def test_a_server_that_is_down_is_a_clear_error(tmp_path):
    env = {"NEO4J_URI": f"bolt://127.0.0.1:{free_port()}", "NEO4J_PASSWORD": "whatever"}
    result = invoke(["schema", "migrate"], env)
    assert result.exit_code == 1
    assert "No Neo4j server answers at bolt://127.0.0.1:" in result.output
    assert "circuit-atlas neo4j start" in result.output


def test_a_missing_database_is_a_clear_error(empty_catalog, cli_env):
    result = invoke(["schema", "migrate"], {**cli_env, "NEO4J_DATABASE": "nosuchdb"})
    assert result.exit_code == 1
    assert "has no database 'nosuchdb'" in result.output


def test_no_password_anywhere_is_a_clear_error(tmp_path):
    result = invoke(["schema", "migrate", "--neo4j-dir", str(tmp_path)], {"NEO4J_URI": None, "NEO4J_PASSWORD": None})
    assert result.exit_code == 1
    assert "No Neo4j password" in result.output
