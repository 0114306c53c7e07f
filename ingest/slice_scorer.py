"""The slice scorer: the one route by which a slice gets its scores, whether it is a named ``--data``
slice, a discovered situation, or the union of the named slices.

A named or discovered slice (:meth:`SliceScorer.score`) gets, on its held-out sample
(:class:`SliceSamples`: the sample and the baseline its channels are ablated to), each channel's
exact ablation effect and its standard error, the faithfulness curve and the circuit by
faithfulness; over every prompt, the attribution pass (edge and channel attributions, examples);
and the patched effects of its candidate edges (the top by attribution and by flow,
:func:`~.edge_patching.candidate_edges`). The named slices share their candidates, so that the
union (:meth:`SliceScorer.union`) combines their effects, standard errors, attributions and
patched effects weighted by prompts, with a faithfulness curve of its own over all their samples.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor

from circuit_atlas.errors import UserError

from .attribution import SliceScores, slice_scores
from .baselines import Baseline
from .behaviour import MIN_BEHAVIOUR, Part, behaviour_reason
from .channels import Channel, ChannelLayout
from .compression import Compression
from .config import IngestConfig
from .data import DataSlice
from .edge_patching import candidate_edges, patched_effects
from .faithfulness import FaithfulCircuit, curve_losses, effect_order, faithfulness, kept_variant, smallest_faithful
from .fidelity import ablation_effects, ablation_errors, ablation_losses, variant_losses
from .interventions import Interventions
from .metrics import chance_level
from .model_adapter import LoadedModel
from .statistics import Moments
from .structural import StructuralScores

#: A stage profiler: ``profile(stage)`` is a context manager around the stage (benchmarks time them).
Profile = Callable[[str], AbstractContextManager]

#: A slice's gradients are flat when its largest first-order channel effect is under this share of its
#: largest exact one (the reference models: 0.16 to 0.25; the saturated key-value model: 0.0003).
FLAT_SHARE = 0.01
#: ... and some channel's exact effect is at least this (nats): else there is no behaviour to miss.
FLAT_MIN_EFFECT = 0.01


def effect_sample(held_out: DataSlice, config: IngestConfig) -> DataSlice:
    """The held-out prompts the rank search, channel recovery, exact ablation and faithfulness read,
    spread over them: as many as ``effect_tokens`` tokens hold, and at least ``effect_prompts`` (all
    of them if there are fewer), however long the prompts are."""
    by_tokens = config.effect_tokens * held_out.n_sequences // held_out.n_tokens
    return held_out.spread(max(1, by_tokens, config.effect_prompts))


class SliceSamples:
    """Each slice's held-out sample (by name) and the baseline its channels are ablated to: measured
    on its own sample, or on ``--baseline``'s (once for every slice). They come before the
    compression, whose rank search reads them."""

    def __init__(self, model: LoadedModel, config: IngestConfig, profile: Profile):
        self.model, self.config, self.profile = model, config, profile
        self.samples: dict[str, DataSlice] = {}
        self.baselines: dict[str, Baseline] = {}

    def add_named(self, slices: Sequence[DataSlice]) -> None:
        """The ``--data`` slices' samples, then their baselines (``--baseline`` may name any of them)."""
        config = self.config
        for data in slices:
            self.samples[data.name] = effect_sample(data.split(config.holdout, config.seed)[1], config)
        if config.baseline is not None and config.baseline not in self.samples:
            raise UserError(
                f"--baseline {config.baseline!r} is not a --data slice; the slices are {', '.join(self.samples)}."
            )
        if config.ablation == "counterfactual":
            lacking = [s.name for s in slices if s.corrupted is None]
            if lacking or config.baseline is not None:
                raise UserError(
                    f"--ablation counterfactual patches each prompt from its own counterfactual prompt: every slice "
                    f"needs counterfactual_tokens or counterfactual_text in its rows (task slices), and it takes no "
                    f"--baseline. {'Slice ' + repr(lacking[0]) + ' has none.' if lacking else ''}".strip()
                )
        for data in slices:
            self.baselines[data.name] = self._measured_on(config.baseline or data.name)

    def add(self, data: DataSlice) -> None:
        """A discovered slice: its own held-out prompts, and its baseline."""
        config = self.config
        self.samples[data.name] = effect_sample(data.split(config.holdout, config.seed)[1], config)
        self.baselines[data.name] = self._measured_on(config.baseline or data.name)

    @functools.cache  # noqa: B019 (one per ingest: the cache lives as long as the object)
    def _measured_on(self, source: str) -> Baseline:
        config = self.config
        with self.profile(f"baseline {source}"):
            return Baseline.measure(self.model, self.samples[source], config.ablation, config.batch_tokens, config.seed)


