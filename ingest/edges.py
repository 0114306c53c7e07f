"""Edges: how one channel's writes line up with another's reads (docs/design.md, "Edges").

For a writer A (write basis U_A [d, r_A], importances s_A) and a read role of a reader B (read
basis C_B [d, r_B], importances t_B), A before B in the forward pass:

- ``strength`` = ||diag(t_B) C_Bᵀ U_A diag(s_A)||_F, in importance units (compare within a role);
- ``weight`` = strength / (||s_A|| ||t_B||) in [0, 1], the data-aware composition score;
- ``flow`` = E||C_Bᵀ y_A||² / E||C_Bᵀ r_B||², the share of the (centred) residual stream B
  reads, within its read subspace, that A wrote. Both expectations are token-uniform for every
  role (the attention weighting of k and v enters the subspaces, not the flow), and r_B is the
  residual stream before B's normalisation, which has the units of y_A.
- ``attribution`` on a slice: the mean over sequences of |Σ_pos g_Bᵀ P_B (y_A - E y_A)|, the
  first-order effect on the sequence's metric (mean next-token loss, true labels) of the part of
  A's output that B reads, with P_B = C_B C_Bᵀ and g_B the gradient of the metric with respect
  to the residual stream through B's role only (the role's input gradient, pulled back through
  the normalisation). ``attribution_signed`` keeps the sign.

Channel activity on a slice: mean over sequences of |Σ_pos g_cᵀ (y_c - E y_c)| (``attribution``),
its signed mean (``attribution_signed``: the first-order change of the metric from mean-ablated to
actual output, negative where the channel helps), and the mean ||y_c|| per token
(``mean_norm``); for the reader-only unembedding, its input x̂. The magnitude says a channel
matters on the slice, the sign whether it helps: on random tokens an induction head still moves
every sequence's loss, but not in one direction.

Everything is batched: the structural scores are two GEMMs over all bases stacked side by
side, the attribution one einsum per batch over every reader role and writer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .channels import HEAD_READ_ROLES, Channel, ChannelLayout
from .compression import Compression, psd_roots
from .fidelity import sequence_losses
from .model_adapter import LoadedModel, site
from .statistics import Moments, batches, mlp_input_residual


def _stacked(bases: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Columns of every basis side by side [d, Σk], and the owner index of each column."""
    owner = torch.cat([torch.full((b.shape[1],), i, dtype=torch.long) for i, b in enumerate(bases)])
    return torch.cat(bases, dim=1), owner


def _segment_square_sums(product: Tensor, row_owner: Tensor, col_owner: Tensor, rows: int, cols: int) -> Tensor:
    """Σ of squares of ``product`` entries per (row owner, column owner) block -> [rows, cols]."""
    squares = product.square()
    by_col = torch.zeros(squares.shape[0], cols, dtype=squares.dtype, device=squares.device)
    by_col.index_add_(1, col_owner.to(squares.device), squares)
    out = torch.zeros(rows, cols, dtype=squares.dtype, device=squares.device)
    out.index_add_(0, row_owner.to(squares.device), by_col)
    return out


def writer_output_factor(channel: Channel, moments: Moments, W_O: Tensor) -> Tensor:
    """F [d, m] with F Fᵀ = E[y yᵀ] of the writer's output (for a head y = z W_O)."""
    if channel.kind == "attn_head":
        zz_root, _ = psd_roots(moments.zz[channel.layer, channel.head])
        return W_O[channel.layer, channel.head].double().T @ zz_root
    if channel.kind == "mlp":
        return psd_roots(moments.Y_mlp[channel.layer])[0]
    return psd_roots(moments.Y_embed if channel.kind == "embed" else moments.Y_pos)[0]


def reader_residual_moment(channel: Channel, moments: Moments) -> Tensor:
    if channel.kind == "attn_head":
        return moments.R_attn[channel.layer]
    if channel.kind == "mlp":
        return moments.R_mlp[channel.layer]
    return moments.R_final


@dataclass
class StructuralScores:
    """[reader role, writer] matrices; entries where the writer does not feed the reader are 0."""

    weight: Tensor
    strength: Tensor
    flow: Tensor


