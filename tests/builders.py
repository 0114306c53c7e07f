"""Builders for tiny real models (saved as Hugging Face directories, booted through the bridge).

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

from pathlib import Path

import torch

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
