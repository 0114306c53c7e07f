"""The modular-addition reference series: a mechanism that forms during training, after memorisation.

The published recipe of the grokking papers (Power et al. 2022; Nanda et al. 2023), made small
enough to train on one CPU core in about a minute: the prompt ``a b =`` (three tokens, ``=`` is
token ``p``) and the answer ``(a + b) mod p`` for a prime ``p``; a one-layer transformer with
learned positions, 4 heads, a ReLU MLP and no LayerNorm (:class:`ModularAddition`, in
HookedTransformer's names, saved as TransformerLens-native checkpoints like the attention-only
models); full-batch AdamW with weight decay 1.0 on a fixed :attr:`~ModularAdditionRecipe.train_fraction`
of the ``p²`` pairs, the rest held out.

Trained so, the model memorises its training pairs within a few hundred steps while its held-out
loss is far above chance (log p), then forms the known algorithm (tokens embedded as the cosines
and sines of a few key frequencies, added through the attention and the MLP's products), and the
held-out loss falls to zero a thousand steps later. The ground truth is measured on every
checkpoint with plain PyTorch (:func:`progress_measures`), not with the catalog's estimators, and
saved as :data:`PROGRESS` beside the checkpoints: training and held-out loss and accuracy, the
MLP's mean-ablation effect on the held-out pairs, the embedding's share of energy on the final
checkpoint's key frequencies (Nanda et al.'s progress measure), and the overlap of the embedding's
principal subspace with the final checkpoint's.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch
from torch import Tensor, nn

from .attention_only import (
    _Params,
    attend,
    attention_params,
    init_like_transformer_lens,
    native_checkpoints,
    save_native,
)
from .training import folder_name, train_cached

#: The ground truth beside the checkpoints: per label, the progress measures of :func:`progress_measures`.
PROGRESS = "progress.json"
#: Hook names :meth:`ModularAddition.forward` offers: the attention's z and the MLP's output.
HOOK_Z, HOOK_MLP_OUT = "blocks.0.attn.hook_z", "blocks.0.hook_mlp_out"
#: A frequency is key when the final embedding puts at least this share of its energy on it.
KEY_SHARE = 0.05
#: The embedding's principal subspace: the directions holding this share of its centred energy.
PRINCIPAL_ENERGY = 0.9


@dataclass(frozen=True)
class ModularAdditionRecipe:
    seed: int = 0
    p: int = 53
    d_model: int = 64
    n_heads: int = 4
    d_head: int = 16
    d_mlp: int = 256
    train_fraction: float = 0.4
    steps: int = 3000
    learning_rate: float = 1e-3
    weight_decay: float = 1.0
    warmup: int = 10
    checkpoint_every: int = 250

    @property
    def name(self) -> str:
        return f"modular-addition-s{self.seed}"

    @property
    def seq_len(self) -> int:
        """``a b =``."""
        return 3

    @property
    def batch_size(self) -> int:
        """Full batch: every training pair at every step."""
        return len(split(self)[0])

    def hooked_transformer_config(self) -> dict:
        """The model's ``HookedTransformerConfig`` fields (TransformerLens defaults for the rest)."""
        return {
            "model_name": folder_name(self),
            "n_layers": 1,
            "d_model": self.d_model,
            "n_heads": self.n_heads,
            "d_head": self.d_head,
            "d_mlp": self.d_mlp,
            "act_fn": "relu",
            "n_ctx": self.seq_len,
            "d_vocab": self.p + 1,
            "d_vocab_out": self.p,
            "normalization_type": None,
            "positional_embedding_type": "standard",
            "attention_dir": "causal",
        }


def all_pairs(recipe: ModularAdditionRecipe) -> tuple[Tensor, Tensor]:
    """Every prompt ``[p², 3]`` (``a b =``, ``a`` major) and its answer ``(a + b) mod p``."""
    p = recipe.p
    a, b = torch.arange(p).repeat_interleave(p), torch.arange(p).repeat(p)
    return torch.stack([a, b, torch.full_like(a, p)], 1), (a + b) % p


@functools.lru_cache(maxsize=8)
def split(recipe: ModularAdditionRecipe) -> tuple[Tensor, Tensor]:
    """The indices into :func:`all_pairs` of the training pairs and of the held-out pairs (a
    permutation drawn from the seed: the first ``train_fraction`` trains)."""
    order = torch.randperm(recipe.p**2, generator=torch.Generator().manual_seed(recipe.seed))
    n = int(recipe.train_fraction * recipe.p**2)
    return order[:n], order[n:]


