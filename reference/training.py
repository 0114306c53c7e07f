"""The train-save-cache loop every reference recipe shares.

A recipe is a frozen dataclass with at least ``seed``, ``steps``, ``batch_size``, ``seq_len``,
``learning_rate``, ``weight_decay``, ``warmup``, ``checkpoint_every`` and a ``name``. Training is
deterministic for a seed (CPU, one generator drawn in a fixed order: ``torch.manual_seed(seed)``
for the initial weights, then a ``Generator`` seeded with ``seed`` for every batch), with AdamW and
a linear warm-up, on one thread: these models are too small to gain from more, and on shared cores
threads wait on each other (100 fine-tuning steps of the key-value model: 4 s on one thread, over
100 s on two, with the machine's 2 cores loaded by other jobs). Checkpoints are Hugging Face
directories ``step-NNNNN`` with a :data:`~circuit_atlas.ingest.model_adapter.CHECKPOINT_SIDECAR`
(model, label, step, tokens seen, training loss), written atomically (a ``.partial`` folder renamed
into place). ``recipe.json`` is written last, after the recipe's ground truth: a folder whose
``recipe.json`` equals the recipe is complete and is reused as it is; anything else is trained
again from scratch.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from circuit_atlas.ingest.model_adapter import CHECKPOINT_SIDECAR


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
        rotary_pct=1.0,
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


def save_checkpoint(model, folder: Path, recipe, step: int, loss: float) -> None:
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    sidecar = {
        "model": recipe.name,
        "label": f"step-{step:05d}",
        "step": step,
        "tokens_seen": step * recipe.batch_size * recipe.seq_len,
        "train_loss": loss,
    }
    (partial / CHECKPOINT_SIDECAR).write_text(json.dumps(sidecar, indent=2))
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)


def train_cached(
    recipe,
    out: Path,
    build_model: Callable[[object], torch.nn.Module],
    batch: Callable[[object, torch.Generator], object],
    loss: Callable[[torch.nn.Module, object], torch.Tensor],
    ground_truth: Callable[[Path], object],
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> list[Path]:
    """Train (or reuse) ``recipe`` under ``out/<name>``; returns its checkpoints by step.

    ``batch(recipe, generator)`` draws one training batch, ``loss(model, batch)`` is what AdamW
    minimises, and ``ground_truth(root)`` writes the recipe's known-circuit files once the last
    checkpoint is saved.
    """
    root = Path(out) / recipe.name
    recipe_file = root / "recipe.json"
    if recipe_file.is_file() and json.loads(recipe_file.read_text()) == asdict(recipe):
        echo(f"Reusing the trained reference model in {root}.")
        return checkpoint_dirs(root)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _train(recipe, root, build_model, batch, loss, progress, echo)
    finally:
        torch.set_num_threads(threads)
    ground_truth(root)
    recipe_file.write_text(json.dumps(asdict(recipe), indent=2))
    return checkpoint_dirs(root)


def _train(recipe, root: Path, build_model, batch, loss, progress: bool, echo: Callable[[str], None]) -> None:
    torch.manual_seed(recipe.seed)
    generator = torch.Generator().manual_seed(recipe.seed)
    model = build_model(recipe)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, weight_decay=recipe.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / recipe.warmup))
    started, loss_value = time.time(), float("nan")
    save_checkpoint(model, root / "step-00000", recipe, 0, loss_value)
    for step in tqdm(range(1, recipe.steps + 1), desc=f"train {recipe.name}", disable=not progress, leave=False):
        value = loss(model, batch(recipe, generator))
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        schedule.step()
        loss_value = value.item()
        if step % recipe.checkpoint_every == 0 or step == recipe.steps:
            save_checkpoint(model, root / f"step-{step:05d}", recipe, step, loss_value)
    echo(f"Trained {recipe.name}: {recipe.steps} steps in {time.time() - started:.0f} s, final loss {loss_value:.3f}.")
