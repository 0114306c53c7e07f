"""The train-save-cache loop every reference recipe shares.

A recipe is a frozen dataclass with at least ``seed``, ``steps``, ``batch_size``, ``seq_len``,
``learning_rate``, ``weight_decay``, ``warmup``, ``checkpoint_every`` and a ``name``. Training is
deterministic for a seed (CPU, one generator drawn in a fixed order: ``torch.manual_seed(seed)``
for the initial weights, then a ``Generator`` seeded with ``seed`` for every batch), with AdamW and
a linear warm-up, on one thread: these models are too small to gain from more, and on shared cores
threads wait on each other (100 fine-tuning steps of the key-value model: 4 s on one thread, over
100 s on two, with the machine's 2 cores loaded by other jobs). Checkpoints are Hugging Face
directories ``step-NNNNN`` with a :data:`~circuit_atlas.ingest.model_adapter.CHECKPOINT_SIDECAR`
(model, label, step, tokens seen, training loss: null before the first step), written atomically
(a ``.partial`` folder renamed into place); a recipe may save another format (``save`` and
``checkpoints`` of :func:`train_cached`: the attention-only recipe saves TransformerLens-native
``step-NNNNN.pt`` files). ``recipe.json`` is written last, after the recipe's
ground truth: a folder whose ``recipe.json`` equals the recipe is complete and is reused as it is;
anything else is trained again from scratch.

Deterministic for a seed means on one kind of CPU: float sums round differently elsewhere, and
3,000 steps of AdamW turn that into other weights. So the recipes the tests and the demo use are
shipped trained (:data:`SHIPPED`, package data, the same on every machine) and copied into the
cache instead of trained; ``retrain=True`` trains them here anyway.

Each recipe has a folder of its own (:func:`folder_name`): the recipe's name for its defaults at
that seed and shape, with a hash of the recipe for any other setting, so a recipe with other steps
or rates never overwrites the default's checkpoints, and its model has another name in the catalog.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import torch
from tqdm.auto import tqdm

from circuit_atlas.ingest.model_adapter import CHECKPOINT_SIDECAR

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

#: What :func:`train_cached` trains: a recipe (a dataclass), the model it builds, one batch of it.
RecipeT = TypeVar("RecipeT", bound="DataclassInstance")
ModelT = TypeVar("ModelT", bound=torch.nn.Module)
BatchT = TypeVar("BatchT")

#: Trained checkpoints shipped with the package, one folder per recipe, laid out as the cache.
SHIPPED = Path(__file__).parent / "checkpoints"


def gpt_neox(recipe) -> torch.nn.Module:
    """A GPT-NeoX of the recipe's ``d_vocab``, ``d_model``, ``n_layers``, ``n_heads``, ``d_mlp`` and
    ``seq_len``: rotary positions on every dimension, sequential residual, no dropout, untied unembedding."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    config = GPTNeoXConfig(
        vocab_size=recipe.d_vocab,
        hidden_size=recipe.d_model,
        num_hidden_layers=recipe.n_layers,
        num_attention_heads=recipe.n_heads,
        intermediate_size=recipe.d_mlp,
        max_position_embeddings=recipe.seq_len,
        rotary_pct=1.0,  # type: ignore[call-arg]  # the 4.x name: transformers 5 takes it, undeclared
        use_parallel_residual=False,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        bos_token_id=0,
        eos_token_id=0,
        tie_word_embeddings=False,
    )
    return GPTNeoXForCausalLM(config)


def next_token_loss(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    return model(input_ids=tokens, labels=tokens).loss


def checkpoint_dirs(root: Path) -> list[Path]:
    """The checkpoint directories under ``root``, in step order."""
    return sorted(p for p in Path(root).iterdir() if (p / CHECKPOINT_SIDECAR).is_file())


def folder_name(recipe) -> str:
    """``recipe.name`` for the recipe class's defaults but for the fields its name spells out
    (``named_fields``, default the seed), else ``<name>-<8 hex digits of the recipe's hash>``: also
    the model's name in its sidecar."""
    spelled = getattr(recipe, "named_fields", ("seed",))
    named = {f.name: getattr(recipe, f.name) for f in fields(recipe) if f.name in spelled}
    if recipe == replace(type(recipe)(), **named):
        return recipe.name
    digest = hashlib.sha256(json.dumps(asdict(recipe), sort_keys=True).encode()).hexdigest()
    return f"{recipe.name}-{digest[:8]}"


def checkpoint_facts(recipe, step: int, loss: float) -> dict:
    """What a checkpoint's sidecar says: model, label, step, tokens seen, training loss (null before
    the first step: strict JSON has no NaN)."""
    return {
        "model": folder_name(recipe),
        "label": f"step-{step:05d}",
        "step": step,
        "tokens_seen": step * recipe.batch_size * recipe.seq_len,
        "train_loss": None if math.isnan(loss) else loss,
    }


def save_checkpoint(model, folder: Path, recipe, step: int, loss: float) -> None:
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    (partial / CHECKPOINT_SIDECAR).write_text(json.dumps(checkpoint_facts(recipe, step, loss), indent=2))
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)


