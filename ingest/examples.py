"""Top examples per channel: the tokens of a slice where each channel acts most.

Two rankings, collected during the attribution pass (:mod:`.attribution`), per slice:

- ``effect``: |gᵀ(y - E y)| at one token, the first-order change of the slice's metric from
  mean-ablating the channel's output at that position alone (the per-token term of its
  ``attribution`` activity; the stored value keeps the sign: negative where the channel helps);
  for the unembedding, the same with its input.
- ``input``: ||Cᵀ x̂||, the norm of the channel's normalised input in its read subspace (a head's
  ``q`` role, the role of the position it writes to; an MLP's and the unembedding's ``in``).

:class:`TopTokens` keeps the k best tokens per channel over a stream of blocks in O(channels x k)
memory; :func:`example_rows` turns them into the artifact's ``examples`` rows, each with a
bounded context: the tokens before it, itself and the next token (the one it helps predict).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


class TopTokens:
    """The ``k`` tokens of largest score per channel, with their value, sequence and position."""

    def __init__(self, n_channels: int, k: int, device: torch.device):
        self.k = k
        self.score = torch.full((n_channels, 0), float("-inf"), device=device)
        self.value = torch.zeros(n_channels, 0, device=device)
        self.sequence = torch.zeros(n_channels, 0, dtype=torch.long, device=device)
        self.position = torch.zeros_like(self.sequence)

    def update(self, score: Tensor, value: Tensor, sequences: Tensor, positions: Tensor, real: Tensor) -> None:
        """Merge a block: ``score`` and ``value`` [c, t, channels], the block's sequence indices [c]
        and positions [t] in the slice, ``real`` [c, t] (padded tokens never become examples)."""
        c, t, n = score.shape
        score = torch.where(real[..., None], score, float("-inf")).reshape(c * t, n).T
        self.score = torch.cat([self.score, score], 1)
        self.value = torch.cat([self.value, value.reshape(c * t, n).T], 1)
        self.sequence = torch.cat([self.sequence, sequences.repeat_interleave(t).expand(n, -1)], 1)
        self.position = torch.cat([self.position, positions.repeat(c).expand(n, -1)], 1)
        best = self.score.topk(min(self.k, self.score.shape[1]), dim=1).indices
        self.score, self.value, self.sequence, self.position = (
            x.gather(1, best) for x in (self.score, self.value, self.sequence, self.position)
        )

    def rows(self, channels: Sequence[str]) -> list[tuple[str, int, int, int, float]]:
        """(channel, rank from 1, sequence, position, value) of every kept token with a finite score."""
        score, value, sequence, position = (x.cpu() for x in (self.score, self.value, self.sequence, self.position))
        return [
            (name, rank + 1, int(sequence[i, rank]), int(position[i, rank]), float(value[i, rank]))
            for i, name in enumerate(channels)
            for rank in range(score.shape[1])
            if torch.isfinite(score[i, rank])
        ]


def context_window(tokens: Tensor, real: Tensor, position: int, before: int) -> tuple[list[int], int]:
    """The real tokens of one sequence from ``before`` positions before ``position`` to the one after
    it, and the index of ``position`` in that window."""
    start = max(0, position - before)
    stop = min(tokens.shape[0], position + 2)
    kept = [(p, int(tokens[p])) for p in range(start, stop) if real[p]]
    return [token for _, token in kept], [p for p, _ in kept].index(position)


def token_text(token: int, tokenizer) -> str:
    """The token decoded, or ``[id]`` where that is empty or there is no tokenizer."""
    return (tokenizer.decode([token]) if tokenizer is not None else "") or f"[{token}]"


def example_text(token_ids: list[int], focus: int, tokenizer) -> str | None:
    """The window as text with the example's token between « and » (a token that decodes to nothing
    as [id]), or None without a tokenizer."""
    if tokenizer is None:
        return None
    pieces = [token_text(t, tokenizer) for t in token_ids]
    pieces[focus] = f"«{pieces[focus]}»"
    return "".join(pieces)


def example_rows(slices: Sequence, scores: dict, before: int, tokenizer) -> list[dict]:
    """The ``examples`` table's rows of the named ``slices`` (:class:`~.data.DataSlice`) from their
    :class:`~.attribution.SliceScores` ``scores`` (by slice name), with ``before`` tokens of context."""
    rows = []
    for data in slices:
        for ranking, kept in scores[data.name].examples.items():
            for block, rank, sequence, position, value in kept:
                tokens, focus = context_window(data.tokens[sequence], data.mask[sequence], position, before)
                rows.append(
                    {
                        "slice": data.name,
                        "block": block,
                        "ranking": ranking,
                        "rank": rank,
                        "sequence": sequence,
                        "position": position,
                        "value": value,
                        "tokens": tokens,
                        "focus": focus,
                        "text": example_text(tokens, focus, tokenizer),
                    }
                )
    return rows
