"""The transformer runner: one compact HookedTransformer-style forward for every model.

Every model the catalog ingests (a Hugging Face model booted through the bridge, or a
TransformerLens-native checkpoint) ends up here as a :class:`TransformerConfig` plus weights in
TransformerLens names and shapes, already *processed*: LayerNorm weights folded into the
following weights, so normalisation has no affine part. The forward pass, per layer ``l``::

    r₀ = W_E[t] + W_pos[p]                              (hook_embed, hook_pos_embed; no W_pos for rotary)
    x  = norm(r)                                        (blocks.l.hook_resid_pre, blocks.l.ln1.hook_out)
    q, k, v = x W_Q + b_Q, x W_K + b_K, x W_V + b_V     (attn.hook_q/k/v: [batch, pos, head, d_head])
    A  = softmax(rot(q) rot(k)ᵀ / attn_scale + mask)    (attn.hook_attn_scores, attn.hook_pattern: [b, head, q, k])
    z  = A v ;  a = Σ_h z_h W_O[h] + b_O                (attn.hook_z, blocks.l.hook_attn_out)
    m  = r + a                                          (blocks.l.hook_resid_mid; sequential blocks only)
    y  = act(norm(m) W_in + b_in) W_out + b_out         (blocks.l.ln2.hook_out, blocks.l.hook_mlp_out)
    r  = m + y     (parallel block: r + a + y with y read from norm(r))
    logits = norm(r) W_U + b_U                          (ln_final.hook_in, ln_final.hook_out)

with ``norm`` one of LN ``(r - mean r) / sqrt(var r + eps)``, RMS ``r / sqrt(mean r² + eps)``, or
none (the identity: ``ln1.hook_out`` then equals the residual, as a separate tensor so that its
gradient is the gradient through the attention only). A gated MLP computes
``(act(x W_gate) ⊙ x W_in + b_in) W_out + b_out`` (TransformerLens's ``GatedMLP``). Rotary positions rotate the first
``rotary_dim`` dimensions of q and k after their hooks, in halves (GPT-NeoX, Llama) or adjacent
pairs (GPT-J); sinusoidal positions are a learned ``W_pos`` with fixed values. Grouped-query
attention arrives with its K/V weights already expanded to every query head.

A hook is ``fn(activation, hook) -> activation | None`` (``hook.name`` is the site's name); a
returned tensor replaces the activation. Hook names are exactly :attr:`Transformer.hook_names`;
an unknown name is an error. Attention uses ``scaled_dot_product_attention`` (flash or
memory-efficient kernels on a GPU) unless a hook asks for ``hook_attn_scores`` or
``hook_pattern``, which need the explicit softmax; both give the same numbers.

Padding: ``attention_mask`` ``[batch, pos]`` (True = a real token) hides padded keys from every
query. Prompts are right-padded, so positions count from the start of each row. A padded query
attends to itself alone (its row would otherwise be empty); its output is never scored.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from circuit_atlas.errors import UserError

Hook = Callable[[Tensor, object], Tensor | None]

#: Pointwise MLP activations by TransformerLens name (aliases: HF's names for the same functions).
ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_fast": lambda x: 0.5 * x * (1.0 + torch.tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x))),
    "silu": F.silu,
    "swish": F.silu,
}
NORMALIZATIONS = ("LN", "RMS", "none")


@dataclass(frozen=True)
class TransformerConfig:
    """What the forward pass needs besides the weights (TransformerLens field names where they exist)."""

    n_layers: int
    d_model: int
    n_heads: int
    d_head: int
    d_mlp: int  # 0 for an attention-only model
    d_vocab: int
    d_vocab_out: int
    n_ctx: int
    act_fn: str = "gelu"
    normalization: str = "LN"  # of the blocks: "LN", "RMS" or "none" (folded: no affine)
    final_normalization: str = "LN"  # of ln_final (Llama: RMS); "none" for no final norm
    eps: float = 1e-5
    positional: str = "standard"  # "standard" (a W_pos table, learned or sinusoidal) or "rotary"
    rotary_dim: int = 0
    rotary_base: float = 10000.0
    rotary_adjacent_pairs: bool = False  # GPT-J: rotate (0, 1), (2, 3), ...; else halves
    parallel_attn_mlp: bool = False
    gated_mlp: bool = False
    causal: bool = True
    attn_scale: float = 0.0  # scores are divided by this; 0 means sqrt(d_head)

    def __post_init__(self):
        problems = []
        if self.normalization not in NORMALIZATIONS or self.final_normalization not in NORMALIZATIONS:
            problems.append(f"normalization {self.normalization!r}/{self.final_normalization!r} (LN, RMS or none)")
        if self.d_mlp and self.act_fn not in ACTIVATIONS:
            problems.append(f"activation {self.act_fn!r} (supported: {', '.join(ACTIVATIONS)})")
        if self.positional not in ("standard", "rotary"):
            problems.append(f"positional embedding {self.positional!r} (standard, sinusoidal or rotary)")
        if self.positional == "rotary" and not (0 < self.rotary_dim <= self.d_head and self.rotary_dim % 2 == 0):
            problems.append(f"rotary_dim {self.rotary_dim} (an even number up to d_head {self.d_head})")
        if self.gated_mlp and not self.d_mlp:
            problems.append("a gated MLP without d_mlp")
        if problems:
            raise UserError(f"Circuit Atlas cannot run this model: unsupported {'; '.join(problems)}.")

    @property
    def has_mlp(self) -> bool:
        return self.d_mlp > 0

    @property
    def scale(self) -> float:
        return self.attn_scale or math.sqrt(self.d_head)


def parameter_shapes(cfg: TransformerConfig) -> dict[str, tuple[int, ...]]:
    """Every weight the runner reads, by TransformerLens name, with its shape."""
    d, H, dh, m = cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp
    shapes = {"embed.W_E": (cfg.d_vocab, d), "unembed.W_U": (d, cfg.d_vocab_out), "unembed.b_U": (cfg.d_vocab_out,)}
    if cfg.positional == "standard":
        shapes["pos_embed.W_pos"] = (cfg.n_ctx, d)
    for l in range(cfg.n_layers):
        a = f"blocks.{l}.attn."
        shapes |= {a + f"W_{x}": (H, d, dh) for x in "QKV"} | {a + f"b_{x}": (H, dh) for x in "QKV"}
        shapes |= {a + "W_O": (H, dh, d), a + "b_O": (d,)}
        if cfg.has_mlp:
            p = f"blocks.{l}.mlp."
            shapes |= {p + "W_in": (d, m), p + "b_in": (m,), p + "W_out": (m, d), p + "b_out": (d,)}
            if cfg.gated_mlp:
                shapes[p + "W_gate"] = (d, m)
    return shapes


class HookPoint(NamedTuple):
    """What a hook function receives as its second argument (TransformerLens passes a HookPoint)."""

    name: str


def normalize(x: Tensor, kind: str, eps: float) -> Tensor:
    """x̂ = (x - [LN] mean(x)) / sqrt(mean((x - [LN] mean(x))²) + eps) for "LN" and "RMS" (the affine is
    folded into the next weights); x itself for "none"."""
    if kind == "LN":
        x = x - x.mean(-1, keepdim=True)
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    if kind == "RMS":
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return x.view_as(x)  # a node of its own: gradients read here flow through the reader only


class Transformer:
    """A processed transformer on a device. ``params`` maps TransformerLens names to tensors of
    :func:`parameter_shapes`; they are float32 and never require gradients."""

    def __init__(self, cfg: TransformerConfig, params: dict[str, Tensor], device: torch.device):
        self.cfg = cfg
        self.device = torch.device(device)
        shapes = parameter_shapes(cfg)
        wrong = [
            f"{name} {tuple(params[name].shape) if name in params else 'missing'} (expected {shape})"
            for name, shape in shapes.items()
            if name not in params or tuple(params[name].shape) != shape
        ]
        if wrong:
            raise UserError(f"The weights do not fit the model's config: {'; '.join(wrong[:4])}.")
        self.params = {name: params[name].detach().to(self.device, torch.float32) for name in shapes}
        self.hook_names = frozenset(self._hook_names())
        # Per layer, the three reading maps side by side with heads flattened, W_QKV [d, 3 H d_head], and
        # W_O as [H d_head, d]: one matmul each instead of one per map (the same numbers, faster).
        self._qkv, self._out = [], []
        for l in range(cfg.n_layers):
            a = f"blocks.{l}.attn."
            maps = [self.params[a + f"W_{x}"].permute(1, 0, 2).flatten(1) for x in "QKV"]  # [d, H d_head] each
            biases = [self.params[a + f"b_{x}"].flatten() for x in "QKV"]
            self._qkv.append((torch.cat(maps, 1), torch.cat(biases)))
            self._out.append((self.params[a + "W_O"].flatten(0, 1), self.params[a + "b_O"]))
        if cfg.positional == "rotary":
            inv_freq = 1.0 / cfg.rotary_base ** (
                torch.arange(0, cfg.rotary_dim, 2, dtype=torch.float64) / cfg.rotary_dim
            )
            angles = torch.outer(torch.arange(cfg.n_ctx, dtype=torch.float64), inv_freq)  # [n_ctx, rotary_dim / 2]
            self._cos = angles.cos().float().to(self.device)
            self._sin = angles.sin().float().to(self.device)

    def _hook_names(self) -> Iterable[str]:
        yield from ("hook_embed", "ln_final.hook_in", "ln_final.hook_out")
        if self.cfg.positional == "standard":
            yield "hook_pos_embed"
        for l in range(self.cfg.n_layers):
            yield from (f"blocks.{l}.hook_resid_pre", f"blocks.{l}.ln1.hook_out", f"blocks.{l}.hook_attn_out")
            yield from (f"blocks.{l}.attn.hook_{x}" for x in ("q", "k", "v", "attn_scores", "pattern", "z"))
            if self.cfg.has_mlp:
                yield from (f"blocks.{l}.ln2.hook_out", f"blocks.{l}.hook_mlp_out")
                if not self.cfg.parallel_attn_mlp:
                    yield f"blocks.{l}.hook_resid_mid"

    def forward(
        self, tokens: Tensor, hooks: Iterable[tuple[str, Hook]] = (), attention_mask: Tensor | None = None
    ) -> Tensor:
        """Logits ``[batch, pos, d_vocab_out]`` of ``tokens`` ``[batch, pos]`` with ``hooks`` applied."""
        cfg, p = self.cfg, self.params
        by_name: dict[str, list[Hook]] = defaultdict(list)
        for name, fn in hooks:
            if name not in self.hook_names:
                raise ValueError(f"This model has no hook {name!r}.")
            by_name[name].append(fn)

        def hook(name: str, x: Tensor) -> Tensor:
            for fn in by_name.get(name, ()):
                out = fn(x, HookPoint(name))
                x = x if out is None else out
            return x

        tokens = tokens.to(self.device)
        batch, length = tokens.shape
        if length > cfg.n_ctx:
            raise UserError(f"Sequences of {length} tokens are longer than the model's context of {cfg.n_ctx}.")
        mask = self._attention_mask(batch, length, attention_mask)
        plain_causal = cfg.causal and attention_mask is None  # SDPA's is_causal: the flash kernel applies
        residual = hook("hook_embed", p["embed.W_E"][tokens])
        if cfg.positional == "standard":
            residual = residual + hook("hook_pos_embed", p["pos_embed.W_pos"][:length].expand(batch, length, -1))
        for l in range(cfg.n_layers):
            residual = hook(f"blocks.{l}.hook_resid_pre", residual)
            x = hook(f"blocks.{l}.ln1.hook_out", normalize(residual, cfg.normalization, cfg.eps))
            attn_out = hook(f"blocks.{l}.hook_attn_out", self._attention(l, x, mask, plain_causal, hook, by_name))
            if not cfg.has_mlp:
                residual = residual + attn_out
                continue
            if cfg.parallel_attn_mlp:
                mlp_in, after_attn = residual, None
            else:
                after_attn = mlp_in = hook(f"blocks.{l}.hook_resid_mid", residual + attn_out)
            x = hook(f"blocks.{l}.ln2.hook_out", normalize(mlp_in, cfg.normalization, cfg.eps))
            mlp_out = hook(f"blocks.{l}.hook_mlp_out", self._mlp(l, x))
            residual = residual + attn_out + mlp_out if after_attn is None else after_attn + mlp_out
        residual = hook("ln_final.hook_in", residual)
        x = hook("ln_final.hook_out", normalize(residual, cfg.final_normalization, cfg.eps))
        return x @ p["unembed.W_U"] + p["unembed.b_U"]

    __call__ = forward

    def _attention_mask(self, batch: int, length: int, real: Tensor | None) -> Tensor | None:
        """Where each query may attend ``[batch or 1, 1, q, k]`` (True = allowed); None = everywhere."""
        allowed = None
        if self.cfg.causal:
            allowed = torch.ones(length, length, dtype=torch.bool, device=self.device).tril()[None, None]
        if real is not None:
            real = real.to(self.device, torch.bool)
            if real.shape != (batch, length):
                raise ValueError(f"attention_mask has shape {tuple(real.shape)}, tokens {(batch, length)}.")
            keys = real[:, None, None, :] | torch.eye(length, dtype=torch.bool, device=self.device)
            allowed = keys if allowed is None else allowed & keys
        return allowed

    def _attention(self, l: int, x: Tensor, mask: Tensor | None, plain_causal: bool, hook, by_name) -> Tensor:
        """The attention output of layer ``l`` ``[b, p, d]`` from its normalised input ``x``."""
        cfg, a = self.cfg, f"blocks.{l}.attn."
        W_QKV, b_QKV = self._qkv[l]
        q, k, v = (x @ W_QKV + b_QKV).unflatten(-1, (3, cfg.n_heads, cfg.d_head)).unbind(-3)  # [b, pos, head, d_head]
        q, k, v = hook(a + "hook_q", q), hook(a + "hook_k", k), hook(a + "hook_v", v)
        if cfg.positional == "rotary":
            q, k = self._rotate(q), self._rotate(k)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [b, head, pos, d_head]
        if a + "hook_attn_scores" in by_name or a + "hook_pattern" in by_name:
            scores = q @ k.transpose(-1, -2) / cfg.scale
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            scores = hook(a + "hook_attn_scores", scores)
            pattern = hook(a + "hook_pattern", torch.softmax(scores, dim=-1))
            z = pattern @ v
        else:
            mask = None if plain_causal else mask
            z = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=plain_causal, scale=1.0 / cfg.scale)
        z = hook(a + "hook_z", z.transpose(1, 2))  # [b, pos, head, d_head]
        W_O, b_O = self._out[l]
        return z.flatten(-2) @ W_O + b_O

    def _rotate(self, x: Tensor) -> Tensor:
        """Rotary positions on the first ``rotary_dim`` dims of ``x`` ``[b, pos, head, d_head]``."""
        n, half = x.shape[1], self.cfg.rotary_dim // 2
        cos, sin = self._cos[:n, None, :], self._sin[:n, None, :]  # [pos, 1, rotary_dim / 2]
        rot, rest = x[..., : 2 * half], x[..., 2 * half :]
        if self.cfg.rotary_adjacent_pairs:
            x1, x2 = rot[..., 0::2], rot[..., 1::2]
            rot = torch.stack((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).flatten(-2)
        else:
            x1, x2 = rot[..., :half], rot[..., half:]
            rot = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
        return torch.cat((rot, rest), dim=-1)

    def _mlp(self, l: int, x: Tensor) -> Tensor:
        """The MLP output of layer ``l`` ``[b, p, d]`` from its normalised input ``x``."""
        m, act = f"blocks.{l}.mlp.", ACTIVATIONS[self.cfg.act_fn]
        if self.cfg.gated_mlp:
            hidden = act(x @ self.params[m + "W_gate"]) * (x @ self.params[m + "W_in"]) + self.params[m + "b_in"]
        else:
            hidden = act(x @ self.params[m + "W_in"] + self.params[m + "b_in"])
        return hidden @ self.params[m + "W_out"] + self.params[m + "b_out"]
