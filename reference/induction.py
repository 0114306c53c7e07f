"""The induction reference model: a known circuit, trained here, no model hub needed.

It is a 2-layer GPT-NeoX (rotary positions, sequential residual) trained on sequences
of random tokens in which a random segment is repeated at a random later offset. The only way to
predict a repeated token is to find the previous occurrence of the current token and copy the
token after it: a previous-token head in layer 0 whose output a layer-1 induction head reads with
its keys (K-composition). Checkpoints are saved as Hugging Face directories (like Pythia's step
revisions) with a ``circuit_atlas_checkpoint.json`` sidecar, and ground truth that does not come
from the compression, the attention-pattern scores of every head on fresh probe sequences
(fingerprints.py), is saved beside them in ``head_scores.json``.

Training (``reference/training.py``, shared with the other recipes) is deterministic for a seed
on one kind of CPU (one thread order), takes a few minutes on 2 CPUs, and is cached: a folder whose
``recipe.json`` matches the recipe is reused as it is. The default recipe and the variants of
``seeds.py`` are shipped trained (``checkpoints/``) and copied instead of trained.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from circuit_atlas.ingest.fingerprints import attention_scores, probe_tokens
from circuit_atlas.ingest.model_adapter import LoadedModel, load_model

from .training import checkpoint_dirs, gpt_neox, next_token_loss, train_cached


@dataclass(frozen=True)
class InductionRecipe:
    seed: int = 0
    d_vocab: int = 64
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 2
    d_mlp: int = 256
    seq_len: int = 48
    min_segment: int = 4
    max_segment: int = 16
    batch_size: int = 64
    steps: int = 3000
    learning_rate: float = 1e-3
    weight_decay: float = 0.1
    warmup: int = 100
    checkpoint_every: int = 500
    named_fields = ("seed", "n_layers", "n_heads")  # what the name spells out (not a field)

    @property
    def name(self) -> str:
        """``induction-s<seed>``, with ``-<layers>x<heads>`` before the seed for another shape."""
        shape = "" if (self.n_layers, self.n_heads) == (2, 2) else f"-{self.n_layers}x{self.n_heads}"
        return f"induction{shape}-s{self.seed}"


class SegmentTask(Protocol):
    """What :func:`induction_batch` reads of a recipe (the induction and the attention-only one)."""

    @property
    def d_vocab(self) -> int: ...
    @property
    def seq_len(self) -> int: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def min_segment(self) -> int: ...
    @property
    def max_segment(self) -> int: ...


def induction_batch(recipe: SegmentTask, generator: torch.Generator) -> torch.Tensor:
    """Random tokens with one segment per sequence repeated at a random later offset."""
    n, length = recipe.batch_size, recipe.seq_len
    tokens = torch.randint(0, recipe.d_vocab, (n, length), generator=generator)
    for row in range(n):
        size = int(torch.randint(recipe.min_segment, recipe.max_segment + 1, (), generator=generator))
        start = int(torch.randint(0, length - 2 * size + 1, (), generator=generator))
        copy = int(torch.randint(start + size, length - size + 1, (), generator=generator))
        tokens[row, copy : copy + size] = tokens[row, start : start + size]
    return tokens


def train_induction(
    recipe: InductionRecipe,
    out: Path,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    retrain: bool = False,
) -> list[Path]:
    """Train (or reuse, or copy the shipped) checkpoints of ``recipe`` under ``out``; returns them by
    step (:func:`~.training.train_cached`)."""
    return train_cached(
        recipe,
        out,
        gpt_neox,
        induction_batch,
        next_token_loss,
        lambda root: write_head_scores(root, recipe),
        progress,
        echo,
        retrain,
    )


def write_head_scores(root: Path, recipe: InductionRecipe) -> dict:
    """Attention-pattern scores of every head of every checkpoint on fresh probe sequences."""
    return save_head_scores(root, recipe, ((f.name, load_model(str(f))) for f in checkpoint_dirs(root)))


def save_head_scores(root: Path, recipe, checkpoints: Iterable[tuple[str, LoadedModel]]) -> dict:
    """``root/head_scores.json``: per (label, model) of ``checkpoints`` (loaded one at a time), every
    head's attention-pattern scores on 64 fresh probe sequences of the recipe's vocabulary and length."""
    probe = probe_tokens(recipe.d_vocab, recipe.seq_len, n_seq=64, seed=recipe.seed + 99)
    scores = {
        label: {name: value.tolist() for name, value in attention_scores(model, probe).items()}
        for label, model in checkpoints
    }
    (root / "head_scores.json").write_text(json.dumps(scores, indent=1))
    return scores
