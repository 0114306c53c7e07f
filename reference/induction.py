"""The induction reference model: a known circuit, trained here, no model hub needed.

It is a 2-layer GPT-NeoX (rotary positions, sequential residual) trained on sequences
of random tokens in which a random segment is repeated at a random later offset. The only way to
predict a repeated token is to find the previous occurrence of the current token and copy the
token after it: a previous-token head in layer 0 whose output a layer-1 induction head reads with
its keys (K-composition). Checkpoints are saved as Hugging Face directories (like Pythia's step
revisions) with a ``circuit_atlas_checkpoint.json`` sidecar, and ground truth that does not come
from the compression, the attention-pattern scores of every head on fresh probe sequences
(fingerprints.py), is saved beside them in ``head_scores.json``.

Training is deterministic for a seed (CPU, one thread order), takes a few minutes on 2 CPUs, and
is cached: a folder whose ``recipe.json`` matches the recipe is reused as it is.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from circuit_atlas.ingest.fingerprints import attention_scores, probe_tokens
from circuit_atlas.ingest.model_adapter import CHECKPOINT_SIDECAR, load_model


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

    @property
    def name(self) -> str:
        return f"induction-s{self.seed}"


def induction_batch(recipe: InductionRecipe, generator: torch.Generator) -> torch.Tensor:
    """Random tokens with one segment per sequence repeated at a random later offset."""
    n, length = recipe.batch_size, recipe.seq_len
    tokens = torch.randint(0, recipe.d_vocab, (n, length), generator=generator)
    for row in range(n):
        size = int(torch.randint(recipe.min_segment, recipe.max_segment + 1, (), generator=generator))
        start = int(torch.randint(0, length - 2 * size + 1, (), generator=generator))
        copy = int(torch.randint(start + size, length - size + 1, (), generator=generator))
        tokens[row, copy : copy + size] = tokens[row, start : start + size]
    return tokens


def _model(recipe: InductionRecipe):
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


def _save(model, folder: Path, recipe: InductionRecipe, step: int, loss: float) -> None:
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    label = f"step-{step:05d}"
    (partial / CHECKPOINT_SIDECAR).write_text(
        json.dumps(
            {
                "model": recipe.name,
                "label": label,
                "step": step,
                "tokens_seen": step * recipe.batch_size * recipe.seq_len,
                "train_loss": loss,
            },
            indent=2,
        )
    )
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)


def train_induction(
    recipe: InductionRecipe, out: Path, progress: bool = True, echo: Callable[[str], None] = print
) -> list[Path]:
    """Train (or reuse) the checkpoints of ``recipe`` under ``out/<name>``; returns them by step."""
    root = Path(out) / recipe.name
    recipe_file = root / "recipe.json"
    if recipe_file.is_file() and json.loads(recipe_file.read_text()) == asdict(recipe):
        echo(f"Reusing the trained reference model in {root}.")
        return checkpoint_dirs(root)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    torch.manual_seed(recipe.seed)
    generator = torch.Generator().manual_seed(recipe.seed)
    model = _model(recipe)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, weight_decay=recipe.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / recipe.warmup))
    started, loss_value = time.time(), float("nan")
    _save(model, root / "step-00000", recipe, 0, loss_value)
    for step in tqdm(range(1, recipe.steps + 1), desc=f"train {recipe.name}", disable=not progress, leave=False):
        tokens = induction_batch(recipe, generator)
        loss = model(input_ids=tokens, labels=tokens).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        loss_value = loss.item()
        if step % recipe.checkpoint_every == 0 or step == recipe.steps:
            _save(model, root / f"step-{step:05d}", recipe, step, loss_value)
    echo(f"Trained {recipe.name}: {recipe.steps} steps in {time.time() - started:.0f} s, final loss {loss_value:.3f}.")
    write_head_scores(root, recipe)
    recipe_file.write_text(json.dumps(asdict(recipe), indent=2))
    return checkpoint_dirs(root)


def write_head_scores(root: Path, recipe: InductionRecipe) -> dict:
    """Attention-pattern scores of every head of every checkpoint on fresh probe sequences."""
    probe = probe_tokens(recipe.d_vocab, recipe.seq_len, n_seq=64, seed=recipe.seed + 99)
    scores = {}
    for folder in checkpoint_dirs(root):
        model = load_model(str(folder))
        scores[folder.name] = {name: value.tolist() for name, value in attention_scores(model, probe).items()}
    (root / "head_scores.json").write_text(json.dumps(scores, indent=1))
    return scores


def checkpoint_dirs(root: Path) -> list[Path]:
    return sorted(p for p in Path(root).iterdir() if (p / CHECKPOINT_SIDECAR).is_file())
