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
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .channels import HEAD_READ_ROLES, ChannelLayout
from .compression import Compression, psd_roots
from .data import DataSlice
from .examples import TopTokens
from .metrics import sequence_losses
from .model_adapter import LoadedModel, Placement, Weights, layer_sites, site
from .statistics import Moments, mlp_input_residual

#: Bytes of block tensors (writer outputs and one stage's projected gradients) per device type.
BLOCK_BYTES = {"cpu": 256 * 2**20, "cuda": 2 * 2**30}


@dataclass
class SliceScores:
    """One slice: edge attributions [reader role, writer] and activity per channel."""

    n_sequences: int
    n_tokens: int
    attribution: Tensor  # mean |.| over sequences
    attribution_signed: Tensor
    activity: dict[str, float]  # mean |.| over sequences
    activity_signed: dict[str, float]  # first-order L(actual) - L(mean-ablated); negative = helps
    mean_norm: dict[str, float]  # per real token
    examples: dict[str, list[tuple]] = field(default_factory=dict)  # ranking -> TopTokens.rows (named slices only)
    sequence_effects: Tensor | None = None  # [n_sequences, writers + 1]: signed first-order effect per sequence

    @staticmethod
    def combined(scores: list[SliceScores]) -> SliceScores:
        """The scores of the union of the slices (per-sequence means weighted by sequences, the
        per-token norms by tokens)."""
        n, tokens = sum(s.n_sequences for s in scores), sum(s.n_tokens for s in scores)

        def mean(values: list, per_token: bool = False) -> Any:  # a Tensor or a float, as the values
            weights = [s.n_tokens / tokens if per_token else s.n_sequences / n for s in scores]
            return sum(v * w for v, w in zip(values, weights))

        names = list(scores[0].activity)
        return SliceScores(
            n,
            tokens,
            mean([s.attribution for s in scores]),
            mean([s.attribution_signed for s in scores]),
            {k: mean([s.activity[k] for s in scores]) for k in names},
            {k: mean([s.activity_signed[k] for s in scores]) for k in names},
            {k: mean([s.mean_norm[k] for s in scores], per_token=True) for k in names},
        )


def normalization_scale(x: Tensor, residual: Tensor, normalization: str) -> Tensor:
    """σ per token [...] with x̂ = (r - [LN] mean(r)) / σ: ||r_c|| / ||x̂|| (1 without normalisation)."""
    if normalization == "none":
        return torch.ones_like(x[..., 0])
    centred = residual - residual.mean(-1, keepdim=True) if normalization == "LN" else residual
    return centred.norm(dim=-1) / x.norm(dim=-1).clamp_min(1e-12)


