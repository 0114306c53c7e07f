"""A checkpoint as the catalog describes it, runnable: its compressed channels, or one of its circuits.

:meth:`Runnable.from_artifact` rebuilds, from what an artifact records (the model's source and
weights, the ``--data`` arguments, the ingest settings and the rank fraction the checkpoint was
compressed at), exactly what the ingest ran: the same slices, held-out samples and ablation
baselines (seeded), the same moments and therefore the same compressed maps (:mod:`.compression`).
It then runs one :class:`~.interventions.Variant` of the model:

- ``compressed=True`` (or a list of channel names): those channels replaced by their compressed maps;
- ``circuit="SLICE"``: every channel outside the slice's stored circuit by faithfulness ablated to
  that slice's baseline, the circuit's channels computing on the ablated stream;
- ``circuit="SLICE", min_attribution=x``: the same circuit at edge level: of the edges between its
  channels, those whose effect on the slice (patched where measured, else attribution: the
  ``circuit`` query's rule) is at least x are kept and every other edge of the model is ablated to
  the slice's baseline (:func:`~.edge_patching.ablated_edge_losses`), as auto-circuit's patch mode
  runs a circuit's edges. With every edge between its channels kept, it is the channel circuit.

:meth:`Runnable.loss` is the slice's metric on its held-out sample (the sample every stored figure
of the slice was measured on) with its standard error over prompts; :meth:`faithfulness` and
:meth:`recovery` give the stored circuit faithfulness and the stored all-at-once recovery from
those losses, so a runnable reproduces the catalog's figures. The statistics pass makes opening one
cost about what the ingest's statistics stage did.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor

from circuit_atlas.errors import UserError

from .artifact import Artifact, read_artifact
from .baselines import Baseline
from .channels import ChannelLayout
from .config import IngestConfig
from .data import DataSlice
from .edge_patching import Edge, ablated_edge_hooks, ablated_edge_losses
from .fidelity import variant_losses
from .interventions import Interventions, Variant, VariantMasks
from .metrics import POSITIONAL
from .model_adapter import LoadedModel, load_model
from .pipeline import no_profile, prepare


def recorded_checkpoint(artifact: Path, device: str = "cpu") -> tuple[Artifact, LoadedModel, IngestConfig]:
    """The artifact, its checkpoint's model (from the source and weights it records) and the ingest
    settings it was computed with."""
    opened = read_artifact(artifact)
    checkpoint = opened.manifest["checkpoint"]
    known = {f.name for f in fields(IngestConfig)}
    config = IngestConfig(**{k: v for k, v in opened.manifest["config"].items() if k in known})
    return opened, load_model(checkpoint["source"], checkpoint["revision"], device), config


@dataclass(frozen=True)
class Measured:
    """A slice's mean metric over its held-out sample and its standard error over prompts."""

    mean: float
    se: float


