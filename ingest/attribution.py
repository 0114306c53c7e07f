"""The attribution pass: one forward and backward over a slice scores every edge and channel on it.

For a writer A and a read role of a reader B (A before B), on each sequence of the slice:

    a(A -> B) = Σ_pos g_Bᵀ P_B (y_A - E y_A)

the first-order effect on the sequence's metric (true labels) of the part of A's output that B
reads, with P_B = C_B C_Bᵀ its read basis and g_B the gradient of the metric with respect to the
residual stream through B's role only (the role's input gradient pulled back through the
normalisation). ``attribution`` is the mean of |a| over sequences, ``attribution_signed`` of a.

Channel activity: the same with the gradient where the channel joins the stream and its whole
output, a(c) = Σ_pos g_cᵀ (y_c - E y_c): the first-order change of the metric from mean-ablated to
actual output (negative where the channel helps); ``attribution`` = mean |a(c)|,
``attribution_signed`` = mean a(c), and ``mean_norm`` the mean ||y_c|| per token (for the
reader-only unembedding, its input). The magnitude says a channel matters on the slice, the sign
whether it helps: on random tokens an induction head moves every sequence's loss, not in one
direction.

Memory does not grow with the batch: the per-sequence sums are accumulated over blocks of tokens
of at most :func:`block_tokens` (whole sequences, or position ranges of one long sequence), and a
block holds the centred outputs of every writer [tokens, writers, d] and the projected gradients
of one reader stage at a time; each reader stage is contracted only with the writers before it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .channels import HEAD_READ_ROLES, ChannelLayout
from .compression import Compression
from .fidelity import sequence_losses
from .model_adapter import LoadedModel, site
from .statistics import Moments, batches, mlp_input_residual

#: Bytes of block tensors (writer outputs and one stage's projected gradients) per device type.
BLOCK_BYTES = {"cpu": 256 * 2**20, "cuda": 2 * 2**30}


@dataclass
class SliceScores:
    """One slice: edge attributions [reader role, writer] and activity per channel."""

    n_sequences: int
    attribution: Tensor  # mean |.| over sequences
    attribution_signed: Tensor
    activity: dict[str, float]  # mean |.| over sequences
    activity_signed: dict[str, float]  # first-order L(actual) - L(mean-ablated); negative = helps
    mean_norm: dict[str, float]

    @staticmethod
    def combined(scores: list[SliceScores]) -> SliceScores:
        """The scores of the union of the slices (means weighted by sequence counts)."""
        n = sum(s.n_sequences for s in scores)

        def mean(values: list) -> object:
            return sum(v * s.n_sequences for v, s in zip(values, scores)) / n

        names = list(scores[0].activity)
        return SliceScores(
            n,
            mean([s.attribution for s in scores]),
            mean([s.attribution_signed for s in scores]),
            {k: mean([s.activity[k] for s in scores]) for k in names},
            {k: mean([s.activity_signed[k] for s in scores]) for k in names},
            {k: mean([s.mean_norm[k] for s in scores]) for k in names},
        )


def pull_back(g: Tensor, x: Tensor, residual: Tensor, normalization: str) -> Tensor:
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


def token_bytes(layout: ChannelLayout) -> int:
    """Bytes a block holds per token: every writer's output and one stage's projected gradients."""
    return 4 * layout.spec.d_model * (len(layout.writers) + 3 * layout.spec.n_heads + 1)


def block_tokens(layout: ChannelLayout, device: torch.device) -> int:
    """Tokens per block so that the block tensors fit :data:`BLOCK_BYTES`."""
    return max(1, BLOCK_BYTES["cuda" if device.type == "cuda" else "cpu"] // token_bytes(layout))


def _blocks(n_seq: int, length: int, tokens: int) -> Iterator[tuple[slice, slice]]:
    """(sequences, positions) rectangles of at most ``tokens`` tokens, in order: whole sequences
    when one fits, else position ranges of one sequence."""
    if length <= tokens:
        step = tokens // length
        for start in range(0, n_seq, step):
            yield slice(start, min(start + step, n_seq)), slice(0, length)
    else:
        for seq in range(n_seq):
            for start in range(0, length, tokens):
                yield slice(seq, seq + 1), slice(start, min(start + tokens, length))


class _Readers:
    """The read bases of every reader role, padded for batched projection, on the model's device."""

    def __init__(self, layout: ChannelLayout, compression: Compression, device: torch.device):
        spec, f32 = layout.spec, {"device": device, "dtype": torch.float32}
        self.heads = {}
        for role in HEAD_READ_ROLES:  # [L, H, d, kmax]
            bases = [[compression.basis(c, role) for c in layout.heads(l)] for l in range(spec.n_layers)]
            kmax = max(1, max(b.shape[1] for row in bases for b in row))
            padded = torch.zeros(spec.n_layers, spec.n_heads, spec.d_model, kmax, **f32)
            for l, row in enumerate(bases):
                for h, b in enumerate(row):
                    padded[l, h, :, : b.shape[1]] = b.to(**f32)
            self.heads[role] = padded
        self.mlps = [compression.basis(layout.mlp(l), "in").to(**f32) for l in range(spec.n_layers)]
        self.unembed = compression.basis(layout.unembed, "in").to(**f32)


