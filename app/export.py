"""A circuit (:mod:`circuit_atlas.circuits`) exported as JSON or GraphML and drawn as SVG or PNG.

The drawing follows the residual
stream left to right: column ``2 * layer + 1`` for a layer's heads (stacked by head index),
``2 * layer + 2`` for its MLP, the embeddings first and the unembedding last; columns and rows
without a circuit channel are dropped. A channel's area grows with its ablation effect, an
arrow's width with its attribution; colours are those of the Browser stylesheet
(``queries/circuit-atlas.grass``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from .circuits import Circuit, Edge
from .errors import UserError
from .ingest.paths import unwritable

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

KIND_COLOURS = {
    "embed": "#8DCC93",
    "pos_embed": "#8DCC93",
    "attn_head": "#4C8EDA",
    "mlp": "#F79767",
    "unembed": "#C990C0",
}
COLUMN_OFFSET = {"embed": 2, "pos_embed": 2, "attn_head": 1, "mlp": 2, "unembed": 1}
ROW_OF_KIND = {"pos_embed": 1}
ROLE_ORDER = ("q", "k", "v", "in")
#: The file suffixes :func:`export` writes: the circuit as JSON or GraphML, or drawn as SVG or PNG.
EXPORT_SUFFIXES = (".json", ".graphml", ".svg", ".png")
# SVG text stays text (searchable, editable), and element ids do not change from run to run.
SVG_SETTINGS: dict[RcKeyType, str] = {"svg.fonttype": "none", "svg.hashsalt": "circuit-atlas"}


def position(channel) -> tuple[int, int]:
    """A channel's (column, row) in the residual stream: a layer's heads in one column, stacked by
    head index, its MLP in the next; embeddings first, the unembedding last."""
    row = channel.head if channel.head is not None else ROW_OF_KIND.get(channel.kind, 0)
    return 2 * channel.layer + COLUMN_OFFSET[channel.kind], row


def layout(circuit: Circuit) -> dict[str, tuple[int, int]]:
    """Each channel's (column, row) in the picture: its :func:`position`, with the columns and rows
    that hold no circuit channel left out (a circuit of a 48-layer model stays as wide as the layers
    it uses)."""
    columns = sorted({position(c)[0] for c in circuit.channels})
    rows = sorted({position(c)[1] for c in circuit.channels})
    return {c.name: (columns.index(position(c)[0]), rows.index(position(c)[1])) for c in circuit.channels}


def draw(circuit: Circuit, path: Path) -> None:
    """The circuit as a picture; the format (SVG or PNG) follows ``path``'s suffix.

    The edges between two channels (one per read role) are drawn as one arrow labelled with the
    roles, its width growing with their summed attribution.
    """
    import matplotlib

    matplotlib.use("Agg")
    with matplotlib.rc_context(SVG_SETTINGS):
        _draw(circuit, path)


def _draw(circuit: Circuit, path: Path) -> None:
    from matplotlib import pyplot
    from matplotlib.patches import FancyArrowPatch

    at = layout(circuit)
    pairs: dict[tuple[str, str], list[Edge]] = {}
    for edge in sorted(circuit.edges, key=lambda e: ROLE_ORDER.index(e.role)):
        pairs.setdefault((edge.writer, edge.reader), []).append(edge)
    columns, rows = [x for x, _ in at.values()], [y for _, y in at.values()]
    figure, axes = pyplot.subplots(
        figsize=(2.5 + 1.8 * (max(columns) - min(columns)), 2.2 + 1.8 * (max(rows) - min(rows)))
    )
    top_effect = max(abs(c.effect) for c in circuit.channels) or 1.0
    top_attribution = max((sum(e.attribution for e in group) for group in pairs.values()), default=1.0) or 1.0
    for (writer, reader), group in pairs.items():
        (x0, y0), (x1, y1) = at[writer], at[reader]
        y0, y1 = -y0, -y1
        bend = 0.0 if x1 - x0 == 1 and y0 == y1 else 0.25
        attribution = sum(e.attribution for e in group)
        axes.add_patch(
            FancyArrowPatch(
                (x0, y0),
                (x1, y1),
                arrowstyle="-|>",
                mutation_scale=12,
                connectionstyle=f"arc3,rad={bend}",
                shrinkA=18,
                shrinkB=18,
                color="#666666",
                alpha=0.8,
                linewidth=0.6 + 5.0 * attribution / top_attribution,
                zorder=1,
            )
        )
        middle = ((x0 + x1) / 2 + bend / 2 * (y1 - y0), (y0 + y1) / 2 - bend / 2 * (x1 - x0))
        axes.text(
            *middle,
            f"{','.join(e.role for e in group)} {attribution:.2f}",
            fontsize=6.5,
            ha="center",
            va="center",
            color="#333333",
            zorder=3,
            bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.8},
        )
    for channel in circuit.channels:
        x, y = at[channel.name]
        area = 120 + 900 * abs(channel.effect) / top_effect  # points squared
        axes.scatter(
            [x], [-y], s=area, color=KIND_COLOURS[channel.kind], edgecolors="#222222", linewidths=0.8, zorder=2
        )
        axes.annotate(
            f"{channel.name}\n{channel.effect:+.2f}",
            (x, -y),
            xytext=(0, -(area**0.5) / 2 - 2),
            textcoords="offset points",
            fontsize=8,
            ha="center",
            va="top",
            zorder=4,
            bbox={"boxstyle": "round,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.85},
        )
    axes.set_title(
        f"{circuit.checkpoint} on '{circuit.slice}': channels adding >= {circuit.min_effect} nats "
        f"when ablated, edges carrying >= {circuit.min_attribution}",
        fontsize=8,
    )
    axes.set_xlim(min(columns) - 0.6, max(columns) + 0.6)
    axes.set_ylim(-max(rows) - 0.6, -min(rows) + 0.4)
    axes.set_aspect("equal")
    axes.set_axis_off()
    figure.tight_layout()
    figure.savefig(path, dpi=150, metadata={"Date": None} if path.suffix.lower() == ".svg" else None)
    pyplot.close(figure)


def check_paths(paths: list[Path]) -> None:
    """:class:`UserError` unless every path ends in a known format and can be written (its folder
    exists and is writable, or can be created): checked before anything is fetched or written."""
    unknown = [str(p) for p in paths if p.suffix.lower() not in EXPORT_SUFFIXES]
    if unknown:
        raise UserError(f"Cannot export to {', '.join(unknown)}: name files ending in {', '.join(EXPORT_SUFFIXES)}.")
    for path in paths:
        reason = unwritable(path) or ("it is a folder" if path.is_dir() else None)
        if reason:
            raise UserError(f"-o {path} cannot be written ({reason}); choose a file in a folder you can write.")
        if path.exists() and not os.access(path, os.W_OK):
            raise UserError(f"-o {path} exists and is read-only; choose another file or make it writable.")


def export(circuit: Circuit, paths: list[Path]) -> None:
    """Write ``circuit`` to each path: ``.json``, ``.graphml``, ``.svg`` or ``.png``."""
    check_paths(paths)
    for path in paths:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.suffix.lower() == ".json":
                path.write_text(circuit.to_json() + "\n")
            elif path.suffix.lower() == ".graphml":
                circuit.to_graphml(path)
            else:
                draw(circuit, path)
        except OSError as error:
            raise UserError(f"Could not write {path}: {error.strerror or error}. Choose another -o path.") from error
