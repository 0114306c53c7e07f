"""The compute step: model and data in, one artifact directory per checkpoint out.

model -> each slice's held-out sample and baseline -> statistics (Fisher pass) -> compression (rank
fraction searched for the recovery target) -> structural edge scores -> every slice through the
slice scorer (attribution pass, exact ablation, faithfulness and the circuit by it, edge patching;
then the named slices' union: :mod:`.slice_scorer`) -> channel recovery -> situations, each through
the scorer -> fingerprints -> matches with the previous checkpoint -> the artifact's tables
(:mod:`.artifact_tables`) and manifest (:mod:`.manifest`) -> artifact. Nothing here touches Neo4j.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import pandas as pd
from torch import Tensor

from circuit_atlas.errors import UserError

from .artifact import frame, is_complete, read_artifact, read_manifest, write_artifact
from .artifact_tables import artifact_tables, placed
from .channels import Channel, ChannelLayout
from .checkpoints import CheckpointSource, resolve_checkpoints
from .compression import Compression, Decomposition, activation_weighted, decompose
from .config import IngestConfig
from .data import DataSlice, load_slice
from .direct_effects import output_tokens
from .examples import example_rows
from .fidelity import RankSearchReport, channel_recovery, choose_rank_fraction, compression_losses
from .fingerprints import channel_fingerprints
from .manifest import IngestData, artifact_path, checkpoint_manifest
from .matching import PreviousCheckpoint, following, matches, series_place
from .metrics import chance_level
from .model_adapter import LoadedModel, load_model, model_name_of
from .paths import unwritable
from .situations import discover, exact_usage
from .slice_scorer import Profile, SliceSamples, SliceScorer, per_prompt
from .statistics import Moments, accumulate_moments, statistics_batch_tokens
from .steering import direction_steering
from .structural import structural_scores

if TYPE_CHECKING:
    from .sweep import RaySweep


@dataclass(frozen=True)
class Series:
    """The checkpoints of one run, as each checkpoint's ingest needs them: their labels in step order,
    the rank fraction searched on the last (``--series-ranks last``; None: each searches its own, or
    ``--energy`` fixes it) and the last's bases (its similarities and lineages are against them)."""

    labels: tuple[str, ...]
    fraction: float | None
    last: dict[str, Tensor]


def ranks_rule(config: IngestConfig, series: Series | None) -> str:
    """How the checkpoint's rank fraction was chosen, in words (the manifest's ``ranks.rule``)."""
    if config.energy is not None:
        return "fixed by --energy"
    if series is not None and series.fraction is not None:
        return f"searched on {series.labels[-1]}, the last checkpoint of the series"
    return "searched on this checkpoint"


def no_profile(stage: str) -> AbstractContextManager:
    return nullcontext()


def load_slices(model: LoadedModel, data_args: list[str], config: IngestConfig) -> list[DataSlice]:
    """The ``--data`` slices, validated against the model and against each other."""
    seq_len = config.seq_len or min(model.spec.n_ctx, 128)
    slices = [
        load_slice(arg, model.spec, model.tokenizer, seq_len, config.n_seq, config.seed + i)
        for i, arg in enumerate(data_args)
    ]
    if not slices:
        raise UserError("No data: give at least one --data slice (for example --data repeated --data random).")
    if len({s.name for s in slices}) < len(slices):
        raise UserError(f"Two --data slices share a name ({[s.name for s in slices]}); name them NAME=SOURCE.")
    return slices


def fitting_sample(slices: list[DataSlice], config: IngestConfig) -> list[DataSlice]:
    """The sequences the moments come from: at most ``statistics_tokens`` of each slice's fitting
    (not held-out) sequences, the same share of each, spread over them."""
    fitting = [s.split(config.holdout, config.seed)[0] for s in slices]
    share = min(1.0, config.statistics_tokens / sum(f.n_tokens for f in fitting))
    return [f.spread(max(1, round(f.n_sequences * share))) for f in fitting]


