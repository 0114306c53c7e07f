"""Circuit faithfulness: how much of a slice's behaviour a set of channels keeps on its own.

For a set S of channels, with L the slice's metric (a loss, :mod:`.metrics`) on the held-out
sample of the exact ablations::

    F(S) = (L_none - L_S) / (L_none - L_all)

L_S runs the model with every channel outside S ablated to the slice's baseline
(:mod:`.baselines`; S's channels compute on that ablated stream), L_all is the clean model and
L_none has every channel ablated: 1 means S alone does the work, 0 that it does no better than
the baseline. ``None``, with the reason, when the slice shows no behaviour to keep
(:mod:`.behaviour`: the clean model no better than chance, or ablating everything moves the
metric by under 0.1 nats or under twice its standard error).

The *curve* adds channels in order of their exact ablation effect, largest first (ties in channel
order): its k-th point is F of the k channels of largest effect, which is the circuit that the
``circuit`` query returns for any ``min_effect`` between the k-th and the (k+1)-th effect. All its
points are one batched pass of N + 1 variants over the sample (:func:`.fidelity.variant_losses`).

A circuit by *faithfulness* (:func:`smallest_faithful`) is the smallest set a stated search finds
whose F reaches a target (0.9 by default): the shortest prefix of the curve that reaches it, then
each member, from the smallest effect up, dropped when the rest still reach it, in passes until none
can be, each step one exact pass (so dropping any member of the result falls short of the target).
Unlike a per-channel threshold it keeps a channel whose effect alone is tiny when the behaviour
needs it (heads that share the work, an unembedding that is cheap to ablate alone), and it is never
the whole model merely because every channel passes a threshold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import Tensor

from .channels import Channel
from .data import DataSlice
from .fidelity import variant_losses
from .interventions import Interventions, Variant

#: Nats: ablating every channel moves a slice's metric by less than this, so F is not a ratio at all.
NO_BEHAVIOUR = 1e-6


def effect_order(channels: Sequence[Channel], effects: dict[str, float]) -> list[Channel]:
    """The channels by exact ablation effect, largest first, ties in channel order."""
    return sorted(channels, key=lambda c: (-effects[c.name], c.order))


def faithfulness(losses: Tensor, reason: str | None = None) -> list[float | None]:
    """F of each of V variants from their mean losses [V]: the first is every channel ablated, the
    last the clean model (the ends of the curve); all None where ``reason`` says the slice has no
    behaviour to keep (:func:`~.behaviour.behaviour_reason`)."""
    none, clean = float(losses[0]), float(losses[-1])
    if reason is not None or abs(none - clean) < NO_BEHAVIOUR:
        return [None] * len(losses)
    return [kept_share(none, clean, float(loss)) for loss in losses]


def kept_share(none: float, clean: float, loss: float) -> float:
    """F = (L_none - L_S) / (L_none - L_all) of a set whose mean loss is ``loss`` (never -0.0)."""
    return (none - loss) / (none - clean) + 0.0


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


@dataclass(frozen=True)
class FaithfulCircuit:
    """The circuit found on a slice for a target faithfulness (:func:`smallest_faithful`)."""

    target: float
    members: tuple[str, ...]  # channel names, in channel order
    faithfulness: float | None  # F(members); None when the slice has too little behaviour to keep
    reason: str | None  # why the circuit is empty or short of its target; None when it reaches it

    def entry(self) -> dict:
        """For the slice's manifest entry."""
        return {
            "target": self.target,
            "faithfulness": self.faithfulness,
            "size": len(self.members),
            "search": SEARCH,
            "reason": self.reason,
        }


SEARCH = (
    "channels added in order of exact effect until the target is reached, then each dropped, "
    "smallest effect first, when the rest still reach it, until none can be"
)


def smallest_faithful(
    order: Sequence[Channel],
    means: Tensor,
    loss_of: Callable[[Sequence[Channel]], float],
    target: float,
    reason: str | None,
) -> FaithfulCircuit:
    """The circuit of this search: the shortest prefix of ``order`` (the channels by exact effect,
    largest first) whose faithfulness reaches ``target`` (``means``: the slice's mean metric with
    the first k channels running, k = 0 .. N, the curve's losses), then each of its members, from the
    smallest effect up, dropped when F of the rest still reaches it, in passes until none can be
    (so dropping any member of the result falls short); ``loss_of(kept)`` is the mean metric with
    only ``kept`` running, so every step is measured exactly. Empty, with ``reason``, where the slice
    has no behaviour to keep (:func:`~.behaviour.behaviour_reason`)."""
    if reason is not None:
        return FaithfulCircuit(target, (), None, reason)
    curve = faithfulness(means)
    none, clean = float(means[0]), float(means[-1])
    k = next(k for k, f in enumerate(curve) if f is not None and f >= target)  # at the latest the whole model: F = 1
    kept, reached = list(order[:k]), curve[k]
    dropped = True
    while dropped:  # until no member can be dropped: then dropping any one falls short of the target
        dropped = False
        for channel in reversed(list(kept)):
            rest = [c for c in kept if c != channel]
            value = kept_share(none, clean, loss_of(rest))
            if value >= target:
                kept, reached, dropped = rest, value, True
    members = tuple(c.name for c in sorted(kept, key=lambda c: c.order))
    return FaithfulCircuit(target, members, reached, None)