def structural_scores(
    compression: Compression, moments: Moments, layout: ChannelLayout, W_O: Tensor
) -> StructuralScores:
    readers, sources = layout.readers, layout.writers
    device = moments.qq.device
    W_O = W_O.to(device)
    write_bases = [compression.basis(c, "out") for c in sources]
    write_importance = [compression.singular_values(c, "out")[: b.shape[1]] for c, b in zip(sources, write_bases)]
    read_bases = [compression.basis(r.channel, r.role) for r in readers]
    read_importance = [
        compression.singular_values(r.channel, r.role)[: b.shape[1]] for r, b in zip(readers, read_bases)
    ]

    read_matrix, read_owner = _stacked(read_bases)
    weighted_read, _ = _stacked([b * t for b, t in zip(read_bases, read_importance)])
    weighted_write, write_owner = _stacked([b * s for b, s in zip(write_bases, write_importance)])
    strength = _segment_square_sums(
        weighted_read.T @ weighted_write, read_owner, write_owner, len(readers), len(sources)
    ).sqrt()
    norms = torch.outer(
        torch.stack([t.norm() for t in read_importance]), torch.stack([s.norm() for s in write_importance])
    )
    weight = torch.where(norms > 0, strength / norms.clamp_min(1e-300), torch.zeros_like(strength))

    factors, factor_owner = _stacked([writer_output_factor(c, moments, W_O) for c in sources])
    written = _segment_square_sums(read_matrix.T @ factors, read_owner, factor_owner, len(readers), len(sources))
    residual = torch.stack(
        [torch.trace(b.T @ reader_residual_moment(r.channel, moments) @ b) for r, b in zip(readers, read_bases)]
    )
    flow = torch.where(residual[:, None] > 0, written / residual[:, None].clamp_min(1e-300), torch.zeros_like(written))

    mask = layout.feeds_mask.to(device, torch.float64)
    return StructuralScores(weight * mask, strength * mask, flow * mask)


def _pull_back(g: Tensor, x: Tensor, residual: Tensor, normalization: str) -> Tensor:
    """dL/dr from dL/dx̂ through x̂ = norm(r) (no affine: it is folded). Broadcasts over heads.

    LN: (g - mean(g) - x̂ (x̂·g)/d) / σ; RMS: (g - x̂ (x̂·g)/d) / σ; σ = ||r_c|| / ||x̂|| per token.
    """
    d = x.shape[-1]
    centred = residual - residual.mean(-1, keepdim=True) if normalization == "LN" else residual
    sigma = centred.norm(dim=-1, keepdim=True) / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    if g.dim() == x.dim() + 1:  # [b, p, h, d] against [b, p, d]
        x, sigma = x.unsqueeze(-2), sigma.unsqueeze(-2)
    projected = g - x * (x * g).sum(-1, keepdim=True) / d
    if normalization == "LN":
        projected = projected - g.mean(-1, keepdim=True)
    return projected / sigma


@dataclass
class SliceScores:
    """One slice: edge attributions [reader role, writer] and activity per channel."""

    n_sequences: int
    attribution: Tensor  # mean |.| over sequences
    attribution_signed: Tensor
    activity: dict[str, float]  # mean |.| over sequences
    activity_signed: dict[str, float]  # first-order L(actual) - L(mean-ablated); negative = helps
    mean_norm: dict[str, float]


