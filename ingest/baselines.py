"""Ablation baselines: what an ablated channel's output is replaced by.

A channel is ablated by replacing its output (a head's ``z``, an MLP's output, an embedding; the
unembedding's input) at every position of a prompt by a baseline value computed from baseline
prompts B: by default the prompts of the slice being measured, or another named slice's
(``--baseline random``, as ACDC corrupts induction with random tokens). The kinds (``--ablation``):

- ``position`` (the default): the mean over B's prompts at the same position (over those with a
  real token there); a position that no prompt of B reaches gets the ``mean``. This is how the
  published circuit analyses of fixed-layout tasks ablate: a position's typical output, not a mix
  of every position's.
- ``mean``: the mean over every real token of B.
- ``resample``: the same position of another prompt of B (prompt i takes prompt ``perm[i]`` of a
  seeded permutation); where that prompt has no real token, the ``mean``.
- ``counterfactual``: the same position of the prompt's own counterfactual prompt (a task slice's
  ``counterfactual_tokens`` or ``counterfactual_text``, as IOI's ABC prompts; B is the slice
  itself), patched in as ACDC and EAP patch.
- ``zero``: zero.

Each is measured from B alone, so a slice's effects do not depend on which other slices were
ingested beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from .config import ABLATIONS
from .data import DataSlice
from .model_adapter import LoadedModel, layer_sites, site


def ablation_sites(model: LoadedModel) -> list[str]:
    """The hook sites channels are ablated at: every layer's ``z`` and MLP output, the embeddings,
    and the unembedding's input (only those the model has)."""
    spec = model.spec
    embeddings = ["embed", "pos_embed"] if spec.positional == "standard" else ["embed"]
    return layer_sites(spec, "z", "mlp_out") + [site(name) for name in [*embeddings, "final_x"]]


@dataclass
class Baseline:
    """Per ablation site, the values an ablated output takes (see the module docstring)."""

    kind: str
    source: str  # the baseline prompts' slice
    mean: dict[str, Tensor]  # site -> [*shape]
    by_position: dict[str, Tensor]  # site -> [p_B, *shape] (``position``)
    prompts: dict[str, Tensor]  # site -> [n_B, p_B, *shape]: every prompt's own (``resample``, ``counterfactual``)
    real: Tensor | None  # [n_B, p_B] (``resample``, ``counterfactual``)
    permutation: Tensor | None  # [n_B]: the prompt of B each prompt takes (``resample``, ``counterfactual``)

    @classmethod
    def measure(
        cls, model: LoadedModel, data: DataSlice, kind: str, batch_tokens: int = 4096, seed: int = 0
    ) -> Baseline:
        """The ``kind`` baseline of ``model`` on the prompts of ``data`` (one clean pass over them)."""
        if kind not in ABLATIONS:
            raise ValueError(f"unknown ablation {kind!r}; one of {ABLATIONS}")
        sites = ablation_sites(model)
        device = model.device
        width = data.tokens.shape[1]
        paired = kind in ("resample", "counterfactual")  # each prompt takes one prompt's outputs
        if kind == "counterfactual":
            if data.corrupted is None:
                raise ValueError(f"slice {data.name!r} has no counterfactual prompts")
            data = replace(data, tokens=data.corrupted)
        sums: dict[str, Tensor] = {}
        by_position: dict[str, Tensor] = {}
        prompts: dict[str, list[Tensor]] = {s: [] for s in sites}
        count = torch.zeros(width, dtype=torch.float64, device=device)
        with torch.no_grad():
            for batch in data.batches(batch_tokens):
                real = batch.mask.to(device)
                _, acts = model.run_capturing(batch.tokens, sites, attention_mask=batch.mask)
                count += real.sum(0).double()
                for name, value in acts.items():
                    value = value.detach().expand(real.shape[0], *value.shape[1:])
                    kept = value.double() * real.view(*real.shape, *([1] * (value.ndim - 2)))
                    by_position[name] = by_position.get(name, 0) + kept.sum(0)
                    if paired:
                        prompts[name].append(value.float())
        total = float(count.sum())
        for name, value in by_position.items():
            per_position = count.view(-1, *([1] * (value.ndim - 1)))
            sums[name] = value.sum(0) / total
            by_position[name] = torch.where(per_position > 0, value / per_position.clamp_min(1), sums[name]).float()
        mean = {name: value.float() for name, value in sums.items()}
        if kind == "zero":
            mean = {name: torch.zeros_like(value) for name, value in mean.items()}
        permutation: Tensor | None
        if kind == "resample":
            permutation = torch.randperm(data.n_sequences, generator=torch.Generator().manual_seed(seed))
        else:  # counterfactual: each prompt its own; the others take no prompt's outputs
            permutation = torch.arange(data.n_sequences) if paired else None
        return cls(
            kind,
            data.name,
            mean,
            by_position if kind == "position" else {},
            {name: torch.cat(parts) for name, parts in prompts.items()} if paired else {},
            data.mask.to(device) if paired else None,
            permutation if permutation is None else permutation.to(device),
        )

    def describe(self) -> str:
        """In words, for the manifest and the catalog: ``position mean of repeated``."""
        words = {
            "position": "position mean",
            "mean": "mean",
            "resample": "resampled prompts",
            "counterfactual": "counterfactual prompts",
            "zero": "zero",
        }
        return "zero" if self.kind == "zero" else f"{words[self.kind]} of {self.source}"

    def values(self, name: str, prompts: Tensor, width: int) -> Tensor:
        """The baseline at site ``name`` for a batch of prompts (their indices [B] in the measured
        slice) of ``width`` positions, broadcastable to the site's activation [B, width, *shape]."""
        mean = self.mean[name]
        if self.kind == "position":
            table = self.by_position[name][:width]
            if table.shape[0] < width:  # positions past the baseline prompts: their mean
                table = torch.cat([table, mean.expand(width - table.shape[0], *mean.shape)])
            return table.unsqueeze(0)
        if self.permutation is not None:  # resample, counterfactual
            if self.real is None:
                raise ValueError(f"the {self.kind} baseline has a permutation but no real-token mask")
            source = self.permutation[prompts.to(self.permutation.device) % len(self.permutation)]
            table, real = self.prompts[name][source, :width], self.real[source, :width]
            if table.shape[1] < width:
                pad = width - table.shape[1]
                table = torch.cat([table, mean.expand(len(source), pad, *mean.shape)], 1)
                real = torch.cat([real, real.new_zeros(len(source), pad)], 1)
            return torch.where(real.view(*real.shape, *([1] * mean.ndim)), table, mean)
        return mean