@dataclass
class Prepared:
    """What compression starts from on one checkpoint: the slices, their held-out samples and
    baselines, the moments and the decompositions."""

    slices: list[DataSlice]
    samples: SliceSamples
    moments: Moments
    decompositions: dict[str, Decomposition]

    @property
    def held_out(self) -> list[DataSlice]:
        return [self.samples.samples[s.name] for s in self.slices]

    def compress(
        self, model: LoadedModel, config: IngestConfig, fraction: float | None
    ) -> tuple[Compression, RankSearchReport]:
        """The compression at a fixed rank ``fraction``, or at the one searched for ``config.fidelity``."""
        return choose_rank_fraction(
            model,
            self.decompositions,
            self.samples.baselines,
            ChannelLayout(model.spec),
            self.held_out,
            config.fidelity if fraction is None else None,
            fraction,
            config.max_rank,
            config.floor,
            config.batch_tokens,
        )


def prepare(
    model: LoadedModel,
    data_args: list[str],
    config: IngestConfig,
    label: str,
    progress: bool,
    echo: Callable[[str], None],
    profile: Profile,
) -> Prepared:
    """Load the ``--data`` slices, draw their held-out samples and baselines, and accumulate the
    moments (at most ``statistics_tokens`` of the fitting sequences) and their decompositions."""
    slices = load_slices(model, data_args, config)
    fit = fitting_sample(slices, config)
    samples = SliceSamples(model, config, profile)
    samples.add_named(slices)
    echo(f"[{label}] statistics over {sum(f.n_tokens for f in fit):,} tokens on {model.device} ...")
    with profile("statistics"):
        batch = statistics_batch_tokens(model.spec, max(s.tokens.shape[1] for s in slices), config.batch_tokens)
        moments = accumulate_moments(model, fit, batch, config.seed, progress)
    with profile("decompositions"):
        weighted = moments if config.importance == "fisher" else activation_weighted(moments, model.reader_grams())
        decompositions = decompose(weighted, model.weights)
    return Prepared(slices, samples, moments, decompositions)


@dataclass
class ComputedCheckpoint:
    """One checkpoint's artifact but for its place in its series (lineages, similarities to the
    series' ends, the matches with the checkpoint before), which needs the checkpoints before it:
    everything the model is run for, so the checkpoints of a sweep compute independently."""

    name: str
    label: str
    manifest: dict
    tables: dict[str, pd.DataFrame]
    bases: dict[str, Tensor]
    prints: dict[str, list[float]]
    channels: list[Channel]


def ingest_checkpoint(
    model: LoadedModel,
    checkpoint: CheckpointSource,
    data_args: list[str],
    out_root: Path,
    config: IngestConfig,
    model_name: str | None = None,
    previous: PreviousCheckpoint | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    profile: Profile = no_profile,
    series: Series | None = None,
) -> tuple[Path, PreviousCheckpoint]:
    """Compute one checkpoint's artifact under ``out_root``; returns it and what the next one matches
    against (:func:`compute_checkpoint`, then :func:`finish_checkpoint`)."""
    computed = compute_checkpoint(model, checkpoint, data_args, config, model_name, progress, echo, profile, series)
    return finish_checkpoint(computed, out_root, config, data_args, previous, series, echo, profile)


