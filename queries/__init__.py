"""The Cypher library: one query per ``.cypher`` file, loaded by name.

Each file opens with a header of ``//`` comment lines, the same text Neo4j Browser shows when the
file is pasted there::

    // name: top_edges
    // description: The strongest edges of a checkpoint ...
    // returns: writer, reader, role, weight, flow, attribution, strength
    // params: $checkpoint (string), $by ('weight' | 'flow' | 'attribution'), $limit (integer >= 1)

Every parameter declares its type in parentheses: ``string``, ``integer``, ``float``,
``boolean``, ``list`` or ``map``, optionally with a range (``>= 0``, ``> 0``, ``<= 1``,
``in [0, 1]``), or a choice of strings (``'a' | 'b'``); ``or null`` allows null, and a nullable
parameter that is not given is null; ``, default 0.02`` gives the value a parameter that is not
given takes (the one default: the CLI, the API and the export read it from here).
:meth:`Query.check` validates values by these declarations before a query runs (the API's
``Catalog.rows``, which the CLI calls), and :meth:`Query.from_text` reads a ``-p key=value`` text
by its declared type, so a bad value is one clear error instead of a wrong answer.

User values reach a query only as parameters; the library never formats text into Cypher. The
rules several queries apply (what a circuit member is, an edge's effect in a circuit, a component's
least edge) are written once in :mod:`.rules`, and every query applies them in that text.
Beside the queries lies the stylesheet that Neo4j Browser draws the catalog with, and in ``load/``
the loader's write statements, under the same header convention (they are not part of the
read-only library that ``circuit-atlas query`` runs).
"""

from __future__ import annotations

import json
import math
import numbers
import re
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib import resources
from typing import TypeVar

import neo4j

from circuit_atlas.errors import UserError

HEADER_FIELDS = ("name", "description", "returns", "params")
STYLESHEET = "circuit-atlas.grass"
TYPES = ("string", "integer", "float", "boolean", "list", "map")
INT64 = (-(2**63), 2**63 - 1)
#: The first statement of every read transaction: the publish lock, shared (see :func:`read_transaction`).
#: Without the PublishLock node (a catalog never migrated) it matches nothing and locks nothing.
READ_LOCK = "MATCH (lock:PublishLock {id: 'catalog'}) CALL apoc.lock.read.nodes([lock])"
T = TypeVar("T")
_WITHOUT_APOC: weakref.WeakSet[neo4j.Driver] = weakref.WeakSet()  # drivers whose server lacks apoc.lock
_NUMBER = r"-?\d+(?:\.\d+)?(?:e-?\d+)?"
_SPEC = re.compile(
    rf"(?P<type>{'|'.join(TYPES)})(?: of \w+)?"
    rf"(?:\s+(?P<op>>=|>|<=|<)\s*(?P<bound>{_NUMBER})|\s+in\s+\[(?P<low>{_NUMBER}),\s*(?P<high>{_NUMBER})\])?"
)


