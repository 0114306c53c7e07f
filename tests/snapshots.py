"""The whole catalog as sortable text, to compare two catalogs (or one before and after) exactly."""

from __future__ import annotations

import json


def graph_snapshot(driver, database: str) -> tuple[list[str], list[str]]:
    """Every node's labels and properties and every relationship with its ends' ids and properties
    (schema history and the publish lock left out), each as one JSON line, sorted."""
    nodes = driver.execute_query(
        "MATCH (n) WHERE NOT n:SchemaMigration AND NOT n:PublishLock RETURN labels(n) AS l, properties(n) AS p",
        database_=database,
    ).records
    rels = driver.execute_query(
        "MATCH (a)-[r]->(b) RETURN a.id AS a, type(r) AS t, properties(r) AS p, b.id AS b", database_=database
    ).records
    return sorted(json.dumps([sorted(r["l"]), r["p"]], sort_keys=True, default=str) for r in nodes), sorted(
        json.dumps([r["a"], r["t"], r["p"], r["b"]], sort_keys=True, default=str) for r in rels
    )


def count(driver, database: str, pattern: str) -> int:
    """How many matches of a fixed pattern, e.g. ``()-[:MATCHES]->()`` (test text, never user input)."""
    return driver.execute_query(f"MATCH {pattern} RETURN count(*) AS n", database_=database).records[0]["n"]
