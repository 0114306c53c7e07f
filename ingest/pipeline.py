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
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from pathlib import Path

from circuit_atlas.errors import UserError

from .artifact import frame, is_complete, read_manifest, write_artifact
from .artifact_tables import artifact_tables
from .channels import ChannelLayout
from .checkpoints import CheckpointSource, resolve_checkpoints
from .compression import activation_weighted, decompose
from .config import IngestConfig
from .data import DataSlice, load_slice
from .examples import example_rows
from .fidelity import channel_recovery, choose_rank_fraction, compression_losses
from .fingerprints import channel_fingerprints
from .manifest import IngestData, artifact_path, checkpoint_manifest
from .matching import PreviousCheckpoint, matches
from .metrics import chance_level
from .model_adapter import LoadedModel, load_model, model_name_of
from .paths import unwritable
from .situations import discover, exact_usage
from .slice_scorer import Profile, SliceSamples, SliceScorer, per_prompt
from .statistics import accumulate_moments, statistics_batch_tokens
from .structural import structural_scores


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
) -> tuple[Path, PreviousCheckpoint]:
    """Compute one checkpoint's artifact under ``out_root``; returns it and what the next one matches against.

    Moments come from at most ``statistics_tokens`` of the fitting sequences; the rank search,
    channel recovery and exact ablation from at most ``effect_tokens`` held-out tokens of each
    slice; the attribution pass reads every sequence of every slice.
    """
    started = time.time()
    spec = model.spec
    name = model_name or checkpoint.model_name or spec.name
    layout = ChannelLayout(spec)
    slices = load_slices(model, data_args, config)
    union = IngestData(slices)
    fit = fitting_sample(slices, config)
    samples = SliceSamples(model, config, profile)
    samples.add_named(slices)
    held_out = [samples.samples[s.name] for s in slices]

    echo(f"[{checkpoint.label}] statistics over {sum(f.n_tokens for f in fit):,} tokens on {model.device} ...")
    with profile("statistics"):
        batch = statistics_batch_tokens(spec, max(s.tokens.shape[1] for s in slices), config.batch_tokens)
        moments = accumulate_moments(model, fit, batch, config.seed, progress)
    with profile("decompositions"):
        weighted = moments if config.importance == "fisher" else activation_weighted(moments, model.reader_grams())
        decompositions = decompose(weighted, model.weights)
    with profile("rank search"):
        recovery_target = None if config.energy is not None else config.fidelity
        compression, report = choose_rank_fraction(
            model,
            decompositions,
            samples.baselines,
            layout,
            held_out,
            recovery_target,
            config.energy,  # a fixed rank fraction, or None to search it
            config.max_rank,
            config.floor,
            config.batch_tokens,
        )
    recovered = report.loss_recovered if report.loss_recovered is None else round(report.loss_recovered, 4)
    echo(
        f"[{checkpoint.label}] rank fraction {report.fraction}: all channels compressed at once recover "
        f"{recovered} of the loss on {sum(s.n_tokens for s in held_out):,} held-out tokens; mean ranks "
        + ", ".join(f"{g} {r:.2f}" for g, r in report.mean_ranks.items())
        + (f" (no recovery measured: {report.reason})" if report.reason else "")
    )
    with profile("structural scores"):
        structural = structural_scores(compression, moments, layout, model.weights.W_O)
    scorer = SliceScorer(model, layout, compression, moments, structural, samples, config, progress, profile)
    scored = scorer.named(slices, union.name, union.weights())
    with profile("fidelity"):
        clean, ablated = per_prompt(scored, slices)
        compressed = compression_losses(scorer.interventions, held_out, config.batch_tokens, progress)
        chance = sum(s.n_sequences * chance_level(s.metric, spec.d_vocab) for s in held_out) / clean.numel()
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
        bases = {
            f"{c.name}/{role}": compression.basis(c, role).float().cpu() for c in layout.channels for role in c.roles
        }
        tables = artifact_tables(layout, compression, structural, scored, recovery, prints, pattern_scores, union.name)
        tables["matches"] = matches(layout.channels, bases, prints, previous, config.match_threshold)
        per_slice = {slice_name: s.scores for slice_name, s in scored.items()}
        examples = example_rows([*slices, *situations], per_slice, config.example_context, model.tokenizer)
        tables["examples"] = frame("examples", examples)
    manifest = checkpoint_manifest(
        name, spec, checkpoint, config, data_args, report, scored, [*slices, *situations], union, model.device, started
    )
    with profile("artifact"):
        path = write_artifact(
            artifact_path(out_root, name, checkpoint.label, config, data_args), manifest, tables, bases
        )
    echo(f"[{checkpoint.label}] artifact: {path}")
    return path, PreviousCheckpoint(checkpoint.label, bases, prints)


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
) -> list[Path]:
    """Ingest every checkpoint of ``model`` in step order; returns the artifact directories.

    ``model`` is a hub name or local directory (with ``checkpoints``: local directories or hub
    revisions), or a model already loaded with :func:`~circuit_atlas.ingest.model_adapter.load_model`
    (one checkpoint, labelled ``main``). ``on_artifact`` is called with each artifact as soon as
    it is written (the catalog loads it then, so a long run shows its checkpoints as they finish).
    ``label`` names the one checkpoint in the catalog (``<model>@<label>``) instead of its own label.
    A checkpoint whose artifact is already complete under ``out_root`` for the same settings and
    data is not recomputed unless ``force``: an interrupted multi-checkpoint run resumes.
    """
    reason = unwritable(Path(out_root))
    if reason:
        raise UserError(f"--out {out_root} cannot be written ({reason}); choose a folder you can write.")
    if isinstance(model, LoadedModel):
        if checkpoints:
            raise UserError("A loaded model is one checkpoint: give no --checkpoint with it.")
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
    paths, previous = [], None
    for loaded, checkpoint in sources:
        name = model_name or checkpoint.model_name or (loaded.spec.name if loaded else model_name_of(checkpoint.source))
        done = artifact_path(out_root, name, checkpoint.label, config, data_args)
        if not force and is_complete(done, config.digest()) and read_manifest(done)["data"] == list(data_args):
            echo(f"[{checkpoint.label}] artifact already complete, skipped (--force recomputes it): {done}")
            path, previous = done, PreviousCheckpoint.from_artifact(done)
        else:
            with profile("load model"):
                loaded = loaded or load_model(checkpoint.source, checkpoint.revision, device)
            path, previous = ingest_checkpoint(
                loaded, checkpoint, data_args, out_root, config, name, previous, progress, echo, profile
            )
            del loaded
        paths.append(path)
        if on_artifact is not None:
            on_artifact(path)
    return paths
