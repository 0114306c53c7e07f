"""Fidelity: how much of the model's loss its compressed channels keep, on held-out tokens.

``loss recovered = 1 - (L_compressed - L_clean) / (L_ablated - L_clean)``, with L the mean
next-token cross-entropy, "compressed" the channels replaced by their truncated maps (see
compression.py) and "ablated" the same channels replaced by their mean output (for the
unembedding: its mean input). Per channel, one channel at a time; for the model, all at once.

The default rank fraction is not a habit but a search: the smallest fraction of a grid whose
all-at-once compression recovers at least the target (0.95) of the loss.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from .channels import Channel
from .compression import Compression, Decomposition
from .model_adapter import LoadedModel, site
from .statistics import Moments, batches

FRACTION_GRID = (0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999, 0.9999, 1.0)


def sequence_losses(logits: Tensor, tokens: Tensor) -> Tensor:
    """Mean next-token cross-entropy of each sequence [batch]."""
    predicted = logits[:, :-1].float()
    targets = tokens[:, 1:].to(logits.device)
    per_token = torch.nn.functional.cross_entropy(
        predicted.reshape(-1, predicted.shape[-1]), targets.reshape(-1), reduction="none"
    )
    return per_token.view(targets.shape).mean(-1)


def mean_loss(model: LoadedModel, tokens: Tensor, hooks=(), batch_tokens: int = 4096) -> float:
    total = torch.zeros((), dtype=torch.float64, device=model.device)
    with torch.no_grad():
        for batch in batches(tokens, batch_tokens):
            total += sequence_losses(model.run(batch, hooks), batch).double().sum()
    return float(total) / tokens.shape[0]


def _head_projection(projector: Tensor, bias: Tensor):
    def hook(activation: Tensor, hook) -> Tensor:  # [b, p, h, d_head]
        return torch.einsum("bphe,hef->bphf", activation - bias, projector) + bias

    return hook


def _projection(projector: Tensor):
    def hook(activation: Tensor, hook) -> Tensor:
        return activation @ projector

    return hook


def _replace(mean: Tensor, mask: Tensor | None = None):
    def hook(activation: Tensor, hook) -> Tensor:
        if mask is None:
            return mean.expand_as(activation).clone()
        return torch.where(mask, mean, activation)

    return hook


def intervention_hooks(
    model: LoadedModel,
    compression: Compression,
    moments: Moments,
    compress: Iterable[Channel] = (),
    ablate: Iterable[Channel] = (),
) -> list:
    """Hooks that replace ``compress`` by their truncated maps and ``ablate`` by their means."""
    spec, w = model.spec, model.weights
    compress, ablate = set(compress), set(ablate)
    assert not compress & ablate, "a channel is either compressed or ablated"

    def f32(t: Tensor) -> Tensor:
        return t.to(device=model.device, dtype=torch.float32)

    hooks = []
    for l in range(spec.n_layers):
        heads = torch.tensor(
            [
                any(c.kind == "attn_head" and c.layer == l and c.head == h for c in compress)
                for h in range(spec.n_heads)
            ],
            device=model.device,
        )
        if heads.any():
            identity = torch.eye(spec.d_head, device=model.device)
            for role, group, bias in (("q", "qk", w.b_Q), ("k", "qk", w.b_K), ("v", "ov", w.b_V)):
                projector = torch.where(heads[:, None, None], f32(compression.projection(group, role)[l]), identity)
                hooks.append((site(role, l), _head_projection(projector, f32(bias[l]))))
        ablated_heads = torch.tensor(
            [any(c.kind == "attn_head" and c.layer == l and c.head == h for c in ablate) for h in range(spec.n_heads)],
            device=model.device,
        )
        if ablated_heads.any():
            hooks.append((site("z", l), _replace(f32(moments.z_mean[l]), ablated_heads[:, None])))
        mlp = next((c for c in compress | ablate if c.kind == "mlp" and c.layer == l), None)
        if mlp in compress:
            hooks.append((site("mlp_x", l), _projection(f32(compression.projection("mlp_in", "in")[l]))))
            hooks.append((site("mlp_out", l), _projection(f32(compression.projection("mlp_out", "out")[l]))))
        elif mlp in ablate:
            hooks.append((site("mlp_out", l), _replace(f32(moments.y_mlp_mean[l]))))
    singletons = {
        "embed": ("embed", "out", moments.embed_mean),
        "pos_embed": ("pos_embed", "out", moments.pos_mean),
        "unembed": ("final_x", "in", moments.final_mean),
    }
    for channel in compress | ablate:
        if channel.kind in singletons:
            hook_site, role, mean = singletons[channel.kind]
            if channel in compress:
                hooks.append((site(hook_site), _projection(f32(compression.projection(channel.kind, role)))))
            else:
                hooks.append((site(hook_site), _replace(f32(mean))))
    return hooks


def loss_recovered(clean: float, compressed: float, ablated: float) -> float | None:
    """None when ablating changes the loss by less than 1e-6: the ratio would be noise."""
    if abs(ablated - clean) < 1e-6:
        return None
    return 1.0 - (compressed - clean) / (ablated - clean)


@dataclass
class FidelityReport:
    fraction: float
    target: float | None
    loss_clean: float
    loss_compressed: float
    loss_ablated: float
    loss_recovered: float | None
    mean_ranks: dict[str, float]
    tried: list[tuple[float, float | None]]

    def as_dict(self) -> dict:
        return dict(vars(self))


def mean_ranks(compression: Compression) -> dict[str, float]:
    return {group: float(ranks.double().mean()) for group, ranks in compression.ranks.items()}


def choose_fraction(
    model: LoadedModel,
    decompositions: dict[str, Decomposition],
    moments: Moments,
    channels: list[Channel],
    heldout: Tensor,
    target: float | None,
    fraction: float | None,
    max_rank: int | None,
    floor: float,
    batch_tokens: int = 4096,
) -> tuple[Compression, FidelityReport]:
    """The compression at a fixed ``fraction``, or at the smallest grid fraction reaching ``target``.

    Recovery grows with the fraction, so the grid is bisected: about four evaluations.
    """
    loss_clean = mean_loss(model, heldout, (), batch_tokens)
    ablate_all = intervention_hooks(model, Compression(decompositions, 1.0, max_rank, floor), moments, ablate=channels)
    loss_ablated = mean_loss(model, heldout, ablate_all, batch_tokens)
    losses: dict[float, float] = {}

    def recovered(f: float) -> float | None:
        if f not in losses:
            hooks = intervention_hooks(
                model, Compression(decompositions, f, max_rank, floor), moments, compress=channels
            )
            losses[f] = mean_loss(model, heldout, hooks, batch_tokens)
        return loss_recovered(loss_clean, losses[f], loss_ablated)

    if fraction is None:
        low, high = 0, len(FRACTION_GRID) - 1
        while low < high:
            middle = (low + high) // 2
            value = recovered(FRACTION_GRID[middle])
            if value is not None and value >= target:
                high = middle
            else:
                low = middle + 1
        fraction = FRACTION_GRID[low]
    compression = Compression(decompositions, fraction, max_rank, floor)
    value = recovered(fraction)
    report = FidelityReport(
        fraction,
        target,
        loss_clean,
        losses[fraction],
        loss_ablated,
        value,
        mean_ranks(compression),
        [(f, loss_recovered(loss_clean, loss, loss_ablated)) for f, loss in sorted(losses.items())],
    )
    return compression, report


def channel_fidelity(
    model: LoadedModel,
    compression: Compression,
    moments: Moments,
    channels: list[Channel],
    heldout: Tensor,
    batch_tokens: int = 4096,
) -> dict[str, float | None]:
    """Loss recovered with each channel alone compressed, against it alone mean-ablated."""
    loss_clean = mean_loss(model, heldout, (), batch_tokens)
    result = {}
    for channel in channels:
        compressed = mean_loss(
            model, heldout, intervention_hooks(model, compression, moments, compress=[channel]), batch_tokens
        )
        ablated = mean_loss(
            model, heldout, intervention_hooks(model, compression, moments, ablate=[channel]), batch_tokens
        )
        result[channel.name] = loss_recovered(loss_clean, compressed, ablated)
    return result


def ablation_effects(
    model: LoadedModel,
    compression: Compression,
    moments: Moments,
    channels: list[Channel],
    tokens: Tensor,
    batch_tokens: int = 4096,
) -> dict[str, float]:
    """Per channel, the mean next-token loss on ``tokens`` with it mean-ablated minus without.

    The exact (not first-order) effect of removing the channel: positive where it helps. First-order
    attribution misses effects that pass through saturated attention, such as a previous-token
    head's, which acts through the keys of an induction head whose softmax is near one-hot.
    """
    clean = mean_loss(model, tokens, (), batch_tokens)
    return {
        c.name: mean_loss(model, tokens, intervention_hooks(model, compression, moments, ablate=[c]), batch_tokens)
        - clean
        for c in channels
    }
