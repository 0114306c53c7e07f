"""The one place that knows how models are loaded, and the interface the rest of the job uses.

Two sources, one execution engine (:mod:`.transformer`, a HookedTransformer-style forward):

- a Hugging Face name (with an optional revision such as Pythia's ``step1000``) or a local Hugging
  Face directory (offline) is booted through TransformerLens 4's ``TransformerBridge`` in
  compatibility mode (LayerNorm folded into the following weights, writing weights and the
  unembedding centred, value biases folded into ``b_O``: HookedTransformer's numerics); its
  processed weights (``tl_parameters()``) and config become a :class:`~.transformer.Transformer`,
  checked against the bridge's own logits on a probe before the bridge is dropped;
- a TransformerLens-native checkpoint (a ``HookedTransformerConfig`` JSON plus a state dict in
  HookedTransformer names) is read and processed the same way by :mod:`.native`.

Either way the model is exposed as

- :class:`ModelSpec`: the shape facts the catalog stores on ``(:Model)``;
- :class:`Weights`: float32 copies of the attention weights in TransformerLens names and shapes,
  ``W_Q[l, h]: d_model x d_head``, ``W_O[l, h]: d_head x d_model``;
- :meth:`LoadedModel.run`: a forward pass with hooks at the named sites of :data:`SITES`.

With folded normalisation the input a channel's weights see is the normalisation's output
``ln*.hook_out`` (``x̂ = (r - mean r) / scale`` for LN, ``r / scale`` for RMSNorm, ``r`` itself
for a model without normalisation), so every statistic is taken there and matches the weights
exactly, and the gradient read there is the gradient through that reader alone
(``tests/model/test_model_adapter.py`` checks both).
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TypedDict

import torch
from safetensors import SafetensorError
from torch import Tensor

from circuit_atlas.errors import UserError

from . import native
from .transformer import Hook, Transformer, TransformerConfig

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
#: The sites only a layer with an MLP has (an attention-only model has none of them).
MLP_SITES = frozenset({"resid_mid", "mlp_x", "mlp_out"})

#: A checkpoint directory may carry this file: {"model", "label", "step", "tokens_seen"}.
CHECKPOINT_SIDECAR = "circuit_atlas_checkpoint.json"

#: TransformerLens normalization types -> what the folded model computes.
NORMALIZATIONS = {"LN": "LN", "LNPre": "LN", "RMS": "RMS", "RMSPre": "RMS", None: "none", "None": "none"}
#: Hugging Face architectures whose rotary embedding rotates adjacent pairs (GPT-J), not halves.
ADJACENT_PAIR_ROTARY = {"GPTJForCausalLM"}


def site(name: str, layer: int | None = None) -> str:
    """The TransformerLens hook name of a site, e.g. ``site("z", 1) == "blocks.1.attn.hook_z"``."""
    return SITES[name].format(l=layer)


def layer_sites(spec: ModelSpec, *names: str) -> list[str]:
    """The hook names of the per-layer sites ``names`` in every layer (layer by layer), less the
    :data:`MLP_SITES` of an attention-only model."""
    kept = [name for name in dict.fromkeys(names) if spec.has_mlp or name not in MLP_SITES]
    return [site(name, l) for l in range(spec.n_layers) for name in kept]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str
    n_layers: int
    d_model: int
    n_heads: int
    d_head: int
    d_mlp: int  # 0 for an attention-only model
    act_fn: str
    n_ctx: int
    d_vocab: int
    positional: str  # "standard" (a W_pos table: learned or sinusoidal) or "rotary"
    normalization: str  # "LN", "RMS" or "none"
    parallel_attn_mlp: bool  # the MLP reads the block input, not the attention's output
    source: str
    d_vocab_out: int | None = None  # the output vocabulary (classes); None: the same as d_vocab
    causal: bool = True  # False: every position attends to every position (bidirectional)
    has_mlp: bool = True  # False: an attention-only model (no MLP channels, no MLP sites)

    def __post_init__(self):
        if self.d_vocab_out is None:
            object.__setattr__(self, "d_vocab_out", self.d_vocab)

    @property
    def outputs(self) -> int:
        """The size of the output vocabulary (what a uniform prediction spreads over)."""
        return self.d_vocab_out or self.d_vocab

    def as_dict(self) -> dict:
        return asdict(self)


class Placement(TypedDict):
    """A tensor's device and dtype, as keywords: ``tensor.to(**f32)``, ``torch.zeros(n, **f32)``."""

    device: torch.device
    dtype: torch.dtype


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


