"""The one place that knows how models are loaded: TransformerLens 4's ``TransformerBridge``.

A model is booted from a Hugging Face name (with an optional revision such as Pythia's
``step1000``) or a local Hugging Face directory (offline), put in compatibility mode (LayerNorm
folded into the following weights, writing weights centred: HookedTransformer numerics), and
exposed as

- :class:`ModelSpec`: the shape facts the catalog stores on ``(:Model)``;
- :class:`Weights`: float32 copies of the weights in TransformerLens names and shapes,
  ``W_Q[l, h]: d_model x d_head``, ``W_O[l, h]: d_head x d_model``, ``W_in[l]: d_model x d_mlp``,
  ``W_E: d_vocab x d_model``, ``W_U: d_model x d_vocab``;
- :meth:`LoadedModel.run`: a forward pass with hooks at the named sites of :data:`SITES`.

With folded LayerNorm the input a channel's weights see is the normalisation's output
``ln*.hook_out`` (``x̂ = (r - mean r) / scale`` for LN, ``r / scale`` for RMSNorm; the affine part
is folded away), so every statistic is taken there and matches the weights exactly. Not
``hook_normalized``: for GPT-NeoX the bridge computes the output with a fused LayerNorm beside
that hook, so no gradient flows through it (both checked in ``tests/unit/test_model_adapter.py``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from circuit_atlas.errors import UserError

#: Hook names by site; ``{l}`` is the layer. These are the stable site ids of the catalog.
SITES = {
    "embed": "hook_embed",
    "pos_embed": "hook_pos_embed",
    "attn_x": "blocks.{l}.ln1.hook_out",
    "q": "blocks.{l}.attn.hook_q",
    "k": "blocks.{l}.attn.hook_k",
    "v": "blocks.{l}.attn.hook_v",
    "pattern": "blocks.{l}.attn.hook_pattern",
    "z": "blocks.{l}.attn.hook_z",
    "attn_out": "blocks.{l}.hook_attn_out",
    "resid_pre": "blocks.{l}.hook_resid_pre",
    "resid_mid": "blocks.{l}.hook_resid_mid",
    "mlp_x": "blocks.{l}.ln2.hook_out",
    "mlp_out": "blocks.{l}.hook_mlp_out",
    "final_x": "ln_final.hook_out",
    "resid_final": "ln_final.hook_in",
}

#: A checkpoint directory may carry this file: {"model", "label", "step", "tokens_seen"}.
CHECKPOINT_SIDECAR = "circuit_atlas_checkpoint.json"

NORMALIZATIONS = {"LN": "LN", "LNPre": "LN", "RMS": "RMS", "RMSPre": "RMS"}


def site(name: str, layer: int | None = None) -> str:
    """The TransformerLens hook name of a site, e.g. ``site("z", 1) == "blocks.1.attn.hook_z"``."""
    return SITES[name].format(l=layer)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str
    n_layers: int
    d_model: int
    n_heads: int
    d_head: int
    d_mlp: int
    act_fn: str
    n_ctx: int
    d_vocab: int
    positional: str  # "standard" (learned absolute), "rotary", ...
    normalization: str  # "LN" or "RMS"
    parallel_attn_mlp: bool  # the MLP reads the block input, not the attention's output
    source: str

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Weights:
    """Float32 attention weights in TransformerLens shapes (see the module docstring).

    MLPs, embeddings and the unembedding are treated as black boxes through their hooks, so
    only the attention weights, whose factored form the compression uses, are copied.
    """

    W_Q: Tensor  # [layer, head, d_model, d_head]
    b_Q: Tensor  # [layer, head, d_head]
    W_K: Tensor
    b_K: Tensor
    W_V: Tensor
    b_V: Tensor
    W_O: Tensor  # [layer, head, d_head, d_model]


Hook = Callable[[Tensor, object], Tensor | None]


class LoadedModel:
    """A TransformerBridge in compatibility mode, with its spec, weights and tokenizer."""

    def __init__(self, bridge, spec: ModelSpec, weights: Weights, tokenizer, device: torch.device):
        self.bridge = bridge
        self.spec = spec
        self.weights = weights
        self.tokenizer = tokenizer
        self.device = device

    def run(self, tokens: Tensor, hooks: Sequence[tuple[str, Hook]] = ()) -> Tensor:
        """Logits ``[batch, pos, d_vocab]`` of ``tokens`` with forward hooks ``(hook_name, fn)``."""
        return self.bridge.run_with_hooks(tokens.to(self.device), fwd_hooks=list(hooks))

    def run_capturing(
        self, tokens: Tensor, names: Sequence[str], hooks: Sequence[tuple[str, Hook]] = ()
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Logits and the activations at hook ``names``, all differentiable.

        The weights do not require gradients, so the embedding outputs are made leaves that
        do: ``torch.autograd.grad(loss, [captured[name], ...])`` then gives dL/d(activation)
        at any captured site with no weight gradients computed. ``hooks`` run before capture.
        """
        captured: dict[str, Tensor] = {}
        leaves = {site("embed"), site("pos_embed")}

        def capture(name: str) -> Hook:
            def hook(activation: Tensor, hook) -> Tensor:
                if name in leaves:
                    activation = activation.detach().requires_grad_(True)
                captured[name] = activation
                return activation

            return hook

        wanted = set(names) | (leaves & set(self.bridge.hook_dict))
        logits = self.run(tokens, [*hooks, *((name, capture(name)) for name in sorted(wanted))])
        return logits, captured