def compute_checkpoint(
    model: LoadedModel,
    checkpoint: CheckpointSource,
    data_args: list[str],
    config: IngestConfig,
    model_name: str | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    profile: Profile = no_profile,
    series: Series | None = None,
) -> ComputedCheckpoint:
    """Everything of one checkpoint's artifact that its model computes.

    Moments come from at most ``statistics_tokens`` of the fitting sequences; the rank search,
    channel recovery and exact ablation from at most ``effect_tokens`` held-out tokens of each
    slice; the attribution pass reads every sequence of every slice. ``series``: the run's
    checkpoints when there are several (the checkpoint is compressed at the series' rank fraction when
    it has one, its own search recorded beside).
    """
    started = time.time()
    spec = model.spec
    name = model_name or checkpoint.model_name or spec.name
    layout = ChannelLayout(spec)
    prepared = prepare(model, data_args, config, checkpoint.label, progress, echo, profile)
    slices, samples, moments, held_out = prepared.slices, prepared.samples, prepared.moments, prepared.held_out
    union = IngestData(slices)
    with profile("rank search"):
        fraction = series.fraction if series is not None else None  # the series' rule, when it has one
        compression, report = prepared.compress(model, config, config.energy if fraction is None else fraction)
        searched = None if fraction is None else prepared.compress(model, config, None)[1]
    rule = ranks_rule(config, series)
    recovered = report.loss_recovered if report.loss_recovered is None else round(report.loss_recovered, 4)
    echo(
        f"[{checkpoint.label}] rank fraction {report.fraction}: all channels compressed at once recover "
        f"{recovered} of the loss on {sum(s.n_tokens for s in held_out):,} held-out tokens; mean ranks "
        + ", ".join(f"{g} {r:.2f}" for g, r in report.mean_ranks.items())
        + (f" (no recovery measured: {report.reason})" if report.reason else "")
        + (f"; {rule}, its own search: {searched.fraction}" if searched is not None else "")
    )
    with profile("structural scores"):
        structural = structural_scores(compression, moments, layout, model.weights.W_O)
    scorer = SliceScorer(model, layout, compression, moments, structural, samples, config, progress, profile)
    scored = scorer.named(slices, union.name, union.weights())
    with profile("fidelity"):
        clean, ablated = per_prompt(scored, slices)
        compressed = compression_losses(scorer.interventions, held_out, config.batch_tokens, progress)
        chance = sum(s.n_sequences * chance_level(s.metric, spec.outputs) for s in held_out) / clean.numel()
        recovery = channel_recovery(scorer.names, clean, compressed, ablated, chance)
    situations: list[DataSlice] = []
    if config.situations:
        with profile("situations"):
            unit, budget = config.situation_unit, config.situation_tokens
            usage = exact_usage(
                scorer.interventions, slices, unit, budget, config.ablation, config.batch_tokens, config.seed, progress
            )
            found = discover(usage, scorer.names, config.situations, config.seed, model.tokenizer)
        situations = found.situations
        echo(
            f"[{checkpoint.label}] {len(situations)} situation(s) discovered among {len(usage.effects):,} "
            f"{unit}s (silhouette {found.silhouette:.2f})"
            if situations
            else f"[{checkpoint.label}] {'warning: ' if found.flat else ''}one situation: {found.reason}"
        )
    for situation in situations:
        scored[situation.name] = scorer.discovered(situation)
    for flat in (slice_name for slice_name, s in scored.items() if s.flat_gradients):
        echo(
            f"[{checkpoint.label}] warning: slice {flat!r} has flat gradients: its largest first-order channel "
            f"effect is {max(scored[flat].scores.activity.values()):.2g} nats against an exact "
            f"{max(scored[flat].ablation.values()):.2g} (a saturated model?). Its attribution scores say little; "
            "judge its edges by patched and its channels by ablation (--importance activation weighs the "
            "subspaces without gradients)."
        )
    with profile("fingerprints"):
        prints, pattern_scores = channel_fingerprints(model, compression, moments, layout, config.batch_tokens)
    with profile("artifact"):
        bases = bases_of(compression, layout)
        tokens = output_tokens(bases, model.runner.params["unembed.W_U"], model.tokenizer)
        tables = artifact_tables(
            layout, compression, structural, scored, recovery, prints, pattern_scores, union.name, tokens
        )
        per_slice = {slice_name: s.scores for slice_name, s in scored.items()}
        examples = example_rows([*slices, *situations], per_slice, config.example_context, model.tokenizer)
        tables["examples"] = frame("examples", examples)
    steering: list[dict] = []
    if config.steer:
        with profile("steering"):
            steering = direction_steering(
                model, bases, held_out, config.steer, config.steer_sd, config.batch_tokens, config.seed
            )
        echo(f"[{checkpoint.label}] steering: {len(steering) // (2 * len(held_out)):,} write directions measured")
    tables["steering"] = frame("steering", steering)
    manifest = checkpoint_manifest(
        name, spec, checkpoint, config, data_args, report, scored, [*slices, *situations], union, model.device, started
    ) | {
        "ranks": {"rule": rule, "searched": None if searched is None else searched.as_dict()},
        "series": list(series.labels) if series is not None else [checkpoint.label],
    }
    return ComputedCheckpoint(name, checkpoint.label, manifest, tables, bases, prints, layout.channels)


