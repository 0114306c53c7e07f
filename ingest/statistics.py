"""The statistics pass: one streaming pass over the data accumulating every moment the
compression needs, vectorised over heads, with float64 accumulators.

Notation (docs/design.md, "Statistics"): x̂ the normalised input a channel's weights see, y its output,
g = dL/d(residual) where y joins the residual stream, with L the sum over the positions a slice's
metric scores of the cross-entropy against labels *sampled from the model's own prediction*
(:func:`~.metrics.sampled_loss`: E[g gᵀ] is the Fisher; the true-label gradient vanishes where a
trained model is right). Expectations run over real tokens: padded positions weigh nothing. Per layer ``l`` and
head ``h``, with q̃ = q - b_Q etc. the bias-free head vectors and w_j = Σ_i A_ij the attention
key j receives:

============  ==========================================  =============================
moment        definition                                  shape
============  ==========================================  =============================
``qq``        E_i[q̃_i q̃_iᵀ]  = W_Qᵀ S_q W_Q                 [L, H, d_head, d_head]
``kk``        E_i[Σ_j A_ij (k̃_j - k̄_i)(k̃_j - k̄_i)ᵀ]           [L, H, d_head, d_head]
              with k̄_i = Σ_j A_ij k̃_j  (= W_Kᵀ S_k W_K, see below)
``kk_seen``   E_i[mean_j (k̃_j - k̄ᵘ_i)(k̃_j - k̄ᵘ_i)ᵀ]       [L, H, d_head, d_head]
              over the keys j query i may see, k̄ᵘ_i their plain mean
``vv``        E_i[Σ_j A_ij ṽ_j ṽ_jᵀ] = W_Vᵀ S_v W_V         [L, H, d_head, d_head]
``zz``        E[z zᵀ] (head output before W_O)            [L, H, d_head, d_head]
``G_attn``    E[g gᵀ] at ``hook_attn_out``                [L, d, d]
``S_mlp``     E[x̂ x̂ᵀ] at the MLP input                     [M, d, d]
``H_mlp``     E[g_x̂ g_x̂ᵀ], g_x̂ = dL/dx̂ through the MLP      [M, d, d]
``Y_mlp``     E[y yᵀ] at ``hook_mlp_out``                 [M, d, d]
``G_mlp``     E[g gᵀ] at ``hook_mlp_out``                 [M, d, d]
``Y_embed``   E[y yᵀ] of token (and position) embeddings  [d, d]
``G_embed``   E[g gᵀ] at the embedding output             [d, d]
``S_final``   E[x̂ x̂ᵀ] at the unembedding input             [d, d]
``H_final``   E[g_x̂ g_x̂ᵀ] at the unembedding input          [d, d]
``final_mean`` E[x̂] at the unembedding input                [d]
============  ==========================================  =============================

plus the means of every writer's output (for mean ablation). M is the number of MLPs: L, or 0 for
an attention-only model, whose MLP moments (``y_mlp_mean`` too) are empty. The
S-weighted head moments are only d_head x d_head: the compression never needs S_k itself (see
compression.py).

S_k is the attention-weighted key covariance *around each query's mean key*, not the
reference E_i[Σ_j A_ij x_j x_jᵀ]: a query's softmax does not change when the same vector is
added to every key it sees (its Jacobian is diag(a) - a aᵀ), so only this covariance moves
attention. With the uncentred moment, a direction shared by all keys (a constant or
slowly varying component) counted as read by the keys, and heads that merely carry such a
component looked K-composed with every key reader. It is accumulated as
Σ_j A_ij k_j k_jᵀ - k̄_i k̄_iᵀ, which holds because each query's weights sum to one; in float32 they
sum to one within about 1e-7, so the keys are first shifted by their sequence's mean (which changes
nothing exactly) lest that error times a large shared component pass for a direction the keys read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import torch
from torch import Tensor
from tqdm.auto import tqdm

from circuit_atlas.errors import UserError

from .data import DataSlice
from .metrics import sampled_loss
from .model_adapter import LoadedModel, layer_sites, site


@dataclass
class Moments:
    n_tokens: int
    qq: Tensor
    kk: Tensor
    kk_seen: Tensor
    vv: Tensor
    zz: Tensor
    z_mean: Tensor
    G_attn: Tensor
    S_mlp: Tensor
    H_mlp: Tensor
    Y_mlp: Tensor
    y_mlp_mean: Tensor
    G_mlp: Tensor
    Y_embed: Tensor
    embed_mean: Tensor
    Y_pos: Tensor | None
    pos_mean: Tensor | None
    G_embed: Tensor
    S_final: Tensor
    H_final: Tensor
    final_mean: Tensor

    @property
    def has_mlp(self) -> bool:
        """False for an attention-only model (its MLP moments are empty)."""
        return len(self.S_mlp) > 0

    def embedding(self, kind: str) -> tuple[Tensor, Tensor]:
        """E[y yᵀ] and E[y] of the ``embed`` or the ``pos_embed`` channel (a model with a W_pos table)."""
        if kind == "embed":
            return self.Y_embed, self.embed_mean
        if self.Y_pos is None or self.pos_mean is None:
            raise ValueError("the moments hold no positional embedding: the model has no W_pos table")
        return self.Y_pos, self.pos_mean

    def tensors(self) -> dict[str, Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self) if isinstance(getattr(self, f.name), Tensor)}


def _outer(a: Tensor) -> Tensor:
    """Σ over all leading dims of a aᵀ: [..., d] -> [d, d], in float64."""
    flat = a.reshape(-1, a.shape[-1]).double()
    return flat.T @ flat


def _keys_seen(real: Tensor, causal: bool) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
    """For ``kk_seen``, with every real query attending uniformly to the keys it may see (right-
    padded ``real`` [b, p]): the weight each key receives in all [b, p], and a function from keys
    [b, p, h, e] to each real query's mean of them (zero for padded queries)."""
    if causal:  # query i sees keys 0..i
        count = torch.arange(1, real.shape[1] + 1, dtype=real.dtype, device=real.device)
        per_query = real / count
        weights = per_query.flip(1).cumsum(1).flip(1)
        return weights, lambda k: k.cumsum(1) / count.view(1, -1, 1, 1) * real[..., None, None]
    n = real.sum(1, keepdim=True)  # query i sees its sequence's real keys
    return real.clone(), lambda k: (k * (real / n)[..., None, None]).sum(1, keepdim=True) * real[..., None, None]