def slice_scores(
    model: LoadedModel,
    compression: Compression,
    moments: Moments,
    layout: ChannelLayout,
    tokens: Tensor,
    batch_tokens: int = 4096,
    progress: bool = True,
    desc: str = "attribution",
) -> SliceScores:
    """Stream a slice once (true-label metric) and score every edge and channel on it."""
    spec, w, device = model.spec, model.weights, model.device
    L, H = spec.n_layers, spec.n_heads
    channels, readers, sources = layout.channels, layout.readers, layout.writers
    f32 = dict(device=device, dtype=torch.float32)

    def padded_bases(role: str) -> Tensor:  # [L, H, d, kmax]
        bases = [[compression.basis(c, role) for c in layout.heads(l)] for l in range(L)]
        kmax = max(1, max(b.shape[1] for row in bases for b in row))
        out = torch.zeros(L, H, spec.d_model, kmax, **f32)
        for l, row in enumerate(bases):
            for h, b in enumerate(row):
                out[l, h, :, : b.shape[1]] = b.to(**f32)
        return out

    head_bases = {role: padded_bases(role) for role in HEAD_READ_ROLES}
    mlp_bases = [compression.basis(layout.mlp(l), "in").to(**f32) for l in range(L)]
    unembed_basis = compression.basis(layout.unembed, "in").to(**f32)
    W = {"q": w.W_Q.to(**f32), "k": w.W_K.to(**f32), "v": w.W_V.to(**f32)}
    W_O = w.W_O.to(**f32)
    means = {"embed": moments.embed_mean, "pos_embed": moments.pos_mean, "final": moments.final_mean}
    z_mean, y_mean = moments.z_mean.to(**f32), moments.y_mlp_mean.to(**f32)
    has_pos = "pos_embed" in layout.by_name

    layers = range(L)
    mlp_reads = mlp_input_residual(spec)
    grad_sites = [site(r, l) for l in layers for r in ("q", "k", "v", "mlp_x", "attn_out", "mlp_out")] + [
        site("final_x"),
        site("embed"),
    ]
    value_sites = [site(s, l) for l in layers for s in dict.fromkeys(("z", "attn_x", "resid_pre", mlp_reads))] + [
        site("pos_embed"),
        site("resid_final"),
    ]

    abs_sum = torch.zeros(len(readers), len(sources), dtype=torch.float64, device=device)
    signed_sum = torch.zeros_like(abs_sum)
    activity = torch.zeros(len(channels), dtype=torch.float64, device=device)
    activity_signed = torch.zeros_like(activity)
    norm_sum = torch.zeros(len(channels), dtype=torch.float64, device=device)
    n_seq = 0

    bar = tqdm(total=tokens.numel(), desc=desc, unit="tok", disable=not progress, leave=False)
    for batch in batches(tokens, batch_tokens):
        logits, acts = model.run_capturing(batch, grad_sites + value_sites)
        metric = sequence_losses(logits, batch).sum()
        grads = dict(zip(grad_sites, torch.autograd.grad(metric, [acts[s] for s in grad_sites])))
        with torch.no_grad():
            b, p, d = acts[site("embed")].shape
            # Per writer column: its output, its output against its mean, and the gradient where it
            # joins the residual stream, each [b, p, W, d].
            outputs = torch.zeros(b, p, len(sources), d, **f32)
            centred_out, output_grads = torch.zeros_like(outputs), torch.zeros_like(outputs)
            embed_columns = [("embed", site("embed"))] + ([("pos_embed", site("pos_embed"))] if has_pos else [])
            for name, hook in embed_columns:
                column = layout.writer_column(layout.by_name[name])
                outputs[:, :, column] = acts[hook].expand(b, p, d)
                centred_out[:, :, column] = outputs[:, :, column] - means[name].to(**f32)
                output_grads[:, :, column] = grads[site("embed")]
            for l in layers:
                z, heads = acts[site("z", l)], layout.head_writer_columns(l)
                outputs[:, :, heads] = torch.einsum("bphe,hed->bphd", z, W_O[l])
                centred_out[:, :, heads] = torch.einsum("bphe,hed->bphd", z - z_mean[l], W_O[l])
                output_grads[:, :, heads] = grads[site("attn_out", l)].unsqueeze(2)
                column = layout.writer_column(layout.mlp(l))
                outputs[:, :, column] = acts[site("mlp_out", l)]
                centred_out[:, :, column] = acts[site("mlp_out", l)] - y_mean[l]
                output_grads[:, :, column] = grads[site("mlp_out", l)]

            reader_grads = torch.zeros(b, p, len(readers), d, **f32)  # per reader row: P_B g_B
            for l in layers:
                x, r = acts[site("attn_x", l)], acts[site("resid_pre", l)]
                rows = layout.head_reader_rows(l)
                for i, role in enumerate(HEAD_READ_ROLES):
                    g_x = torch.einsum("bphe,hde->bphd", grads[site(role, l)], W[role][l])
                    g_r = _pull_back(g_x, x, r, spec.normalization)
                    basis = head_bases[role][l]
                    reader_grads[:, :, rows[:, i]] = torch.einsum(
                        "bphk,hdk->bphd", torch.einsum("bphd,hdk->bphk", g_r, basis), basis
                    )
                g_r = _pull_back(
                    grads[site("mlp_x", l)], acts[site("mlp_x", l)], acts[site(mlp_reads, l)], spec.normalization
                )
                reader_grads[:, :, layout.reader_row(layout.mlp(l), "in")] = (g_r @ mlp_bases[l]) @ mlp_bases[l].T
            g_r = _pull_back(
                grads[site("final_x")], acts[site("final_x")], acts[site("resid_final")], spec.normalization
            )
            reader_grads[:, :, layout.reader_row(layout.unembed, "in")] = (g_r @ unembed_basis) @ unembed_basis.T
            per_sequence = torch.einsum("bprd,bpwd->brw", reader_grads, centred_out).double()
            abs_sum += per_sequence.abs().sum(0)
            signed_sum += per_sequence.sum(0)

            # Activity per channel in channel order: the writers, then the reader-only unembedding.
            x = acts[site("final_x")]
            effects = torch.cat(
                [
                    (output_grads * centred_out).sum((1, 3)),
                    (grads[site("final_x")] * (x - means["final"].to(**f32))).sum((1, 2)).unsqueeze(1),
                ],
                1,
            )
            norms = torch.cat([outputs.norm(dim=-1).sum((0, 1)), x.norm(dim=-1).sum().unsqueeze(0)])
            activity += effects.double().abs().sum(0)
            activity_signed += effects.double().sum(0)
            norm_sum += norms.double()
        n_seq += batch.shape[0]
        bar.update(batch.numel())
    bar.close()
    mask = layout.feeds_mask.to(device, torch.float64)
    order = [*sources, layout.unembed]
    return SliceScores(
        n_sequences=n_seq,
        attribution=abs_sum / n_seq * mask,
        attribution_signed=signed_sum / n_seq * mask,
        activity={c.name: float(a) / n_seq for c, a in zip(order, activity)},
        activity_signed={c.name: float(a) / n_seq for c, a in zip(order, activity_signed)},
        mean_norm={c.name: float(n) / tokens.numel() for c, n in zip(order, norm_sum)},
    )
