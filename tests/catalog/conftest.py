"""Catalog tier: every test here runs against the session's real Neo4j server."""

import hand_made_catalog
import pytest

from circuit_atlas import queries
from circuit_atlas.schema.migrations import migrate


@pytest.fixture
def cli_env(neo4j_settings):
    """Environment that points the CLI at the session's server."""
    return {
        "NEO4J_URI": neo4j_settings.uri,
        "NEO4J_USER": neo4j_settings.user,
        "NEO4J_PASSWORD": neo4j_settings.password,
        "NEO4J_DATABASE": neo4j_settings.database,
    }


@pytest.fixture
def migrated(empty_catalog, neo4j_settings):
    """The session's database, emptied and migrated to the current schema."""
    migrate(empty_catalog, neo4j_settings.database)
    return empty_catalog


@pytest.fixture
def catalog(migrated, neo4j_settings, tmp_path_factory):
    """The hand-made catalog; call it with a query name and parameters to get that query's rows."""
    hand_made_catalog.build(migrated, neo4j_settings.database, tmp_path_factory.mktemp("hand-made"))
    library = queries.library()
    return lambda name, **params: queries.run(
        migrated, neo4j_settings.database, library[name], library[name].check(params)
    )