def pull_back(g: Tensor, x: Tensor, residual: Tensor, normalization: str) -> Tensor:
    """dL/dr from dL/dx̂ through x̂ = norm(r) (no affine: it is folded).

    LN: (g - mean(g) - x̂ (x̂·g)/d) / σ; RMS: (g - x̂ (x̂·g)/d) / σ; none: g.
    """
    if normalization == "none":
        return g
    projected = g - x * (x * g).sum(-1, keepdim=True) / x.shape[-1]
    if normalization == "LN":
        projected = projected - g.mean(-1, keepdim=True)
    return projected / normalization_scale(x, residual, normalization)[..., None]


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
    """The read bases of every reader role on the model's device, laid out for batched projection.

    A head role's basis C [d, k] lies in the span of its weights W [d, d_head] (its functionals
    are W A^{-1/2} U), so C = W M with M = W⁺ C, and the role's projected gradient needs no
    d-space work but the final expansion. With e = dL/dq (the role's activation, q = x̂ W + b),
    g = W e and the pull-back through the normalisation (:func:`pull_back`),

        Cᵀ pull_back(g) = (CᵀW e - Mᵀ(q - b) (q - b)·e / d - [LN] (w̄·e) Cᵀ1) / σ,   w̄ = 1ᵀW / d,

    every term in d_head coordinates. Heads are laid out [L, 3H, k_max, ...] in the reader rows'
    order (q, k, v per head), padded with zero columns to the largest rank of a layer.
    """

    def __init__(self, layout: ChannelLayout, compression: Compression, weights: Weights, device: torch.device):
        spec = layout.spec
        f32: Placement = {"device": device, "dtype": torch.float32}
        f64: Placement = {"device": device, "dtype": torch.float64}
        L, H, d = spec.n_layers, spec.n_heads, spec.d_model
        roles = {"q": (weights.W_Q, weights.b_Q), "k": (weights.W_K, weights.b_K), "v": (weights.W_V, weights.b_V)}
        W = torch.stack([roles[r][0] for r in HEAD_READ_ROLES], dim=2).flatten(1, 2).to(**f64)  # [L, 3H, d, dh]
        self.bias = torch.stack([roles[r][1] for r in HEAD_READ_ROLES], dim=2).flatten(1, 2).to(**f32)
        bases = [[compression.basis(c, role) for c in layout.heads(l) for role in HEAD_READ_ROLES] for l in range(L)]
        kmax = max(1, max(b.shape[1] for row in bases for b in row))
        C = torch.zeros(L, 3 * H, d, kmax, **f64)
        for l, row in enumerate(bases):
            for r, b in enumerate(row):
                C[l, r, :, : b.shape[1]] = b
        _, gram_inverse_root = psd_roots(W.mT @ W)
        M = gram_inverse_root @ gram_inverse_root @ W.mT @ C  # W⁺ C [L, 3H, dh, k]
        C = W @ M  # the basis itself where it lies in the weights' span; a direction outside it reads nothing
        self.expand = C.mT.contiguous().to(**f32)  # Cᵀ [L, 3H, k, d]
        self.from_grad = (C.mT @ W).to(**f32)  # CᵀW [L, 3H, k, dh]
        self.from_input = M.mT.contiguous().to(**f32)  # Mᵀ [L, 3H, k, dh]
        self.from_ones = C.sum(2).to(**f32)  # Cᵀ1 [L, 3H, k]
        self.weight_mean = W.mean(2).to(**f32)  # w̄ [L, 3H, dh]
        self.mlps = [compression.basis(mlp, "in").to(**f32) for mlp in layout.mlps]  # by layer, or none
        self.unembed = compression.basis(layout.unembed, "in").to(**f32)

    def head_gradients(self, layer: int, grads: Tensor, values: Tensor, sigma: Tensor, normalization: str) -> Tensor:
        """P_B dL/dr for every head role of ``layer`` [c, t, 3H, d], from the roles' gradients and
        values [c, t, 3H, d_head] and σ = ||r_c|| / ||x̂|| [c, t]."""
        coordinates = torch.einsum("btre,rke->btrk", grads, self.from_grad[layer])
        if normalization != "none":
            inputs = values - self.bias[layer]
            along_input = (inputs * grads).sum(-1, keepdim=True) / self.expand.shape[-1]
            coordinates -= torch.einsum("btre,rke->btrk", inputs, self.from_input[layer]) * along_input
            if normalization == "LN":
                coordinates -= (grads * self.weight_mean[layer]).sum(-1, keepdim=True) * self.from_ones[layer]
            coordinates /= sigma[..., None, None]
        return torch.einsum("btrk,rkd->btrd", coordinates, self.expand[layer])


