"""Rows (a list of dicts with the same keys) rendered as a text table, JSON or CSV."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

#: What :func:`render` writes rows as (the CLI's ``--format``).
ROW_FORMATS = ("table", "json", "csv")


def fixed(value: float, digits: int) -> str:
    """``value`` with ``digits`` decimals, never ``-0.00`` (a value that rounds to zero is 0)."""
    return f"{round(value, digits) + 0.0:.{digits}f}"


def _cell(value: Any, short: bool) -> str:
    """A value as text; ``short`` rounds floats to 4 significant digits (tables only), never ``-0``."""
    if value is None:
        return ""
    if isinstance(value, float) and short:
        return f"{value + 0.0:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_cell(v, short) for v in value) + "]"
    return str(value)


def render(rows: Sequence[dict[str, Any]], fmt: str = "table", columns: Sequence[str] | None = None) -> str:
    """``rows`` as text; ``columns`` fixes the order (default: the first row's keys)."""
    columns = list(columns or (rows[0].keys() if rows else []))
    if fmt == "json":
        return json.dumps([{c: row.get(c) for c in columns} for row in rows], indent=2, default=str)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[_cell(row.get(c), short=False) for c in columns] for row in rows])
        return out.getvalue().rstrip("\n")
    if fmt != "table":
        raise ValueError(f"unknown format {fmt!r}; use one of {ROW_FORMATS}")
    if not columns:
        return "(no rows)"
    cells = [[_cell(row.get(c), short=True) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()

    return "\n".join([line(columns), line(["-" * w for w in widths])] + [line(r) for r in cells])
