"""The attention-only induction reference model: a TransformerLens-native checkpoint, trained here.

The induction recipe's task (:func:`~.induction.induction_batch`: random tokens with one segment
repeated at a random later offset, next-token loss) on the shape of the public attention-only
induction models: no MLPs, LayerNorm, and LEARNED absolute positional embeddings (``W_pos``), so
a head's output carries where it sits. The mechanism is the same: a previous-token head in layer
0 whose output a layer-1 induction head reads with its keys.

The model is :class:`AttentionOnly`, a plain PyTorch module in HookedTransformer's parametrisation
and names (``embed.W_E``, ``pos_embed.W_pos``, ``blocks.{l}.ln1.w``, ``blocks.{l}.attn.W_Q``
``[n_heads, d_model, d_head]``, ...; TransformerLens itself is not needed), so its state dict is a
TransformerLens-native checkpoint as such models are published. The folder holds
:data:`NATIVE_CONFIG` (a ``HookedTransformerConfig`` JSON whose ``model_name`` is the folder's
name) and one state dict per checkpoint, ``step-NNNNN.pt``; ingest them with::

    circuit-atlas ingest FOLDER/hooked_transformer_config.json --checkpoint FOLDER/step-03000.pt ...

The catalog labels a checkpoint by its file's stem and orders it by the stem's number (a native
checkpoint has no sidecar); each file also holds the sidecar's facts beside the weights
(``{"state_dict": ..., "step": ..., "tokens_seen": ..., "train_loss": ...}``, a wrapping dict the
native loader looks into). Ground truth from the model's own attention on fresh probe sequences
(fingerprints.py) is saved in ``head_scores.json`` per checkpoint, keyed by label, as the
induction recipe's. Training (``training.py``) is deterministic for a seed on one kind of CPU
(the default: about 2 minutes on one core) and the default recipe is shipped trained: its step
3000 has a previous-token head L0H3 (0.90 of its attention on the previous token), L0H1 attending
two tokens back (0.81), a diffuse L0H0 (under 0.1 on any offset) and L0H2 between, and four
induction heads in layer 1 (0.77 to 0.89); on the probes' repeated half its loss is 0.54 nats,
on the first half 4.17 (log 64 = 4.16).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar, cast

import torch
from torch import Tensor, nn

from circuit_atlas.ingest.model_adapter import load_model

from .induction import induction_batch, save_head_scores
from .training import checkpoint_facts, folder_name, train_cached

#: The HookedTransformerConfig JSON in an attention-only recipe's folder.
NATIVE_CONFIG = "hooked_transformer_config.json"
#: Hook names :meth:`AttentionOnly.forward` offers per layer: its z and its output (what it adds to the stream).
HOOK_Z, HOOK_ATTN_OUT = "blocks.{}.attn.hook_z", "blocks.{}.hook_attn_out"
#: ... and each head's key input ``[batch, pos, head, d_model]`` (the normalised stream, per head).
HOOK_KEY_INPUT = "blocks.{}.attn.hook_k_input"


@dataclass(frozen=True)
class AttentionOnlyRecipe:
    seed: int = 0
    d_vocab: int = 64
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_head: int = 16
    seq_len: int = 48  # also n_ctx: the learned positions' count
    min_segment: int = 4
    max_segment: int = 16
    batch_size: int = 64
    steps: int = 3000
    learning_rate: float = 3e-3  # at 1e-3 every layer-0 head shares the previous token (0.35-0.46 each)
    weight_decay: float = 0.1
    warmup: int = 100
    checkpoint_every: int = 1500  # the first, a middle and the final checkpoint: what the tests use
    named_fields = ("seed", "n_layers", "n_heads")  # what the name spells out (not a field)

    @property
    def name(self) -> str:
        """``induction-attn-s<seed>``, with ``-<layers>x<heads>`` before the seed for another shape."""
        shape = "" if (self.n_layers, self.n_heads) == (2, 4) else f"-{self.n_layers}x{self.n_heads}"
        return f"induction-attn{shape}-s{self.seed}"

    def hooked_transformer_config(self) -> dict:
        """The model's ``HookedTransformerConfig`` fields (TransformerLens defaults for the rest)."""
        return {
            "model_name": folder_name(self),
            "n_layers": self.n_layers,
            "d_model": self.d_model,
            "n_heads": self.n_heads,
            "d_head": self.d_head,
            "n_ctx": self.seq_len,
            "d_vocab": self.d_vocab,
            "attn_only": True,
            "normalization_type": "LN",
            "positional_embedding_type": "standard",
            "attention_dir": "causal",
            "eps": 1e-5,
        }


