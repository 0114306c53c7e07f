"""Circuit faithfulness: how much of a slice's behaviour a set of channels keeps on its own.

For a set S of channels, with L the slice's metric (a loss, :mod:`.metrics`) on the held-out
sample of the exact ablations::

    F(S) = (L_none - L_S) / (L_none - L_all)

L_S runs the model with every channel outside S ablated to the slice's baseline
(:mod:`.baselines`; S's channels compute on that ablated stream), L_all is the clean model and
L_none has every channel ablated: 1 means S alone does the work, 0 that it does no better than
the baseline. ``None`` when ablating everything moves
the metric by less than 1e-6 (the slice shows no behaviour to keep).

The *curve* adds channels in order of their exact ablation effect, largest first (ties in channel
order): its k-th point is F of the k channels of largest effect, which is the circuit that the
``circuit`` query returns for any ``min_effect`` between the k-th and the (k+1)-th effect. All its
points are one batched pass of N + 1 variants over the sample (:func:`.fidelity.variant_losses`).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from .channels import Channel
from .data import DataSlice
from .fidelity import variant_losses
from .interventions import Interventions, Variant


def effect_order(channels: Sequence[Channel], effects: dict[str, float]) -> list[Channel]:
    """The channels by exact ablation effect, largest first, ties in channel order."""
    return sorted(channels, key=lambda c: (-effects[c.name], c.order))


def faithfulness(losses: Tensor) -> list[float | None]:
    """F of each of V variants from their mean losses [V]: the first is every channel ablated, the
    last the clean model (the ends of the curve)."""
    none, clean = float(losses[0]), float(losses[-1])
    if abs(none - clean) < 1e-6:
        return [None] * len(losses)
    return [(none - float(loss)) / (none - clean) for loss in losses]


def kept_variant(channels: Sequence[Channel], kept: Sequence[Channel]) -> Variant:
    """The variant in which only ``kept`` channels run: every other one is ablated."""
    names = {c.name for c in kept}
    return Variant.ablating(*(c for c in channels if c.name not in names))


def curve_losses(
    interventions: Interventions,
    order: Sequence[Channel],
    samples: Sequence[DataSlice],
    batch_tokens: int,
    progress: bool = True,
    desc: str = "faithfulness",
) -> Tensor:
    """The metric of every prompt of ``samples`` [N + 1, n] with only the first k channels of
    ``order`` running, k = 0 .. N."""
    channels = interventions.layout.channels
    variants = [kept_variant(channels, order[:k]) for k in range(len(order) + 1)]
    return variant_losses(interventions, variants, samples, batch_tokens, progress, desc)
