"""Connecting to the catalog: one code path whatever runs the server (local, Docker, remote).

:func:`open_driver` returns a verified ``neo4j.Driver`` or raises :class:`UserError` with a
message that says whether the server is down, refused the credentials, or lacks the database.
Callers pass the driver and the database name explicitly; nothing here is global.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import neo4j
from neo4j.exceptions import AuthError, ClientError, ConfigurationError, ServiceUnavailable

from .errors import UserError


@dataclass(frozen=True)
class Neo4jSettings:
    """Where the catalog lives."""

    uri: str
    user: str
    password: str
    database: str = "neo4j"


BOLT_SCHEMES = ("bolt", "bolt+s", "bolt+ssc", "neo4j", "neo4j+s", "neo4j+ssc")


def check_uri(uri: str) -> None:
    """:class:`UserError` unless ``uri`` is a Bolt URI (``bolt://HOST[:PORT]``, ``neo4j://...``)."""
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as error:  # a port out of range, a broken IPv6 address
        raise UserError(
            f"Invalid Neo4j URI {uri!r} ({error}). Use bolt://HOST:PORT, e.g. bolt://127.0.0.1:7687."
        ) from error
    if parts.scheme not in BOLT_SCHEMES or not parts.hostname or port == 0:
        raise UserError(
            f"Invalid Neo4j URI {uri!r}: give a Bolt URI ({', '.join(s + '://' for s in BOLT_SCHEMES)}) "
            f"with a host, e.g. bolt://127.0.0.1:7687."
        )


def open_driver(settings: Neo4jSettings, timeout: float = 10.0) -> neo4j.Driver:
    """A driver whose server answered and accepted the credentials for ``settings.database``."""
    if settings.database.lower() == "system":
        raise UserError(
            "--database system is Neo4j's own administration database; it cannot hold a catalog. "
            "Pass the catalog's database (default neo4j) with --database / NEO4J_DATABASE."
        )
    check_uri(settings.uri)
    try:
        driver = neo4j.GraphDatabase.driver(
            settings.uri,
            auth=(settings.user, settings.password),
            connection_timeout=timeout,
            notifications_min_severity="OFF",
        )
    except (ValueError, ConfigurationError) as error:  # what check_uri let through
        raise UserError(f"Invalid Neo4j URI {settings.uri!r}: {error}. Use e.g. bolt://127.0.0.1:7687.") from error
    try:  # a plain session: execute_query would retry an unreachable server for 30 s
        with driver.session(database=settings.database) as session:
            session.run("RETURN 1").consume()
    except AuthError as error:
        driver.close()
        raise UserError(
            f"Neo4j at {settings.uri} refused the credentials of user {settings.user!r}. "
            f"Check --password / NEO4J_PASSWORD (a local server keeps its password in "
            f"DIR/password)."
        ) from error
    except ServiceUnavailable as error:
        driver.close()
        raise UserError(
            f"No Neo4j server answers at {settings.uri}. Start one with "
            f"`circuit-atlas neo4j start`, or point --uri / NEO4J_URI at a running "
            f"server."
        ) from error
    except ClientError as error:
        driver.close()
        if error.code == "Neo.ClientError.Database.DatabaseNotFound":
            raise UserError(
                f"Neo4j at {settings.uri} has no database {settings.database!r}. "
                f"Pass an existing one with --database / NEO4J_DATABASE."
            ) from error
        raise
    return driver


def server_version(driver: neo4j.Driver) -> str:
    """``"5.26.30 community"``, as the server reports it."""
    records, _, _ = driver.execute_query(
        "CALL dbms.components() YIELD versions, edition RETURN versions[0] AS version, edition", database_="system"
    )
    return f"{records[0]['version']} {records[0]['edition']}"