class _Params(nn.Module):
    """A container whose parameters keep HookedTransformer's names (``W_E``, ``w``, ``b_O``, ...)."""

    def __init__(self, **shapes: tuple[int, ...]) -> None:
        super().__init__()
        for name, shape in shapes.items():
            self.register_parameter(name, nn.Parameter(torch.empty(shape)))

    if TYPE_CHECKING:  # every attribute it has is one of those parameters

        def __getattr__(self, name: str) -> Tensor: ...


def attend(x: Tensor, a: _Params, causal: Tensor, key_x: Tensor | None = None) -> Tensor:
    """One attention layer's z ``[batch, pos, head, d_head]`` from its input ``x`` and HookedTransformer
    weights ``a``: ``softmax(q kᵀ / √d_head + mask) v`` with ``q/k/v = x W_Q/K/V + b_Q/K/V``; the keys
    read ``key_x`` ``[batch, pos, head, d_model]`` instead where it is given (each head its own)."""
    q, v = (torch.einsum("bpd,hde->bphe", x, W) + bias for W, bias in ((a.W_Q, a.b_Q), (a.W_V, a.b_V)))
    if key_x is None:
        k = torch.einsum("bpd,hde->bphe", x, a.W_K) + a.b_K
    else:
        k = torch.einsum("bphd,hde->bphe", key_x, a.W_K) + a.b_K
    scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(q.shape[-1])
    return torch.einsum("bhqk,bkhe->bqhe", scores.masked_fill(~causal, float("-inf")).softmax(-1), v)


def attention_params(d: int, n_heads: int, d_head: int) -> _Params:
    """An attention layer's parameters in HookedTransformer's names and shapes."""
    H, dh = n_heads, d_head
    return _Params(
        W_Q=(H, d, dh), W_K=(H, d, dh), W_V=(H, d, dh), W_O=(H, dh, d),
        b_Q=(H, dh), b_K=(H, dh), b_V=(H, dh), b_O=(d,),
    )  # fmt: skip


def init_like_transformer_lens(model: nn.Module, d_model: int) -> None:
    """TransformerLens's ``gpt2`` init: matrices normal with standard deviation ``0.8 / √d_model``,
    biases zero, LayerNorm weights (``w``) one."""
    std = 0.8 / math.sqrt(d_model)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            short = name.rsplit(".", 1)[-1]
            if short == "w":
                parameter.fill_(1.0)
            elif short.startswith("b"):
                parameter.zero_()
            else:
                parameter.normal_(0.0, std)


class AttentionOnly(nn.Module):
    """HookedTransformer's forward without MLPs, in plain PyTorch, on unprocessed weights::

        r = W_E[t] + W_pos[p];  per layer: x = LN(r) w + b,  q/k/v = x W_Q/K/V + b_Q/K/V,
        z = softmax(q kᵀ / √d_head + causal mask) v,  r += Σ_h z_h W_O[h] + b_O;
        logits = (LN(r) w + b) W_U + b_U

    Initial weights as TransformerLens's ``gpt2`` init: normal with standard deviation
    ``0.8 / √d_model`` for matrices, zero biases, LayerNorm weights one.
    """

    def __init__(self, recipe: AttentionOnlyRecipe) -> None:
        super().__init__()
        d, H, dh, V = recipe.d_model, recipe.n_heads, recipe.d_head, recipe.d_vocab
        self.recipe = recipe
        self.embed = _Params(W_E=(V, d))
        self.pos_embed = _Params(W_pos=(recipe.seq_len, d))
        self.blocks = nn.ModuleList()
        for _ in range(recipe.n_layers):
            block = nn.Module()
            block.ln1 = _Params(w=(d,), b=(d,))
            block.attn = attention_params(d, H, dh)
            self.blocks.append(block)
        self.ln_final = _Params(w=(d,), b=(d,))
        self.unembed = _Params(W_U=(d, V), b_U=(V,))
        init_like_transformer_lens(self, d)

    @staticmethod
    def _norm(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
        centred = x - x.mean(-1, keepdim=True)
        return centred / (centred.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt() * w + b

    def forward(self, tokens: Tensor, hooks: dict[str, Callable[[Tensor], Tensor]] | None = None) -> Tensor:
        """Logits ``[batch, pos, d_vocab]``; ``hooks`` maps :data:`HOOK_KEY_INPUT`, :data:`HOOK_Z` (z
        ``[batch, pos, head, d_head]``) and :data:`HOOK_ATTN_OUT` (``[batch, pos, d_model]``) of a layer
        to a function returning what the layer goes on with."""
        hooks = hooks or {}
        n = tokens.shape[1]
        r = self.embed.W_E[tokens] + self.pos_embed.W_pos[:n]
        causal = torch.ones(n, n, dtype=torch.bool, device=tokens.device).tril()
        for l, block in enumerate(self.blocks):
            ln1, a = cast(_Params, block.ln1), cast(_Params, block.attn)  # a plain Module's children are untyped
            x = self._norm(r, ln1.w, ln1.b)
            key_x = None
            if HOOK_KEY_INPUT.format(l) in hooks:
                key_x = hooks[HOOK_KEY_INPUT.format(l)](x.unsqueeze(2).expand(-1, -1, a.W_K.shape[0], -1))
            z = attend(x, a, causal, key_x)
            if HOOK_Z.format(l) in hooks:
                z = hooks[HOOK_Z.format(l)](z)
            out = torch.einsum("bphe,hed->bpd", z, a.W_O) + a.b_O
            r = r + (hooks[HOOK_ATTN_OUT.format(l)](out) if HOOK_ATTN_OUT.format(l) in hooks else out)
        return self._norm(r, self.ln_final.w, self.ln_final.b) @ self.unembed.W_U + self.unembed.b_U

    @classmethod
    def from_checkpoint(cls, recipe: AttentionOnlyRecipe, path: Path) -> AttentionOnly:
        """The model of a saved ``step-NNNNN.pt`` (a plain PyTorch load, nothing processed)."""
        model = cls(recipe)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["state_dict"])
        return model.eval()


def next_token_loss(model: AttentionOnly, tokens: Tensor) -> Tensor:
    logits = model(tokens)
    return nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())


