"""Matching a checkpoint's channels with the same channels of other checkpoints of its series.

Two subspaces match by the mean squared cosine of their principal angles beyond chance: for
orthonormal bases A and B of ranks a <= b in d dimensions, ``s = ||A^T B||_F^2 / a`` (1 when the
smaller lies in the larger, 0 when orthogonal) is ``b / d`` on average for random subspaces, so the
similarity is ``(s - b/d) / (1 - b/d)``, clipped at 0: a subspace of 47 of 64 dimensions contains
three quarters of any other by chance, and without the correction a freshly initialised embedding
is 0.91 "similar" to the trained one. A subspace of all d dimensions says nothing about direction:
it is similar (1) only to another of all d. A channel's similarity is the mean over its roles with a non-empty
subspace in both checkpoints; pairs of neighbouring checkpoints at or above the threshold become
``MATCHES``, which also carry the similarity of the two behaviour fingerprints
(:func:`.fingerprints.similarity`).

Links between neighbours can each pass the threshold while a subspace drifts into another one, so
a channel also has a **lineage**: it continues from the checkpoint before only while the channel
is at least ``threshold`` similar both to itself there and to itself at the lineage's start (the
direct similarity, not a chain of links); otherwise a new lineage starts at this checkpoint.
Every subspace also records its direct similarity to the series' first and last checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from .artifact import frame, read_artifact
from .channels import Channel
from .fingerprints import similarity


@dataclass
class PreviousCheckpoint:
    """What the next checkpoint of a series needs of this one: its label, bases and fingerprints, the
    bases of the series' first checkpoint, and per channel its lineage's start (label and bases)."""

    label: str
    bases: dict[str, torch.Tensor]  # "<block>/<role>" -> [d_model, rank]
    fingerprints: dict[str, list[float]]
    first: dict[str, torch.Tensor]
    lineages: dict[str, tuple[str, dict[str, torch.Tensor]]]

    @classmethod
    def from_artifact(cls, path: Path, before: PreviousCheckpoint | None) -> PreviousCheckpoint:
        """What an artifact already written holds of it (when a run resumes after it); ``before``:
        the checkpoint before it, whose lineages it continues."""
        artifact = read_artifact(path)
        label, bases = artifact.manifest["checkpoint"]["label"], artifact.bases()
        blocks = artifact.tables["blocks"]
        found = dict(zip(blocks["name"], zip(blocks["lineage_start"], blocks["lineage_similarity"])))
        return following(label, bases, artifact.fingerprints(), before, found)


def own_bases(block: str, bases: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The bases of ``block``'s roles."""
    return {key: basis for key, basis in bases.items() if key.partition("/")[0] == block}


def channel_similarity(
    channel: Channel, bases: dict[str, torch.Tensor], other: dict[str, torch.Tensor]
) -> float | None:
    """The mean subspace similarity over the channel's roles non-empty in both (None if none is)."""
    keys = [f"{channel.name}/{role}" for role in channel.roles if f"{channel.name}/{role}" in other]
    values = [v for v in (subspace_similarity(bases[k], other[k]) for k in keys) if v is not None]
    return sum(values) / len(values) if values else None


def lineages(
    channels: list[Channel],
    label: str,
    bases: dict[str, torch.Tensor],
    previous: PreviousCheckpoint | None,
    threshold: float,
) -> dict[str, tuple[str, float]]:
    """Per channel, the start of its lineage at this checkpoint and its similarity to itself there
    (see the module docstring)."""
    found = {}
    for c in channels:
        if previous is not None and c.name in previous.lineages:
            start, start_bases = previous.lineages[c.name]
            to_previous = channel_similarity(c, bases, previous.bases)
            to_start = channel_similarity(c, bases, start_bases)
            if to_previous is not None and to_start is not None and min(to_previous, to_start) >= threshold:
                found[c.name] = (start, to_start)
                continue
        found[c.name] = (label, 1.0)
    return found


@dataclass(frozen=True)
class SeriesPlace:
    """A checkpoint's place in its series: each channel's lineage (its start's label and its
    similarity to itself there) and each subspace's direct similarity to the series' first and
    last checkpoints ("<block>/<role>" -> similarity; None for an empty subspace)."""

    lineage: dict[str, tuple[str, float]]
    to_first: dict[str, float | None]
    to_last: dict[str, float | None]


def series_place(
    channels: list[Channel],
    label: str,
    bases: dict[str, torch.Tensor],
    previous: PreviousCheckpoint | None,
    last: dict[str, torch.Tensor] | None,
    threshold: float,
) -> SeriesPlace:
    """The checkpoint's :class:`SeriesPlace`; ``last``: the bases of the series' last checkpoint
    (None when this is the last)."""
    first = previous.first if previous is not None else bases
    last = bases if last is None else last

    def to(other: dict[str, torch.Tensor]) -> dict[str, float | None]:
        return {key: subspace_similarity(basis, other[key]) if key in other else None for key, basis in bases.items()}

    return SeriesPlace(lineages(channels, label, bases, previous, threshold), to(first), to(last))


def following(
    label: str,
    bases: dict[str, torch.Tensor],
    prints: dict[str, list[float]],
    previous: PreviousCheckpoint | None,
    found: dict[str, tuple[str, float]],
) -> PreviousCheckpoint:
    """What the checkpoint after this one matches against, given this one's lineages ``found``."""
    kept = {
        block: (start, own_bases(block, bases)) if start == label or previous is None else previous.lineages[block]
        for block, (start, _) in found.items()
    }
    return PreviousCheckpoint(label, bases, prints, previous.first if previous else bases, kept)


def subspace_similarity(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """Mean squared cosine of the principal angles between column spaces beyond its chance level
    (see the module docstring; None if either is empty)."""
    smaller, larger, d = min(a.shape[1], b.shape[1]), max(a.shape[1], b.shape[1]), a.shape[0]
    if smaller == 0:
        return None
    if larger == d:
        return float(smaller == d)
    overlap = float((a.T @ b).square().sum()) / smaller
    return max(0.0, (overlap - larger / d) / (1 - larger / d))


def matches(
    channels: list[Channel],
    bases: dict[str, torch.Tensor],
    prints: dict[str, list[float]],
    previous: PreviousCheckpoint | None,
    threshold: float,
) -> pd.DataFrame:
    """The ``matches`` table: channels at least ``threshold`` similar to themselves in ``previous``."""
    if previous is None:
        return frame("matches", [])
    rows = []
    for c in channels:
        value = channel_similarity(c, bases, previous.bases)
        if value is None or value < threshold:
            continue
        rows.append(
            {
                "previous_checkpoint": previous.label,
                "block": c.name,
                "similarity": value,
                "fingerprint_similarity": float(similarity(prints[c.name], previous.fingerprints[c.name])[0, 0]),
            }
        )
    return frame("matches", rows)