@dataclass(frozen=True)
class Param:
    """A declared query parameter: its type, range or choices, and whether it may be null."""

    name: str
    type: str  # one of TYPES, or "choice"
    choices: tuple[str, ...] = ()
    op: str | None = None  # ">=", ">", "<=", "<", or "in" (a closed interval)
    bounds: tuple[float, ...] = ()
    nullable: bool = False
    default: str | None = None  # the text of the value a parameter not given takes

    @classmethod
    def parse(cls, name: str, spec: str) -> Param:
        """``spec`` is the text in parentheses after ``$name`` in a header; ValueError if malformed."""
        spec, _, default = spec.strip().partition(", default ")
        if default:
            param = cls.parse(name, spec)
            if not param.check(param.from_text(default.strip()))[1]:
                raise ValueError(f"${name}: default {default} is not {param.describe()}")
            return replace(param, default=default.strip())
        nullable = spec.endswith(" or null")
        spec = spec.removesuffix(" or null").strip()
        if spec.startswith("'"):
            choices = tuple(re.findall(r"'([^']*)'", spec))
            if " | ".join(f"'{c}'" for c in choices) != spec:
                raise ValueError(f"${name}: choices are written 'a' | 'b', got ({spec})")
            return cls(name, "choice", choices=choices, nullable=nullable)
        match = _SPEC.fullmatch(spec)
        if not match:
            raise ValueError(f"${name}: unknown type ({spec}); types are {', '.join(TYPES)} or 'a' | 'b'")
        kind = match["type"]
        bounds: tuple[float, ...]
        if match["op"]:
            op, bounds = match["op"], (float(match["bound"]),)
        elif match["low"]:
            op, bounds = "in", (float(match["low"]), float(match["high"]))
        else:
            op, bounds = None, ()
        if op and kind not in ("integer", "float"):
            raise ValueError(f"${name}: only numbers take a range, not {kind}")
        return cls(name, kind, op=op, bounds=bounds, nullable=nullable)

    def describe(self) -> str:
        """What a value must be, in words: ``an integer >= 1``, ``one of 'weight', 'flow'``."""
        if self.type == "choice":
            text = "one of " + ", ".join(repr(c) for c in self.choices)
        else:
            text = {"integer": "an integer", "float": "a finite number"}.get(self.type, f"a {self.type}")
            if self.op == "in":
                text += f" in [{self.bounds[0]:g}, {self.bounds[1]:g}]"
            elif self.op:
                text += f" {self.op} {self.bounds[0]:g}"
        return text + (" or null" if self.nullable else "") + (f", default {self.default}" if self.default else "")

    def default_value(self):
        """The declared default, read by the declared type (None without one)."""
        return None if self.default is None else self.from_text(self.default)

    def _in_range(self, value: float) -> bool:
        if self.op == "in":
            return self.bounds[0] <= value <= self.bounds[1]
        if self.op is None:
            return True
        bound = self.bounds[0]
        return {">=": value >= bound, ">": value > bound, "<=": value <= bound, "<": value < bound}[self.op]

    def check(self, value):
        """``(value, ok)``: the value as the driver should get it (numpy numbers as Python ones), and
        whether it fits the declaration."""
        if value is None:
            return (None, True) if self.nullable else (None, False)
        if self.type == "integer":
            ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
            value = int(value) if ok else value
            ok = ok and INT64[0] <= value <= INT64[1] and self._in_range(value)
        elif self.type == "float":
            ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
            value = float(value) if ok else value
            ok = ok and math.isfinite(value) and self._in_range(value)
        elif self.type == "choice":
            ok = value in self.choices
        else:
            python = {"string": str, "boolean": bool, "list": (list, tuple), "map": dict}[self.type]
            ok = isinstance(value, python)
        return value, ok

    def from_text(self, text: str):
        """A ``-p name=text`` value read by the declared type (``null`` is None for a nullable one)."""
        if self.nullable and text == "null":
            return None
        try:
            if self.type == "integer":
                return int(text)
            if self.type == "float":
                return float(text)
            if self.type == "boolean":
                return {"true": True, "false": False}[text.lower()]
            if self.type in ("list", "map"):
                return json.loads(text)
        except (ValueError, KeyError):
            return text  # left as text: check() then reports what the value should be
        return text


@dataclass(frozen=True)
class Query:
    name: str
    description: str
    returns: str
    params: tuple[str, ...]
    text: str
    types: tuple[Param, ...] = ()  # the declared parameters with a type, in header order

    @property
    def body(self) -> str:
        """The Cypher without its comment lines."""
        return "\n".join(line for line in self.text.splitlines() if not line.lstrip().startswith("//"))

    def used_params(self) -> set[str]:
        """The ``$parameters`` the Cypher body uses."""
        return set(re.findall(r"\$(\w+)", self.body))

    def signature(self) -> str:
        return ", ".join(f"${p.name} ({p.describe()})" for p in self.types) or "no parameters"

    def check(self, params: dict) -> dict:
        """``params`` validated against the header (unknown, missing and ill-typed ones are a
        :class:`UserError`); parameters not given take their default, nullable ones null."""
        declared = {p.name: p for p in self.types}
        unknown = sorted(set(params) - set(declared))
        if unknown:
            raise UserError(
                f"Query {self.name} has no parameter {', '.join('$' + u for u in unknown)}; "
                f"it takes {self.signature()}."
            )
        params = {p.name: p.default_value() for p in self.types if p.default is not None} | params
        missing = [p.name for p in self.types if p.name not in params and not p.nullable]
        if missing:
            raise UserError(
                f"Query {self.name} needs {', '.join('-p ' + m + '=...' for m in missing)} ({self.signature()})."
            )
        checked = {}
        for param in self.types:
            value, ok = param.check(params.get(param.name))
            if not ok:
                raise UserError(
                    f"Query {self.name}: ${param.name} must be {param.describe()}, got {params.get(param.name)!r}."
                )
            checked[param.name] = value
        return checked

    def from_text(self, pairs: dict[str, str]) -> dict:
        """``-p key=value`` texts read by each parameter's declared type (unknown keys kept as text)."""
        declared = {p.name: p for p in self.types}
        return {k: declared[k].from_text(v) if k in declared else v for k, v in pairs.items()}