def train_cached(
    recipe: RecipeT,
    out: Path,
    build_model: Callable[[RecipeT], ModelT],
    batch: Callable[[RecipeT, torch.Generator], BatchT],
    loss: Callable[[ModelT, BatchT], torch.Tensor],
    ground_truth: Callable[[Path], object],
    progress: bool = True,
    echo: Callable[[str], None] = print,
    retrain: bool = False,
    save: Callable[[ModelT, Path, RecipeT, int, float], None] = save_checkpoint,
    checkpoints: Callable[[Path], list[Path]] = checkpoint_dirs,
) -> list[Path]:
    """Train (or reuse, or copy the shipped) ``recipe`` under ``out/<folder_name>``; returns its
    checkpoints by step.

    ``batch(recipe, generator)`` draws one training batch, ``loss(model, batch)`` is what AdamW
    minimises, and ``ground_truth(root)`` writes the recipe's known-circuit files once the last
    checkpoint is saved. ``retrain``: train even where a cached or shipped copy exists.
    ``save(model, root / "step-NNNNN", recipe, step, loss)`` writes one checkpoint (default a Hugging
    Face directory with its sidecar) and ``checkpoints(root)`` lists them by step (default
    :func:`checkpoint_dirs`).
    """
    for name in ("steps", "batch_size", "seq_len", "checkpoint_every", "warmup"):
        if getattr(recipe, name) < 1:
            raise ValueError(f"The recipe's {name} must be at least 1, not {getattr(recipe, name)}.")
    root = Path(out) / folder_name(recipe)
    if not retrain and is_trained(root, recipe):
        echo(f"Reusing the trained reference model in {root}.")
        return checkpoints(root)
    shipped = SHIPPED / root.name
    if not retrain and is_trained(shipped, recipe):
        partial = root.with_name(root.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(shipped, partial)
        shutil.rmtree(root, ignore_errors=True)
        partial.rename(root)
        echo(f"Copied the shipped reference model (the same on every machine) to {root}.")
        return checkpoints(root)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _train(recipe, root, build_model, batch, loss, save, progress, echo)
    finally:
        torch.set_num_threads(threads)
    ground_truth(root)
    (root / "recipe.json").write_text(json.dumps(asdict(recipe), indent=2))
    return checkpoints(root)


def is_trained(root: Path, recipe) -> bool:
    """Whether ``root`` holds the complete checkpoints of ``recipe`` (its ``recipe.json`` equals it)."""
    recipe_file = root / "recipe.json"
    return recipe_file.is_file() and json.loads(recipe_file.read_text()) == asdict(recipe)


def _train(recipe, root: Path, build_model, batch, loss, save, progress: bool, echo: Callable[[str], None]) -> None:
    torch.manual_seed(recipe.seed)
    generator = torch.Generator().manual_seed(recipe.seed)
    model = build_model(recipe)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, weight_decay=recipe.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / recipe.warmup))
    started, loss_value = time.time(), float("nan")
    save(model, root / "step-00000", recipe, 0, loss_value)
    for step in tqdm(range(1, recipe.steps + 1), desc=f"train {recipe.name}", disable=not progress, leave=False):
        value = loss(model, batch(recipe, generator))
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        schedule.step()
        loss_value = value.item()
        if step % recipe.checkpoint_every == 0 or step == recipe.steps:
            save(model, root / f"step-{step:05d}", recipe, step, loss_value)
    echo(f"Trained {recipe.name}: {recipe.steps} steps in {time.time() - started:.0f} s, final loss {loss_value:.3f}.")
