"""Builders for tiny real models: Hugging Face directories (GPT-2, GPT-NeoX, Llama, GPT-J) and
TransformerLens-native checkpoints (a HookedTransformerConfig JSON plus a state dict).

``planted_gpt2``: a 2-layer GPT-2 whose weights give each head a known rank and known
writer -> reader alignments, in directions orthogonal to the all-ones vector (LayerNorm's
centring leaves them alone) and to the subspace T the embeddings write:

- L0H0 reads T through V (rank 2) and writes span(P1) (2 dims); its Q and K are zero.
- L0H1 reads T through V (rank 3) and writes span(P2) (3 dims); its Q and K are zero.
- L1H0 reads span(P1) with its keys and T with its queries (QK rank 2), and copies one
  direction of T to a direction of its own (OV rank 1).
- L1H1 reads span(P2) through V (OV rank 3) and writes its own span; its Q and K are zero.
- L0H2, L0H3, L1H2, L1H3 and both MLPs are zero: dormant.

So the planted head -> head edges are exactly L0H0 -> L1H0 (k) and L0H1 -> L1H1 (v).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from circuit_atlas.ingest.data import DataSlice
from circuit_atlas.ingest.model_adapter import site

D_MODEL, N_HEADS, D_HEAD, D_VOCAB, N_CTX = 32, 4, 8, 32, 16

PLANTED_RANKS = {("L0H0", "ov"): 2, ("L0H1", "ov"): 3, ("L1H0", "qk"): 2, ("L1H0", "ov"): 1, ("L1H1", "ov"): 3}
PLANTED_HEAD_EDGES = {("L0H0", "L1H0", "k"), ("L0H1", "L1H1", "v")}


def _directions(seed: int) -> torch.Tensor:
    """Orthonormal columns, all orthogonal to the all-ones vector (first QR column dropped)."""
    generator = torch.Generator().manual_seed(seed)
    start = torch.cat([torch.ones(D_MODEL, 1), torch.randn(D_MODEL, D_MODEL - 1, generator=generator)], dim=1)
    q, _ = torch.linalg.qr(start)
    return q[:, 1:]


def _map(rows: torch.Tensor, cols: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """A d_model x d_head (or d_head x d_model) block mapping an orthonormal set onto another."""
    return scale * rows @ cols.T


def planted_gpt2(folder: Path, seed: int = 0) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=D_VOCAB,
        n_positions=N_CTX,
        n_embd=D_MODEL,
        n_layer=2,
        n_head=N_HEADS,
        n_inner=4 * D_MODEL,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=0,
    )
    model = GPT2LMHeadModel(config)
    basis = _directions(seed)
    T, P1, P2, B1, B2 = basis[:, 0:8], basis[:, 8:10], basis[:, 10:13], basis[:, 13:14], basis[:, 14:17]
    head_dims = torch.eye(D_HEAD)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        for block in model.transformer.h:
            block.ln_1.weight.fill_(1.0)
            block.ln_2.weight.fill_(1.0)
        model.transformer.ln_f.weight.fill_(1.0)
        model.transformer.wte.weight.copy_(torch.randn(D_VOCAB, 8, generator=generator) @ T.T)
        model.transformer.wpe.weight.copy_(0.5 * torch.randn(N_CTX, 8, generator=generator) @ T.T)
        model.lm_head.weight.copy_(torch.randn(D_VOCAB, D_MODEL, generator=generator))

        def head(layer: int, h: int, W_Q=None, W_K=None, W_V=None, W_O=None) -> None:
            attn = model.transformer.h[layer].attn
            cols = slice(h * D_HEAD, (h + 1) * D_HEAD)
            for offset, W in ((0, W_Q), (D_MODEL, W_K), (2 * D_MODEL, W_V)):
                if W is not None:
                    attn.c_attn.weight[:, offset + cols.start : offset + cols.stop] = W
            if W_O is not None:
                attn.c_proj.weight[cols, :] = W_O

        head(0, 0, W_V=_map(T[:, :2], head_dims[:, :2], 2.0), W_O=_map(head_dims[:, :2], P1, 2.0))
        head(0, 1, W_V=_map(T[:, 2:5], head_dims[:, :3], 2.0), W_O=_map(head_dims[:, :3], P2, 2.0))
        head(
            1,
            0,
            W_Q=_map(T[:, 5:7], head_dims[:, :2], 3.0),
            W_K=_map(P1, head_dims[:, :2], 3.0),
            W_V=_map(T[:, 7:8], head_dims[:, :1], 2.0),
            W_O=_map(head_dims[:, :1], B1, 2.0),
        )
        head(1, 1, W_V=_map(P2, head_dims[:, :3], 2.0), W_O=_map(head_dims[:, :3], B2, 2.0))
    model.save_pretrained(folder)
    return Path(folder)


def random_gpt2(folder: Path, seed: int = 0, **overrides) -> Path:
    """A small randomly initialised GPT-2 (learned positions, LayerNorm with real affine weights)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        **{
            "vocab_size": D_VOCAB,
            "n_positions": N_CTX,
            "n_embd": D_MODEL,
            "n_layer": 2,
            "n_head": N_HEADS,
            "n_inner": 2 * D_MODEL,
            "bos_token_id": 0,
            "eos_token_id": 0,
            "tie_word_embeddings": False,
            **overrides,
        }
    )
    model = GPT2LMHeadModel(config)
    with torch.no_grad():  # non-trivial LayerNorm affine parameters, so folding them is tested
        for name, parameter in model.named_parameters():
            if "ln" in name:
                parameter.add_(0.3 * torch.randn_like(parameter))
    model.save_pretrained(folder)
    return Path(folder)


