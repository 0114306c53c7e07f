"""Discovered situations: the ingest data's prompts clustered by which channels act on them.

A prompt's usage vector is its per-channel signed first-order effect (the per-prompt terms of each
channel's ``attribution_signed`` activity, from the attribution pass: negative where the channel
lowers the prompt's loss) divided by the vector's norm, so that a cluster is a pattern of use
rather than a level of loss. (The magnitudes alone do not separate situations: on random tokens an
induction head moves the loss as much as on repeated ones, only not in one direction; on the
reference model, unsigned vectors gave an adjusted Rand index of 0.003 against repeated / random,
signed ones 0.969.) K-means (scikit-learn, seeded, 10
starts) runs for every k from 2 to ``max_situations``; the k of the largest mean silhouette is
kept if that silhouette is at least :data:`MIN_SILHOUETTE`, else the data holds one situation and
none is added (nor is a cluster of one prompt). Each cluster becomes a slice of its own
(``discovered``), scored by the pipeline like any named slice (exact ablation, faithfulness,
attribution, examples), and described by the channels that help it most and its most
over-represented tokens.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
from torch import Tensor

from circuit_atlas.errors import UserError

from .data import PAD, DataSlice
from .examples import token_text

MIN_SILHOUETTE = 0.25
#: Tokens of a situation shown in its description, and the fewest occurrences that count.
DESCRIBED_TOKENS, MIN_TOKEN_COUNT = 5, 3


def usage_vectors(effects: Tensor) -> np.ndarray:
    """[prompts, channels] signed effects -> rows of unit norm (a zero row stays zero)."""
    usage = effects.double().numpy()
    norms = np.linalg.norm(usage, axis=1, keepdims=True)
    return np.divide(usage, norms, out=np.zeros_like(usage), where=norms > 0)


def cluster(usage: np.ndarray, max_situations: int, seed: int) -> tuple[np.ndarray, float]:
    """(cluster label per prompt, its mean silhouette); all zeros and nan when no k qualifies."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    best, best_score = np.zeros(len(usage), dtype=int), float("nan")
    for k in range(2, min(max_situations, len(usage) - 1) + 1):
        labels = KMeans(k, n_init=10, random_state=seed).fit_predict(usage)
        if len(set(labels)) < 2:
            continue
        score = float(silhouette_score(usage, labels, random_state=seed))
        if score >= MIN_SILHOUETTE and (math.isnan(best_score) or score > best_score):
            best, best_score = labels, score
    return best, best_score


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
    )


def discover(
    slices: Sequence[DataSlice],
    effects: Sequence[Tensor],
    channels: Sequence[str],
    max_situations: int,
    seed: int,
    tokenizer=None,
) -> tuple[list[DataSlice], float]:
    """The situations of ``slices`` from their per-prompt effects [prompts, channels] (in slice order),
    largest first, and the silhouette that chose them (none when the data holds one situation)."""
    data = joined(slices)
    prompt_effects = torch.cat(list(effects)).double().numpy()
    usage = usage_vectors(torch.from_numpy(prompt_effects))
    labels, score = cluster(usage, max_situations, seed)
    clusters = sorted((np.flatnonzero(labels == c) for c in set(labels)), key=lambda m: (-len(m), m[0]))
    clusters = [members for members in clusters if len(members) >= 2]  # a slice needs a fitting and a held-out prompt
    if len(clusters) < 2:
        return [], score
    sources = np.repeat([s.name for s in slices], [s.n_sequences for s in slices])
    origin = [(s.name, i) for s in slices for i in range(s.n_sequences)]  # each joined prompt's
    found = []
    for rank, members in enumerate(clusters, 1):
        situation = data.rows(torch.from_numpy(members))
        description = _description(situation, data, prompt_effects[members], members, sources, channels, tokenizer)
        found.append(
            replace(
                situation,
                name=f"situation-{rank}",
                description=description,
                discovered=True,
                origin=tuple(origin[m] for m in members.tolist()),
            )
        )
    return found, score


def _description(
    situation: DataSlice,
    data: DataSlice,
    effects: np.ndarray,
    members: np.ndarray,
    sources: np.ndarray,
    channels: Sequence[str],
    tokenizer,
) -> str:
    """What sets the situation apart: its size and sources, the channels that help it most (mean
    first-order effect per prompt, nats), its most over-represented tokens."""
    composition = ", ".join(f"{name} {count}" for name, count in Counter(sources[members]).most_common())
    mean = effects.mean(0)
    top = [f"{channels[i]} {mean[i]:+.2f}" for i in np.argsort(mean)[:3]]
    inside = Counter(situation.tokens[situation.mask].tolist())
    overall = Counter(data.tokens[data.mask].tolist())
    n_in, n_all = sum(inside.values()), sum(overall.values())
    ratios = {t: (c / n_in) / (overall[t] / n_all) for t, c in inside.items() if c >= MIN_TOKEN_COUNT}
    tokens = sorted(ratios, key=lambda t: (-ratios[t], t))[:DESCRIBED_TOKENS]
    shown = [repr(token_text(t, tokenizer)) for t in tokens]
    return (
        f"discovered: {situation.n_sequences} prompts ({composition}); channels that help most: "
        f"{', '.join(top)}; most over-represented tokens: {', '.join(shown) or 'none'}"
    )
