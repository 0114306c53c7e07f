"""The Cypher library: one query per ``.cypher`` file, loaded by name.

Each file opens with a header of ``//`` comment lines, the same text Neo4j Browser shows when the
file is pasted there::

    // name: top_edges
    // description: The strongest edges of a checkpoint ...
    // returns: writer, reader, role, weight, flow, attribution, strength
    // params: $checkpoint, $by ('weight', 'flow' or 'attribution'), $limit

User values reach a query only as parameters; the library never formats text into Cypher.
Beside the queries lies the stylesheet that Neo4j Browser draws the catalog with, and in ``load/``
the loader's write statements, under the same header convention (they are not part of the
read-only library that ``circuit-atlas query`` runs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import neo4j

from circuit_atlas.errors import UserError

HEADER_FIELDS = ("name", "description", "returns", "params")
STYLESHEET = "circuit-atlas.grass"


@dataclass(frozen=True)
class Query:
    name: str
    description: str
    returns: str
    params: tuple[str, ...]
    text: str

    @property
    def body(self) -> str:
        """The Cypher without its comment lines."""
        return "\n".join(line for line in self.text.splitlines() if not line.lstrip().startswith("//"))

    def used_params(self) -> set[str]:
        """The ``$parameters`` the Cypher body uses."""
        return set(re.findall(r"\$(\w+)", self.body))


def parse(text: str) -> Query:
    """A query file's header and body; raises ValueError on a header that lacks a field."""
    fields: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        if not line.startswith("//"):
            break
        content = line[2:].strip()
        match = re.match(r"(\w+):\s*(.*)", content)
        if match and match.group(1) in HEADER_FIELDS:
            current = match.group(1)
            fields[current] = match.group(2)
        elif current:
            fields[current] += " " + content
    missing = [f for f in HEADER_FIELDS if f not in fields]
    if missing:
        raise ValueError(f"query header lacks {missing}")
    params = tuple(dict.fromkeys(re.findall(r"\$(\w+)", fields["params"])))
    return Query(fields["name"], fields["description"], fields["returns"], params, text)


def _read_folder(folder) -> dict[str, Query]:
    queries = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".cypher"):
            query = parse(entry.read_text())
            assert query.name == entry.name.removesuffix(".cypher"), f"{entry.name} is named {query.name}"
            queries[query.name] = query
    return queries


def library() -> dict[str, Query]:
    """Every read query shipped in this package, by name."""
    return _read_folder(resources.files(__name__))


def load_statements() -> dict[str, Query]:
    """The loader's write statements (``load/*.cypher``), by name."""
    return _read_folder(resources.files(__name__).joinpath("load"))


def stylesheet() -> str:
    """Neo4j Browser's stylesheet (GraSS) for the catalog: a colour per block kind, captions, and
    widths for the graded ``CARRIES_*`` relationships of ``circuit_view`` and ``channel_graph``."""
    return resources.files(__name__).joinpath(STYLESHEET).read_text()


def style_command() -> str:
    """The stylesheet as one ``:style`` line to paste into Neo4j Browser's editor."""
    return ":style " + " ".join(stylesheet().split())


def run(driver: neo4j.Driver, database: str, query: Query, params: dict) -> list[dict]:
    """Run ``query`` in a read transaction (it cannot write) and return its rows."""
    try:
        with driver.session(database=database, default_access_mode=neo4j.READ_ACCESS) as session:
            return session.execute_read(lambda tx: [record.data() for record in tx.run(query.text, params)])
    except neo4j.exceptions.ClientError as error:
        raise UserError(
            f"Query {query.name} failed with {params}: {error.message} "
            f"(parameters: {', '.join('$' + p for p in query.params)})."
        ) from error