def random_neox(folder: Path, seed: int = 0, **overrides) -> Path:
    """A small randomly initialised GPT-NeoX (rotary positions)."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(seed)
    config = GPTNeoXConfig(
        **{
            "vocab_size": D_VOCAB,
            "hidden_size": D_MODEL,
            "num_hidden_layers": 2,
            "num_attention_heads": N_HEADS,
            "intermediate_size": 2 * D_MODEL,
            "max_position_embeddings": N_CTX,
            "rotary_pct": 1.0,
            "use_parallel_residual": False,
            "bos_token_id": 0,
            "eos_token_id": 0,
            **overrides,
        }
    )
    model = GPTNeoXForCausalLM(config)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "layernorm" in name or "layer_norm" in name:
                parameter.add_(0.3 * torch.randn_like(parameter))
    model.save_pretrained(folder)
    return Path(folder)


def _save_word_tokenizer(folder: Path, vocab_size: int) -> None:
    """A word-level tokenizer ``t0 .. t{n-1}`` (Llama's own needs sentencepiece, which CI lacks)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab_size)}, unk_token="t0"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="t0", bos_token="t0", eos_token="t0").save_pretrained(
        folder
    )


def _perturbed(model, seed: int, scale: float = 0.3):
    """``model`` with noise added to every parameter (non-trivial norm weights, biases, ...)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator))
    return model


#: Settings every random Hugging Face builder shares.
HF_COMMON = {"tie_word_embeddings": False, "bos_token_id": 0, "eos_token_id": 0}


def _save_perturbed(model_class, config, folder: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    _perturbed(model_class(config), seed, scale=0.05).save_pretrained(folder)
    return Path(folder)


def random_llama(folder: Path, seed: int = 0, **overrides) -> Path:
    """A small Llama: RMSNorm, gated SiLU MLP, grouped-query attention (2 K/V heads), rotary."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=D_VOCAB,
        hidden_size=D_MODEL,
        intermediate_size=2 * D_MODEL,
        num_hidden_layers=2,
        num_attention_heads=N_HEADS,
        num_key_value_heads=2,
        max_position_embeddings=N_CTX,
        **{**HF_COMMON, **overrides},
    )
    _save_word_tokenizer(folder, D_VOCAB)
    return _save_perturbed(LlamaForCausalLM, config, folder, seed)


