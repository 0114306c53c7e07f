"""Interventions: channels replaced by their compressed maps or their means, many variants per pass.

A :class:`Variant` names channels to *compress* (replace by the truncated map of
:mod:`.compression`: the input of a read side projected by its rank-k projector, the output of a
black-box writer likewise) and channels to *ablate* (replace their output, the unembedding its
input, by the slice's :class:`~.baselines.Baseline`). To evaluate many variants on the same sequences, the sequences are
repeated along the batch, one copy per variant, and every hook applies to each row the intervention
of that row's variant, so rows never mix and each variant's result is exact.

:class:`Interventions` computes the projectors of one compression once and holds each slice's
baseline; the hooks only index them. (Rebuilding a d_model x d_model projector per channel used to cost more than the
forward passes themselves.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .baselines import Baseline
from .channels import Channel, ChannelLayout
from .compression import Compression
from .model_adapter import Hook, LoadedModel, site

HEAD_ROLES = {"q": ("qk", "b_Q"), "k": ("qk", "b_K"), "v": ("ov", "b_V")}
#: Singleton channels: (hook site, decomposition group, role).
SINGLETONS = {
    "embed": ("embed", "embed", "out"),
    "pos_embed": ("pos_embed", "pos_embed", "out"),
    "unembed": ("final_x", "unembed", "in"),
}


@dataclass(frozen=True)
class Variant:
    """Channels to compress and channels to ablate (disjoint)."""

    compress: frozenset[Channel] = field(default_factory=frozenset)
    ablate: frozenset[Channel] = field(default_factory=frozenset)

    @classmethod
    def compressing(cls, *channels: Channel) -> Variant:
        return cls(compress=frozenset(channels))

    @classmethod
    def ablating(cls, *channels: Channel) -> Variant:
        return cls(ablate=frozenset(channels))


class VariantMasks:
    """Per variant, which channel sites it changes: head masks [V, L, H], MLP masks [V, L],
    singleton masks [V], for compression and for ablation (on the CPU: which hooks a batch needs is
    decided there, without waiting for the device)."""

    def __init__(self, layout: ChannelLayout, variants: Sequence[Variant]):
        spec, V = layout.spec, len(variants)
        self.heads = {
            what: torch.zeros(V, spec.n_layers, spec.n_heads, dtype=torch.bool) for what in ("compress", "ablate")
        }
        self.mlps = {what: torch.zeros(V, spec.n_layers, dtype=torch.bool) for what in ("compress", "ablate")}
        self.singletons = {
            (kind, what): torch.zeros(V, dtype=torch.bool) for kind in SINGLETONS for what in ("compress", "ablate")
        }
        for i, variant in enumerate(variants):
            assert not variant.compress & variant.ablate, "a channel is either compressed or ablated"
            for what, channels in (("compress", variant.compress), ("ablate", variant.ablate)):
                for c in channels:
                    if c.kind == "attn_head":
                        self.heads[what][i, c.layer, c.head] = True
                    elif c.kind == "mlp":
                        self.mlps[what][i, c.layer] = True
                    else:
                        self.singletons[(c.kind, what)][i] = True


class Interventions:
    """The projectors of one compression, on the model's device in float32, and the baseline of
    each slice (by name) that ablated channels take."""

    def __init__(self, model: LoadedModel, compression: Compression, baselines: dict[str, Baseline]):
        self.model = model
        self.layout = ChannelLayout(model.spec)
        self.baselines = baselines

        def f32(t: Tensor) -> Tensor:
            return t.to(device=model.device, dtype=torch.float32)

        w = model.weights
        self.head_projectors = {
            role: f32(compression.projection(group, role)) for role, (group, _) in HEAD_ROLES.items()
        }
        self.head_biases = {role: f32(getattr(w, bias)) for role, (_, bias) in HEAD_ROLES.items()}
        self.mlp_projectors = (
            {"in": f32(compression.projection("mlp_in", "in")), "out": f32(compression.projection("mlp_out", "out"))}
            if model.spec.has_mlp
            else {}
        )
        self.singleton_projectors = {
            kind: f32(compression.projection(group, role))
            for kind, (_, group, role) in SINGLETONS.items()
            if group in compression.ranks
        }

    def baseline(self, slice_name: str) -> Baseline:
        if slice_name not in self.baselines:
            raise KeyError(f"no ablation baseline measured for slice {slice_name!r}")
        return self.baselines[slice_name]

    def hooks(
        self, masks: VariantMasks, row_variants: Tensor, baseline: Baseline, prompts: Tensor, width: int
    ) -> list[tuple[str, Hook]]:
        """Hooks applying to row ``i`` of a batch the interventions of variant ``row_variants[i]``
        (a CPU tensor); ablated channels take ``baseline``'s values for the batch's ``prompts``
        (their indices in the slice) of ``width`` positions."""
        device = self.model.device

        def replacement(name: str) -> Tensor:
            return baseline.values(name, prompts, width)

        def rows(mask: Tensor) -> Tensor:
            return mask.to(device, non_blocking=True)

        hooks = []
        heads = {what: m[row_variants] for what, m in masks.heads.items()}  # [B, L, H]
        mlps = {what: m[row_variants] for what, m in masks.mlps.items()}  # [B, L]
        for l in range(self.model.spec.n_layers):
            if heads["compress"][:, l].any():
                marked = rows(heads["compress"][:, l])
                for role in HEAD_ROLES:
                    projector, bias = self.head_projectors[role][l], self.head_biases[role][l]
                    hooks.append((site(role, l), _project_heads(projector, bias, marked)))
            if heads["ablate"][:, l].any():
                hooks.append((site("z", l), _replace_heads(replacement(site("z", l)), rows(heads["ablate"][:, l]))))
            if mlps["compress"][:, l].any():
                marked = mlps["compress"][:, l]
                hooks.append((site("mlp_x", l), _project_rows(self.mlp_projectors["in"][l], marked, device)))
                hooks.append((site("mlp_out", l), _project_rows(self.mlp_projectors["out"][l], marked, device)))
            if mlps["ablate"][:, l].any():
                value = replacement(site("mlp_out", l))
                hooks.append((site("mlp_out", l), _replace_rows(value, rows(mlps["ablate"][:, l]))))
        for kind, (hook_site, *_) in SINGLETONS.items():
            compress = masks.singletons[(kind, "compress")][row_variants]
            ablate = masks.singletons[(kind, "ablate")][row_variants]
            if compress.any():
                hooks.append((site(hook_site), _project_rows(self.singleton_projectors[kind], compress, device)))
            if ablate.any():
                hooks.append((site(hook_site), _replace_rows(replacement(site(hook_site)), rows(ablate))))
        return hooks


def _project_heads(projector: Tensor, bias: Tensor, rows: Tensor) -> Hook:
    """q/k/v [B, p, H, d_head]: (a - b) P_h + b for the heads ``rows`` [B, H] marks."""

    def hook(activation: Tensor, hook) -> Tensor:
        projected = torch.einsum("bphe,hef->bphf", activation - bias, projector) + bias
        return torch.where(rows[:, None, :, None], projected, activation)

    return hook


def _replace_heads(value: Tensor, rows: Tensor) -> Hook:
    """z [B, p, H, d_head]: ``value`` (broadcast to it) for the heads ``rows`` [B, H] marks."""

    def hook(activation: Tensor, hook) -> Tensor:
        return torch.where(rows[:, None, :, None], value, activation)

    return hook


def _project_rows(projector: Tensor, rows: Tensor, device: torch.device) -> Hook:
    """[B, p, d] (or [1, p, d], position embeddings): a P for the batch rows ``rows`` [B] marks."""
    index = rows.nonzero().squeeze(1).to(device)

    def hook(activation: Tensor, hook) -> Tensor:
        out = activation.expand(rows.shape[0], *activation.shape[1:]).clone()
        out[index] = out[index] @ projector
        return out

    return hook


def _replace_rows(value: Tensor, rows: Tensor) -> Hook:
    """[B, p, d]: ``value`` (broadcast to it) for the batch rows ``rows`` [B] marks."""

    def hook(activation: Tensor, hook) -> Tensor:
        activation = activation.expand(rows.shape[0], *activation.shape[1:])
        return torch.where(rows[:, None, None], value, activation)

    return hook