def slice_scores(
    model: LoadedModel,
    compression: Compression,
    moments: Moments,
    layout: ChannelLayout,
    data: DataSlice,
    batch_tokens: int = 4096,
    progress: bool = True,
    desc: str = "attribution",
    edges: bool = True,
    examples: int = 0,
) -> SliceScores:
    """Stream the prompts of ``data`` once and score every edge (unless ``edges`` is False) and channel
    on its metric (padded positions carry no gradient, and are left out of the norms), and keep the
    top ``examples`` tokens per channel of each ranking of :mod:`.examples`."""
    spec, device = model.spec, model.device
    L = spec.n_layers
    f32: Placement = {"device": device, "dtype": torch.float32}
    readers = _Readers(layout, compression, model.weights, device)
    channel_effects = _ChannelEffects(layout, moments, model.weights.W_O.to(**f32), f32)
    edge_contraction = _EdgeContraction(layout, readers)
    n_writers, n_readers = len(layout.writers), len(layout.readers)
    mlp_reads = mlp_input_residual(spec)
    grad_sites = [*layer_sites(spec, "q", "k", "v", "mlp_x", "attn_out", "mlp_out"), site("final_x"), site("embed")]
    value_sites = layer_sites(spec, "z", "attn_x", "resid_pre", mlp_reads)
    value_sites += [site("pos_embed"), site("resid_final")]

    abs_sum = torch.zeros(n_readers, n_writers, dtype=torch.float64, device=device)
    signed_sum = torch.zeros_like(abs_sum)
    activity = torch.zeros(n_writers + 1, dtype=torch.float64, device=device)  # writers, then the unembedding
    activity_signed = torch.zeros_like(activity)
    norm_sum = torch.zeros_like(activity)
    per_block = block_tokens(layout, device)
    n_seq, sequence_effects = 0, []
    effect_order = [c.name for c in (*layout.writers, layout.unembed)]
    input_order = [c.name for c in layout.channels if c.read_roles]  # heads by their q role, MLPs, unembedding
    input_column = {name: i for i, name in enumerate(input_order)}
    input_columns = (
        [slice(input_column[layout.heads(l)[0].name], input_column[layout.heads(l)[-1].name] + 1) for l in range(L)],
        [input_column[mlp.name] for mlp in layout.mlps],
    )
    top = {
        "effect": TopTokens(len(effect_order), examples, device),
        "input": TopTokens(len(input_order), examples, device),
    }

    bar = tqdm(total=data.n_tokens, desc=desc, unit="tok", disable=not progress, leave=False)
    for batch in data.batches(batch_tokens):
        logits, acts = model.run_capturing(batch.tokens, grad_sites + value_sites, attention_mask=batch.mask)
        metric = sequence_losses(logits, batch.tokens, batch.targets()).sum()
        grads = dict(zip(grad_sites, torch.autograd.grad(metric, [acts[s] for s in grad_sites])))
        del logits, metric
        with torch.no_grad():
            b, p = batch.tokens.shape
            real = batch.mask.to(device=device, dtype=torch.float32)
            edge_sums = torch.zeros(b, n_readers, n_writers, **f32)  # per sequence, summed over positions
            effects = torch.zeros(b, n_writers + 1, **f32)
            for rows, positions in _blocks(b, p, per_block):
                act, grad = _Block(acts, rows, positions), _Block(grads, rows, positions)
                keep = real[rows, positions]  # [c, t]: real tokens
                centred, token_effects = channel_effects(act, grad, keep, norm_sum)
                effects[rows] += token_effects.sum(1)
                if examples:
                    where = (
                        torch.arange(n_seq + rows.start, n_seq + rows.stop, device=device),
                        torch.arange(positions.start, positions.stop, device=device),
                        keep.bool(),
                    )
                    top["effect"].update(token_effects.abs(), token_effects, *where)
                    norms = _input_norms(readers, act, *input_columns, len(input_order))
                    top["input"].update(norms, norms, *where)
                if edges:
                    edge_contraction(act, grad, centred, edge_sums, rows)
            abs_sum += edge_sums.double().abs().sum(0)
            signed_sum += edge_sums.double().sum(0)
            activity += effects.double().abs().sum(0)
            sequence_effects.append(effects.cpu())
            activity_signed += effects.double().sum(0)
        n_seq += batch.n_sequences
        bar.update(batch.n_tokens)
    bar.close()
    mask = layout.feeds_mask.to(device, torch.float64)
    order = [*layout.writers, layout.unembed]
    kept = {"effect": top["effect"].rows(effect_order), "input": top["input"].rows(input_order)} if examples else {}
    return SliceScores(
        n_sequences=n_seq,
        n_tokens=data.n_tokens,
        attribution=abs_sum / n_seq * mask,
        attribution_signed=signed_sum / n_seq * mask,
        activity={c.name: float(a) / n_seq for c, a in zip(order, activity)},
        activity_signed={c.name: float(a) / n_seq for c, a in zip(order, activity_signed)},
        mean_norm={c.name: float(n) / data.n_tokens for c, n in zip(order, norm_sum)},
        examples=kept,
        sequence_effects=torch.cat(sequence_effects),
    )


