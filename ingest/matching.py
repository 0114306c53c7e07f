"""Matching a checkpoint's channels with the same channels of the checkpoint before it.

Two subspaces match by the mean squared cosine of their principal angles,
``||A^T B||_F^2 / min(rank A, rank B)`` for orthonormal bases A and B (1 when one contains the
other, 0 when orthogonal). A channel's similarity is the mean over its roles with a non-empty
subspace in both checkpoints; pairs at or above the threshold become ``MATCHES``, which also
carry the similarity of the two behaviour fingerprints (:func:`.fingerprints.similarity`).
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
    """What matching needs of the checkpoint before: its label, bases and fingerprints."""

    label: str
    bases: dict[str, torch.Tensor]  # "<block>/<role>" -> [d_model, rank]
    fingerprints: dict[str, list[float]]

    @classmethod
    def from_artifact(cls, path: Path) -> PreviousCheckpoint:
        """What an artifact already written holds of it (when a run resumes after it)."""
        artifact = read_artifact(path)
        return cls(artifact.manifest["checkpoint"]["label"], artifact.bases(), artifact.fingerprints())


def subspace_similarity(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """Mean squared cosine of the principal angles between column spaces (None if either is empty)."""
    if a.shape[1] == 0 or b.shape[1] == 0:
        return None
    return float((a.T @ b).square().sum()) / min(a.shape[1], b.shape[1])


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
        keys = [f"{c.name}/{role}" for role in c.roles if f"{c.name}/{role}" in previous.bases]
        values = [v for v in (subspace_similarity(bases[k], previous.bases[k]) for k in keys) if v is not None]
        if not values or sum(values) / len(values) < threshold:
            continue
        rows.append(
            {
                "previous_checkpoint": previous.label,
                "block": c.name,
                "similarity": sum(values) / len(values),
                "fingerprint_similarity": float(similarity(prints[c.name], previous.fingerprints[c.name])[0, 0]),
            }
        )
    return frame("matches", rows)