class ModularAddition(nn.Module):
    """HookedTransformer's forward for one layer without normalisation, in plain PyTorch::

        r = W_E[t] + W_pos[p];  z = attention(r);  r += Σ_h z_h W_O[h] + b_O;
        r += relu(r W_in + b_in) W_out + b_out;  logits = r W_U + b_U

    initialised as :class:`~.attention_only.AttentionOnly` is.
    """

    def __init__(self, recipe: ModularAdditionRecipe) -> None:
        super().__init__()
        d, V = recipe.d_model, recipe.p + 1
        self.recipe = recipe
        self.embed = _Params(W_E=(V, d))
        self.pos_embed = _Params(W_pos=(recipe.seq_len, d))
        block = nn.Module()
        block.attn = attention_params(d, recipe.n_heads, recipe.d_head)
        block.mlp = _Params(W_in=(d, recipe.d_mlp), b_in=(recipe.d_mlp,), W_out=(recipe.d_mlp, d), b_out=(d,))
        self.blocks = nn.ModuleList([block])
        self.unembed = _Params(W_U=(d, recipe.p), b_U=(recipe.p,))
        init_like_transformer_lens(self, d)

    def forward(self, tokens: Tensor, hooks: dict[str, Callable[[Tensor], Tensor]] | None = None) -> Tensor:
        """The answer's logits ``[batch, p]`` at the last position; ``hooks`` maps :data:`HOOK_Z`
        (z ``[batch, pos, head, d_head]``) and :data:`HOOK_MLP_OUT` (``[batch, pos, d_model]``) to a
        function returning what the model goes on with."""
        hooks = hooks or {}
        identity: Callable[[Tensor], Tensor] = lambda x: x  # noqa: E731
        n = tokens.shape[1]
        a, mlp = cast(_Params, self.blocks[0].attn), cast(_Params, self.blocks[0].mlp)
        r = self.embed.W_E[tokens] + self.pos_embed.W_pos[:n]
        causal = torch.ones(n, n, dtype=torch.bool, device=tokens.device).tril()
        z = hooks.get(HOOK_Z, identity)(attend(r, a, causal))
        r = r + torch.einsum("bphe,hed->bpd", z, a.W_O) + a.b_O
        r = r + hooks.get(HOOK_MLP_OUT, identity)(torch.relu(r @ mlp.W_in + mlp.b_in) @ mlp.W_out + mlp.b_out)
        return r[:, -1] @ self.unembed.W_U + self.unembed.b_U

    @classmethod
    def from_checkpoint(cls, recipe: ModularAdditionRecipe, path: Path) -> ModularAddition:
        model = cls(recipe)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["state_dict"])
        return model.eval()