def _input_norms(readers: _Readers, act: _Block, head_columns: list[slice], mlp_columns: list[int], n: int) -> Tensor:
    """||Cᵀ x̂|| per token [c, t, n channels with a read role, the unembedding last]: heads by their q
    role (Cᵀ x̂ = Mᵀ(q - b)), MLPs and the unembedding by their in role."""
    x = act(site("final_x"))
    norms = torch.empty(*x.shape[:2], n, device=x.device, dtype=x.dtype)
    q_rows = slice(0, None, len(HEAD_READ_ROLES))  # the q rows of [q, k, v per head]
    for l, heads in enumerate(head_columns):
        inputs = act(site("q", l)) - readers.bias[l, q_rows]
        norms[:, :, heads] = torch.einsum("bthe,hke->bthk", inputs, readers.from_input[l, q_rows]).norm(dim=-1)
    for l, (mlp, basis) in enumerate(zip(mlp_columns, readers.mlps)):
        norms[:, :, mlp] = (act(site("mlp_x", l)) @ basis).norm(dim=-1)
    norms[:, :, -1] = (x @ readers.unembed).norm(dim=-1)
    return norms


def _per_sequence(gradients: Tensor, outputs: Tensor) -> Tensor:
    """Σ_pos gradients[b, pos, r] · outputs[b, pos, w] -> [b, r, w], for [b, t, R, d] and [b, t, W, d].

    One small GEMM per token (batched over b x t, then summed over positions): a single GEMM per
    sequence would contract t x d with only R x W outputs, a shape that leaves most of a GPU idle.
    """
    b, t, r, d = gradients.shape
    w = outputs.shape[2]
    per_token = torch.bmm(gradients.reshape(b * t, r, d), outputs.reshape(b * t, w, d).transpose(1, 2))
    return per_token.view(b, t, r, w).sum(1)


class _Block:
    """``block(name)``: the captured tensor ``name`` [b, p, ...] cut to a block of rows and positions
    (a tensor captured with batch size 1, such as the position embeddings, keeps it)."""

    def __init__(self, captured: dict[str, Tensor], rows: slice, positions: slice):
        self.captured, self.rows, self.positions = captured, rows, positions

    def __call__(self, name: str) -> Tensor:
        value = self.captured[name]
        return value[:, self.positions] if value.shape[0] == 1 else value[self.rows, self.positions]


class _ChannelEffects:
    """Per block of tokens: every writer's output against its mean, y_c - E y_c [c, t, W, d] (writer
    columns), and every channel's first-order effect per token, g_cᵀ(y_c - E y_c) [c, t, W + 1] (the
    unembedding last, on its input); adds each channel's output norm over real tokens to ``norm_sum``."""

    def __init__(self, layout: ChannelLayout, moments: Moments, W_O: Tensor, f32: Placement):
        L = layout.spec.n_layers
        self.n_writers, self.W_O, self.f32 = len(layout.writers), W_O, f32
        self.z_mean, self.mlp_mean, self.final_mean = (
            moments.z_mean.to(**f32),
            moments.y_mlp_mean.to(**f32),
            moments.final_mean.to(**f32),
        )
        self.writer_means = _writer_means(layout, moments, W_O, f32)
        self.embeds = [
            (layout.writer_column(layout.by_name[name]), name, moments.embedding(name)[1].to(**f32))
            for name in ("embed", "pos_embed")
            if name in layout.by_name
        ]
        self.head_columns = [layout.head_writer_columns(l) for l in range(L)]
        self.mlp_columns = [layout.writer_column(mlp) for mlp in layout.mlps]

    def __call__(self, act: _Block, grad: _Block, keep: Tensor, norm_sum: Tensor) -> tuple[Tensor, Tensor]:
        """(centred outputs, per-token effects) of the block; ``keep`` [c, t] marks its real tokens."""
        n_writers, writer_means = self.n_writers, self.writer_means
        embed_grad = grad(site("embed"))
        c, t, d = embed_grad.shape
        centred = torch.empty(c, t, n_writers, d, **self.f32)
        token_effects = torch.empty(c, t, n_writers + 1, **self.f32)
        for column, name, mean in self.embeds:
            centred[:, :, column] = act(site(name)) - mean
            token_effects[:, :, column] = (embed_grad * centred[:, :, column]).sum(-1)
        for l, heads in enumerate(self.head_columns):
            centred[:, :, heads] = torch.einsum("bphe,hed->bphd", act(site("z", l)) - self.z_mean[l], self.W_O[l])
            token_effects[:, :, heads] = (grad(site("attn_out", l)).unsqueeze(2) * centred[:, :, heads]).sum(-1)
            norm_sum[heads] += (
                ((centred[:, :, heads] + writer_means[heads]).norm(dim=-1) * keep[..., None]).sum((0, 1)).double()
            )
        for l, mlp in enumerate(self.mlp_columns):
            centred[:, :, mlp] = act(site("mlp_out", l)) - self.mlp_mean[l]
            token_effects[:, :, mlp] = (grad(site("mlp_out", l)) * centred[:, :, mlp]).sum(-1)
            norm_sum[mlp] += ((centred[:, :, mlp] + writer_means[mlp]).norm(dim=-1) * keep).sum().double()
        for column, _, _ in self.embeds:
            norm_sum[column] += ((centred[:, :, column] + writer_means[column]).norm(dim=-1) * keep).sum().double()
        x, x_grad = act(site("final_x")), grad(site("final_x"))
        token_effects[:, :, n_writers] = (x_grad * (x - self.final_mean)).sum(-1)
        norm_sum[n_writers] += (x.norm(dim=-1) * keep).sum().double()
        return centred, token_effects


