"""The ingestion settings: one frozen value, hashed into every artifact it produces."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass

from circuit_atlas.errors import UserError

#: How the compression weighs a direction (ingest/compression.py, :func:`activation_weighted`).
IMPORTANCES = ("fisher", "activation")
#: What an ablated channel's output becomes (ingest/baselines.py); the first is the default.
ABLATIONS = ("position", "mean", "resample", "counterfactual", "zero")


@dataclass(frozen=True)
class IngestConfig:
    seq_len: int | None = None  # default: min(context, 128)
    n_seq: int = 256  # sequences per built-in slice
    holdout: float = 0.2  # share of each slice's sequences held out at random (rank search, fidelity, exact ablation)
    fidelity: float = 0.95  # target loss recovered when the fraction is searched
    energy: float | None = None  # fixed rank fraction instead of the search
    max_rank: int | None = None
    floor: float = 1e-3  # a role below this share of its group's largest importance has rank 0
    importance: str = "fisher"  # what weighs a direction: "fisher" (the loss's) or "activation" (the data's alone)
    batch_tokens: int = 4096
    seed: int = 0
    match_threshold: float = 0.8  # MATCHES between neighbouring checkpoints at or above this
    statistics_tokens: int = 65536  # moments from at most this many fitting tokens, spread over them
    effect_tokens: int = 2048  # per slice: held-out tokens of the rank search, fidelity and exact ablation
    effect_prompts: int = 64  # per slice: at least this many held-out prompts (all if fewer), whatever their length
    examples: int = 8  # per channel, slice and ranking: top tokens kept as examples (0: none)
    example_context: int = 16  # tokens before an example kept with it
    situations: int = 0  # discover up to this many situations in the ingest data (0: none)
    ablation: str = ABLATIONS[0]  # an ablated channel's output becomes the baseline's (ingest/baselines.py)
    baseline: str | None = None  # the slice whose prompts every baseline comes from (default: each slice its own)
    patched_edges: int = 64  # edges patched: all if no more, else this many top by attribution and by flow
    circuit_faithfulness: float = 0.9  # per slice: the faithfulness its stored circuit must reach (smallest found)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """:class:`UserError` naming the first setting out of its range (the CLI option in brackets)."""
        whole = ("a whole number", lambda v: isinstance(v, int) and not isinstance(v, bool))
        number = ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v))
        rules = [  # field, optional, (kind, type check), range check, range in words
            ("seq_len", True, whole, lambda v: v >= 2, ">= 2 (tokens per sequence)"),
            ("n_seq", False, whole, lambda v: v >= 2, ">= 2 (sequences per built-in slice)"),
            ("holdout", False, number, lambda v: 0 < v < 1, "strictly between 0 and 1 (share held out)"),
            ("fidelity", False, number, lambda v: 0 < v <= 1, "in (0, 1] (share of the loss recovered)"),
            ("energy", True, number, lambda v: 0 < v <= 1, "in (0, 1] (share of the squared importances)"),
            ("max_rank", True, whole, lambda v: v >= 1, ">= 1"),
            ("floor", False, number, lambda v: 0 <= v < 1, "in [0, 1)"),
            ("batch_tokens", False, whole, lambda v: v >= 1, ">= 1"),
            ("seed", False, whole, lambda v: 0 <= v < 2**63, ">= 0"),
            ("match_threshold", False, number, lambda v: 0 <= v <= 1, "in [0, 1]"),
            ("statistics_tokens", False, whole, lambda v: v >= 1, ">= 1"),
            ("effect_tokens", False, whole, lambda v: v >= 1, ">= 1"),
            ("effect_prompts", False, whole, lambda v: v >= 1, ">= 1"),
            ("patched_edges", False, whole, lambda v: v >= 0, ">= 0 (0: none)"),
            ("circuit_faithfulness", False, number, lambda v: 0 < v <= 1, "in (0, 1] (share of the behaviour kept)"),
            ("examples", False, whole, lambda v: 0 <= v <= 1000, "in [0, 1000] (examples per channel and slice)"),
            ("example_context", False, whole, lambda v: 0 <= v <= 1000, "in [0, 1000] (tokens before an example)"),
            ("situations", False, whole, lambda v: v == 0 or 2 <= v <= 64, "0 (none) or in [2, 64] (most situations)"),
            ("importance", False, ("one of", lambda v: v in IMPORTANCES), lambda v: True, ", ".join(IMPORTANCES)),
            ("ablation", False, ("one of", lambda v: v in ABLATIONS), lambda v: True, ", ".join(ABLATIONS)),
            ("baseline", True, ("a slice name", lambda v: isinstance(v, str)), lambda v: bool(v.strip()), "(--data)"),
        ]
        for name, optional, (kind, is_kind), in_range, words in rules:
            value = getattr(self, name, None)
            if value is None and optional:
                continue
            if not is_kind(value) or not in_range(value):
                option = "--" + name.replace("_", "-")
                raise UserError(f"{option} must be {kind} {words}; got {value!r}.")

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]