class NativeRecipe(Protocol):
    """A recipe saved as TransformerLens-native checkpoints: it states its model's config."""

    def hooked_transformer_config(self) -> dict: ...


def save_native(model: nn.Module, stem: Path, recipe: NativeRecipe, step: int, loss: float) -> None:
    """``<stem>.pt`` (written to a ``.partial`` file renamed into place): the state dict beside the
    sidecar's facts; and :data:`NATIVE_CONFIG` beside it with the first checkpoint."""
    config = stem.parent / NATIVE_CONFIG
    if not config.is_file():
        config.write_text(json.dumps(recipe.hooked_transformer_config(), indent=2))
    state = {name: value.detach().clone() for name, value in model.state_dict().items()}
    facts = checkpoint_facts(recipe, step, loss)
    path, partial = stem.with_name(stem.name + ".pt"), stem.with_name(stem.name + ".pt.partial")
    torch.save({"state_dict": state, **{k: facts[k] for k in ("step", "tokens_seen", "train_loss")}}, partial)
    partial.rename(path)


def native_checkpoints(root: Path) -> list[Path]:
    """The weights files ``step-NNNNN.pt`` under ``root``, in step order."""
    return sorted(Path(root).glob("step-*.pt"))


def write_head_scores(root: Path, recipe: AttentionOnlyRecipe) -> dict:
    """Attention-pattern scores of every head of every checkpoint on fresh probe sequences (the
    ingest's own loader: the processed model), keyed by label."""
    config = str(root / NATIVE_CONFIG)
    return save_head_scores(root, recipe, ((w.stem, load_model(config, str(w))) for w in native_checkpoints(root)))


RecipeT = TypeVar("RecipeT", bound=AttentionOnlyRecipe)


def train_native(
    recipe: RecipeT,
    out: Path,
    batch: Callable[[RecipeT, torch.Generator], Tensor],
    loss: Callable[[AttentionOnly, Tensor], Tensor],
    ground_truth: Callable[[Path], object],
    progress: bool = True,
    echo: Callable[[str], None] = print,
    retrain: bool = False,
) -> list[Path]:
    """:func:`~.training.train_cached` for an :class:`AttentionOnly` recipe, saved as TransformerLens-native
    checkpoints (:func:`save_native`); returns the weights files by step."""
    return train_cached(
        recipe,
        out,
        AttentionOnly,
        batch,
        loss,
        ground_truth,
        progress,
        echo,
        retrain,
        save=save_native,
        checkpoints=native_checkpoints,
    )


def train_attention_only(
    recipe: AttentionOnlyRecipe,
    out: Path,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    retrain: bool = False,
) -> list[Path]:
    """Train (or reuse, or copy the shipped) checkpoints of ``recipe`` under ``out``; returns the
    weights files by step (the config is ``NATIVE_CONFIG`` beside them)."""
    ground_truth = functools.partial(write_head_scores, recipe=recipe)
    return train_native(recipe, out, induction_batch, next_token_loss, ground_truth, progress, echo, retrain)
