"""Versioned, checksummed schema migrations, recorded in the database they change.

A migration is a file ``V<NNN>__<name>.cypher`` in this package, statements each ending in ``;``:
either DDL (constraints and indexes, all ``IF NOT EXISTS`` with fixed names, or ``DROP ... IF
EXISTS``) or idempotent data
updates (``MATCH ... SET n:Label``, a backfill that sets a property only where it is null, or
the ``MERGE`` of one node by a constant id), never both in one file. ``migrate`` applies the
pending ones in version order, each in its own transaction, then records
``(:SchemaMigration {version, name, checksum, applied_at})`` in a second transaction (Neo4j
refuses schema changes and writes in one). Because every statement is idempotent, a crash
between the two only means the next run applies the same statements again.

Applied migrations are immutable: a file whose statements' SHA-256 differs from the recorded
checksum is refused, and so is a catalog whose history names a migration this code does not have
(a newer catalog). The checksum covers the statements, not the comments, so documentation can be
fixed; circuit-atlas 0.1 hashed whole files, and the 0.1 checksums of V001-V004
(:data:`WHOLE_FILE_CHECKSUMS_0_1`) are accepted and rewritten on the next ``migrate``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import neo4j

from circuit_atlas.errors import UserError

FILENAME = re.compile(r"^V(\d{3})__([a-z0-9_]+)\.cypher$")

#: The checksums circuit-atlas 0.1 recorded (SHA-256 of the whole file) for the same statements.
WHOLE_FILE_CHECKSUMS_0_1 = {
    1: "93ca673f8b39d1d3cfa6d3ed9dd206d68d4c711d90000536d5e7943ef02263e2",
    2: "b5c28a04e20f1c6dd433a13f570f393131dddec54c4d2f81a15fabcdcb61fcc6",
    3: "916aa3dd8d41b50f2d6325a0ba7b5d9d26a054316d8dac73e61c70a70690bf7f",
    4: "b558104324c574ed091ee381c3d68bcf7af62f30caeb00f7084b7bae81fd1e1a",
}


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    checksum: str
    statements: tuple[str, ...]

    @property
    def filename(self) -> str:
        return f"V{self.version:03d}__{self.name}.cypher"


@dataclass(frozen=True)
class MigrationState:
    """One row of ``schema migrate --list``."""

    version: int
    name: str
    checksum: str
    applied_at: str | None  # ISO time, None while pending

    @property
    def status(self) -> str:
        return "applied" if self.applied_at else "pending"


def split_statements(text: str) -> tuple[str, ...]:
    """The statements of a Cypher script: ``//`` comment lines dropped, split at a line-final ``;``."""
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))
    return tuple(s.strip() for s in re.split(r";\s*(?:\n|$)", body) if s.strip())


def checksum(text: str) -> str:
    """SHA-256 of a migration's statements (comments and line-ending style do not count)."""
    return hashlib.sha256(";\n".join(split_statements(text.replace("\r\n", "\n"))).encode()).hexdigest()


def available_migrations() -> list[Migration]:
    """The migrations shipped with this code, in version order."""
    found = []
    for entry in resources.files("circuit_atlas.schema").iterdir():
        match = FILENAME.match(entry.name)
        if match:
            text = entry.read_text()
            found.append(Migration(int(match.group(1)), match.group(2), checksum(text), split_statements(text)))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    assert versions == list(range(1, len(found) + 1)), f"migration versions must be 1..n without gaps: {versions}"
    return found


def _recorded(driver: neo4j.Driver, database: str) -> dict[int, dict]:
    records, _, _ = driver.execute_query(
        "MATCH (m:SchemaMigration) RETURN m.version AS version, m.name AS name, "
        "m.checksum AS checksum, toString(m.applied_at) AS applied_at",
        database_=database,
        routing_=neo4j.RoutingControl.READ,
    )
    return {r["version"]: r.data() for r in records}


def migration_states(driver: neo4j.Driver, database: str) -> list[MigrationState]:
    """Every known migration with its state; raises :class:`UserError` on an edited or unknown one."""
    recorded = _recorded(driver, database)
    known = {m.version: m for m in available_migrations()}
    unknown = sorted(set(recorded) - set(known))
    if unknown:
        raise UserError(
            f"The catalog's schema has migration(s) {unknown} that this circuit-atlas "
            f"does not know: it was written by a newer version. Upgrade circuit-atlas."
        )
    states = []
    for version, migration in known.items():
        record = recorded.get(version)
        if record and record["checksum"] == WHOLE_FILE_CHECKSUMS_0_1.get(version):
            record = {**record, "checksum": migration.checksum}  # recorded by 0.1: the same statements
        if record and record["checksum"] != migration.checksum:
            raise UserError(
                f"Migration {migration.filename} was applied with checksum {record['checksum'][:12]} "
                f"but the file's statements now have {migration.checksum[:12]}. Applied migrations must "
                f"not be edited: restore the file and put the change in a new migration."
            )
        states.append(
            MigrationState(version, migration.name, migration.checksum, record["applied_at"] if record else None)
        )
    return states


def migrate(driver: neo4j.Driver, database: str) -> list[Migration]:
    """Apply every pending migration in order; returns those applied (empty when up to date)."""
    states = migration_states(driver, database)
    pending = [s.version for s in states if s.status == "pending"]
    by_version = {m.version: m for m in available_migrations()}
    driver.execute_query(
        "UNWIND $records AS r MATCH (h:SchemaMigration {version: r.version}) "
        "WHERE h.checksum <> r.checksum SET h.checksum = r.checksum",
        records=[{"version": s.version, "checksum": s.checksum} for s in states if s.applied_at],
        database_=database,
    )
    applied = []
    for version in pending:
        migration = by_version[version]
        with driver.session(database=database) as session:
            with session.begin_transaction() as tx:
                for statement in migration.statements:
                    tx.run(statement).consume()
                tx.commit()
            session.execute_write(_record_applied, migration)
        applied.append(migration)
    return applied


def _record_applied(tx: neo4j.ManagedTransaction, migration: Migration) -> None:
    """Add ``migration`` to the schema's history of applied migrations."""
    tx.run(
        "MERGE (h:SchemaMigration {version: $version}) "
        "SET h.name = $name, h.checksum = $checksum, h.applied_at = datetime()",
        version=migration.version,
        name=migration.name,
        checksum=migration.checksum,
    ).consume()


def require_current_schema(driver: neo4j.Driver, database: str) -> None:
    """Raise :class:`UserError` unless every migration is applied (e.g. a catalog from an older schema)."""
    pending = [s for s in migration_states(driver, database) if s.status == "pending"]
    if pending:
        first = pending[0]
        more = f" and {len(pending) - 1} more are" if len(pending) > 1 else " is"
        raise UserError(
            f"The catalog's schema is out of date: migration V{first.version:03d}__{first.name}{more} "
            f"pending. Run `circuit-atlas schema migrate`."
        )