def model_name_of(source: str) -> str:
    """The catalog name of a model by default: a local directory's name, or the hub name."""
    return Path(source).name if os.path.sep in source else source


def _is_local(source: str) -> bool:
    """A path (existing, or spelled like one) rather than a hub name such as ``org/name``."""
    return source.startswith(("/", "./", "../", "~")) or Path(source).expanduser().exists()


def _check_local_dir(path: Path) -> None:
    if not path.is_dir():
        raise UserError(
            f"Model directory {path} does not exist. Give a Hugging Face model name or "
            f"a local Hugging Face model directory (config.json plus weights)."
        )
    if not (path / "config.json").is_file():
        raise UserError(
            f"{path} has no config.json, so it is not a Hugging Face model directory. "
            f"Save the model with `model.save_pretrained(DIR)` and pass DIR."
        )
    weights = [
        p for p in path.iterdir() if p.suffix in (".safetensors", ".bin") or p.name.endswith(".safetensors.index.json")
    ]
    if not weights:
        raise UserError(
            f"{path} has a config.json but no weights (*.safetensors or *.bin). "
            f"Save the weights with `model.save_pretrained(DIR)`."
        )


def load_model(source: str, revision: str | None = None, device: str | torch.device = "cpu") -> LoadedModel:
    """Boot ``source`` (hub name or local directory) at ``revision`` into a :class:`LoadedModel`.

    Raises :class:`UserError` for an unknown or unreachable name, a directory without weights,
    weights that do not fit their config, an unsupported architecture, and NaN or inf weights.
    """
    from transformer_lens.model_bridge import TransformerBridge

    device = torch.device(device)
    local = _is_local(source)
    if local:
        path = Path(source).expanduser().resolve()
        _check_local_dir(path)
        source = str(path)
    for noisy in ("transformers", "transformer_lens", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        bridge = TransformerBridge.boot_transformers(source, device=str(device), dtype=torch.float32, revision=revision)
    except OSError as error:
        where = f"revision {revision!r} of " if revision else ""
        raise UserError(
            f"Could not load {where}model {source!r}: it is neither a local directory nor a "
            f"Hugging Face model this machine can reach ({str(error).splitlines()[0]}). "
            f"Check the name, or download it and pass its directory."
        ) from error
    except RuntimeError as error:
        if any(sign in str(error) for sign in ("size mismatch", "mismatched_sizes", "shape")):
            raise UserError(
                f"The weights of {source!r} do not fit its config.json (tensor shapes differ from "
                f"what the config implies). Fix config.json or re-save the model."
            ) from error
        raise
    except ValueError as error:
        raise UserError(f"Cannot load {source!r}: {str(error).splitlines()[0][:400]}") from error
    _check_finite(bridge, source)
    bridge.enable_compatibility_mode(disable_warnings=True)
    bridge.eval()
    for parameter in bridge.parameters():
        parameter.requires_grad_(False)
    return LoadedModel(bridge, _spec(bridge, source), _weights(bridge), _tokenizer(bridge), device)


def _spec(bridge, source: str) -> ModelSpec:
    cfg = bridge.cfg
    normalization = NORMALIZATIONS.get(str(cfg.normalization_type))
    if normalization is None:
        raise UserError(
            f"{source!r} uses normalization {cfg.normalization_type!r}; Circuit Atlas supports "
            f"LayerNorm and RMSNorm models."
        )
    architecture = type(bridge.original_model).__name__
    return ModelSpec(
        name=model_name_of(source),
        family=architecture,
        n_layers=int(cfg.n_layers),
        d_model=int(cfg.d_model),
        n_heads=int(cfg.n_heads),
        d_head=int(cfg.d_head),
        d_mlp=int(cfg.d_mlp),
        act_fn=str(cfg.act_fn),
        n_ctx=int(cfg.n_ctx),
        d_vocab=int(cfg.d_vocab),
        positional=str(cfg.positional_embedding_type),
        normalization=normalization,
        parallel_attn_mlp=bool(getattr(cfg, "parallel_attn_mlp", False)),
        source=source,
    )


def _check_finite(bridge, source: str) -> None:
    """The checkpoint's own weights (before any folding) must be finite."""
    bad = [
        name.replace("._original_component", "")
        for name, value in bridge.original_model.named_parameters()
        if not torch.isfinite(value).all()
    ]
    if bad:
        raise UserError(
            f"The weights of {source!r} contain NaN or inf (in {', '.join(sorted(set(bad))[:6])}). "
            f"The checkpoint is corrupt or diverged; use another one."
        )


def _weights(bridge) -> Weights:
    return Weights(
        **{
            name: getattr(bridge, name).detach().float().clone()
            for name in ("W_Q", "b_Q", "W_K", "b_K", "W_V", "b_V", "W_O")
        }
    )


def _tokenizer(bridge):
    tokenizer = getattr(bridge, "tokenizer", None)
    return tokenizer if tokenizer is not None and len(tokenizer) > 1 else None
