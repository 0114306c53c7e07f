"""The key-value lookup reference model: a task with a known algorithm, trained here.

A prompt is ``n_pairs`` key-value pairs and then a query key: ``k₁ v₁ k₂ v₂ … kₙ vₙ q`` with
distinct keys (tokens ``0 .. n_keys-1``), values drawn with repetition (tokens ``n_keys ..
n_keys+n_values-1``) and ``q`` one of the keys; the answer, scored at the last position, is the
value paired with ``q``. The known algorithm needs two steps through the residual stream:

1. at every value position a layer-0 head attends to the previous token, the value's key, and
   writes it there (a previous-token head);
2. at the query a layer-1 head matches the query against those copied keys (K-composition with
   step 1), attends to the matching *value* position, and copies the value to the output.

That is induction (the query is an earlier token, the answer the token after it), and trained from
scratch on the answer's cross-entropy alone a 2-layer model stays on the plateau of copying any
value of the prompt (accuracy 0.29 after 2,000 steps; 0.2-0.4 in runs of up to 3,000 steps with
fewer pairs or keys, a loss at many queries, other learning rates, larger initial weights or an
attention-only model). So the recipe is a curriculum: it starts
from the final checkpoint of the induction reference model (``base``, trained or reused first; 0.68
accuracy on the task before any step here, its vocabulary holds the task's tokens) and fine-tunes it
on the answer's cross-entropy; ``step-00000`` is that starting point.

Ground truth that does not come from the compression is saved beside the checkpoints in
``head_scores.json``: per checkpoint and head, on fresh prompts, the mean attention from each value
position to its key (``value_to_key``), and from the query to the matching key
(``query_to_key``) and to the matching value (``query_to_value``). Two task slices (JSONL, metric
``answer_loss`` at position -1) are written beside them: ``task.jsonl`` (fresh prompts) and
``trivial.jsonl``, prompts of ``trivial_pairs`` = 1 pair (``k v k``): the answer is the prompt's
only value, the key matching of step 1 is not needed and its circuit loses the previous-token
head. (Prompts of ``n_pairs`` pairs that all carry the answer's value are not trivial enough:
mean-ablating the previous-token head still costs them 0.8 nats, against 5.0 on the task and 0.01
on one pair.)

Training (``reference/training.py``) is deterministic for a seed and cached like the induction
model's; the default recipe is shipped trained.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from circuit_atlas.ingest.model_adapter import load_model, site

from .induction import InductionRecipe, train_induction
from .training import checkpoint_dirs, train_cached


@dataclass(frozen=True)
class KeyValueRecipe:
    base: InductionRecipe = field(default_factory=InductionRecipe)
    seed: int = 0
    n_keys: int = 16
    n_values: int = 16
    n_pairs: int = 6
    batch_size: int = 64
    steps: int = 400
    learning_rate: float = 1e-3
    weight_decay: float = 0.1
    warmup: int = 100
    checkpoint_every: int = 200
    slice_prompts: int = 256
    trivial_pairs: int = 1  # pairs in a trivial-slice prompt

    def __post_init__(self) -> None:
        if self.n_keys + self.n_values > self.base.d_vocab or self.seq_len > self.base.seq_len:
            raise ValueError("the prompts must fit the base model's vocabulary and context")

    @property
    def name(self) -> str:
        return f"keyvalue-s{self.seed}"

    @property
    def seq_len(self) -> int:
        return 2 * self.n_pairs + 1


@dataclass(frozen=True)
class Prompts:
    tokens: torch.Tensor  # [n, seq_len]: k₁ v₁ … kₙ vₙ q
    answers: torch.Tensor  # [n]: the value paired with q
    query_pair: torch.Tensor  # [n]: which pair q names (its key sits at 2i, its value at 2i + 1)


def prompts(recipe: KeyValueRecipe, n: int, generator: torch.Generator) -> Prompts:
    """``n`` prompts of ``recipe.n_pairs`` pairs and a query."""
    rows = torch.arange(n)
    keys = torch.stack([torch.randperm(recipe.n_keys, generator=generator)[: recipe.n_pairs] for _ in rows])
    values = recipe.n_keys + torch.randint(0, recipe.n_values, (n, recipe.n_pairs), generator=generator)
    query = torch.randint(0, recipe.n_pairs, (n,), generator=generator)
    tokens = torch.cat([torch.stack([keys, values], -1).flatten(1), keys[rows, query][:, None]], 1)
    return Prompts(tokens, values[rows, query], query)


def _batch(recipe: KeyValueRecipe, generator: torch.Generator) -> Prompts:
    return prompts(recipe, recipe.batch_size, generator)


def answer_loss(model, batch: Prompts) -> torch.Tensor:
    """The training loss: the answer's cross-entropy at the last position."""
    return torch.nn.functional.cross_entropy(model(input_ids=batch.tokens).logits[:, -1], batch.answers)