@dataclass
class ScoredSlice:
    """Everything a slice is scored with (the union: no baseline and no per-prompt losses of its own)."""

    ablation: dict[str, float]  # channel -> exact effect (nats)
    ablation_se: dict[str, float | None]
    curve: dict[str, tuple[int, float | None]]  # channel -> (rank by effect, F of the circuit up to it)
    circuit: FaithfulCircuit
    scores: SliceScores  # the attribution pass
    patched: Tensor  # [reader role, writer], NaN where not patched
    baseline: Baseline | None = None
    clean: Tensor | None = None  # [prompts]: the sample's metric
    ablated: Tensor | None = None  # [channels, prompts]: with each channel ablated

    @property
    def flat_gradients(self) -> bool:
        """Whether first-order scores say little on the slice: ablating some channel moves its metric,
        yet the first-order estimates of every channel's effect stay near zero, as on a saturated
        model (its loss near zero, so its gradients too). Its ``attribution`` and the Fisher weighting
        of the subspaces then carry little; ``patched`` and ``ablation`` are exact whatever the gradients."""
        largest = max(self.ablation.values())
        return largest >= FLAT_MIN_EFFECT and max(self.scores.activity.values()) < FLAT_SHARE * largest

    def manifest_entry(self) -> dict:
        """What the slice's manifest entry adds to its description: the gradient flag and the circuit."""
        return {"flat_gradients": self.flat_gradients, "circuit": self.circuit.entry()}


