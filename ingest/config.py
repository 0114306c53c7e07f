"""The ingestion settings: one frozen value, hashed into every artifact it produces."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field

from circuit_atlas.errors import UserError

#: How the compression weighs a direction (ingest/compression.py, :func:`activation_weighted`).
IMPORTANCES = ("fisher", "activation")
#: What an ablated channel's output becomes (ingest/baselines.py); the first is the default.
ABLATIONS = ("position", "mean", "resample", "counterfactual", "zero")
#: What discovered situations are made of (ingest/situations.py); the first is the default.
SITUATION_UNITS = ("prompt", "token")
#: How a series of checkpoints chooses its rank fraction (ingest/pipeline.py); the first is the default.
SERIES_RANKS = ("last", "each")


def setting(default, help: str, **cli):
    """A setting: its default and the help text the CLI shows for it (``cli``: what else the CLI's
    option needs, ``choices`` or ``metavar``). ``circuit-atlas ingest`` derives one option per setting
    from these, so each default and help text is written once, here."""
    return field(default=default, metadata={"help": help, **cli})


@dataclass(frozen=True)
class IngestConfig:
    seq_len: int | None = setting(None, "Tokens per sequence  [default: min(context, 128)]")
    n_seq: int = setting(256, "Sequences per built-in slice.")
    holdout: float = setting(0.2, "Share of each slice's prompts held out at random (rank search, fidelity, effects).")
    fidelity: float = setting(
        0.95, "Target loss recovered (all channels compressed at once) when searching the rank fraction."
    )
    energy: float | None = setting(None, "Fix the rank fraction instead of searching it.")
    series_ranks: str = setting(
        SERIES_RANKS[0],
        "Several checkpoints: compress every one at the rank fraction searched on the last (last), so that "
        "ranks compare across the series, or each at its own (each).",
        choices=SERIES_RANKS,
    )
    max_rank: int | None = setting(None, "Cap on every subspace's rank.")
    floor: float = setting(1e-3, "Rank 0 below this share of the largest importance of the same kind.")
    importance: str = setting(
        "fisher",
        "What weighs a direction: the loss's Fisher, or the data's activations alone (models flat on their data).",
        choices=IMPORTANCES,
    )
    batch_tokens: int = setting(4096, "Tokens per batch.")
    seed: int = setting(0, "Seed for data and sampled labels.")
    match_threshold: float = setting(0.8, "MATCHES between neighbouring checkpoints at or above this similarity.")
    statistics_tokens: int = setting(65536, "Moments from at most this many fitting tokens (spread over them).")
    effect_tokens: int = setting(2048, "Held-out tokens per slice for the rank search, fidelity and exact ablation.")
    effect_prompts: int = setting(
        64, "At least this many held-out prompts per slice for them (all if fewer), however long the prompts are."
    )
    examples: int = setting(8, "Top tokens kept per channel, slice and ranking (0: none).")
    example_context: int = setting(16, "Tokens before an example kept with it.")
    situations: int = setting(0, "Discover up to this many situations in the data, each scored as a slice (0: none).")
    situation_unit: str = setting(
        SITUATION_UNITS[0],
        "What situations are made of: whole prompts, or the scored tokens of prompts (text: where different "
        "channels act within a window).",
        choices=SITUATION_UNITS,
    )
    situation_tokens: int = setting(
        16384, "Discovery measures every channel's exact effect on at most this many tokens of each slice."
    )
    ablation: str = setting(
        ABLATIONS[0],
        "What an ablated channel's output becomes: the baseline prompts' mean at its position, their mean, another "
        "baseline prompt's (resample), the prompt's own counterfactual prompt's (task slices with "
        "counterfactual_tokens or counterfactual_text), or zero.",
        choices=ABLATIONS,
    )
    baseline: str | None = setting(
        None,
        "The --data slice whose prompts give every baseline (default: each slice its own), e.g. random.",
        metavar="SLICE",
    )
    patched_edges: int = setting(
        64,
        "Edges whose exact effect is measured by patching: every edge if the model has no more, else this many "
        "largest by attribution on each slice and as many by flow (0: none).",
    )
    circuit_faithfulness: float = setting(
        0.9,
        "The share of each slice's behaviour its stored circuit by faithfulness must keep (the smallest set found: "
        "query faithful_circuit).",
    )
    steer: int = setting(
        0,
        "Measure what pushing each write direction by --steer-sd standard deviations, up and down, does to each "
        "slice, on at most this many of its held-out tokens (0: not measured; 2 forward passes per direction).",
        metavar="TOKENS",
    )
    steer_sd: float = setting(3.0, "How far --steer pushes each direction, in standard deviations of its coordinate.")

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
            ("series_ranks", False, ("one of", lambda v: v in SERIES_RANKS), lambda v: True, "last, each"),
            ("situation_unit", False, ("one of", lambda v: v in SITUATION_UNITS), lambda v: True, "prompt, token"),
            ("situation_tokens", False, whole, lambda v: v >= 1, ">= 1"),
            ("steer", False, whole, lambda v: v >= 0, ">= 0 (tokens per slice; 0: not measured)"),
            ("steer_sd", False, number, lambda v: v > 0, "> 0 (standard deviations)"),
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
