"""Discovered situations: prompts, or scored tokens, clustered by the channels that act on them.

**Usage.** Each *unit* (a prompt; with unit ``token``, one scored position of a prompt) has an
exact effect per channel: the change of the metric there when that channel alone is ablated
(positive where the channel helps), from one batched pass of C + 1 variants over the discovery
sample (each named slice's prompts, spread, at most ``situation_tokens`` tokens of each). Two
choices, each measured (``benchmarks/discovery_limit.py``, figures in the README):

- *Exact, not first-order.* The first-order effect of a channel acting through a saturated softmax
  is near zero: on the first-unique-character model, whose three classes each use their own
  layer-1 head, clusters of first-order usage reach an adjusted Rand index of 0.12 against the
  classes.
- *One baseline for the whole sample*, measured on all of it with the ingest's ``--ablation``: a
  baseline measured per slice carries the slice into every unit's usage (a per-position mean over
  one class's prompts predicts that class's answers), so usage would cluster by the baseline
  rather than by the channels. On the first-unique model: 0.95 with per-slice baselines, 0.99 with
  one.

A unit's usage of a channel is u = log(1 + max(0, e)), e its exact effect in nats: a channel that
hurts a unit is not used there, and the logarithm keeps a 25-nat effect from outweighing every
3-nat one.

**Clusters.** K-means (scikit-learn, seeded, 10 starts) on the usage, for k from 2 to
``max_situations``. A k qualifies when its mean silhouette reaches :data:`MIN_SILHOUETTE` and
exceeds by :data:`MIN_EXCESS` the silhouette of k-means on reference data without clusters
(uniform in the box of the usage's principal axes, as the gap statistic draws them): one blob of
noisy usage reaches silhouettes of 0.3 by itself, and so does its reference, while the first-unique
classes reach 0.41 against 0.14. The qualifying k of the largest silhouette is kept; when none
does, the data is one situation and none is added. (On the first-unique classes a Gaussian mixture
with k by BIC reaches 0.63, HDBSCAN 0.57, a divisive split on one channel at a time 0.40 to 0.49;
Ward clustering matches k-means there, 0.98, but not on the two-task model.) A cluster becomes a
slice of its own (``discovered``): its prompts, and with unit ``token`` only its positions scored
(a next-token slice's token situation scores the answer ``tokens[q + 1]`` at each of its positions
q). It is scored like any named slice and described by what separates it from the rest
(:func:`describe`). When no unit's exact effect reaches :data:`MIN_USE`, the usage is *flat* (a
saturated model) and discovery says so instead of clustering noise.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import groupby
from operator import itemgetter

import numpy as np
import torch
from torch import Tensor

from circuit_atlas.errors import UserError

from .baselines import Baseline
from .data import PAD, DataSlice
from .examples import token_text
from .fidelity import variant_losses
from .interventions import Interventions, Variant

MIN_SILHOUETTE = 0.25
#: ... and by how much it must exceed the silhouette of the same k on data without clusters, of which
#: this many reference samples are drawn.
MIN_EXCESS, REFERENCES = 0.15, 3
#: Nats: when no channel's exact effect on any unit reaches this, usage is flat.
MIN_USE = 0.01
#: The discovery sample's name, under which its baseline is registered.
SAMPLE = "discovery sample"
#: Silhouettes are computed on at most this many units (seeded), so token units stay cheap.
SILHOUETTE_SAMPLE = 2000
#: Channels and tokens of a situation shown in its description, the fewest occurrences of a token
#: that count, and the examples shown (each at most EXAMPLE_TOKENS tokens).
DESCRIBED_CHANNELS, DESCRIBED_TOKENS, MIN_TOKEN_COUNT, EXAMPLES, EXAMPLE_TOKENS = 3, 5, 3, 2, 24


@dataclass(frozen=True)
class Usage:
    """Exact per-channel effects on each unit [units, channels] (nats, positive where the channel
    helps) of the discovery sample ``data`` (the named slices' sampled prompts, joined), and where
    each unit is: its prompt in ``data`` and its scored position's index there (-1 for prompt units)."""

    data: DataSlice
    effects: np.ndarray
    prompt: np.ndarray
    position: np.ndarray
    sources: np.ndarray  # [prompts of data]: the named slice each came from


@dataclass(frozen=True)
class Discovery:
    """What discovery found: the situations (largest first), the silhouette that chose them, and why
    there are none when there are none (``flat``: because no channel acts on any unit, a warning)."""

    situations: list[DataSlice]
    silhouette: float
    reason: str | None
    flat: bool = False


def discovery_sample(data: DataSlice, situation_tokens: int) -> DataSlice:
    """At most ``situation_tokens`` tokens of ``data``'s prompts, spread over them, each with its
    (slice, index) origin."""
    indexed = replace(data, origin=tuple((data.name, i) for i in range(data.n_sequences)))
    return indexed.spread(max(2, situation_tokens * data.n_sequences // max(1, data.n_tokens)))


def exact_usage(
    interventions: Interventions,
    slices: Sequence[DataSlice],
    unit: str,
    situation_tokens: int,
    ablation: str,
    batch_tokens: int,
    seed: int,
    progress: bool = True,
) -> Usage:
    """Each channel alone ablated over the slices' discovery samples, joined, to one ``ablation``
    baseline measured on all of them (registered in ``interventions`` under :data:`SAMPLE`): the
    effect per unit (see the module docstring)."""
    samples = [discovery_sample(s, situation_tokens) for s in slices]
    data = replace(joined(samples), name=SAMPLE)
    interventions.baselines[SAMPLE] = Baseline.measure(interventions.model, data, ablation, batch_tokens, seed)
    variants = [Variant(), *(Variant.ablating(c) for c in interventions.layout.channels)]
    losses = variant_losses(interventions, variants, data, batch_tokens, progress, "situations", per_position=True)
    effects = (losses[1:] - losses[0]).permute(1, 2, 0).numpy()  # [prompts, positions, channels], NaN: not scored
    scored = ~np.isnan(effects[..., 0])
    sources = np.repeat([s.name for s in samples], [s.n_sequences for s in samples])
    if unit == "prompt":
        prompts = np.flatnonzero(scored.any(1))
        total = np.where(scored[..., None], effects, 0.0).sum(1)
        mean = total[prompts] / scored[prompts].sum(1, keepdims=True)  # each prompt's metric is its positions' mean
        return Usage(data, mean, prompts, np.full(len(prompts), -1), sources)
    prompts, positions = np.nonzero(scored)
    return Usage(data, effects[prompts, positions], prompts, positions, sources)


def cluster(usage: np.ndarray, max_situations: int, seed: int) -> tuple[np.ndarray, float]:
    """(cluster label per unit, its mean silhouette); all zeros and nan when no k qualifies.

    A k qualifies when its mean silhouette reaches :data:`MIN_SILHOUETTE` and exceeds by
    :data:`MIN_EXCESS` the mean silhouette of k clusters of :data:`REFERENCES` reference samples
    without clusters (uniform in the box of the usage's principal axes, as the gap statistic draws
    them); of those, the k of the largest silhouette is kept."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    generator = np.random.default_rng(seed)
    sample = min(len(usage), SILHOUETTE_SAMPLE)

    def silhouette(points: np.ndarray, k: int) -> tuple[float, np.ndarray]:
        labels = KMeans(k, n_init=10, random_state=seed).fit_predict(points)
        if len(set(labels)) < 2:
            return float("nan"), labels
        return float(silhouette_score(points, labels, sample_size=sample, random_state=seed)), labels

    center = usage.mean(0)
    axes = np.linalg.svd(usage - center, full_matrices=False)[2]
    coordinates = (usage - center) @ axes.T
    references = [
        generator.uniform(coordinates.min(0), coordinates.max(0), coordinates.shape) @ axes + center
        for _ in range(REFERENCES)
    ]
    best, best_score = np.zeros(len(usage), dtype=int), -math.inf
    for k in range(2, min(max_situations, len(usage) - 1) + 1):
        score, labels = silhouette(usage, k)
        if math.isnan(score) or score < MIN_SILHOUETTE or score <= best_score:
            continue
        if score - float(np.nanmean([silhouette(r, k)[0] for r in references])) >= MIN_EXCESS:
            best, best_score = labels, score
    return best, best_score if best_score > -math.inf else float("nan")


def joined(slices: Sequence[DataSlice]) -> DataSlice:
    """The prompts of ``slices`` (one metric) in one slice, right-padded to the widest."""
    metrics = {s.metric for s in slices}
    if len(metrics) > 1:
        raise UserError(
            f"Situations are discovered across slices of one metric; these have {sorted(metrics)}. "
            f"Ingest the slices of each metric separately, or give --situations 0."
        )

    def padded(parts: list[Tensor], fill: int) -> Tensor:
        """Tensors [n, columns] right-padded with ``fill`` and stacked."""
        columns = max(p.shape[1] for p in parts)
        return torch.cat([torch.nn.functional.pad(p, (0, columns - p.shape[1]), value=fill) for p in parts])

    def stacked(name: str, fill: int) -> Tensor | None:
        """The slices' optional ``name`` tensors, padded and stacked (None if one lacks it)."""
        parts = [getattr(s, name) for s in slices]
        return None if any(p is None for p in parts) else padded(parts, fill)

    first = slices[0]
    origins = [s.origin for s in slices]
    return replace(
        first,
        name="+".join(s.name for s in slices),
        description="the named slices",
        tokens=padded([s.tokens for s in slices], PAD),
        mask=padded([s.mask for s in slices], False),
        positions=stacked("positions", -1),
        answers=stacked("answers", -1),
        counterfactuals=stacked("counterfactuals", -1),
        corrupted=stacked("corrupted", PAD),
        origin=None if any(o is None for o in origins) else tuple(p for o in origins for p in o),  # type: ignore[union-attr]
    )


def discover(usage: Usage, channels: Sequence[str], max_situations: int, seed: int, tokenizer=None) -> Discovery:
    """The situations of ``usage`` (see the module docstring), largest first."""
    unit = "token" if (usage.position >= 0).any() else "prompt"
    largest = float(usage.effects.max()) if usage.effects.size else 0.0
    if largest < MIN_USE:
        reason = (
            f"usage is flat: no channel's exact effect on any {unit} reaches {MIN_USE} nats (the largest is "
            f"{largest:.2g}; a saturated model?), so there is nothing to tell situations apart by"
        )
        return Discovery([], float("nan"), reason, flat=True)
    labels, score = cluster(np.log1p(np.maximum(usage.effects, 0)), max_situations, seed)
    groups = [np.flatnonzero(labels == c) for c in sorted(set(labels))]
    groups = [g for g in groups if len(set(usage.prompt[g].tolist())) >= 2]  # a slice needs 2 prompts
    groups.sort(key=lambda g: (-len(g), int(g[0])))
    if len(groups) < 2:
        return Discovery([], score, f"no clustering of the usage reached silhouette {MIN_SILHOUETTE}")
    overall = Counter(_unit_tokens(usage, np.arange(len(usage.effects))))  # every unit's token, counted once
    found = []
    for rank, members in enumerate(groups, 1):
        situation = situation_slice(usage, members)
        found.append(
            replace(
                situation,
                name=f"situation-{rank}",
                description=describe(usage, members, situation, channels, overall, tokenizer),
                discovered=True,
            )
        )
    return Discovery(found, score, None)


def situation_slice(usage: Usage, members: np.ndarray) -> DataSlice:
    """The prompts of ``members`` (in sample order); for token units, scored at those tokens only."""
    data = usage.data
    prompts = np.unique(usage.prompt[members])
    situation = data.rows(torch.from_numpy(prompts))
    if (usage.position[members] < 0).all():
        return situation
    row = {p: i for i, p in enumerate(prompts.tolist())}
    chosen: list[list[int]] = [[] for _ in prompts]
    for p, j in zip(usage.prompt[members].tolist(), usage.position[members].tolist()):
        chosen[row[p]].append(j)
    return _scored_at(situation, chosen)


def recorded_situation(entry: dict, named: dict[str, DataSlice]) -> DataSlice:
    """The discovered situation of a manifest ``entry`` rebuilt from the ``named`` slices it was found
    in (whole, as the ingest loaded them): its prompts (``[slice, index]``, in order) and, for a token
    situation, scored at its recorded positions as the ingest scored it."""
    parts = [
        named[name].rows(torch.tensor([i for _, i in group]))
        for name, group in groupby(entry["prompts"], itemgetter(0))
    ]
    situation = replace(joined(parts), name=entry["name"], description=entry["description"], discovered=True)
    if "positions" not in entry:
        return situation
    if situation.positions is None:  # next-token slices: the scored index is the position itself
        return _scored_at(situation, entry["positions"])
    rows = situation.positions.tolist()
    return _scored_at(situation, [[row.index(q) for q in qs] for row, qs in zip(rows, entry["positions"])])


def _scored_at(situation: DataSlice, chosen: list[list[int]]) -> DataSlice:
    """``situation`` scored at the ``chosen`` scored-position indices of each prompt only (of a
    next-token slice: the positions, each predicting the next token, as a task slice)."""
    width = max(len(c) for c in chosen)
    index = torch.tensor([c + [-1] * (width - len(c)) for c in chosen])  # scored-position indices, -1 padded
    valid = index >= 0

    def taken(values: Tensor | None) -> Tensor | None:
        """``values`` [prompts, m] at the chosen scored-position indices, -1 where padded."""
        if values is None:
            return None
        return torch.where(valid, values.gather(1, index.clamp_min(0)), torch.full_like(index, -1))

    if situation.metric == "next_token_loss":  # the scored position q predicts tokens[q + 1]
        answers = situation.tokens.gather(1, (index + 1).clamp_min(0))
        return replace(
            situation,
            metric="answer_loss",
            positions=torch.where(valid, index, -1),
            answers=torch.where(valid, answers, -1),
            scored="discovered positions (the next token at each)",
        )
    return replace(
        situation,
        positions=taken(situation.positions),
        answers=taken(situation.answers),
        counterfactuals=taken(situation.counterfactuals),
        scored="discovered positions",
    )


def describe(
    usage: Usage, members: np.ndarray, situation: DataSlice, channels: Sequence[str], overall: Counter, tokenizer
) -> str:
    """What sets a situation apart: its size and sources; the channels whose mean exact effect
    differs most between it and the other units (nats, in against out); its most over-represented
    tokens (at its scored positions for token units) against ``overall``, every unit's token counts;
    and examples."""
    inside = np.zeros(len(usage.effects), dtype=bool)
    inside[members] = True
    mean_in, mean_out = usage.effects[inside].mean(0), usage.effects[~inside].mean(0)
    order = np.argsort(-np.abs(mean_in - mean_out), kind="stable")[:DESCRIBED_CHANNELS]
    apart = [f"{channels[c]} {mean_in[c]:+.2f} (rest {mean_out[c]:+.2f})" for c in order]
    prompts = np.unique(usage.prompt[members])
    composition = ", ".join(f"{name} {count}" for name, count in Counter(usage.sources[prompts]).most_common())
    tokens_in, n_all = _unit_tokens(usage, members), sum(overall.values())
    inside_counts = Counter(tokens_in)
    share_all = {t: c / n_all for t, c in overall.items()}
    ratios = {t: c / len(tokens_in) / share_all[t] for t, c in inside_counts.items() if c >= MIN_TOKEN_COUNT}
    shown = [repr(token_text(t, tokenizer)) for t in sorted(ratios, key=lambda t: (-ratios[t], t))[:DESCRIBED_TOKENS]]
    tokens = (usage.position[members] >= 0).all()
    units = f"{len(members)} tokens in {len(prompts)} prompts" if tokens else f"{len(prompts)} prompts"
    examples = [_example(usage, int(m), tokenizer) for m in members[:: max(1, len(members) // EXAMPLES)][:EXAMPLES]]
    return (
        f"discovered: {units} ({composition}); channels that set it apart (mean effect, nats): {', '.join(apart)}; "
        f"most over-represented tokens: {', '.join(shown) or 'none'}; e.g. {' | '.join(examples)}"
    )


def _unit_tokens(usage: Usage, units: np.ndarray) -> list[int]:
    """The tokens of ``units``: a prompt's real tokens, or the token a scored position predicts from."""
    data, tokens = usage.data, []
    for p, j in zip(usage.prompt[units].tolist(), usage.position[units].tolist()):
        if j < 0:
            tokens.extend(data.tokens[p][data.mask[p]].tolist())
        else:
            tokens.append(int(data.tokens[p, _token_position(data, p, j)]))
    return tokens


def _token_position(data: DataSlice, prompt: int, scored: int) -> int:
    """The prompt position of a prompt's ``scored``-th scored position."""
    return scored if data.metric == "next_token_loss" or data.positions is None else int(data.positions[prompt, scored])


def _example(usage: Usage, unit: int, tokenizer) -> str:
    """A unit as text: a prompt's first tokens, or the tokens up to a scored position, that one in « »."""
    data = usage.data
    p, j = int(usage.prompt[unit]), int(usage.position[unit])
    ids = data.tokens[p][data.mask[p]].tolist()
    if j < 0:
        return "".join(token_text(t, tokenizer) for t in ids[:EXAMPLE_TOKENS])
    q = _token_position(data, p, j)
    window = ids[max(0, q - EXAMPLE_TOKENS + 1) : q + 1]
    return "".join(token_text(t, tokenizer) for t in window[:-1]) + f"«{token_text(window[-1], tokenizer)}»"