def random_gptj(folder: Path, seed: int = 0, **overrides) -> Path:
    """A small GPT-J: parallel attention and MLP sharing one LayerNorm, rotary on adjacent pairs."""
    from transformers import GPTJConfig, GPTJForCausalLM

    config = GPTJConfig(
        vocab_size=D_VOCAB,
        n_embd=D_MODEL,
        n_layer=2,
        n_head=N_HEADS,
        n_inner=2 * D_MODEL,
        rotary_dim=4,
        n_positions=N_CTX,
        **{**HF_COMMON, **overrides},
    )
    return _save_perturbed(GPTJForCausalLM, config, folder, seed)


# --- TransformerLens-native checkpoints ------------------------------------------------------------


@dataclass
class NativeFiles:
    """A native checkpoint on disk and the logits of the model it holds, by an independent forward."""

    config: Path
    weights: Path
    reference: Callable[[torch.Tensor], torch.Tensor]  # tokens [b, p] -> logits [b, p, d_vocab_out]


@contextmanager
def storages_tagged_cuda():
    """``torch.save`` inside records every CPU storage as ``cuda:0``, as a save on a GPU does."""
    from torch import serialization

    tagger = (0, lambda storage: "cuda:0" if storage.device.type == "cpu" else None, lambda storage, location: None)
    serialization._package_registry.append(tagger)
    serialization._package_registry.sort(key=lambda entry: entry[0])
    try:
        yield
    finally:
        serialization._package_registry.remove(tagger)


