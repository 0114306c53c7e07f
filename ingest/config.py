"""The ingestion settings: one frozen value, hashed into every artifact it produces."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class IngestConfig:
    seq_len: int | None = None  # default: min(context, 128)
    n_seq: int = 256  # sequences per built-in slice
    holdout: float = 0.2  # share of each slice's sequences held out (rank search, fidelity, exact ablation)
    fidelity: float = 0.95  # target loss recovered when the fraction is searched
    energy: float | None = None  # fixed rank fraction instead of the search
    max_rank: int | None = None
    floor: float = 1e-3  # a role below this share of its group's largest importance has rank 0
    batch_tokens: int = 4096
    seed: int = 0
    match_threshold: float = 0.8  # MATCHES between neighbouring checkpoints at or above this
    statistics_tokens: int = 65536  # moments from at most this many fitting tokens, spread over them
    effect_tokens: int = 2048  # per slice: held-out tokens of the rank search, fidelity and exact ablation

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]
