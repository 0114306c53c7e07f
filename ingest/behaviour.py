"""Whether a slice shows behaviour that a ratio of losses can measure: the guard of faithfulness,
the all-at-once recovery and every channel's recovery.

Each of them divides by a change of the metric that ablating causes, L_ablated - L_clean
(faithfulness: every channel ablated; the all-at-once recovery: the same on the rank search's
sample; a channel's recovery: that channel ablated). Such a ratio is a share only where the
change is real, so it is null, with the reason, when

- the clean model is no better than chance on the prompts: its mean metric is at least that of a
  uniform prediction (:func:`~.metrics.chance_level`), so there is no behaviour to keep; or
- the change is under ``min_change`` nats or under twice its standard error over the prompts (the
  prompts' changes averaged as the ratio's losses are: each part, a slice's prompts, with its
  weight; independent parts, so their variances add weighted).

Outside these cases the ratios stay within [0, 1] up to their noise on every checkpoint of the
induction series (tested); before, an untrained checkpoint's "loss recovered" reached 1.10 and
its faithfulness curve -3.6 to 1.9. A point of the faithfulness curve is the faithfulness of a
*partial* set (the k channels of largest effect) and can be below 0 where the behaviour is real:
that set, with the rest ablated, does worse than ablating everything. On the modular-addition series
after the algorithm forms, embedding, unembedding and MLP without the heads reach -0.3 to -2.0
(confident wrong answers) while the circuit by faithfulness reaches its target; such a point is
kept as measured, not clipped. The circuit's own faithfulness (the set the search returns) is in
[0, 1] or null with its reason on every checkpoint of both series (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor

#: Nats: under this, ablating every channel shows too little behaviour for a circuit or a compression
#: target (on random tokens, where ablating everything costs the induction models 0.05 nats, sets
#: reached faithfulness 1.5 to 5).
MIN_BEHAVIOUR = 0.1
#: Nats: the least change a single channel's recovery is measured against (besides its standard error).
MIN_CHANNEL_EFFECT = 1e-6


@dataclass(frozen=True)
class Part:
    """One slice's prompts in a ratio: its weight, its per-prompt clean and ablated metric [n], and
    the metric of a uniform prediction there."""

    weight: float
    clean: Tensor
    ablated: Tensor
    chance: float


def behaviour_reason(parts: Sequence[Part], min_change: float, ablating: str = "ablating every channel") -> str | None:
    """Why the ratios over ``parts`` are null (the module docstring's rule), or None when they are measured."""
    clean = sum(p.weight * float(p.clean.double().mean()) for p in parts)
    chance = sum(p.weight * p.chance for p in parts)
    if clean >= chance:
        return (
            f"the clean model is no better than chance on these prompts: its metric is {clean:.3g} against "
            f"{chance:.3g} for a uniform prediction"
        )
    change = sum(p.weight * float((p.ablated - p.clean).double().mean()) for p in parts)
    variance = sum(
        p.weight**2 * float((p.ablated - p.clean).double().var()) / len(p.clean) for p in parts if len(p.clean) > 1
    )
    error = variance**0.5
    if change < min_change or change < 2 * error:
        bound = f"under {min_change}" if min_change >= 2 * error else f"within twice its standard error, {error:.2g}"
        return f"little behaviour to keep: {ablating} moves the metric by {change + 0.0:.3g} nats, {bound}"
    return None