def _parse_params(field: str) -> tuple[tuple[str, ...], tuple[Param, ...]]:
    names = tuple(dict.fromkeys(re.findall(r"\$(\w+)", field)))
    typed = tuple(Param.parse(m.group(1), m.group(2)) for m in re.finditer(r"\$(\w+)\s*\(([^)]*)\)", field))
    return names, typed


def parse(text: str) -> Query:
    """A query file's header and body; raises ValueError on a header that lacks a field or
    declares a parameter without a type."""
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
    params, types = _parse_params(fields["params"])
    untyped = [p for p in params if p not in {t.name for t in types}]
    if untyped:
        raise ValueError(f"query header declares {', '.join('$' + p for p in untyped)} without a type")
    return Query(fields["name"], fields["description"], fields["returns"], params, text, types)


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


def read_transaction(driver: neo4j.Driver, database: str, work: Callable[[neo4j.ManagedTransaction], T]) -> T:
    """Run ``work`` in one read transaction (it cannot write) that sees every checkpoint as one version.

    The transaction first takes the catalog's publish lock shared (:data:`READ_LOCK`); each publish
    transaction takes it exclusively before it changes anything (``load/lock_catalog.cypher``), so a
    read runs wholly before or wholly after any publish, never across a reload half applied. Neo4j's
    own isolation (read committed) would let a query that traverses while a reload commits see part
    of the old checkpoint and part of the new. The lock needs APOC core (:data:`READ_LOCK`); on a
    server without it the read runs unlocked and a warning says so once per driver.
    """
    if driver not in _WITHOUT_APOC:
        try:
            with driver.session(database=database, default_access_mode=neo4j.READ_ACCESS) as session:
                return session.execute_read(lambda tx: work(_locked(tx)))
        except neo4j.exceptions.ClientError as error:
            if error.code != "Neo.ClientError.Procedure.ProcedureNotFound" or "apoc.lock" not in str(error.message):
                raise
            _WITHOUT_APOC.add(driver)
            warnings.warn(
                "This Neo4j server has no APOC core (apoc.lock.read.nodes): queries are not isolated from "
                "reloads and may see a checkpoint half replaced while it is loaded again. Install APOC "
                "(docker/compose.yaml and `circuit-atlas neo4j` do) to isolate them.",
                stacklevel=2,
            )
    with driver.session(database=database, default_access_mode=neo4j.READ_ACCESS) as session:
        return session.execute_read(work)


def _locked(tx: neo4j.ManagedTransaction) -> neo4j.ManagedTransaction:
    tx.run(READ_LOCK).consume()
    return tx


def run(driver: neo4j.Driver, database: str, query: Query, params: dict) -> list[dict]:
    """Run ``query`` in a read transaction isolated from reloads (:func:`read_transaction`) and return its rows."""
    try:
        return read_transaction(driver, database, lambda tx: [record.data() for record in tx.run(query.text, params)])
    except neo4j.exceptions.ClientError as error:
        raise UserError(
            f"Query {query.name} failed with {params}: {error.message} "
            f"(parameters: {', '.join('$' + p for p in query.params)})."
        ) from error
