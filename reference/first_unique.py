"""The first-unique-character reference model: a task whose answer classes are served by different heads.

A sequence is ``seq_len`` letters drawn uniformly from the first ``d_vocab - 1`` tokens (the
letters ``a``, ``b``, ...); at every position the answer is the first letter of the sequence so far
that occurs in it exactly once, or ``?`` (the last token, never an input) when every letter seen so
far repeats. An attention-only model (:class:`~.attention_only.AttentionOnly`, LayerNorm, learned
positions, 2 layers of 3 heads: the shape of the public models of this task) is trained on the
answers' cross-entropy at every position, and saved as TransformerLens-native checkpoints like the
attention-only induction model.

Trained so, the layer-1 heads share the answer letters among them: each head carries the answer
for its own group of letters, and ablating it costs those letters nats that the others barely
feel. The ground truth is measured on the trained model with plain PyTorch, not the catalog's
estimators (:func:`letter_effects`): per head, the mean loss increase at the positions of each
answer when the head's output is replaced by its mean over fresh sequences; it is saved as
``letter_effects.json`` beside the checkpoints, with each layer-1 head's letter group
(:func:`letter_groups`). Training is deterministic for a seed on one kind of CPU
(:mod:`.training`); the default recipe is shipped trained.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor, nn

from .attention_only import HOOK_Z, AttentionOnly, AttentionOnlyRecipe, native_checkpoints, train_native

#: The ground truth beside the checkpoints: per label, per head, the mean-ablation cost per answer.
LETTER_EFFECTS = "letter_effects.json"
#: A head serves an answer when ablating it costs at least this share of the largest cost any head has on it.
SERVES = 0.5


@dataclass(frozen=True)
class FirstUniqueRecipe(AttentionOnlyRecipe):
    """The attention-only recipe's model and optimiser on the first-unique-character task (its
    ``min_segment`` and ``max_segment`` belong to the induction task and are not used)."""

    d_vocab: int = 11  # the letters a-j, then "?"
    n_heads: int = 3
    seq_len: int = 20
    batch_size: int = 128
    steps: int = 6000
    learning_rate: float = 1e-3
    checkpoint_every: int = 3000
    seed: int = 3

    @property
    def name(self) -> str:
        """``first-unique-s<seed>``, with ``-<layers>x<heads>`` before the seed for another shape."""
        shape = "" if (self.n_layers, self.n_heads) == (2, 3) else f"-{self.n_layers}x{self.n_heads}"
        return f"first-unique{shape}-s{self.seed}"

    @property
    def unknown(self) -> int:
        """The token of ``?``: no letter seen so far occurs once."""
        return self.d_vocab - 1


#: The letters that each layer-1 head of the shipped model (the default recipe) alone serves: ablating it
#: costs each more than twice what ablating another layer-1 head does (README; tests/model/test_first_unique.py).
HEAD_LETTERS = {"L1H0": (4, 6, 8, 9), "L1H1": (2, 7), "L1H2": (0, 1)}


def class_prompts(recipe: FirstUniqueRecipe, letters: tuple[int, ...], n: int, generator: torch.Generator) -> Tensor:
    """``n`` sequences whose answer at the last position is one of ``letters`` (drawn, the rest dropped)."""
    kept: list[Tensor] = []
    while sum(len(k) for k in kept) < n:
        tokens = first_unique_batch(replace(recipe, batch_size=4096), generator)
        kept.append(tokens[torch.isin(first_unique_answers(tokens, recipe.unknown)[:, -1], torch.tensor(letters))])
    return torch.cat(kept)[:n]


def write_class_slices(folder: Path, n: int, seed: int) -> list[str]:
    """One task file per layer-1 head of :data:`HEAD_LETTERS` under ``folder``: ``n`` prompts whose
    last position's answer is one of the letters that head alone serves (``answer_loss`` there);
    returns the ``--data NAME=FILE`` arguments, named by the head."""
    recipe, generator = FirstUniqueRecipe(), torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arguments = []
    for head, letters in HEAD_LETTERS.items():
        tokens = class_prompts(recipe, letters, n, generator)
        answers = first_unique_answers(tokens, recipe.unknown)[:, -1]
        rows = [
            {"tokens": t.tolist(), "position": -1, "answer": int(a), "metric": "answer_loss"}
            for t, a in zip(tokens, answers)
        ]
        path = folder / f"{head}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        arguments.append(f"{head}={path}")
    return arguments


def first_unique_batch(recipe: FirstUniqueRecipe, generator: torch.Generator) -> Tensor:
    """``batch_size`` sequences of uniform random letters."""
    return torch.randint(0, recipe.unknown, (recipe.batch_size, recipe.seq_len), generator=generator)


def first_unique_answers(tokens: Tensor, unknown: int) -> Tensor:
    """Per position [b, p]: the letter of the sequence so far whose first occurrence is earliest among
    those that occur exactly once, else ``unknown``."""
    p = tokens.shape[1]
    seen = nn.functional.one_hot(tokens, unknown)  # [b, p, letters]
    counts = seen.cumsum(1)
    positions = torch.arange(p, device=tokens.device)[None, :, None].expand_as(seen)
    first = torch.where(seen.bool(), positions, p).cummin(1).values  # where each letter first occurred
    earliest = torch.where(counts == 1, first, p).min(-1)
    return torch.where(earliest.values < p, earliest.indices, unknown)


def answer_loss(model: AttentionOnly, tokens: Tensor) -> Tensor:
    """Cross-entropy of the answers at every position."""
    unknown = model.recipe.d_vocab - 1
    return nn.functional.cross_entropy(model(tokens).flatten(0, 1), first_unique_answers(tokens, unknown).flatten())


def letter_effects(model: AttentionOnly, tokens: Tensor) -> dict[str, list[float]]:
    """Per head ``L<l>H<h>``, per answer token (the letters, then ``?``): the mean increase of the
    answer's loss at the positions with that answer when the head's z is replaced by its mean over
    ``tokens`` (nan for an answer that never occurs)."""
    recipe = model.recipe
    answers = first_unique_answers(tokens, recipe.d_vocab - 1)
    captured: dict[int, Tensor] = {}

    def capture(layer: int) -> Callable[[Tensor], Tensor]:
        def keep(z: Tensor) -> Tensor:
            captured[layer] = z
            return z

        return keep

    def losses(hooks: dict[str, Callable[[Tensor], Tensor]]) -> Tensor:
        logits = model(tokens, hooks)
        return nn.functional.cross_entropy(logits.flatten(0, 1), answers.flatten(), reduction="none").view_as(answers)

    effects = {}
    with torch.no_grad():
        clean = losses({HOOK_Z.format(l): capture(l) for l in range(recipe.n_layers)})
        for l in range(recipe.n_layers):
            mean = captured[l].mean((0, 1))
            for h in range(recipe.n_heads):

                def ablate(z: Tensor, h: int = h, mean: Tensor = mean) -> Tensor:
                    z = z.clone()
                    z[:, :, h] = mean[h]
                    return z

                increase = losses({HOOK_Z.format(l): ablate}) - clean
                effects[f"L{l}H{h}"] = [
                    float(increase[answers == a].mean()) if (answers == a).any() else float("nan")
                    for a in range(recipe.d_vocab)
                ]
    return effects


def letter_groups(effects: dict[str, list[float]], layer: int, letters: int) -> dict[str, list[int]]:
    """Each head of ``layer``'s group: the letters it serves (its ablation costs at least :data:`SERVES`
    of the largest cost of any head of the layer on that letter)."""
    heads = [name for name in effects if name.startswith(f"L{layer}H")]
    groups: dict[str, list[int]] = {name: [] for name in heads}
    for letter in range(letters):
        largest = max(effects[name][letter] for name in heads)
        for name in heads:
            if effects[name][letter] >= SERVES * largest:
                groups[name].append(letter)
    return groups


def save_letter_effects(root: Path, recipe: FirstUniqueRecipe) -> dict:
    """``root/letter_effects.json``: per checkpoint label, every head's :func:`letter_effects` on 2,000
    fresh sequences and the last layer's letter groups."""
    tokens = first_unique_batch(replace(recipe, batch_size=2000), torch.Generator().manual_seed(recipe.seed + 99))
    truth = {}
    for path in native_checkpoints(root):
        model = AttentionOnly.from_checkpoint(recipe, path)
        effects = letter_effects(model, tokens)
        groups = letter_groups(effects, recipe.n_layers - 1, recipe.unknown)
        truth[path.stem] = {"effects": effects, "groups": groups}
    (root / LETTER_EFFECTS).write_text(json.dumps(truth, indent=1))
    return truth


def train_first_unique(
    recipe: FirstUniqueRecipe,
    out: Path,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    retrain: bool = False,
) -> list[Path]:
    """Train (or reuse, or copy the shipped) checkpoints of ``recipe`` under ``out``; returns the
    weights files by step (the config is ``NATIVE_CONFIG`` beside them)."""
    ground_truth = functools.partial(save_letter_effects, recipe=recipe)
    return train_native(recipe, out, first_unique_batch, answer_loss, ground_truth, progress, echo, retrain)