def save_native(
    folder: Path, config: dict, state: dict, wrap: str | None = None, gpu: bool = False
) -> tuple[Path, Path]:
    """``config.json`` and ``weights.pt`` (inside ``{wrap: state, "step": 7}`` when ``wrap``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    payload = {wrap: state, "step": 7, "optimizer": {"lr": 1e-3}} if wrap else state
    with storages_tagged_cuda() if gpu else nullcontext():
        torch.save(payload, folder / "weights.pt")
    return folder / "config.json", folder / "weights.pt"


#: The token whose unembedding the head of :func:`one_token_writer` writes.
ONE_TOKEN = 7


def one_token_writer(folder: Path) -> tuple[Path, Path, torch.Tensor]:
    """A one-layer attention-only model without normalisation whose single head writes only along the
    unembedding of :data:`ONE_TOKEN` (unit-norm unembedding columns): its config, its weights and that
    direction."""
    d_model, d_head, d_vocab, n_ctx = 16, 4, 20, 16
    generator = torch.Generator().manual_seed(0)

    def normal(*shape):
        return torch.randn(*shape, generator=generator) / d_model**0.5

    W_U = torch.nn.functional.normalize(torch.randn(d_model, d_vocab, generator=generator), dim=0)
    direction = W_U[:, ONE_TOKEN]
    state = {
        "embed.W_E": normal(d_vocab, d_model),
        "pos_embed.W_pos": normal(n_ctx, d_model),
        "blocks.0.attn.W_Q": normal(1, d_model, d_head),
        "blocks.0.attn.W_K": normal(1, d_model, d_head),
        "blocks.0.attn.W_V": normal(1, d_model, d_head),
        "blocks.0.attn.W_O": torch.randn(1, d_head, 1, generator=generator) * direction,
        "blocks.0.attn.b_Q": torch.zeros(1, d_head),
        "blocks.0.attn.b_K": torch.zeros(1, d_head),
        "blocks.0.attn.b_V": torch.zeros(1, d_head),
        "blocks.0.attn.b_O": torch.zeros(d_model),
        "unembed.W_U": W_U,
        "unembed.b_U": torch.zeros(d_vocab),
    }
    config = {
        "model_name": "one-token-writer",
        "n_layers": 1,
        "d_model": d_model,
        "n_heads": 1,
        "d_head": d_head,
        "n_ctx": n_ctx,
        "d_vocab": d_vocab,
        "attn_only": True,
        "normalization_type": None,
    }
    return (*save_native(folder, config, state), direction)


def native_model(
    folder: Path, seed: int = 0, wrap: str | None = None, gpu: bool = False, W_pos=None, **config
) -> NativeFiles:
    """A random HookedTransformer-format checkpoint of ``config`` (HookedTransformerConfig fields).

    The weights come from TransformerLens 4's own TL-native model (``boot_native``, every parameter
    perturbed), exported in HookedTransformer names by ``tl_parameters()``; that model's forward is
    the reference. ``W_pos`` replaces the learned positions (a sinusoidal table, say). (Its rotary
    embedding rotates adjacent pairs only: see :func:`native_from_hf`.)
    """
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_native({**config, "seed": seed})
    _perturbed(bridge.original_model, seed, scale=0.1)
    if W_pos is not None:
        with torch.no_grad():
            bridge.original_model.pos.weight.copy_(W_pos)
    state = {name: value.detach().clone() for name, value in bridge.tl_parameters().items()}
    if config.get("attn_only"):  # tl_parameters() fills absent MLPs with zeros; HookedTransformer has none
        state = {name: value for name, value in state.items() if ".mlp." not in name}
    if config.get("n_key_value_heads"):  # HookedTransformer keeps grouped K/V un-expanded, as _W_K ...
        repeat = config["n_heads"] // config["n_key_value_heads"]
        for name in [k for k in state if k.rsplit(".", 1)[-1] in ("W_K", "W_V", "b_K", "b_V")]:
            prefix, short = name.rsplit(".", 1)
            state[f"{prefix}._{short}"] = state.pop(name)[::repeat].clone()

    def reference(tokens: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return bridge(tokens)

    return NativeFiles(*save_native(folder, config, state, wrap, gpu), reference)


def native_from_hf(folder: Path, hf_folder: Path, **extra_config) -> NativeFiles:
    """The HookedTransformer-format export of a Hugging Face model (unprocessed ``tl_parameters()``
    of its bridge), with the HF model's own forward as the reference."""
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_transformers(str(hf_folder), device="cpu", dtype=torch.float32)
    cfg = bridge.cfg
    config = {
        "n_layers": cfg.n_layers,
        "d_model": cfg.d_model,
        "n_ctx": cfg.n_ctx,
        "d_head": cfg.d_head,
        "n_heads": cfg.n_heads,
        "d_mlp": cfg.d_mlp,
        "act_fn": cfg.act_fn,
        "d_vocab": cfg.d_vocab,
        "eps": cfg.eps,
        "normalization_type": cfg.normalization_type,
        "positional_embedding_type": cfg.positional_embedding_type,
        "parallel_attn_mlp": bool(cfg.parallel_attn_mlp),
        "original_architecture": type(bridge.original_model).__name__,
        **extra_config,
    }
    state = {name: value.detach().clone() for name, value in bridge.tl_parameters().items()}
    if config["parallel_attn_mlp"]:  # one LayerNorm feeds both: HookedTransformer keeps a copy as ln2
        for l in range(cfg.n_layers):
            for p in ("w", "b"):
                state.setdefault(f"blocks.{l}.ln2.{p}", state[f"blocks.{l}.ln1.{p}"].clone())

    def reference(tokens: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return bridge.original_model(tokens).logits

    return NativeFiles(*save_native(folder, config, state), reference)


def sinusoidal_positions(n_ctx: int, d_model: int) -> torch.Tensor:
    """The fixed sin/cos position table of Vaswani et al. (2017), ``[n_ctx, d_model]``."""
    position = torch.arange(n_ctx, dtype=torch.float64)[:, None]
    frequency = torch.exp(-math.log(10000.0) * torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    table = torch.zeros(n_ctx, d_model, dtype=torch.float64)
    table[:, 0::2], table[:, 1::2] = torch.sin(position * frequency), torch.cos(position * frequency)
    return table.float()


def ingest_reference(checkpoint: Path, out: Path, config):
    """The artifact of a reference checkpoint ingested on repeated and random tokens with ``config``."""
    from circuit_atlas.ingest.artifact import read_artifact
    from circuit_atlas.ingest.pipeline import ingest

    [path] = ingest(str(checkpoint), [], ["repeated", "random"], out, config, progress=False, echo=lambda _: None)
    return read_artifact(path)


def ingest_native(folder: Path, data_args: list[str], config, **model_config):
    """The artifact of a random native checkpoint of ``model_config`` ingested on ``data_args`` with ``config``."""
    from circuit_atlas.ingest.artifact import read_artifact
    from circuit_atlas.ingest.pipeline import ingest

    files = native_model(Path(folder) / "model", **model_config)
    [path] = ingest(
        str(files.config),
        [str(files.weights)],
        data_args,
        Path(folder) / "out",
        config,
        progress=False,
        echo=lambda _: None,
    )
    return read_artifact(path)


def task_slice(name: str, prompts: list[list[int]]) -> DataSlice:
    """A logit_diff slice (no sampled labels, so every pass is deterministic) of right-padded prompts."""
    width = max(len(p) for p in prompts)
    tokens = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros(len(prompts), width, dtype=torch.bool)
    for i, p in enumerate(prompts):
        tokens[i, : len(p)], mask[i, : len(p)] = torch.tensor(p), True
    positions = torch.tensor([[len(p) - 1] for p in prompts])
    answers = torch.tensor([[p[0]] for p in prompts])
    counterfactuals = torch.tensor([[p[1]] for p in prompts])
    return DataSlice(name, name, tokens, mask, "logit_diff", positions, answers, counterfactuals, "position -1")


def plain_faithfulness(model, tokens, kept: set[str]) -> float:
    """F of the channels ``kept``, with hooks written here: every other head's z, MLP output,
    embedding and unembedding input replaced by its mean over the prompts at each position,
    (L_none - L_kept) / (L_none - L_clean) of the mean next-token loss."""
    spec = model.spec
    sites = {"embed": site("embed"), "unembed": site("final_x")}
    if spec.positional == "standard":
        sites["pos_embed"] = site("pos_embed")
    sites |= {f"L{l}.mlp": site("mlp_out", l) for l in range(spec.n_layers) if spec.has_mlp}
    heads = {f"L{l}H{h}": (site("z", l), h) for l in range(spec.n_layers) for h in range(spec.n_heads)}
    with torch.no_grad():
        _, clean = model.run_capturing(tokens, [*sites.values(), *{s for s, _ in heads.values()}])
    means = {name: value.detach().mean(0, keepdim=True) for name, value in clean.items()}

    def loss(ablated: set[str]) -> float:
        def replace(activation, hook):
            activation = activation.expand(tokens.shape[0], *activation.shape[1:]).clone()
            for channel, (head_site, h) in heads.items():
                if channel in ablated and head_site == hook.name:
                    activation[:, :, h] = means[head_site][:, :, h]
            if any(sites.get(channel) == hook.name for channel in ablated):
                activation = means[hook.name].expand_as(activation).clone()
            return activation

        hooked = {sites[c] for c in ablated if c in sites} | {heads[c][0] for c in ablated if c in heads}
        with torch.no_grad():
            logits = model.run(tokens, [(name, replace) for name in hooked])
        return float(torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:]))

    everything = set(sites) | set(heads)
    none, clean_loss = loss(everything), loss(set())
    return (none - loss(everything - kept)) / (none - clean_loss)