def finish_checkpoint(
    computed: ComputedCheckpoint,
    out_root: Path,
    config: IngestConfig,
    data_args: list[str],
    previous: PreviousCheckpoint | None,
    series: Series | None,
    echo: Callable[[str], None] = print,
    profile: Profile = no_profile,
) -> tuple[Path, PreviousCheckpoint]:
    """Place a computed checkpoint in its series after ``previous`` (compared with the last's bases)
    and write its artifact under ``out_root``; returns it and what the next one matches against."""
    label, bases, prints, channels = computed.label, computed.bases, computed.prints, computed.channels
    with profile("artifact"):
        last = None if series is None or label == series.labels[-1] else series.last
        place = series_place(channels, label, bases, previous, last, config.match_threshold)
        tables = placed(computed.tables, place)
        tables["matches"] = matches(channels, bases, prints, previous, config.match_threshold)
        path = write_artifact(
            artifact_path(out_root, computed.name, label, config, data_args), computed.manifest, tables, bases
        )
    echo(f"[{label}] artifact: {path}")
    return path, following(label, bases, prints, previous, place.lineage)


def bases_of(compression: Compression, layout: ChannelLayout) -> dict[str, Tensor]:
    """Every subspace's orthonormal basis, "<block>/<role>" -> float32 [d_model, rank] on the CPU."""
    return {f"{c.name}/{role}": compression.basis(c, role).float().cpu() for c in layout.channels for role in c.roles}


def search_series(
    model: LoadedModel,
    data_args: list[str],
    config: IngestConfig,
    label: str,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    profile: Profile = no_profile,
) -> tuple[float, dict[str, Tensor]]:
    """The rank fraction a series' last checkpoint searches (at ``--energy`` if fixed), and its bases."""
    compression, report = prepare(model, data_args, config, label, progress, echo, profile).compress(
        model, config, config.energy
    )
    return report.fraction, bases_of(compression, ChannelLayout(model.spec))


class CheckpointRunner(Protocol):
    """Where a run's checkpoints are computed: here, one after the other (:class:`LocalRunner`), or
    as Ray tasks (:class:`~.sweep.RayRunner`)."""

    def search(self, checkpoint: CheckpointSource) -> tuple[float, dict[str, Tensor]]:
        """:func:`search_series` on ``checkpoint``."""
        ...

    def computed(self, checkpoints: list[CheckpointSource], series: Series | None) -> Iterator[ComputedCheckpoint]:
        """:func:`compute_checkpoint` of each of ``checkpoints``, yielded in their order."""
        ...


@dataclass
class LocalRunner:
    """Each checkpoint's model loaded here when its turn comes (``loaded``: those given loaded, by
    label) and released after it."""

    data_args: list[str]
    config: IngestConfig
    device: str
    names: dict[str, str]  # label -> the model's name in the catalog
    loaded: dict[str, LoadedModel]
    progress: bool
    echo: Callable[[str], None]
    profile: Profile

    def _model(self, checkpoint: CheckpointSource) -> LoadedModel:
        with self.profile("load model"):
            return self.loaded.get(checkpoint.label) or load_model(checkpoint.source, checkpoint.revision, self.device)

    def search(self, checkpoint: CheckpointSource) -> tuple[float, dict[str, Tensor]]:
        model = self._model(checkpoint)
        return search_series(
            model, self.data_args, self.config, checkpoint.label, self.progress, self.echo, self.profile
        )

    def computed(self, checkpoints: list[CheckpointSource], series: Series | None) -> Iterator[ComputedCheckpoint]:
        for checkpoint in checkpoints:
            model = self._model(checkpoint)
            yield compute_checkpoint(
                model,
                checkpoint,
                self.data_args,
                self.config,
                self.names[checkpoint.label],
                self.progress,
                self.echo,
                self.profile,
                series,
            )
            del model


