"""Fidelity and exact effects: what the compressed channels keep, and what each channel does.

``loss recovered = 1 - (L_compressed - L_clean) / (L_ablated - L_clean)``, with L the mean over
prompts of their slice's metric (:mod:`.metrics`, a loss), "compressed"
channels replaced by their truncated maps and "ablated" ones by their slice's baseline
(:mod:`.interventions`, :mod:`.baselines`). "Fidelity" names four things (docs/design.md,
"Glossary"); here each has its own name.

- **Rank fraction** (the share of Σσ² every rank covers, :mod:`.compression`): the smallest of
  :data:`RANK_FRACTION_GRID` whose *all-at-once recovery* (the loss recovered with every channel
  compressed and every channel ablated) reaches the *recovery target* (recovery grows with the rank
  fraction, so the grid is bisected: about four passes), or a fixed one; :class:`RankSearchReport`
  records the search.
- **Per-channel effects** on an evaluation sample of each slice: the loss with each channel alone
  ablated (:func:`ablation_losses`) and alone compressed (:func:`compression_losses`), each
  channel a variant of batched passes. They give each channel's exact ablation effect on a slice,
  the mean over the slice's sampled sequences of L(ablated) - L(clean) (positive where the channel
  helps), and its *channel recovery* (the loss recovered with it alone compressed against it alone
  ablated) on all the samples. The first-order estimate (``attribution_signed`` in
  :mod:`.attribution`) misses effects through saturated attention, such as a previous-token head's,
  which acts through the keys of an induction head whose softmax is near one-hot.

The evaluation sample is bounded (``IngestConfig.effect_tokens`` per slice, taken from the held-out
sequences), so these costs do not grow with the data; the README gives their agreement with
the same effects over every sequence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .baselines import Baseline
from .behaviour import MIN_BEHAVIOUR, MIN_CHANNEL_EFFECT, Part, behaviour_reason
from .channels import ChannelLayout
from .compression import Compression, Decomposition
from .data import DataSlice
from .interventions import Interventions, Variant, VariantMasks
from .metrics import chance_level, position_losses, sequence_losses
from .model_adapter import LoadedModel

RANK_FRACTION_GRID = (0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999, 0.9999, 1.0)


def variant_losses(
    interventions: Interventions,
    variants: Sequence[Variant],
    data: DataSlice | Sequence[DataSlice],
    batch_tokens: int,
    progress: bool = False,
    desc: str = "variants",
    per_position: bool = False,
) -> Tensor:
    """The metric of every prompt of ``data`` (one slice, or several one after another) under every
    variant: [V, n], float64; with ``per_position``, its value at each scored position [V, n, m]
    (:func:`~.metrics.position_losses`), NaN where a prompt has no m-th scored position.

    The V x n (variant, prompt) rows of a slice run in batches of about ``batch_tokens`` tokens.
    """
    parts = [data] if isinstance(data, DataSlice) else list(data)
    model = interventions.model
    masks = VariantMasks(interventions.layout, variants)
    bar = tqdm(
        total=len(variants) * sum(p.n_tokens for p in parts),
        desc=f"{desc} ({len(variants)} variants x {sum(p.n_sequences for p in parts)} prompts)",
        unit="tok",
        disable=not progress,
        leave=False,
    )
    results = []
    with torch.no_grad():
        for part in parts:
            n, baseline = part.n_sequences, interventions.baseline(part.name)
            total = len(variants) * n
            rows = max(1, batch_tokens // part.tokens.shape[1])
            width = scored_width(part) if per_position else None
            shape = (total,) if width is None else (total, width)
            losses = torch.empty(shape, dtype=torch.float64, device=model.device)
            for start in range(0, total, rows):
                index = torch.arange(start, min(start + rows, total))
                batch = part.rows(index % n)
                hooks = interventions.hooks(masks, index // n, baseline, index % n, batch.tokens.shape[1])
                logits = model.run(batch.tokens, hooks, batch.mask)
                if width is None:
                    losses[index.to(model.device)] = sequence_losses(logits, batch.tokens, batch.targets()).double()
                else:
                    values, valid = position_losses(logits, batch.tokens, batch.targets())
                    losses[index.to(model.device)] = values.double().masked_fill(~valid, float("nan"))
                bar.update(batch.n_tokens)
            results.append(losses.view(len(variants), n, *shape[1:]))
    bar.close()
    if per_position:
        widest = max(r.shape[2] for r in results)
        results = [torch.nn.functional.pad(r, (0, widest - r.shape[2]), value=float("nan")) for r in results]
    return torch.cat(results, dim=1).cpu()


def scored_width(data: DataSlice) -> int:
    """How many positions :func:`~.metrics.position_losses` scores per prompt of ``data``."""
    if data.metric == "next_token_loss" or data.positions is None:
        return data.tokens.shape[1] - 1
    return data.positions.shape[1]


def loss_recovered(clean: float, compressed: float, ablated: float) -> float | None:
    """None when ablating changes the loss by less than 1e-6: the ratio would be noise."""
    if abs(ablated - clean) < 1e-6:
        return None
    return 1.0 - (compressed - clean) / (ablated - clean)


@dataclass
class RankSearchReport:
    """The rank search's result; :meth:`as_dict` is the manifest's ``fidelity`` record, whose keys
    are these fields: the all-at-once recovery is ``loss_recovered`` (the catalog's
    ``Checkpoint.fidelity``), ``tried`` each rank fraction tried with its all-at-once recovery."""

    fraction: float  # the rank fraction
    target: float | None  # the recovery target (None: the rank fraction was fixed)
    loss_clean: float
    loss_compressed: float
    loss_ablated: float
    loss_recovered: float | None
    mean_ranks: dict[str, float]
    tried: list[tuple[float, float | None]]
    reason: str | None = None  # why loss_recovered is None (:mod:`.behaviour`)

    def as_dict(self) -> dict:
        return dict(vars(self))


def mean_ranks(compression: Compression) -> dict[str, float]:
    return {group: float(ranks.double().mean()) for group, ranks in compression.ranks.items()}


def choose_rank_fraction(
    model: LoadedModel,
    decompositions: dict[str, Decomposition],
    baselines: dict[str, Baseline],
    layout: ChannelLayout,
    sample: Sequence[DataSlice],
    recovery_target: float | None,
    rank_fraction: float | None,
    max_rank: int | None,
    floor: float,
    batch_tokens: int = 4096,
) -> tuple[Compression, RankSearchReport]:
    """The compression at a fixed ``rank_fraction``, or at the smallest grid rank fraction whose
    all-at-once recovery reaches ``recovery_target``."""
    everything = layout.channels
    means_only = Interventions(model, Compression(decompositions, 1.0, max_rank, floor), baselines)
    ends = variant_losses(means_only, [Variant(), Variant.ablating(*everything)], sample, batch_tokens)
    clean, ablated = ends.mean(1)
    loss_clean, loss_ablated = float(clean), float(ablated)
    sizes = [s.n_sequences for s in sample]
    reason = behaviour_reason(
        [
            Part(s.n_sequences / sum(sizes), part[0], part[1], chance_level(s.metric, model.spec.outputs))
            for s, part in zip(sample, ends.split(sizes, 1))
        ],
        MIN_BEHAVIOUR,
    )
    losses: dict[float, float] = {}

    def recovered(f: float) -> float | None:
        """The all-at-once recovery at rank fraction ``f``; None where the sample has no behaviour to keep."""
        if reason is not None:
            return None
        if f not in losses:
            interventions = Interventions(model, Compression(decompositions, f, max_rank, floor), baselines)
            losses[f] = float(
                variant_losses(interventions, [Variant.compressing(*everything)], sample, batch_tokens).mean()
            )
        return loss_recovered(loss_clean, losses[f], loss_ablated)

    if rank_fraction is None:
        if recovery_target is None:
            raise ValueError("give the rank fraction, or the target loss recovered that chooses it")
        low, high = 0, len(RANK_FRACTION_GRID) - 1
        while low < high:
            middle = (low + high) // 2
            value = recovered(RANK_FRACTION_GRID[middle])
            if value is not None and value >= recovery_target:
                high = middle
            else:
                low = middle + 1
        rank_fraction = RANK_FRACTION_GRID[low]
    compression = Compression(decompositions, rank_fraction, max_rank, floor)
    value = recovered(rank_fraction)
    if rank_fraction not in losses:  # not measured on the way: no behaviour to keep
        compressed = Interventions(model, compression, baselines)
        losses[rank_fraction] = float(
            variant_losses(compressed, [Variant.compressing(*everything)], sample, batch_tokens).mean()
        )
    report = RankSearchReport(
        rank_fraction,
        recovery_target,
        loss_clean,
        losses[rank_fraction],
        loss_ablated,
        value,
        mean_ranks(compression),
        [(f, None if reason else loss_recovered(loss_clean, loss, loss_ablated)) for f, loss in sorted(losses.items())],
        reason,
    )
    return compression, report


def ablation_losses(
    interventions: Interventions, sample: DataSlice, batch_tokens: int, progress: bool = True, desc: str = "ablation"
) -> tuple[Tensor, Tensor]:
    """The metric of every prompt of ``sample`` clean [n] and with each channel alone
    ablated [C, n] (channel order), in batched passes."""
    channels = interventions.layout.channels
    losses = variant_losses(
        interventions, [Variant(), *(Variant.ablating(c) for c in channels)], sample, batch_tokens, progress, desc
    )
    return losses[0], losses[1:]


def compression_losses(
    interventions: Interventions, sample: DataSlice | Sequence[DataSlice], batch_tokens: int, progress: bool = True
) -> Tensor:
    """The metric of every prompt of ``sample`` with each channel alone compressed [C, n]."""
    channels = interventions.layout.channels
    return variant_losses(
        interventions, [Variant.compressing(c) for c in channels], sample, batch_tokens, progress, desc="fidelity"
    )


def channel_recovery(
    names: Sequence[str], clean: Tensor, compressed: Tensor, ablated: Tensor, chance: float
) -> dict[str, float | None]:
    """Each channel's recovery: the loss recovered with it alone compressed, against it alone ablated
    (same sequences); the ``fidelity`` of the artifact's ``blocks`` and the catalog's ``Block``. None
    where the channel's ablation shows no behaviour (:mod:`.behaviour`: the clean model no better
    than ``chance``, or the channel's effect under twice its standard error)."""
    mean_clean = float(clean.mean())
    return {
        name: None
        if behaviour_reason([Part(1.0, clean, a, chance)], MIN_CHANNEL_EFFECT, f"ablating {name}")
        else loss_recovered(mean_clean, float(c.mean()), float(a.mean()))
        for name, c, a in zip(names, compressed, ablated)
    }


def ablation_effects(names: Sequence[str], clean: Tensor, ablated: Tensor) -> dict[str, float]:
    """Per channel, the mean over sequences of L(ablated) - L(clean) (nats; positive where it helps)."""
    return {name: float(e) for name, e in zip(names, (ablated - clean).mean(1))}


def ablation_errors(names: Sequence[str], clean: Tensor, ablated: Tensor) -> dict[str, float | None]:
    """Per channel, the standard error of its effect over the sequences sampled: the standard
    deviation of L(ablated) - L(clean) over sqrt(n) (None for one sequence)."""
    differences = ablated - clean
    n = differences.shape[1]
    if n < 2:
        return dict.fromkeys(names)
    return {name: float(e) for name, e in zip(names, differences.std(1) / n**0.5)}