class LoadedModel:
    """A model on the runner, with its spec, attention weights and tokenizer (or None)."""

    def __init__(self, runner: Transformer, spec: ModelSpec, tokenizer=None):
        self.runner = runner
        self.spec = spec
        self.tokenizer = tokenizer
        self.device = runner.device
        layers = range(spec.n_layers)
        self.weights = Weights(
            **{
                name: torch.stack([runner.params[f"blocks.{l}.attn.{name}"] for l in layers]).clone()
                for name in ("W_Q", "b_Q", "W_K", "b_K", "W_V", "b_V", "W_O")
            }
        )

    def run(
        self, tokens: Tensor, hooks: Sequence[tuple[str, Hook]] = (), attention_mask: Tensor | None = None
    ) -> Tensor:
        """Logits ``[batch, pos, d_vocab_out]`` of ``tokens`` with forward hooks ``(hook_name, fn)``.

        ``attention_mask`` ``[batch, pos]`` (True = a real token) hides right-padding from every query.
        A causal model is run without it (no query sees the right-padding after it, and the
        unmasked causal kernel is the fast one); a bidirectional model needs it.
        """
        if attention_mask is not None and (self.spec.causal or bool(attention_mask.all())):
            attention_mask = None
        return self.runner.forward(tokens, hooks, attention_mask)

    def run_capturing(
        self,
        tokens: Tensor,
        names: Sequence[str],
        hooks: Sequence[tuple[str, Hook]] = (),
        attention_mask: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Logits and the activations at hook ``names`` that this model has, all differentiable.

        The weights do not require gradients, so the embedding outputs are made leaves that
        do: ``torch.autograd.grad(loss, [captured[name], ...])`` then gives dL/d(activation)
        at any captured site with no weight gradients computed. ``hooks`` run before capture.
        Names the model does not have (``hook_pos_embed`` of a rotary model, MLP sites of an
        attention-only one) are not captured.
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

        wanted = (set(names) | leaves) & self.runner.hook_names
        logits = self.run(tokens, [*hooks, *((name, capture(name)) for name in sorted(wanted))], attention_mask)
        return logits, captured

    def reader_grams(self) -> tuple[Tensor, Tensor]:
        """The Gram matrices W Wᵀ of the nonlinear readers' input weights, float64 on the model's
        device: per layer the MLP's W_in (and W_gate) [L, d, d] ([0, d, d] without MLPs), and the
        unembedding's W_U centred over the output vocabulary (the softmax ignores a shared shift) [d, d]."""
        p, cfg, d = self.runner.params, self.runner.cfg, self.spec.d_model
        mlp = torch.zeros(self.spec.n_layers if cfg.has_mlp else 0, d, d, dtype=torch.float64, device=self.device)
        for l in range(len(mlp)):
            for name in ("W_in", "W_gate") if cfg.gated_mlp else ("W_in",):
                W = p[f"blocks.{l}.mlp.{name}"].double()
                mlp[l] += W @ W.T
        W_U = p["unembed.W_U"].double()
        W_U = W_U - W_U.mean(-1, keepdim=True)
        return mlp, W_U @ W_U.T


def model_name_of(source: str) -> str:
    """The catalog name of a model by default: a local directory's name, or the hub name."""
    if native.is_native_config(source):
        return native.model_name(Path(source))
    return Path(source).name if os.path.sep in source else source


def _is_local(source: str) -> bool:
    """A path (existing, or spelled like one) rather than a hub name such as ``org/name``."""
    return source.startswith(("/", "./", "../", "~")) or Path(source).expanduser().exists()


def _check_local_dir(path: Path) -> None:
    if not path.is_dir():
        raise UserError(
            f"Model directory {path} does not exist. Give a Hugging Face model name, a local "
            f"Hugging Face model directory (config.json plus weights), or a TransformerLens config "
            f"JSON with its weights file."
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
    """Load ``source`` at ``revision`` into a :class:`LoadedModel` on ``device``.

    ``source``: a hub name, a local Hugging Face directory, or a TransformerLens config JSON, whose
    ``revision`` is then its weights file (a state dict saved with ``torch.save``). Raises
    :class:`UserError` for an unknown or unreachable name, a directory without weights, weights
    that do not fit their config, an unsupported architecture or config value, a file that is not
    a state dict, and NaN or inf weights.
    """
    device = torch.device(device)
    if native.is_native_config(source):
        if revision is None:
            raise UserError(
                f"{source} is a TransformerLens config; give its weights file too "
                f"(`--weights STATE.pt`, or `--checkpoint` with one or more weights files)."
            )
        checkpoint = native.load_checkpoint(Path(source), Path(revision))
        spec = _spec(checkpoint.config, checkpoint.name, checkpoint.family, checkpoint.source)
        runner = Transformer(checkpoint.config, checkpoint.params, device)
        return LoadedModel(runner, spec, native.tokenizer(checkpoint.tokenizer_name))
    return _load_hugging_face(source, revision, device)


def _spec(cfg: TransformerConfig, name: str, family: str, source: str) -> ModelSpec:
    """The spec of a model whose runner config is ``cfg`` (every shape fact comes from it)."""
    shared = {f.name: getattr(cfg, f.name) for f in fields(ModelSpec) if hasattr(cfg, f.name)}
    return ModelSpec(name=name, family=family, source=source, **shared)


def _load_hugging_face(source: str, revision: str | None, device: torch.device) -> LoadedModel:
    from transformer_lens.model_bridge import TransformerBridge
    from transformers.utils import logging as hf_logging

    if _is_local(source):
        path = Path(source).expanduser().resolve()
        _check_local_dir(path)
        source = str(path)
    for noisy in ("transformers", "transformer_lens", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    hf_logging.disable_progress_bar()  # "Loading weights" bars: the ingest shows its own progress
    try:
        bridge = TransformerBridge.boot_transformers(source, device="cpu", dtype=torch.float32, revision=revision)
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
    except (SafetensorError, pickle.UnpicklingError, EOFError) as error:
        raise UserError(
            f"The weights of {source!r} cannot be read ({str(error).splitlines()[0][:200]}): a weights file "
            f"is truncated or not a weights file. Download or save the model again."
        ) from error
    _check_finite(bridge, source)
    bridge.enable_compatibility_mode(disable_warnings=True)
    bridge.eval()
    for parameter in bridge.parameters():
        parameter.requires_grad_(False)
    family = type(bridge.original_model).__name__
    cfg = _bridge_config(bridge, source, family)
    with torch.no_grad():
        params = {name: value.detach().float().clone() for name, value in bridge.tl_parameters().items()}
    runner = Transformer(cfg, params, torch.device("cpu"))
    _check_reproduces(bridge, runner, source, family)
    spec = _spec(cfg, name=model_name_of(source), family=family, source=source)
    tokenizer = _tokenizer(bridge)
    del bridge
    return LoadedModel(Transformer(cfg, runner.params, device) if device.type != "cpu" else runner, spec, tokenizer)


def _bridge_config(bridge, source: str, family: str) -> TransformerConfig:
    """The runner's config from the bridge's (HookedTransformer field names) and the HF model."""
    cfg = bridge.cfg
    normalization = NORMALIZATIONS.get(cfg.normalization_type)
    if normalization is None:
        raise UserError(f"{source!r} uses normalization {cfg.normalization_type!r}, which Circuit Atlas cannot run.")
    positional = str(cfg.positional_embedding_type)
    if positional not in ("standard", "rotary"):
        raise UserError(f"{source!r} uses {positional!r} positions; Circuit Atlas runs learned and rotary ones.")
    rotary_dim = 0
    if positional == "rotary":
        inv_freq = [  # the HF rotary frequencies (the bridge wraps modules: ...rotary_emb._original_component...)
            b for n, b in bridge.original_model.named_buffers() if "rotary_emb" in n and n.endswith(".inv_freq")
        ]
        rotary_dim = cfg.rotary_dim or (2 * inv_freq[0].numel() if inv_freq else cfg.d_head)
    has_mlp = not getattr(cfg, "attn_only", False)
    return TransformerConfig(
        n_layers=int(cfg.n_layers),
        d_model=int(cfg.d_model),
        n_heads=int(cfg.n_heads),
        d_head=int(cfg.d_head),
        d_mlp=int(cfg.d_mlp) if has_mlp else 0,
        d_vocab=int(cfg.d_vocab),
        d_vocab_out=int(bridge.W_U.shape[-1]),
        n_ctx=int(cfg.n_ctx),
        act_fn=str(cfg.act_fn),
        normalization=normalization,
        final_normalization="RMS" if getattr(cfg, "final_rms", False) else normalization,
        eps=float(cfg.eps),
        positional=positional,
        rotary_dim=int(rotary_dim),
        rotary_base=float(cfg.rotary_base),
        rotary_adjacent_pairs=family in ADJACENT_PAIR_ROTARY,
        parallel_attn_mlp=bool(getattr(cfg, "parallel_attn_mlp", False)),
        gated_mlp=bool(getattr(cfg, "gated_mlp", False)),
        causal=str(getattr(cfg, "attention_dir", "causal")) == "causal",
        attn_scale=(cfg.attn_scale if cfg.attn_scale > 0 else 0.0) if cfg.use_attn_scale else 1.0,
    )


def _check_reproduces(bridge, runner: Transformer, source: str, family: str) -> None:
    """The runner's log-probabilities equal the bridge's on a probe (else a feature is missing)."""
    length = min(runner.cfg.n_ctx, 16)
    probe = torch.randint(0, runner.cfg.d_vocab, (2, length), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = torch.log_softmax(bridge(probe).float(), -1)
        got = torch.log_softmax(runner.forward(probe), -1)
    if not expected.isfinite().all():
        raise UserError(
            f"{source!r} produced NaN or inf activations on random tokens in its own forward pass: its "
            f"weights overflow float32. Check the checkpoint (or its dtype) before ingesting it."
        )
    difference = float((expected - got).abs().max())
    if not difference <= 1e-3:
        raise UserError(
            f"Circuit Atlas's transformer runner does not reproduce {family} ({source!r}): its "
            f"log-probabilities differ from the reference forward by up to {difference:.3g}. The "
            f"architecture uses a feature the runner lacks (soft-capping, scaled rotary positions, ...)."
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


def _tokenizer(bridge):
    tokenizer = getattr(bridge, "tokenizer", None)
    return tokenizer if tokenizer is not None and len(tokenizer) > 1 else None