def ingest(
    model: str | LoadedModel,
    checkpoints: list[str],
    data_args: list[str],
    out_root: Path,
    config: IngestConfig,
    device: str = "cpu",
    model_name: str | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    on_artifact: Callable[[Path], object] | None = None,
    profile: Profile = no_profile,
    force: bool = False,
    label: str | None = None,
    ray: RaySweep | None = None,
) -> list[Path]:
    """Ingest every checkpoint of ``model`` in step order; returns the artifact directories.

    ``model`` is a hub name or local directory (with ``checkpoints``: local directories or hub
    revisions), or a model already loaded with :func:`~circuit_atlas.ingest.model_adapter.load_model`
    (one checkpoint, labelled ``main``). ``on_artifact`` is called with each artifact as soon as
    it is written (the catalog loads it then, so a long run shows its checkpoints as they finish).
    ``label`` names the one checkpoint in the catalog (``<model>@<label>``) instead of its own label.
    A checkpoint whose artifact is already complete under ``out_root`` for the same settings and
    data is not recomputed unless ``force``: an interrupted multi-checkpoint run resumes. ``ray``
    computes the checkpoints as Ray tasks (:mod:`.sweep`); their artifacts are the same.
    """
    reason = unwritable(Path(out_root))
    if reason:
        raise UserError(f"--out {out_root} cannot be written ({reason}); choose a folder you can write.")
    if isinstance(model, LoadedModel):
        if checkpoints:
            raise UserError("A loaded model is one checkpoint: give no --checkpoint with it.")
        if ray is not None:
            raise UserError("A sweep on Ray loads each checkpoint in its worker: give the model's name or folder.")
        sources: list[tuple[LoadedModel | None, CheckpointSource]] = [
            (model, CheckpointSource(model.spec.source, None, "main", 0, None, None))
        ]
    else:
        sources = [(None, c) for c in resolve_checkpoints(model, checkpoints)]
    if label is not None:
        if not isinstance(label, str) or not label.strip() or label != label.strip() or "@" in label:
            raise UserError(f"--label {label!r}: give a checkpoint label without '@' or leading or trailing spaces.")
        if len(sources) != 1:
            raise UserError(f"--label names one checkpoint, and this ingest has {len(sources)}; label them by name.")
        sources = [(loaded, replace(checkpoint, label=label)) for loaded, checkpoint in sources]

    def name_of(loaded: LoadedModel | None, checkpoint: CheckpointSource) -> str:
        return model_name or checkpoint.model_name or (loaded.spec.name if loaded else model_name_of(checkpoint.source))

    labels = [checkpoint.label for _, checkpoint in sources]
    names = {checkpoint.label: name_of(loaded, checkpoint) for loaded, checkpoint in sources}
    done = {label: artifact_path(out_root, names[label], label, config, data_args) for label in labels}

    def complete(label: str, fraction: float | None) -> bool:
        """Whether ``label``'s artifact is there for these settings, data and series (and, when the
        series has one, compressed at its rank fraction)."""
        if force or not is_complete(done[label], config.digest()):
            return False
        manifest = read_manifest(done[label])
        if manifest["data"] != list(data_args) or manifest["series"] != labels:
            return False
        return fraction is None or manifest["fidelity"]["fraction"] == fraction

    runner: CheckpointRunner
    if ray is not None:
        from .sweep import RayRunner  # Ray only when a sweep asks for it

        runner = RayRunner(ray, data_args, config, device, names, Path(out_root), echo)
    else:
        given = {checkpoint.label: loaded for loaded, checkpoint in sources if loaded is not None}
        runner = LocalRunner(data_args, config, device, names, given, progress, echo, profile)
    series = None
    if len(sources) > 1:  # the last checkpoint first: its bases, and its search for --series-ranks last
        last = sources[-1][1]
        if complete(last.label, None):
            manifest, last_bases = read_manifest(done[last.label]), read_artifact(done[last.label]).bases()
            fraction = (manifest["ranks"]["searched"] or manifest["fidelity"])["fraction"]
        else:
            fraction, last_bases = runner.search(last)
        by_series = config.energy is None and config.series_ranks == "last"
        series = Series(tuple(labels), fraction if by_series else None, last_bases)
        if by_series:
            echo(f"[series] rank fraction {fraction}, searched on {last.label}, compresses every checkpoint")
    fraction = None if series is None else series.fraction
    pending = [checkpoint for _, checkpoint in sources if not complete(checkpoint.label, fraction)]
    computed = runner.computed(pending, series)
    paths, previous = [], None
    for _, checkpoint in sources:
        path = done[checkpoint.label]
        if checkpoint in pending:
            path, previous = finish_checkpoint(
                next(computed), out_root, config, data_args, previous, series, echo, profile
            )
        else:
            echo(f"[{checkpoint.label}] artifact already complete, skipped (--force recomputes it): {path}")
            previous = PreviousCheckpoint.from_artifact(path, previous)
        paths.append(path)
        if on_artifact is not None:
            on_artifact(path)
    next(computed, None)  # the runner's end (a sweep stops the Ray runtime it started)
    return paths
