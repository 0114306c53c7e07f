"""Structural edge scores: how one channel's write subspace lines up with another's read subspace.

For a writer A (write basis U_A [d, r_A], importances s_A) and a read role of a reader B (read
basis C_B [d, r_B], importances t_B), A before B in the forward pass (docs/design.md, "Edges"):

- ``strength`` = ||diag(t_B) C_Bᵀ U_A diag(s_A)||_F, in importance units (compare within a role);
- ``weight`` = strength / (||s_A|| ||t_B||) in [0, 1], the data-aware composition score;
- ``flow`` = E||C_Bᵀ y_A||² / E||C_Bᵀ r_B||², the share of the residual stream B reads, within its
  read subspace, that A wrote. Both expectations are token-uniform for every role (the attention
  weighting of k and v enters the subspaces, not the flow), and r_B is the residual stream before
  B's normalisation (centred over d for LayerNorm), which has the units of y_A.

All three come from the bases and the moments, with no pass over the data: two GEMMs over every
basis stacked side by side, laid out [reader role, writer] by :class:`~.channels.ChannelLayout`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .channels import Channel, ChannelLayout
from .compression import Compression, psd_roots
from .statistics import Moments


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


def writer_output_factors(layout: ChannelLayout, moments: Moments, W_O: Tensor) -> list[Tensor]:
    """Per writer, F [d, m] with F Fᵀ = E[y yᵀ] of its output (for a head y = z W_O); roots batched."""
    zz_roots, _ = psd_roots(moments.zz)  # [L, H, dh, dh]
    mlp_roots, _ = psd_roots(moments.Y_mlp)  # [L, d, d]
    factors = []
    for c in layout.writers:
        if c.kind == "attn_head":
            factors.append(W_O[c.layer, c.head].double().T @ zz_roots[c.layer, c.head])
        elif c.kind == "mlp":
            factors.append(mlp_roots[c.layer])
        else:
            factors.append(psd_roots(moments.Y_embed if c.kind == "embed" else moments.Y_pos)[0])
    return factors


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

    factors, factor_owner = _stacked(writer_output_factors(layout, moments, W_O))
    written = _segment_square_sums(read_matrix.T @ factors, read_owner, factor_owner, len(readers), len(sources))
    residual = torch.stack(
        [torch.trace(b.T @ reader_residual_moment(r.channel, moments) @ b) for r, b in zip(readers, read_bases)]
    )
    flow = torch.where(residual[:, None] > 0, written / residual[:, None].clamp_min(1e-300), torch.zeros_like(written))

    mask = layout.feeds_mask.to(device, torch.float64)
    return StructuralScores(weight * mask, strength * mask, flow * mask)
