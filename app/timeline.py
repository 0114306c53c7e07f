"""Timelines across the checkpoints of a model, drawn against the training step.

A channel's (:func:`plot_timeline`): the ``timeline`` query's rows as a figure of two panels.

Above, the channel's exact ablation effect on each slice with its standard error, a filled marker
where the channel is in the slice's circuit by faithfulness. Below, the direct similarity of its
subspaces to the first and the last checkpoint of their series and to the start of its lineage,
with a dotted line at every checkpoint where a new lineage starts.

A slice's mechanism (:func:`training_timeline`, :func:`plot_training_timeline`): several channels'
ablation effects and several edges' patched effects on one slice (by default the last checkpoint's
circuit and its strongest edges), as in papers that follow a circuit through training.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from .errors import UserError
from .export import SVG_SETTINGS, check_paths

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from .api import Catalog

#: What a timeline is drawn as (the CLI's ``--plot``).
PLOT_SUFFIXES = (".svg", ".png")


def check_plot_path(path: Path) -> None:
    """:class:`UserError` unless ``path`` is an SVG or PNG file that can be written."""
    if path.suffix.lower() not in PLOT_SUFFIXES:
        raise UserError(f"Cannot plot to {path}: name a file ending in {' or '.join(PLOT_SUFFIXES)}.")
    check_paths([path])


def plot_timeline(rows: pd.DataFrame, model: str, channel: str, path: Path) -> None:
    """Draw the ``timeline`` rows of ``channel`` of ``model`` to ``path`` (SVG or PNG)."""
    check_plot_path(path)
    if rows.empty:
        raise UserError(f"No complete checkpoint of model {model!r} has a channel {channel!r}: nothing to plot.")
    with _two_panels(path) as (effects, similarity):
        _effect_lines(effects, rows, "slice", "effect", "effect_se")
        effects.set_title(f"{model} {channel}: filled, in the slice's circuit by faithfulness", fontsize=9)
        steps = rows.drop_duplicates("checkpoint").sort_values("step")
        for column, label in (
            ("similarity_to_first", "to the first checkpoint"),
            ("similarity_to_last", "to the last checkpoint"),
            ("lineage_similarity", "to its lineage's start"),
        ):
            similarity.plot(steps["step"], steps[column], marker="o", label=label)
        for step in steps["step"][steps["lineage_start"] != steps["lineage_start"].shift()].iloc[1:]:
            similarity.axvline(step, linestyle=":", color="grey")
        similarity.set_ylim(0, 1.05)
        similarity.set_ylabel("subspace similarity")
        similarity.legend(fontsize=7)


@contextmanager
def _two_panels(path: Path) -> Iterator[tuple[Axes, Axes]]:
    """Two panels sharing the training step as x axis, saved to ``path`` (SVG without a date) on exit."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    with matplotlib.rc_context(SVG_SETTINGS):
        figure, (above, below) = pyplot.subplots(2, 1, sharex=True, figsize=(7, 5.5))
        try:
            yield above, below
            below.set_xlabel("training step")
            figure.tight_layout()
            figure.savefig(path, dpi=150, metadata={"Date": None} if path.suffix.lower() == ".svg" else None)
        finally:
            pyplot.close(figure)


def _effect_lines(axes: Axes, rows: pd.DataFrame, by: str, value: str, se: str) -> None:
    """One line of ablation effects per ``by`` group, with standard errors, filled where in the circuit."""
    for name, part in rows.groupby(by, sort=False):
        part = part.sort_values("step")
        line = axes.errorbar(part["step"], part[value], yerr=part[se].fillna(0.0), label=name, capsize=2)
        member = part[part["in_circuit"].fillna(False).astype(bool)]
        axes.scatter(member["step"], member[value], color=line[0].get_color(), zorder=3)
    axes.set_ylabel("ablation effect (nats)")
    axes.legend(fontsize=7, ncol=2)


def parse_edge(text: str) -> tuple[str, str, str]:
    """``WRITER:READER:ROLE`` as a triple; :class:`UserError` for anything else."""
    parts = text.split(":")
    if len(parts) != 3 or not all(parts):
        raise UserError(f"Cannot read the edge {text!r}: write WRITER:READER:ROLE, e.g. L0H0:L1H0:k.")
    return parts[0], parts[1], parts[2]


def training_timeline(
    catalog: Catalog,
    model: str,
    slice_name: str,
    channels: Sequence[str] | None = None,
    edges: Sequence[tuple[str, str, str]] | None = None,
) -> pd.DataFrame:
    """Channels' exact ablation effects and edges' patched effects on ``slice_name`` across the
    complete checkpoints of ``model``, one row per checkpoint and item (``kind`` ``channel`` or
    ``edge``): ``value`` the effect, ``se`` a channel's standard error, ``in_circuit`` whether the
    channel is in the slice's circuit by faithfulness there, ``attribution`` an edge's. By default the
    channels of the last checkpoint's circuit by faithfulness and its 3 edges of largest patched effect."""
    checkpoints = catalog.rows("checkpoints", model=model)
    if not checkpoints:
        raise UserError(
            f"No complete checkpoint of model {model!r}; list the models with `circuit-atlas query models`."
        )
    last = checkpoints[-1]["checkpoint"]
    if channels is None:
        found = catalog.rows("faithful_circuit", checkpoint=last, slice=slice_name)
        channels = found[0]["channels"] if found else []
        if not channels:
            raise UserError(f"{last} has no circuit on slice {slice_name!r} to follow; name the channels to plot.")
    if edges is None:
        top = catalog.rows("top_slice_edges", checkpoint=last, slice=slice_name, limit=3, by="patched")
        edges = [(e["writer"], e["reader"], e["role"]) for e in top]
    rows = []
    for channel in channels:
        for r in catalog.rows("timeline", model=model, channel=channel):
            if r["slice"] == slice_name:
                rows.append(
                    {"checkpoint": r["checkpoint"], "step": r["step"], "kind": "channel", "name": channel,
                     "value": r["effect"], "se": r["effect_se"], "in_circuit": r["in_circuit"], "attribution": None}
                )  # fmt: skip
    for writer, reader, role in edges:
        name = f"{writer} -> {reader} ({role})"
        for r in catalog.rows("edge_timeline", model=model, slice=slice_name, writer=writer, reader=reader, role=role):
            rows.append(
                {"checkpoint": r["checkpoint"], "step": r["step"], "kind": "edge", "name": name,
                 "value": r["patched"], "se": None, "in_circuit": None, "attribution": r["attribution"]}
            )  # fmt: skip
    if not rows:
        raise UserError(f"No checkpoint of {model!r} has those channels or edges on slice {slice_name!r}.")
    return pd.DataFrame(rows)


def plot_training_timeline(frame: pd.DataFrame, model: str, slice_name: str, path: Path) -> None:
    """Draw :func:`training_timeline`'s rows to ``path`` (SVG or PNG): channel effects above (filled
    where in the circuit), edges' patched effects below, against the training step."""
    check_plot_path(path)
    with _two_panels(path) as (above, below):
        _effect_lines(above, frame[frame["kind"] == "channel"], "name", "value", "se")
        above.set_title(f"{model} on {slice_name}: filled, in the circuit by faithfulness", fontsize=9)
        for name, part in frame[frame["kind"] == "edge"].groupby("name", sort=False):
            part = part.sort_values("step")
            below.plot(part["step"], part["value"], marker="o", label=name)
        below.set_ylabel("patched effect (nats)")
        below.legend(fontsize=7)
