"""Structural edge scores: how one channel's write subspace lines up with another's read subspace.

For a writer A (write basis U_A [d, r_A], importances s_A) and a read role of a reader B (read
basis C_B [d, r_B], importances t_B), A before B in the forward pass (docs/design.md, "Edges"):

- ``strength`` = ||diag(t_B) C_Bᵀ U_A diag(s_A)||_F, in importance units (compare within a role);
- ``weight`` = strength / (||s_A|| ||t_B||) in [0, 1], the data-aware composition score;
- ``flow`` = E||C_Bᵀ y_A||² / Σ_A' E||C_Bᵀ y_A'||² over the writers A' that feed B: A's share of
  what the writers put into B's read subspace, in [0, 1] and summing to 1 over a role's writers
  (0 where none writes into it). The expectations are token-uniform for every role (the attention
  weighting of k and v enters the subspaces, not the flow). Cross terms between writers are left
  out: with them (the residual stream's own moment as denominator) writers that cancel gave
  "shares" above 1.

All three come from the bases and the moments, with no pass over the data: two GEMMs over every
basis stacked side by side, laid out [reader role, writer] by :class:`~.channels.ChannelLayout`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .channels import Channel, ChannelLayout
from .compression import Compression, psd_roots
from .model_adapter import Placement
from .statistics import Moments


def _stacked(bases: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Columns of every basis side by side [d, Σk], and the owner index of each column."""
    owner = torch.cat([torch.full((b.shape[1],), i, dtype=torch.long, device=b.device) for i, b in enumerate(bases)])
    return torch.cat(bases, dim=1), owner


def _segment_square_sums(product: Tensor, row_owner: Tensor, col_owner: Tensor, rows: int, cols: int) -> Tensor:
    """Σ of squares of ``product`` entries per (row owner, column owner) block -> [rows, cols]."""
    squares = product.square()
    by_col = torch.zeros(squares.shape[0], cols, dtype=squares.dtype, device=squares.device)
    by_col.index_add_(1, col_owner.to(squares.device), squares)
    out = torch.zeros(rows, cols, dtype=squares.dtype, device=squares.device)
    out.index_add_(0, row_owner.to(squares.device), by_col)
    return out


def head_output_factors(moments: Moments, W_O: Tensor) -> Tensor:
    """Per head, F [d, d_head] with F Fᵀ = E[y yᵀ] of its output y = z W_O: W_Oᵀ E[z zᵀ]^{1/2} ([L, H, d, dh])."""
    zz_roots, _ = psd_roots(moments.zz)
    return W_O.double().mT @ zz_roots


def output_moment(channel: Channel, moments: Moments) -> Tensor:
    """E[y yᵀ] [d, d] of a writer that is not a head."""
    if channel.kind == "mlp":
        return moments.Y_mlp[channel.layer]
    return moments.embedding(channel.kind)[0]


@dataclass
class StructuralScores:
    """[reader role, writer] matrices; entries where the writer does not feed the reader are 0."""

    weight: Tensor
    strength: Tensor
    flow: Tensor


def _stages(layout: ChannelLayout) -> list[tuple[slice, int]]:
    """(reader rows, feeding writer columns) per reader stage: rows of one stage are consecutive, and
    the writers feeding them are the columns before ``writers_before(stage)``."""
    runs, start = [], 0
    for i in range(1, len(layout.readers) + 1):
        if i == len(layout.readers) or layout.readers[i].channel.stage != layout.readers[start].channel.stage:
            runs.append((slice(start, i), layout.writers_before(layout.readers[start].channel.stage)))
            start = i
    return runs


def structural_scores(
    compression: Compression, moments: Moments, layout: ChannelLayout, W_O: Tensor
) -> StructuralScores:
    """The three scores of every feeding (reader role, writer) pair, computed stage by stage in
    float32 (a reader stage against only the writers before it)."""
    readers, writers = layout.readers, layout.writers
    device = moments.qq.device
    f32: Placement = {"device": device, "dtype": torch.float32}
    write_bases = [compression.basis(c, "out").to(**f32) for c in writers]
    write_importance = [
        compression.singular_values(c, "out")[: b.shape[1]].to(**f32) for c, b in zip(writers, write_bases)
    ]
    read_bases = [compression.basis(r.channel, r.role).to(**f32) for r in readers]
    read_importance = [
        compression.singular_values(r.channel, r.role)[: b.shape[1]].to(**f32) for r, b in zip(readers, read_bases)
    ]
    weighted_write, write_owner = _stacked([b * s for b, s in zip(write_bases, write_importance)])
    heads = [j for j, c in enumerate(writers) if c.kind == "attn_head"]
    factors = head_output_factors(moments, W_O.to(device))
    head_factors, head_owner = _stacked([factors[writers[j].layer, writers[j].head].to(**f32) for j in heads])
    head_owner = torch.tensor(heads, device=device)[head_owner]  # owner as a writer column
    others = [j for j, c in enumerate(writers) if c.kind != "attn_head"]

    strength_squared = torch.zeros(len(readers), len(writers), **f32)
    written = torch.zeros_like(strength_squared)
    for rows, prefix in _stages(layout):
        count = rows.stop - rows.start
        read_matrix, read_owner = _stacked(read_bases[rows])
        weighted_read, _ = _stacked([b * t for b, t in zip(read_bases[rows], read_importance[rows])])
        if read_matrix.shape[1] == 0:
            continue
        fed = write_owner < prefix
        strength_squared[rows, :prefix] = _segment_square_sums(
            weighted_read.T @ weighted_write[:, fed], read_owner, write_owner[fed], count, prefix
        )
        fed = head_owner < prefix
        written[rows, :prefix] += _segment_square_sums(
            read_matrix.T @ head_factors[:, fed], read_owner, head_owner[fed], count, prefix
        )
        for j in (j for j in others if j < prefix):
            quadratic = ((output_moment(writers[j], moments).to(**f32) @ read_matrix) * read_matrix).sum(0)
            written[rows, j] = torch.zeros(count, **f32).index_add_(0, read_owner.to(device), quadratic)

    strength = strength_squared.double().sqrt()
    norms = torch.outer(
        torch.stack([t.norm() for t in read_importance]), torch.stack([s.norm() for s in write_importance])
    ).double()
    weight = torch.where(norms > 0, strength / norms.clamp_min(1e-300), torch.zeros_like(strength))
    mask = layout.feeds_mask.to(device, torch.float64)
    written = written.double() * mask
    total = written.sum(1, keepdim=True)
    flow = torch.where(total > 0, written / total.clamp_min(1e-300), torch.zeros_like(strength))
    return StructuralScores(weight * mask, strength * mask, flow * mask)