def head_scores(model, batch: Prompts) -> dict[str, list[list[float]]]:
    """Per score, ``[layer][head]`` mean attention (see the module docstring) on ``batch``."""
    patterns = {}

    def keep(pattern, hook):
        patterns[hook.name] = pattern

    hooks = [(site("pattern", l), keep) for l in range(model.spec.n_layers)]
    with torch.no_grad():
        model.run(batch.tokens, hooks)
    rows, last = torch.arange(len(batch.tokens)), batch.tokens.shape[1] - 1
    value_positions = torch.arange(1, last, 2)
    scores: dict[str, list[list[float]]] = {"value_to_key": [], "query_to_key": [], "query_to_value": []}
    for l in range(model.spec.n_layers):
        pattern = patterns[site("pattern", l)]  # [batch, head, query, key]
        scores["value_to_key"].append(pattern[:, :, value_positions, value_positions - 1].mean((0, 2)).tolist())
        query = pattern[rows, :, last]  # [batch, head, key]
        scores["query_to_key"].append(query[rows, :, 2 * batch.query_pair].mean(0).tolist())
        scores["query_to_value"].append(query[rows, :, 2 * batch.query_pair + 1].mean(0).tolist())
    return scores


def slice_rows(batch: Prompts) -> list[dict]:
    """One task-slice row per prompt: the answer's cross-entropy at the last position."""
    return [
        {"tokens": tokens.tolist(), "metric": "answer_loss", "position": -1, "answer": int(answer)}
        for tokens, answer in zip(batch.tokens, batch.answers)
    ]


def write_ground_truth(root: Path, recipe: KeyValueRecipe) -> dict:
    """``head_scores.json`` for every checkpoint, and the slices ``task.jsonl`` and ``trivial.jsonl``."""
    probe = prompts(recipe, 256, torch.Generator().manual_seed(recipe.seed + 99))
    scores = {folder.name: head_scores(load_model(str(folder)), probe) for folder in checkpoint_dirs(root)}
    (root / "head_scores.json").write_text(json.dumps(scores, indent=1))
    for name, pairs, offset in (("task", recipe.n_pairs, 1), ("trivial", recipe.trivial_pairs, 2)):
        generator = torch.Generator().manual_seed(recipe.seed + 1000 * offset)
        batch = prompts(replace(recipe, n_pairs=pairs), recipe.slice_prompts, generator)
        (root / f"{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in slice_rows(batch)))
    return scores


def train_keyvalue(
    recipe: KeyValueRecipe, out: Path, progress: bool = True, echo: Callable[[str], None] = print
) -> list[Path]:
    """Train (or reuse) the base model, then fine-tune (or reuse) the checkpoints of ``recipe`` under
    ``out/<name>``; returns them by step."""
    from transformers import GPTNeoXForCausalLM

    base = train_induction(recipe.base, out, progress, echo)[-1]
    return train_cached(
        recipe,
        out,
        lambda _: GPTNeoXForCausalLM.from_pretrained(base),
        _batch,
        answer_loss,
        lambda root: write_ground_truth(root, recipe),
        progress,
        echo,
    )