class Runnable:
    """One variant of a checkpoint's model (see the module docstring)."""

    def __init__(
        self,
        model: LoadedModel,
        interventions: Interventions,
        samples: dict[str, DataSlice],
        variant: Variant,
        batch_tokens: int,
        circuits: dict[str, list[str]],
        circuit: str | None = None,
        ablated_edges: list[Edge] | None = None,
    ):
        self.model, self.interventions, self.samples = model, interventions, samples
        self.variant, self.batch_tokens, self.circuits = variant, batch_tokens, circuits
        self.circuit = circuit  # the slice whose circuit runs (its baseline ablates the rest), if any
        self.ablated_edges = ablated_edges  # an edge-level circuit: the edges ablated (the variant is then clean)
        self.layout = interventions.layout

    @classmethod
    def from_artifact(
        cls,
        artifact: Path,
        compressed: bool | Sequence[str] = False,
        circuit: str | None = None,
        device: str = "cpu",
        min_attribution: float | None = None,
    ) -> Runnable:
        """The checkpoint of ``artifact`` with the named channels compressed, or its circuit on a slice
        (at edge level with ``min_attribution``)."""
        opened, model, config = recorded_checkpoint(Path(artifact), device)
        manifest = opened.manifest
        if circuit in {entry["name"] for entry in manifest["slices"] if entry.get("discovered")}:
            raise UserError(
                f"{circuit!r} is a situation discovered at ingest: a runnable rebuilds the ingest's named slices "
                f"and their baselines only. Measure on it by steering (`circuit-atlas steer ... --data {circuit}`)."
            )
        label = manifest["checkpoint"]["label"]
        prepared = prepare(model, manifest["data"], config, label, False, lambda _: None, no_profile)
        compression, _ = prepared.compress(model, config, manifest["fidelity"]["fraction"])
        interventions = Interventions(model, compression, prepared.samples.baselines)
        activity = opened.tables["activity"]
        circuits = {
            name: list(rows.loc[rows["in_circuit"].astype(bool), "block"]) for name, rows in activity.groupby("slice")
        }
        layout = interventions.layout
        variant = cls._variant(layout, compressed, circuit, circuits)
        samples = dict(prepared.samples.samples)
        ablated = None
        if min_attribution is not None:
            if circuit is None:
                raise UserError("min_attribution keeps a circuit's edges: name the circuit's slice (circuit=...).")
            ablated = _ablated_edges(layout, opened.tables["slice_edges"], circuit, circuits[circuit], min_attribution)
            variant = Variant()
        return cls(model, interventions, samples, variant, config.batch_tokens, circuits, circuit, ablated)

    @staticmethod
    def _variant(
        layout: ChannelLayout, compressed: bool | Sequence[str], circuit: str | None, circuits: dict[str, list[str]]
    ) -> Variant:
        if circuit is not None and compressed:
            raise UserError("A runnable is either compressed or a circuit, not both.")
        if circuit is not None:
            if circuit not in circuits:
                raise UserError(f"No circuit on slice {circuit!r}; the slices are {', '.join(circuits)}.")
            kept = set(circuits[circuit])
            return Variant.ablating(*(c for c in layout.channels if c.name not in kept))
        if compressed is True:
            return Variant.compressing(*layout.channels)
        names = list(compressed) if compressed else []
        unknown = [n for n in names if n not in layout.by_name]
        if unknown:
            raise UserError(f"No channel {unknown[0]!r}; the channels are {', '.join(layout.by_name)}.")
        return Variant.compressing(*(layout.by_name[n] for n in names))

    def _sample(self, name: str) -> DataSlice:
        if name not in self.samples:
            raise UserError(f"No slice {name!r}; the slices are {', '.join(self.samples)}.")
        return self.samples[name]

    def _baseline(self, name: str) -> Baseline:
        """The baseline ablated channels take on slice ``name`` (:class:`UserError` for a slice it lacks)."""
        self._sample(name)
        return self.interventions.baseline(name)

    def run(self, tokens: Tensor, slice_name: str | None = None) -> Tensor:
        """Logits ``[batch, pos, d_vocab_out]`` of ``tokens`` under the variant; ablated channels (or
        edges) take the baseline of ``slice_name`` (default: the circuit's slice, else the first slice)."""
        name = slice_name or self.circuit or next(iter(self.samples))
        baseline, prompts = self._baseline(name), torch.arange(tokens.shape[0])
        if self.ablated_edges is not None:
            hooks = ablated_edge_hooks(self.model, self.layout, self.ablated_edges, baseline, prompts)
        else:
            masks = VariantMasks(self.layout, [self.variant])
            hooks = self.interventions.hooks(masks, torch.zeros_like(prompts), baseline, prompts, tokens.shape[1])
        with torch.no_grad():
            return self.model.run(tokens, hooks)

    def _losses(self, name: str, variants: Sequence[Variant]) -> Tensor:
        return variant_losses(self.interventions, variants, self._sample(name), self.batch_tokens)

    def _own_losses(self, name: str) -> Tensor:
        """The slice's metric per held-out prompt under this runnable's variant or ablated edges."""
        if self.ablated_edges is None:
            return self._losses(name, [self.variant])[0]
        baseline = self._baseline(name)
        return ablated_edge_losses(
            self.model, self.layout, self.ablated_edges, self._sample(name), baseline, self.batch_tokens
        )

    def loss(self, slice_name: str) -> Measured:
        """The slice's metric under the variant on its held-out sample."""
        losses = self._own_losses(slice_name)
        return Measured(float(losses.mean()), float(losses.std() / math.sqrt(len(losses))))

    def accuracy(self, slice_name: str) -> float:
        """The share of the held-out sample's scored answers the variant predicts (task slices)."""
        sample = self._sample(slice_name)
        if sample.metric not in POSITIONAL or sample.positions is None or sample.answers is None:
            raise UserError(f"Slice {slice_name!r} scores {sample.metric}: it has no answers to be right about.")
        logits = self.run(sample.tokens, slice_name)
        valid = sample.positions >= 0
        picked = logits[torch.arange(len(logits))[:, None], sample.positions.clamp_min(0)].argmax(-1).cpu()
        return float(((picked == sample.answers) & valid).sum() / valid.sum())

    def faithfulness(self, slice_name: str) -> float:
        """``(L_none - L_variant) / (L_none - L_clean)`` on the slice's held-out sample."""
        none = Variant.ablating(*self.layout.channels)
        clean, ablated = self._losses(slice_name, [Variant(), none]).mean(1).tolist()
        return (ablated - float(self._own_losses(slice_name).mean())) / (ablated - clean)

    def recovery(self) -> float:
        """The loss recovered by the variant over every slice's held-out sample (weighted by prompts, as
        the rank search weighs them): ``1 - (L_variant - L_clean) / (L_ablated - L_clean)``."""
        if self.ablated_edges is not None:
            raise UserError("An edge-level circuit runs on its own slice: use faithfulness(slice) for it.")
        none = Variant.ablating(*self.layout.channels)
        parts = list(self.samples.values())
        losses = variant_losses(self.interventions, [self.variant, Variant(), none], parts, self.batch_tokens)
        variant, clean, ablated = losses.mean(1).tolist()
        return 1 - (variant - clean) / (ablated - clean)

    def generate(self, prompt: Tensor, n_tokens: int, seed: int = 0, slice_name: str | None = None) -> Tensor:
        """``prompt`` [p] continued by ``n_tokens`` tokens sampled from the variant (seeded)."""
        generator = torch.Generator().manual_seed(seed)
        tokens = prompt.view(1, -1)
        for _ in range(n_tokens):
            window = tokens[:, -self.model.spec.n_ctx :]
            probabilities = self.run(window, slice_name)[0, -1].float().softmax(-1).cpu()
            tokens = torch.cat([tokens, torch.multinomial(probabilities, 1, generator=generator).view(1, 1)], 1)
        return tokens[0]


def _ablated_edges(
    layout: ChannelLayout, slice_edges: pd.DataFrame, circuit: str, members: list[str], min_attribution: float
) -> list[Edge]:
    """Every edge of the model but those between ``members`` whose effect on slice ``circuit``
    (``patched`` where measured, else ``attribution``) is at least ``min_attribution``."""
    rows = slice_edges[slice_edges["slice"] == circuit]
    effect = rows["patched"].fillna(rows["attribution"])
    inside = rows["writer"].isin(members) & rows["reader"].isin(members) & (effect >= min_attribution)
    kept = set(zip(rows.loc[inside, "writer"], rows.loc[inside, "reader"], rows.loc[inside, "role"]))
    mask = layout.feeds_mask
    return [
        (writer, reader)
        for i, reader in enumerate(layout.readers)
        for j, writer in enumerate(layout.writers)
        if mask[i, j] and (writer.name, reader.channel.name, reader.role) not in kept
    ]