class SliceScorer:
    """Scores slices on one compressed checkpoint (see the module docstring)."""

    def __init__(
        self,
        model: LoadedModel,
        layout: ChannelLayout,
        compression: Compression,
        moments: Moments,
        structural: StructuralScores,
        samples: SliceSamples,
        config: IngestConfig,
        progress: bool,
        profile: Profile,
    ):
        self.model, self.layout, self.compression, self.moments = model, layout, compression, moments
        self.structural, self.samples, self.config = structural, samples, config
        self.progress, self.profile = progress, profile
        self.interventions = Interventions(model, compression, samples.baselines)  # baselines by name, added to
        self.names = [c.name for c in layout.channels]

    def named(self, slices: Sequence[DataSlice], union_name: str, weights: dict[str, float]) -> dict[str, ScoredSlice]:
        """The named slices, sharing their candidate edges, and their union (when there are several)."""
        attributions = {s.name: self._attribution(s) for s in slices}
        pairs = self._candidates([a.attribution for a in attributions.values()])
        scored = {s.name: self._score(s, attributions[s.name], pairs) for s in slices}
        if len(slices) > 1:
            scored[union_name] = self._union(union_name, scored, weights)
        return scored

    def discovered(self, data: DataSlice) -> ScoredSlice:
        """A discovered slice, on its own held-out prompts and candidate edges."""
        self.samples.add(data)
        attribution = self._attribution(data)
        return self._score(data, attribution, self._candidates([attribution.attribution]))

    def _candidates(self, attributions: list[Tensor]) -> list[tuple[int, int]]:
        """First-order attribution undercounts edges through saturated attention (an induction head's
        keys), which flow, a structural share, does not: the top of both are patched."""
        return candidate_edges(self.layout, [*attributions, self.structural.flow], self.config.patched_edges)

    def _score(self, data: DataSlice, attribution: SliceScores, pairs: list[tuple[int, int]]) -> ScoredSlice:
        config, name = self.config, data.name
        with self.profile(f"ablation {name}"):
            clean, ablated = ablation_losses(
                self.interventions, self.samples.samples[name], config.batch_tokens, self.progress, f"ablation {name}"
            )
        effects = ablation_effects(self.names, clean, ablated)
        curve, circuit = self._faithfulness(name, effects, {name: 1.0})
        with self.profile(f"edge patching {name}"):
            patched = patched_effects(
                self.model,
                self.layout,
                pairs,
                self.samples.samples[name],
                self.samples.baselines[name],
                config.batch_tokens,
                self.progress,
            )
        se = ablation_errors(self.names, clean, ablated)
        baseline = self.samples.baselines[name]
        return ScoredSlice(effects, se, curve, circuit, attribution, patched, baseline, clean, ablated)

    def _union(self, name: str, parts: dict[str, ScoredSlice], weights: dict[str, float]) -> ScoredSlice:
        """The union of the named slices: their scores weighted by prompts (independent samples: the
        variances of the effects add, weighted), and its own faithfulness over all their samples."""
        effects = {c: sum(weights[s] * parts[s].ablation[c] for s in weights) for c in self.names}
        se: dict[str, float | None] = {}
        for c in self.names:
            known = [weights[s] * error for s in weights if (error := parts[s].ablation_se[c]) is not None]
            se[c] = sum(x**2 for x in known) ** 0.5 if len(known) == len(weights) else None
        curve, circuit = self._faithfulness(name, effects, weights)
        scores = SliceScores.combined([parts[s].scores for s in weights])
        # A Tensor: the union has parts, so sum never returns its start, 0.
        patched = cast(Tensor, sum(weights[s] * parts[s].patched for s in weights))
        return ScoredSlice(effects, se, curve, circuit, scores, patched)

    def _attribution(self, data: DataSlice) -> SliceScores:
        with self.profile(f"attribution {data.name}"):
            return slice_scores(
                self.model,
                self.compression,
                self.moments,
                self.layout,
                data,
                self.config.batch_tokens,
                self.progress,
                desc=f"attribution {data.name}",
                examples=self.config.examples,
            )

    def _faithfulness(
        self, name: str, effects: dict[str, float], weights: dict[str, float]
    ) -> tuple[dict[str, tuple[int, float | None]], FaithfulCircuit]:
        """Per channel, its rank by exact ablation effect (1 = largest) and the faithfulness of the
        circuit of every channel up to that rank, and the circuit by faithfulness (its target
        ``config.circuit_faithfulness``), on the samples of the slices in ``weights`` (their mean
        losses weighted as the effects were)."""
        channels, config = self.layout.channels, self.config
        order = effect_order(channels, effects)
        parts = [self.samples.samples[part] for part in weights]

        def chunked(losses: Tensor) -> tuple[Tensor, ...]:
            """[V, prompts of every part] -> each part's [V, its prompts]."""
            return losses.split([p.n_sequences for p in parts], 1)

        def weighted(losses: Tensor) -> Tensor:
            """[V, prompts of every part] -> [V]: each part's mean, weighted."""
            return cast(Tensor, sum(w * chunk.mean(1) for w, chunk in zip(weights.values(), chunked(losses))))

        def loss_of(kept: Sequence[Channel]) -> float:
            variant = kept_variant(channels, kept)
            return float(weighted(variant_losses(self.interventions, [variant], parts, config.batch_tokens))[0])

        with self.profile(f"faithfulness {name}"):
            losses = curve_losses(self.interventions, order, parts, config.batch_tokens, self.progress)
            d_vocab = self.model.spec.outputs
            reason = behaviour_reason(
                [
                    Part(w, chunk[-1], chunk[0], chance_level(p.metric, d_vocab))  # the clean model, and none running
                    for w, chunk, p in zip(weights.values(), chunked(losses), parts)
                ],
                MIN_BEHAVIOUR,
            )
            means = weighted(losses)
            curve = faithfulness(means, reason)
            circuit = smallest_faithful(order, means, loss_of, config.circuit_faithfulness, reason)
        return {c.name: (k, curve[k]) for k, c in enumerate(order, 1)}, circuit


def per_prompt(scored: dict[str, ScoredSlice], slices: Sequence[DataSlice]) -> tuple[Tensor, Tensor]:
    """The named slices' clean [prompts] and per-channel ablated [channels, prompts] losses, side by side."""
    clean, ablated = [], []
    for s in slices:
        part = scored[s.name]
        if part.clean is None or part.ablated is None:
            raise ValueError(f"{s.name} is scored as a union of slices: it has no per-prompt losses")
        clean.append(part.clean)
        ablated.append(part.ablated)
    return torch.cat(clean), torch.cat(ablated, 1)
