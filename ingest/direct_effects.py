"""What each write direction does to the output directly: the tokens it promotes and suppresses.

A direction b of a channel's stored write subspace (a column of its ``out`` basis, in the processed
model's residual stream) changes the logits, through the final norm linearised at the stream x and
the unembedding, by ``J(x) b W_U``. The processed model has the norm's weights folded into W_U, which
for LayerNorm is also centred over d_model, so the norm's centring leaves ``b W_U`` as it is, and
``J(x) b = (b - x̂ (x̂·b) / d) / σ(x)``: a positive scale times b, less the part of b along the
stream itself, a d-th of b's size for a direction the stream does not already point along. The
tokens are ranked by ``b W_U`` (centred over the outputs, as softmax sees it): the linearised effect
without that last term; the scale 1/σ does not change the ranking. A basis direction's sign is
arbitrary, so "promoted" is what pushing the coordinate up does (``+=`` in a steering spec).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

#: Tokens kept per direction, each way.
TOP_TOKENS = 5


@dataclass(frozen=True)
class OutputTokens:
    """Per direction of one write subspace, in direction order, :data:`TOP_TOKENS` each: the tokens
    it promotes most (flattened: direction i's are entries ``i * TOP_TOKENS`` onwards) and suppresses
    most, and their text (empty lists without a tokenizer)."""

    promoted_tokens: list[int]
    suppressed_tokens: list[int]
    promoted_text: list[str]
    suppressed_text: list[str]


def output_tokens(bases: dict[str, Tensor], W_U: Tensor, tokenizer=None) -> dict[str, OutputTokens]:
    """For every ``<channel>/out`` basis of ``bases``, its directions' :class:`OutputTokens` under the
    processed unembedding ``W_U`` [d_model, d_vocab_out]."""
    found = {}
    unembedding = W_U.double().cpu()
    top = min(TOP_TOKENS, unembedding.shape[1])
    for key, basis in bases.items():
        if not key.endswith("/out"):
            continue
        logits = basis.double().cpu().T @ unembedding  # [k, d_vocab_out]
        logits = logits - logits.mean(1, keepdim=True)
        promoted = logits.topk(top, dim=1).indices.flatten().tolist()
        suppressed = (-logits).topk(top, dim=1).indices.flatten().tolist()
        found[key] = OutputTokens(promoted, suppressed, _texts(tokenizer, promoted), _texts(tokenizer, suppressed))
    return found


def _texts(tokenizer, ids: list[int]) -> list[str]:
    return [tokenizer.decode([i]) for i in ids] if tokenizer is not None else []


def empty() -> OutputTokens:
    """A read subspace's (no direct effect on the output)."""
    return OutputTokens([], [], [], [])
