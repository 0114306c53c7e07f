"""A channel's timeline across the checkpoints of its model, drawn: the ``timeline`` query's rows as a
figure of two panels against the training step.

Above, the channel's exact ablation effect on each slice with its standard error, a filled marker
where the channel is in the slice's circuit by faithfulness. Below, the direct similarity of its
subspaces to the first and the last checkpoint of their series and to the start of its lineage,
with a dotted line at every checkpoint where a new lineage starts.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .errors import UserError
from .export import SVG_SETTINGS, check_paths

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
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    with matplotlib.rc_context(SVG_SETTINGS):
        figure, (effects, similarity) = pyplot.subplots(2, 1, sharex=True, figsize=(7, 5.5))
        for name, part in rows.groupby("slice", sort=True):
            part = part.sort_values("step")
            line = effects.errorbar(
                part["step"], part["effect"], yerr=part["effect_se"].fillna(0.0), label=name, capsize=2
            )
            member = part[part["in_circuit"].fillna(False).astype(bool)]
            effects.scatter(member["step"], member["effect"], color=line[0].get_color(), zorder=3)
        effects.set_ylabel("ablation effect (nats)")
        effects.set_title(f"{model} {channel}: filled, in the slice's circuit by faithfulness", fontsize=9)
        effects.legend(fontsize=7)
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
        similarity.set_xlabel("training step")
        similarity.set_ylabel("subspace similarity")
        similarity.legend(fontsize=7)
        figure.tight_layout()
        figure.savefig(path, dpi=150, metadata={"Date": None} if path.suffix.lower() == ".svg" else None)
        pyplot.close(figure)