GRADIENT_SITES = ("attn_out", "mlp_out", "mlp_x")

#: Bytes of attention patterns one statistics batch may hold (it keeps every pattern for its moments).
PATTERN_BYTES = 8 * 2**30


def statistics_batch_tokens(spec, seq_len: int, batch_tokens: int) -> int:
    """Tokens per statistics batch: ``batch_tokens``, fewer when its attention patterns (scores,
    probabilities and a float64 copy, L x H x seq_len per token) would pass :data:`PATTERN_BYTES`,
    never less than one sequence."""
    per_token = 16 * spec.n_layers * spec.n_heads * seq_len
    return max(seq_len, min(batch_tokens, PATTERN_BYTES // per_token))


def mlp_input_residual(spec) -> str:
    """The residual site an MLP normalises: the block input in a parallel block, else resid_mid."""
    return "resid_pre" if spec.parallel_attn_mlp else "resid_mid"


def fisher_gradients(
    model: LoadedModel, batch: DataSlice, generator: torch.Generator
) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
    """One batch: logits, captured activations, and dL/d(activation) at the gradient sites, with L
    the batch's :func:`~.metrics.sampled_loss` (the Fisher weighting of its metric).

    Gradient sites: ``hook_attn_out`` and ``hook_mlp_out`` (where a layer's heads and MLP join
    the residual stream), the MLP input ``ln2.hook_out`` (dL/dx̂ through the MLP only, as
    nothing else reads it), the embedding output and the unembedding input (no MLP sites in an
    attention-only model).
    """
    spec = model.spec
    grad_sites = [*layer_sites(spec, *GRADIENT_SITES), site("embed"), site("final_x")]
    read_sites = [*layer_sites(spec, "q", "k", "v", "pattern", "z"), site("pos_embed")]
    logits, acts = model.run_capturing(batch.tokens, grad_sites + read_sites, attention_mask=batch.mask)
    loss = sampled_loss(logits, batch.tokens, batch.targets(), generator)
    grads = torch.autograd.grad(loss, [acts[name] for name in grad_sites])
    return logits, acts, dict(zip(grad_sites, grads))


def accumulate_moments(
    model: LoadedModel, data: Sequence[DataSlice], batch_tokens: int = 4096, seed: int = 0, progress: bool = True
) -> Moments:
    """Stream the prompts of ``data`` once and return the :class:`Moments` over their real tokens,
    each slice's output weighting from its own metric."""
    spec, w, device = model.spec, model.weights, model.device
    L, H, dh, d = spec.n_layers, spec.n_heads, spec.d_head, spec.d_model
    M = L if spec.has_mlp else 0

    def zeros(*shape: int) -> Tensor:
        return torch.zeros(*shape, device=device, dtype=torch.float64)

    m = Moments(
        n_tokens=0,
        qq=zeros(L, H, dh, dh),
        kk=zeros(L, H, dh, dh),
        kk_seen=zeros(L, H, dh, dh),
        vv=zeros(L, H, dh, dh),
        zz=zeros(L, H, dh, dh),
        z_mean=zeros(L, H, dh),
        G_attn=zeros(L, d, d),
        S_mlp=zeros(M, d, d),
        H_mlp=zeros(M, d, d),
        Y_mlp=zeros(M, d, d),
        y_mlp_mean=zeros(M, d),
        G_mlp=zeros(M, d, d),
        Y_embed=zeros(d, d),
        embed_mean=zeros(d),
        Y_pos=zeros(d, d) if spec.positional == "standard" else None,
        pos_mean=zeros(d) if spec.positional == "standard" else None,
        G_embed=zeros(d, d),
        S_final=zeros(d, d),
        H_final=zeros(d, d),
        final_mean=zeros(d),
    )
    generator = torch.Generator().manual_seed(seed)  # on the CPU: the same labels on every device
    finite = torch.ones((), dtype=torch.bool, device=device)
    bar = tqdm(
        total=sum(part.n_tokens for part in data), desc="statistics", unit="tok", disable=not progress, leave=False
    )
    for batch in (batch for part in data for batch in part.batches(batch_tokens)):
        logits, acts, grads = fisher_gradients(model, batch, generator)
        real = batch.mask.to(device)
        finite &= torch.isfinite(logits[real]).all()
        with torch.no_grad():
            keep = real.unsqueeze(-1).float()  # [b, p, 1]: padded positions weigh nothing
            key_weights = (keep / keep.sum(1, keepdim=True)).double().unsqueeze(-1)  # [b, p, 1, 1]: mean over real keys
            seen_weights, seen_mean = _keys_seen(keep.squeeze(-1).double(), spec.causal)

            def outer(a: Tensor, keep: Tensor = keep) -> Tensor:  # [b, p, d], padded positions dropped
                return _outer(a * keep)

            for l in range(L):
                pattern = acts[site("pattern", l)] * keep.view(keep.shape[0], 1, -1, 1)  # real queries only
                received = pattern.sum(2).double()  # [b, h, key]
                q = (acts[site("q", l)] - w.b_Q[l]) * keep.unsqueeze(-1)
                k = (acts[site("k", l)] - w.b_K[l]).double()
                k = k - (k * key_weights).sum(1, keepdim=True)  # per sequence (see the module docstring)
                v = (acts[site("v", l)] - w.b_V[l]).double()
                z = acts[site("z", l)] * keep.unsqueeze(-1)
                m.qq[l] += torch.einsum("bphe,bphf->hef", q.double(), q.double())
                k_seen = torch.einsum("bhqp,bphe->bqhe", pattern.double(), k)  # Σ_j A_ij k_j per query
                m.kk[l] += torch.einsum("bhp,bphe,bphf->hef", received, k, k) - torch.einsum(
                    "bqhe,bqhf->hef", k_seen, k_seen
                )
                k_mean = seen_mean(k)
                m.kk_seen[l] += torch.einsum("bp,bphe,bphf->hef", seen_weights, k, k) - torch.einsum(
                    "bqhe,bqhf->hef", k_mean, k_mean
                )
                m.vv[l] += torch.einsum("bhp,bphe,bphf->hef", received, v, v)
                m.zz[l] += torch.einsum("bphe,bphf->hef", z.double(), z.double())
                m.z_mean[l] += z.double().sum((0, 1))
                m.G_attn[l] += outer(grads[site("attn_out", l)])
                finite &= torch.isfinite(grads[site("attn_out", l)][real]).all()
                if not spec.has_mlp:
                    continue
                x, y = acts[site("mlp_x", l)], acts[site("mlp_out", l)]
                m.S_mlp[l] += outer(x)
                m.H_mlp[l] += outer(grads[site("mlp_x", l)])
                m.Y_mlp[l] += outer(y)
                m.y_mlp_mean[l] += (y * keep).double().sum((0, 1))
                m.G_mlp[l] += outer(grads[site("mlp_out", l)])
                finite &= torch.isfinite(y[real]).all()
            embed = acts[site("embed")]
            m.Y_embed += outer(embed)
            m.embed_mean += (embed * keep).double().sum((0, 1))
            if m.Y_pos is not None:
                pos = acts[site("pos_embed")].expand_as(embed)
                m.Y_pos += outer(pos)
                m.pos_mean += (pos * keep).double().sum((0, 1))
            m.G_embed += outer(grads[site("embed")])
            final = acts[site("final_x")]
            m.S_final += outer(final)
            m.final_mean += (final * keep).double().sum((0, 1))
            m.H_final += outer(grads[site("final_x")])
        m.n_tokens += batch.n_tokens
        bar.update(batch.n_tokens)
    bar.close()
    if not bool(finite):
        raise UserError(
            "The model produced NaN or inf activations or gradients on this data. The "
            "checkpoint may be diverged, or the data drives it out of range; nothing was written."
        )
    for _name, value in m.tensors().items():
        value /= m.n_tokens
    return m
