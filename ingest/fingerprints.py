"""Behaviour fingerprints: a fixed-length vector per channel, comparable across models.

Attention scores come from attention patterns on probe sequences (a random segment of distinct
tokens, then an exact repeat), as TransformerLens' head detector computes them: for a query at
position i in the repeat, with segment length s, the mean attention on

- ``previous_token``: i - 1;    - ``induction``: i - s + 1 (the token after i's earlier copy);
- ``duplicate_token``: i - s;   - ``first_token``: 0;      - ``self``: i;

and ``attention_entropy``, the entropy of the pattern over the i + 1 visible keys divided by
log(i + 1). These scores are ground truth that does not come from the compression.

A head may work at some positions only (a model trained on short sequences, or one whose heads
use absolute positions), so the probes come in windows: segment lengths s0, s0/2, s0/4, ... down
to :data:`MIN_SEGMENT` (s0 = min(n_ctx, 64, 2 d_vocab) / 2), whose repeats put the queries at
positions [s, 2s). Each head's score for a target is the one of the window where it lifts that
target most (below); the entropy is the longest window's.

The fingerprint (:data:`FEATURES`) is built so that channels of models of different widths,
depths, vocabularies and probe lengths compare, and so that a feature is 0 for a channel without
the behaviour it names (what every channel shares adds nothing to a distance):

- ``lift_<target>`` per attention target: log(score / chance) / log(1 / chance) clipped to [0, 1],
  with chance the score of a uniform pattern (0: attends no more than chance; 1: all attention);
  0 for channels that are not heads;
- ``repeat_specificity``: (a_rep - a_rand) / (a_rep + a_rand) of the channel's activity on the
  built-in ``repeated`` and ``random`` probe slices;
- ``importance``: its activity on ``repeated`` over the largest in its model;
- a one-hot of the channel kind (channels of two kinds are at least sqrt(2) apart).

Fingerprints are compared by :func:`similarity`, 1 / (1 + ||a - b||^2) (Neo4j's euclidean vector
similarity). A probe scores next-token loss, or, for a model whose outputs are classes rather than
tokens (``d_vocab_out != d_vocab``), the loss of the model's own clean prediction at every position.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor

from .attribution import slice_scores
from .channels import KINDS, Channel, ChannelLayout
from .compression import Compression
from .data import DataSlice, synthetic_tokens
from .model_adapter import LoadedModel, site
from .statistics import Moments

PATTERN_SCORES = ("previous_token", "induction", "duplicate_token", "first_token", "self", "attention_entropy")
#: The attention targets of :data:`PATTERN_SCORES` (all but the entropy).
TARGETS = PATTERN_SCORES[:-1]
FEATURES = (
    *(f"lift_{t}" for t in TARGETS),
    "repeat_specificity",
    "importance",
    *(f"kind_{k}" for k in KINDS),
)


#: The shortest probe segment of the windows (queries at positions 4 to 7).
MIN_SEGMENT = 4


def probe_segments(d_vocab: int, n_ctx: int) -> list[int]:
    """The windows' segment lengths, longest first: s0 = min(n_ctx, 64, 2 d_vocab) // 2, then halved
    down to :data:`MIN_SEGMENT` (s0 alone when it is shorter)."""
    segments = [min(n_ctx, 64, 2 * d_vocab) // 2]
    while segments[-1] // 2 >= MIN_SEGMENT:
        segments.append(segments[-1] // 2)
    return segments


def probe_tokens(d_vocab: int, n_ctx: int, n_seq: int = 32, seed: int = 20240611, segment: int | None = None) -> Tensor:
    """``n_seq`` sequences: a segment of distinct random tokens (``segment`` long, by default the
    longest window's), then its exact repeat."""
    segment = segment or probe_segments(d_vocab, n_ctx)[0]
    generator = torch.Generator().manual_seed(seed)
    first = torch.stack([torch.randperm(d_vocab, generator=generator)[:segment] for _ in range(n_seq)])
    return torch.cat([first, first], dim=1)


def attention_scores(model: LoadedModel, tokens: Tensor) -> dict[str, Tensor]:
    """Each of :data:`PATTERN_SCORES` per head [n_layers, n_heads] on repeat-probe ``tokens``."""
    spec = model.spec
    s = tokens.shape[1] // 2
    queries = torch.arange(s, 2 * s)
    names = [site("pattern", l) for l in range(spec.n_layers)]
    with torch.no_grad():
        _, acts = model.run_capturing(tokens, names)
    scores = {name: torch.zeros(spec.n_layers, spec.n_heads) for name in PATTERN_SCORES}
    targets = {
        "previous_token": queries - 1,
        "induction": queries - s + 1,
        "duplicate_token": queries - s,
        "first_token": torch.zeros_like(queries),
        "self": queries,
    }
    positions = torch.arange(2 * s)
    for l, name in enumerate(names):
        pattern = acts[name].float().cpu()  # [b, h, query, key]
        for score, target in targets.items():
            scores[score][l] = pattern[:, :, queries, target].mean((0, 2))
        entropy = -(pattern * pattern.clamp_min(1e-12).log()).sum(-1)  # [b, h, query]
        visible = torch.log((positions + 1).float()).clamp_min(1e-12)
        scores["attention_entropy"][l] = (entropy[..., 1:] / visible[1:]).mean((0, 2))
    return scores


def chance_attention(probe_length: int) -> float:
    """The mean attention one key gets from a uniform pattern over the probe's second half: the
    mean over queries i in [s, 2s) of 1 / (i + 1), with s = ``probe_length`` / 2."""
    s = probe_length // 2
    return float((1.0 / torch.arange(s + 1, 2 * s + 1, dtype=torch.float64)).mean())


def lift(score: Tensor, chance: float) -> Tensor:
    """How much more than chance a head attends to a target, on a log scale from 0 (no more than
    chance) to 1 (all of its attention): log(score / chance) / log(1 / chance), clipped to [0, 1]."""
    return (torch.log(score.clamp_min(1e-12) / chance) / math.log(1.0 / chance)).clamp(0.0, 1.0)


def windowed_head_scores(model: LoadedModel, n_seq: int = 32, seed: int = 20240611) -> tuple[dict, dict]:
    """Per head [n_layers, n_heads], over the probe windows (:func:`probe_segments`): the lift of each
    of :data:`TARGETS` in the window where it is largest, and :data:`PATTERN_SCORES` with each
    target's score taken in that same window (the entropy in the longest)."""
    spec = model.spec
    windows = []
    for segment in probe_segments(spec.d_vocab, spec.n_ctx):
        scores = attention_scores(model, probe_tokens(spec.d_vocab, spec.n_ctx, n_seq, seed, segment))
        chance = chance_attention(2 * segment)
        windows.append((scores, {t: lift(scores[t], chance) for t in TARGETS}))
    lifts, best_scores = {}, {"attention_entropy": windows[0][0]["attention_entropy"]}
    for t in TARGETS:
        by_window = torch.stack([window_lifts[t] for _, window_lifts in windows])  # [window, layer, head]
        best = by_window.argmax(0, keepdim=True)  # the first (longest) window among equals
        lifts[t] = by_window.gather(0, best)[0]
        best_scores[t] = torch.stack([scores[t] for scores, _ in windows]).gather(0, best)[0]
    return lifts, {name: best_scores[name] for name in PATTERN_SCORES}


def similarity(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """Fingerprint similarity 1 / (1 + ||a_i - b_j||^2) of every row of ``a`` [n, f] with every row of
    ``b`` [m, f] (a single fingerprint is one row): Neo4j's euclidean vector similarity, so the
    ``block_fingerprint_euclidean`` index ranks channels the same way."""
    a, b = np.atleast_2d(np.asarray(a, dtype=np.float64)), np.atleast_2d(np.asarray(b, dtype=np.float64))
    return 1.0 / (1.0 + ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))


def fingerprints(
    channels: list[Channel], head_lifts: dict[str, Tensor], activity: dict[str, dict[str, float]]
) -> dict[str, list[float]]:
    """The :data:`FEATURES` vector per channel name from the heads' lifts per target
    (:func:`windowed_head_scores`) and ``activity[probe][channel]`` on the ``random`` and
    ``repeated`` probes. A feature is 0 for a channel without that behaviour (attention at chance,
    equal activity on both probes), so a distance weighs what distinguishes channels."""
    largest = max(activity["repeated"].values()) or 1.0
    result = {}
    for c in channels:
        is_head = c.kind == "attn_head"
        lifts = [float(head_lifts[t][c.layer, c.head]) if is_head else 0.0 for t in TARGETS]
        repeated, random = activity["repeated"][c.name], activity["random"][c.name]
        specificity = (repeated - random) / (repeated + random) if repeated + random > 0 else 0.0
        result[c.name] = [*lifts, specificity, repeated / largest, *(1.0 if c.kind == k else 0.0 for k in KINDS)]
    return result


#: Sequences per built-in probe slice for the behaviour features.
PROBE_SEQUENCES = 32


def probe_slice(model: LoadedModel, kind: str, tokens: Tensor) -> DataSlice:
    """Probe ``tokens`` scored by next-token loss, or for a class-output model by ``label_loss`` of
    its own clean argmax at every position (next tokens are no classes there)."""
    if model.spec.d_vocab_out == model.spec.d_vocab:
        return DataSlice.of_tokens(kind, kind, tokens)
    with torch.no_grad():
        labels = model.run(tokens.to(model.device)).argmax(-1).cpu()
    positions = torch.arange(tokens.shape[1]).expand_as(tokens)
    mask = torch.ones_like(tokens, dtype=torch.bool)
    return DataSlice(kind, kind, tokens, mask, "label_loss", positions, labels, None, "own prediction")


def channel_fingerprints(
    model: LoadedModel, compression: Compression, moments: Moments, layout: ChannelLayout, batch_tokens: int
) -> tuple[dict[str, list[float]], dict[str, Tensor]]:
    """Every channel's fingerprint, and the attention-pattern scores per head (on repeat probes, each
    target's in the window where the head shows it most)."""
    spec = model.spec
    probe_length = 2 * probe_segments(spec.d_vocab, spec.n_ctx)[0]
    head_lifts, pattern_scores = windowed_head_scores(model)
    probes = {
        kind: slice_scores(
            model,
            compression,
            moments,
            layout,
            probe_slice(model, kind, synthetic_tokens(kind, spec.d_vocab, PROBE_SEQUENCES, probe_length, 7)),
            batch_tokens,
            progress=False,
            edges=False,
        )
        for kind in ("random", "repeated")
    }
    prints = fingerprints(layout.channels, head_lifts, {k: v.activity for k, v in probes.items()})
    return prints, pattern_scores
