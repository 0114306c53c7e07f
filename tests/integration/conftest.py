"""Integration tier: every test here runs against the session's real Neo4j server."""

import pytest

import hand_made_catalog
from circuit_atlas import queries
from circuit_atlas.schema.migrations import migrate


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/integration/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def cli_env(neo4j_settings):
    """Environment that points the CLI at the session's server."""
    return {"NEO4J_URI": neo4j_settings.uri, "NEO4J_USER": neo4j_settings.user,
            "NEO4J_PASSWORD": neo4j_settings.password, "NEO4J_DATABASE": neo4j_settings.database}


@pytest.fixture
def catalog(empty_catalog, neo4j_settings):
    """The hand-made catalog; call it with a query name and parameters to get that query's rows."""
    migrate(empty_catalog, neo4j_settings.database)
    hand_made_catalog.build(empty_catalog, neo4j_settings.database)
    library = queries.library()
    return lambda name, **params: queries.run(empty_catalog, neo4j_settings.database, library[name], params)