class _EdgeContraction:
    """Per block of tokens: Σ_pos of each reader stage's projected gradients P_B g_B against the centred
    outputs of the writers before it (a prefix of the writer columns: channel order is stage order),
    added to ``edge_sums[rows]`` [c, R, W]."""

    def __init__(self, layout: ChannelLayout, readers: _Readers):
        spec = layout.spec
        self.readers, self.normalization, self.mlp_reads = readers, spec.normalization, mlp_input_residual(spec)
        self.head_rows = [layout.head_reader_rows(l) for l in range(spec.n_layers)]  # q, k, v per head
        self.mlp_rows = [layout.reader_row(mlp, "in") for mlp in layout.mlps]  # by layer, or none
        self.head_prefix = [layout.writers_before(layout.heads(l)[0].stage) for l in range(spec.n_layers)]
        self.mlp_prefix = [layout.writers_before(mlp.stage) for mlp in layout.mlps]
        self.unembed_row = layout.reader_row(layout.unembed, "in")

    def __call__(self, act: _Block, grad: _Block, centred: Tensor, edge_sums: Tensor, rows: slice) -> None:
        readers, normalization = self.readers, self.normalization
        for l, (head_rows, prefix) in enumerate(zip(self.head_rows, self.head_prefix)):
            head_grads = torch.stack([grad(site(r, l)) for r in HEAD_READ_ROLES], dim=3).flatten(2, 3)
            head_values = torch.stack([act(site(r, l)) for r in HEAD_READ_ROLES], dim=3).flatten(2, 3)
            sigma = normalization_scale(act(site("attn_x", l)), act(site("resid_pre", l)), normalization)
            stacked = readers.head_gradients(l, head_grads, head_values, sigma, normalization)
            edge_sums[rows, head_rows, :prefix] += _per_sequence(stacked, centred[:, :, :prefix])
        for l, basis in enumerate(readers.mlps):
            g_r = pull_back(grad(site("mlp_x", l)), act(site("mlp_x", l)), act(site(self.mlp_reads, l)), normalization)
            projected_mlp = ((g_r @ basis) @ basis.T).unsqueeze(2)
            edge_sums[rows, self.mlp_rows[l], : self.mlp_prefix[l]] += _per_sequence(
                projected_mlp, centred[:, :, : self.mlp_prefix[l]]
            ).squeeze(1)
        x = act(site("final_x"))
        g_r = pull_back(grad(site("final_x")), x, act(site("resid_final")), normalization)
        projected_final = ((g_r @ readers.unembed) @ readers.unembed.T).unsqueeze(2)
        edge_sums[rows, self.unembed_row] += _per_sequence(projected_final, centred).squeeze(1)


def _writer_means(layout: ChannelLayout, moments: Moments, W_O: Tensor, f32: Placement) -> Tensor:
    """E[y] of every writer [W, d] (to turn centred outputs back into outputs for their norms)."""
    means = torch.zeros(len(layout.writers), layout.spec.d_model, **f32)
    for j, c in enumerate(layout.writers):
        if c.kind == "attn_head":
            means[j] = moments.z_mean[c.layer, c.head].to(**f32) @ W_O[c.layer, c.head]
        elif c.kind == "mlp":
            means[j] = moments.y_mlp_mean[c.layer].to(**f32)
        else:
            means[j] = moments.embedding(c.kind)[1].to(**f32)
    return means
