"""Reset a test database to nothing: no nodes (schema history included), constraints or indexes."""

from __future__ import annotations


def _quoted(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def empty_database(driver, database: str) -> None:
    """Delete every node and drop every constraint and index but the built-in lookup ones.

    Index and constraint names come from the server's own SHOW output, never from test input;
    Cypher has no parameters for schema names, so they are quoted here.
    """
    with driver.session(database=database) as session:
        session.run("MATCH (n) CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF 10000 ROWS").consume()
        for record in session.run("SHOW CONSTRAINTS YIELD name").data():
            session.run(f"DROP CONSTRAINT {_quoted(record['name'])}").consume()
        for record in session.run("SHOW INDEXES YIELD name, type WHERE type <> 'LOOKUP'").data():
            session.run(f"DROP INDEX {_quoted(record['name'])}").consume()