def slice_scores(
    model: LoadedModel,
    compression: Compression,
    moments: Moments,
    layout: ChannelLayout,
    tokens: Tensor,
    batch_tokens: int = 4096,
    progress: bool = True,
    desc: str = "attribution",
    edges: bool = True,
) -> SliceScores:
    """Stream ``tokens`` [n, p] once and score every edge (unless ``edges`` is False) and channel."""
    spec, w, device = model.spec, model.weights, model.device
    L = spec.n_layers
    f32 = {"device": device, "dtype": torch.float32}
    readers = _Readers(layout, compression, device)
    W_reads = {"q": w.W_Q.to(**f32), "k": w.W_K.to(**f32), "v": w.W_V.to(**f32)}
    W_O = w.W_O.to(**f32)
    z_mean, mlp_mean, final_mean = (
        moments.z_mean.to(**f32),
        moments.y_mlp_mean.to(**f32),
        moments.final_mean.to(**f32),
    )
    writer_means = _writer_means(layout, moments, W_O, f32)
    embeds = [
        (layout.writer_column(layout.by_name[name]), name, mean.to(**f32))
        for name, mean in (("embed", moments.embed_mean), ("pos_embed", moments.pos_mean))
        if name in layout.by_name
    ]
    n_writers, n_readers = len(layout.writers), len(layout.readers)
    head_rows = [layout.head_reader_rows(l).flatten().to(device) for l in range(L)]  # [3H]: q, k, v per head
    head_columns = [layout.head_writer_columns(l).to(device) for l in range(L)]
    mlp_rows = [layout.reader_row(layout.mlp(l), "in") for l in range(L)]
    mlp_columns = [layout.writer_column(layout.mlp(l)) for l in range(L)]
    # The writers feeding a reader stage are a prefix of the columns (channel order is stage order).
    head_prefix = [layout.writers_before(layout.heads(l)[0].stage) for l in range(L)]
    mlp_prefix = [layout.writers_before(layout.mlp(l).stage) for l in range(L)]
    unembed_row = layout.reader_row(layout.unembed, "in")

    mlp_reads = mlp_input_residual(spec)
    grad_sites = [site(r, l) for l in range(L) for r in ("q", "k", "v", "mlp_x", "attn_out", "mlp_out")]
    grad_sites += [site("final_x"), site("embed")]
    value_sites = [site(s, l) for l in range(L) for s in dict.fromkeys(("z", "attn_x", "resid_pre", mlp_reads))]
    value_sites += [site("pos_embed"), site("resid_final")]

    abs_sum = torch.zeros(n_readers, n_writers, dtype=torch.float64, device=device)
    signed_sum = torch.zeros_like(abs_sum)
    activity = torch.zeros(n_writers + 1, dtype=torch.float64, device=device)  # writers, then the unembedding
    activity_signed = torch.zeros_like(activity)
    norm_sum = torch.zeros_like(activity)
    per_block = block_tokens(layout, device)
    n_seq = 0

    bar = tqdm(total=tokens.numel(), desc=desc, unit="tok", disable=not progress, leave=False)
    for batch in batches(tokens, batch_tokens):
        logits, acts = model.run_capturing(batch, grad_sites + value_sites)
        metric = sequence_losses(logits, batch).sum()
        grads = dict(zip(grad_sites, torch.autograd.grad(metric, [acts[s] for s in grad_sites])))
        del logits, metric
        with torch.no_grad():
            b, p = batch.shape
            edge_sums = torch.zeros(b, n_readers, n_writers, **f32)  # per sequence, summed over positions
            effects = torch.zeros(b, n_writers + 1, **f32)
            for rows, positions in _blocks(b, p, per_block):
                act, grad = _Block(acts, rows, positions), _Block(grads, rows, positions)

                # Every writer's output against its mean [c, t, W, d], in writer columns.
                embed_grad = grad(site("embed"))
                c, t, d = embed_grad.shape
                centred = torch.empty(c, t, n_writers, d, **f32)
                for column, name, mean in embeds:
                    centred[:, :, column] = act(site(name)) - mean
                    effects[rows, column] += (embed_grad * centred[:, :, column]).sum((1, 2))
                for l in range(L):
                    heads, mlp = head_columns[l], mlp_columns[l]
                    centred[:, :, heads] = torch.einsum("bphe,hed->bphd", act(site("z", l)) - z_mean[l], W_O[l])
                    centred[:, :, mlp] = act(site("mlp_out", l)) - mlp_mean[l]
                    effects[rows, heads] += torch.einsum(
                        "bpd,bphd->bh", grad(site("attn_out", l)), centred[:, :, heads]
                    )
                    effects[rows, mlp] += (grad(site("mlp_out", l)) * centred[:, :, mlp]).sum((1, 2))
                    norm_sum[heads] += (centred[:, :, heads] + writer_means[heads]).norm(dim=-1).sum((0, 1)).double()
                    norm_sum[mlp] += (centred[:, :, mlp] + writer_means[mlp]).norm(dim=-1).sum().double()
                for column, _, _ in embeds:
                    norm_sum[column] += (centred[:, :, column] + writer_means[column]).norm(dim=-1).sum().double()
                x, x_grad = act(site("final_x")), grad(site("final_x"))
                effects[rows, n_writers] += (x_grad * (x - final_mean)).sum((1, 2))
                norm_sum[n_writers] += x.norm(dim=-1).sum().double()
                if not edges:
                    continue

                # Each reader stage's projected gradients P_B g_B against the writers before it.
                for l in range(L):
                    x_attn, r_attn = act(site("attn_x", l)), act(site("resid_pre", l))
                    projected = []
                    for role in HEAD_READ_ROLES:
                        g_x = torch.einsum("bphe,hde->bphd", grad(site(role, l)), W_reads[role][l])
                        g_r = pull_back(g_x, x_attn, r_attn, spec.normalization)
                        basis = readers.heads[role][l]
                        projected.append(
                            torch.einsum("bphk,hdk->bphd", torch.einsum("bphd,hdk->bphk", g_r, basis), basis)
                        )
                    stacked = torch.stack(projected, dim=3).flatten(2, 3)  # [c, t, H*3, d]: q, k, v per head
                    edge_sums[rows, head_rows[l], : head_prefix[l]] += torch.einsum(
                        "bprd,bpwd->brw", stacked, centred[:, :, : head_prefix[l]]
                    )
                    g_r = pull_back(
                        grad(site("mlp_x", l)), act(site("mlp_x", l)), act(site(mlp_reads, l)), spec.normalization
                    )
                    basis = readers.mlps[l]
                    edge_sums[rows, mlp_rows[l], : mlp_prefix[l]] += torch.einsum(
                        "bpd,bpwd->bw", (g_r @ basis) @ basis.T, centred[:, :, : mlp_prefix[l]]
                    )
                g_r = pull_back(x_grad, x, act(site("resid_final")), spec.normalization)
                basis = readers.unembed
                edge_sums[rows, unembed_row] += torch.einsum("bpd,bpwd->bw", (g_r @ basis) @ basis.T, centred)
            abs_sum += edge_sums.double().abs().sum(0)
            signed_sum += edge_sums.double().sum(0)
            activity += effects.double().abs().sum(0)
            activity_signed += effects.double().sum(0)
        n_seq += batch.shape[0]
        bar.update(batch.numel())
    bar.close()
    mask = layout.feeds_mask.to(device, torch.float64)
    order = [*layout.writers, layout.unembed]
    return SliceScores(
        n_sequences=n_seq,
        attribution=abs_sum / n_seq * mask,
        attribution_signed=signed_sum / n_seq * mask,
        activity={c.name: float(a) / n_seq for c, a in zip(order, activity)},
        activity_signed={c.name: float(a) / n_seq for c, a in zip(order, activity_signed)},
        mean_norm={c.name: float(n) / tokens.numel() for c, n in zip(order, norm_sum)},
    )


class _Block:
    """``block(name)``: the captured tensor ``name`` [b, p, ...] cut to a block of rows and positions
    (a tensor captured with batch size 1, such as the position embeddings, keeps it)."""

    def __init__(self, captured: dict[str, Tensor], rows: slice, positions: slice):
        self.captured, self.rows, self.positions = captured, rows, positions

    def __call__(self, name: str) -> Tensor:
        value = self.captured[name]
        return value[:, self.positions] if value.shape[0] == 1 else value[self.rows, self.positions]


def _writer_means(layout: ChannelLayout, moments: Moments, W_O: Tensor, f32: dict) -> Tensor:
    """E[y] of every writer [W, d] (to turn centred outputs back into outputs for their norms)."""
    means = torch.zeros(len(layout.writers), layout.spec.d_model, **f32)
    for j, c in enumerate(layout.writers):
        if c.kind == "attn_head":
            means[j] = moments.z_mean[c.layer, c.head].to(**f32) @ W_O[c.layer, c.head]
        elif c.kind == "mlp":
            means[j] = moments.y_mlp_mean[c.layer].to(**f32)
        else:
            means[j] = (moments.embed_mean if c.kind == "embed" else moments.pos_mean).to(**f32)
    return means