def training_batch(recipe: ModularAdditionRecipe, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Every training pair and its answer (full batch; ``generator`` is not needed)."""
    prompts, answers = all_pairs(recipe)
    train = split(recipe)[0]
    return prompts[train], answers[train]


def answer_loss(model: ModularAddition, batch: tuple[Tensor, Tensor]) -> Tensor:
    prompts, answers = batch
    return nn.functional.cross_entropy(model(prompts), answers)


def fourier_energy(embedding: Tensor) -> Tensor:
    """Per frequency ``k = 1 .. (p-1)/2``: the energy of the token embeddings ``[p, d]`` (centred
    over tokens) on the cosine and sine of ``2πk a / p``, as a share of their whole energy."""
    p = embedding.shape[0]
    centred = embedding - embedding.mean(0)
    angles = 2 * math.pi * torch.arange(p)[:, None] * torch.arange(1, (p - 1) // 2 + 1)[None, :] / p
    basis = torch.cat([angles.cos(), angles.sin()], 1) / math.sqrt(p / 2)  # orthonormal columns
    coefficients = (basis.T @ centred).pow(2).sum(1)
    half = coefficients.shape[0] // 2
    return (coefficients[:half] + coefficients[half:]) / centred.pow(2).sum()


def principal_subspace(embedding: Tensor) -> Tensor:
    """The orthonormal directions ``[d, r]`` holding :data:`PRINCIPAL_ENERGY` of the centred token
    embeddings' energy."""
    _, s, vh = torch.linalg.svd(embedding - embedding.mean(0), full_matrices=False)
    energy = s.pow(2).cumsum(0) / s.pow(2).sum()
    return vh[: int((energy < PRINCIPAL_ENERGY).sum()) + 1].T


def subspace_overlap(a: Tensor, b: Tensor) -> float:
    """``‖aᵀb‖²_F / min(rank a, rank b)``: 1 when the smaller subspace lies in the larger."""
    return float((a.T @ b).pow(2).sum() / min(a.shape[1], b.shape[1]))


def progress_measures(files: list[Path], recipe: ModularAdditionRecipe) -> dict:
    """Per checkpoint label (the weights files in step order), on the split's pairs: ``train_loss``,
    ``held_out_loss``, ``held_out_accuracy``, ``mlp_effect`` (held-out loss increase when the MLP's
    output is replaced by its mean over all pairs), ``key_share`` (the token embeddings' energy
    share on the final checkpoint's key frequencies: those holding at least :data:`KEY_SHARE` of it),
    ``rank`` (the size of the embedding's :func:`principal_subspace`) and ``overlap_with_final``
    (its :func:`subspace_overlap` with the final checkpoint's); ``key_frequencies`` beside them."""
    prompts, answers = all_pairs(recipe)
    train, held_out = split(recipe)
    models = {path.stem: ModularAddition.from_checkpoint(recipe, path) for path in files}
    final = models[files[-1].stem].embed.W_E.detach()[: recipe.p]
    key = [k + 1 for k, share in enumerate(fourier_energy(final).tolist()) if share >= KEY_SHARE]
    final_subspace = principal_subspace(final)
    truth: dict = {"key_frequencies": key, "checkpoints": {}}
    with torch.no_grad():
        for label, model in models.items():
            embedding = model.embed.W_E[: recipe.p]
            mean_out = _mean_mlp_out(model, prompts)
            logits = model(prompts)
            ablated = model(prompts, {HOOK_MLP_OUT: lambda out, m=mean_out: m.expand_as(out)})
            losses = nn.functional.cross_entropy(logits, answers, reduction="none")
            ablated_losses = nn.functional.cross_entropy(ablated, answers, reduction="none")
            subspace = principal_subspace(embedding)
            truth["checkpoints"][label] = {
                "train_loss": float(losses[train].mean()),
                "held_out_loss": float(losses[held_out].mean()),
                "held_out_accuracy": float((logits[held_out].argmax(-1) == answers[held_out]).float().mean()),
                "mlp_effect": float((ablated_losses - losses)[held_out].mean()),
                "key_share": float(fourier_energy(embedding)[[k - 1 for k in key]].sum()),
                "rank": subspace.shape[1],
                "overlap_with_final": subspace_overlap(subspace, final_subspace),
            }
    return truth


def save_progress(root: Path, recipe: ModularAdditionRecipe) -> None:
    """``root/progress.json``: the :func:`progress_measures` of the checkpoints under ``root``."""
    (root / PROGRESS).write_text(json.dumps(progress_measures(native_checkpoints(root), recipe), indent=1))


def _mean_mlp_out(model: ModularAddition, prompts: Tensor) -> Tensor:
    """The MLP's output ``[pos, d_model]`` averaged over ``prompts``, per position."""
    captured: list[Tensor] = []

    def keep(out: Tensor) -> Tensor:
        captured.append(out)
        return out

    model(prompts, {HOOK_MLP_OUT: keep})
    return captured[0].mean(0)


def write_slices(folder: Path, recipe: ModularAdditionRecipe) -> list[str]:
    """Task files ``train.jsonl`` and ``held-out.jsonl`` under ``folder`` (every pair of the split,
    ``answer_loss`` at the last position); returns the ``--data NAME=FILE`` arguments."""
    prompts, answers = all_pairs(recipe)
    folder.mkdir(parents=True, exist_ok=True)
    arguments = []
    for name, indices in zip(("train", "held-out"), split(recipe)):
        rows = [
            {"tokens": prompts[i].tolist(), "position": -1, "answer": int(answers[i]), "metric": "answer_loss"}
            for i in indices.tolist()
        ]
        path = folder / f"{name}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        arguments.append(f"{name}={path}")
    return arguments


def train_modular_addition(
    recipe: ModularAdditionRecipe,
    out: Path,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    retrain: bool = False,
) -> list[Path]:
    """Train (or reuse, or copy the shipped) checkpoints of ``recipe`` under ``out``; returns the
    weights files by step (the config is :data:`~.attention_only.NATIVE_CONFIG` beside them)."""
    return train_cached(
        recipe,
        out,
        ModularAddition,
        training_batch,
        answer_loss,
        functools.partial(save_progress, recipe=recipe),
        progress,
        echo,
        retrain,
        save=save_native,
        checkpoints=native_checkpoints,
    )
