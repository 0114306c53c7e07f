"""The compute step: model and data in, one artifact directory per checkpoint out.

model -> statistics (Fisher pass) -> compression (rank fraction by fidelity) -> exact ablation and
faithfulness per slice -> per-channel fidelity -> structural edge scores -> attribution pass per
slice -> edge patching per slice -> situations (each scored as a slice) -> fingerprints -> matches
with the previous checkpoint -> artifact. Nothing here touches Neo4j.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pandas as pd
import torch

from circuit_atlas import __version__
from circuit_atlas.errors import UserError

from .artifact import frame, is_complete, read_manifest, write_artifact
from .attribution import SliceScores, slice_scores
from .baselines import Baseline
from .channels import Channel, ChannelLayout
from .checkpoints import CheckpointSource, resolve_checkpoints
from .compression import Compression, activation_weighted, decompose
from .config import IngestConfig
from .data import DataSlice, load_slice
from .edge_patching import candidate_edges, patched_effects
from .examples import example_rows
from .faithfulness import FaithfulCircuit, curve_losses, effect_order, faithfulness, kept_variant, smallest_faithful
from .fidelity import (
    ablation_effects,
    ablation_errors,
    ablation_losses,
    channel_fidelity,
    choose_fraction,
    compression_losses,
    variant_losses,
)
from .fingerprints import FEATURES, PATTERN_SCORES, channel_fingerprints
from .interventions import Interventions
from .matching import PreviousCheckpoint, matches
from .model_adapter import LoadedModel, load_model, model_name_of
from .paths import unwritable
from .situations import MIN_SILHOUETTE, discover
from .statistics import accumulate_moments, statistics_batch_tokens
from .structural import StructuralScores, structural_scores

#: A stage profiler: ``profile(stage)`` is a context manager around the stage (benchmarks time them).
Profile = Callable[[str], AbstractContextManager]


def no_profile(stage: str) -> AbstractContextManager:
    return nullcontext()


@dataclass(frozen=True)
class IngestData:
    """The ingest data: the one slice, or the union of several (a slice of its own in the catalog,
    whose scores are the slices' combined by prompt counts)."""

    slices: list[DataSlice]

    @property
    def name(self) -> str:
        return self.slices[0].name if len(self.slices) == 1 else "+".join(s.name for s in self.slices)

    def entry(self) -> dict:
        """Its manifest entry (a slice's own when there is one slice)."""
        if len(self.slices) == 1:
            return slice_entry(self.slices[0])
        digest = hashlib.sha256("".join(s.content_hash for s in self.slices).encode()).hexdigest()
        metrics, rules = {s.metric for s in self.slices}, {s.scored for s in self.slices}
        return {
            "id": f"{self.name}:{digest[:12]}",
            "name": self.name,
            "description": "the ingest data: " + "; ".join(f"{s.name} ({s.description})" for s in self.slices),
            "n_tokens": sum(s.n_tokens for s in self.slices),
            "n_sequences": sum(s.n_sequences for s in self.slices),
            "metric": metrics.pop() if len(metrics) == 1 else "mixed",
            "scored": rules.pop() if len(rules) == 1 else "as each slice",
            "ablation": "as each slice",  # its effects are the slices' own, weighted
        }

    def weights(self) -> dict[str, float]:
        """Each slice's share of the prompts."""
        total = sum(s.n_sequences for s in self.slices)
        return {s.name: s.n_sequences / total for s in self.slices}


#: A slice's gradients are flat when its largest first-order channel effect is under this share of its
#: largest exact one (the reference models: 0.16 to 0.25; the saturated key-value model: 0.0003).
FLAT_SHARE = 0.01
#: ... and some channel's exact effect is at least this (nats): else there is no behaviour to miss.
FLAT_MIN_EFFECT = 0.01


def flat_gradients(scores: SliceScores, ablation: dict[str, float]) -> bool:
    """Whether first-order scores say little on a slice: ablating some channel moves its metric, yet
    the first-order estimates of every channel's effect stay near zero, as on a saturated model
    (its loss near zero, so its gradients too). Its ``attribution`` and the Fisher weighting of the
    subspaces then carry little; ``patched`` and ``ablation`` are exact whatever the gradients."""
    largest = max(ablation.values())
    return largest >= FLAT_MIN_EFFECT and max(scores.activity.values()) < FLAT_SHARE * largest


def slice_entry(data: DataSlice, baseline: Baseline | None = None) -> dict:
    """A slice's manifest entry; ``baseline``: what its channels were ablated to."""
    return (
        {
            "id": data.id,
            "name": data.name,
            "description": data.description,
            "n_tokens": data.n_tokens,
            "n_sequences": data.n_sequences,
            "metric": data.metric,
            "scored": data.scored,
            "discovered": data.discovered,
        }
        | ({"ablation": baseline.describe()} if baseline else {})
        | ({"prompts": [list(prompt) for prompt in data.origin]} if data.origin else {})
    )


def _edge_rows(layout: ChannelLayout, matrices: dict[str, torch.Tensor], extra: dict | None = None) -> list[dict]:
    """One row per (reader role, writer) pair that can feed, with each matrix's entry."""
    mask = layout.feeds_mask
    cpu = {name: m.cpu() for name, m in matrices.items()}
    rows = []
    for i, j in mask.nonzero().tolist():
        reader, writer = layout.readers[i], layout.writers[j]
        rows.append(
            {
                **(extra or {}),
                "writer": writer.name,
                "reader": reader.channel.name,
                "role": reader.role,
                **{name: float(m[i, j]) for name, m in cpu.items()},
            }
        )
    return rows


def artifact_tables(
    layout: ChannelLayout,
    compression: Compression,
    structural: StructuralScores,
    per_slice: dict[str, SliceScores],
    patched: dict[str, torch.Tensor],
    ablation: dict[str, dict[str, float]],
    ablation_se: dict[str, dict[str, float | None]],
    faithful: dict[str, dict[str, tuple[int, float | None]]],
    circuits: dict[str, FaithfulCircuit],
    per_channel: dict[str, float | None],
    prints: dict[str, list[float]],
    pattern_scores: dict[str, torch.Tensor],
    ingest_slice: str,
) -> dict[str, pd.DataFrame]:
    """Every table of the artifact but ``matches``, in the schema of :mod:`.artifact`."""
    channels = layout.channels
    ingest_scores = per_slice[ingest_slice]

    def pattern(c, score: str) -> float | None:
        return float(pattern_scores[score][c.layer, c.head]) if c.kind == "attn_head" else None

    blocks = frame(
        "blocks",
        (
            {
                "name": c.name,
                "order": c.order,
                "kind": c.kind,
                "layer": c.layer,
                "head": c.head,
                "fidelity": per_channel[c.name],
                "fingerprint": prints[c.name],
                **{s: pattern(c, s) for s in PATTERN_SCORES},
            }
            for c in channels
        ),
    )
    subspaces = frame(
        "subspaces",
        (
            {
                "block": c.name,
                "role": role,
                "rank": compression.rank(c, role),
                "energy": compression.energy(c, role),
                "basis_key": f"{c.name}/{role}",
                "singular_values": compression.singular_values(c, role).float().cpu().tolist(),
            }
            for c in channels
            for role in c.roles
        ),
    )
    edges = frame(
        "edges",
        _edge_rows(
            layout,
            {
                "weight": structural.weight,
                "strength": structural.strength,
                "flow": structural.flow,
                "attribution": ingest_scores.attribution,
                "attribution_signed": ingest_scores.attribution_signed,
                "patched": patched[ingest_slice],
            },
        ),
    )
    slice_edges = frame(
        "slice_edges",
        [
            row
            for name, scores in per_slice.items()
            for row in _edge_rows(
                layout,
                {
                    "attribution": scores.attribution,
                    "attribution_signed": scores.attribution_signed,
                    "patched": patched[name],
                },
                {"slice": name},
            )
        ],
    )
    activity = frame(
        "activity",
        (
            {
                "slice": name,
                "block": c.name,
                "attribution": scores.activity[c.name],
                "attribution_signed": scores.activity_signed[c.name],
                "ablation": ablation[name][c.name],
                "ablation_se": ablation_se[name][c.name],
                "effect_rank": faithful[name][c.name][0],
                "faithfulness": faithful[name][c.name][1],
                "in_circuit": c.name in circuits[name].members,
                "mean_norm": scores.mean_norm[c.name],
            }
            for name, scores in per_slice.items()
            for c in channels
        ),
    )
    return {
        "blocks": blocks.astype({"head": "Int64"}),
        "subspaces": subspaces,
        "edges": edges,
        "slice_edges": slice_edges,
        "activity": activity,
    }


def faithfulness_curve(
    interventions: Interventions,
    channels: list[Channel],
    effects: dict[str, float],
    samples: dict[str, DataSlice],
    weights: dict[str, float],
    config: IngestConfig,
    progress: bool,
) -> tuple[dict[str, tuple[int, float | None]], FaithfulCircuit]:
    """Per channel, its rank by exact ablation effect (1 = largest) and the faithfulness of the
    circuit of every channel up to that rank, and the circuit by faithfulness (its target
    ``config.circuit_faithfulness``), on the samples of the slices in ``weights`` (their mean losses
    weighted as the effects were)."""
    order = effect_order(channels, effects)
    parts = [samples[name] for name in weights]

    def weighted(losses: torch.Tensor) -> torch.Tensor:
        """[V, prompts of every part] -> [V]: each part's mean, weighted."""
        chunks = losses.split([p.n_sequences for p in parts], 1)
        return sum(w * chunk.mean(1) for w, chunk in zip(weights.values(), chunks))

    def loss_of(kept: list[Channel]) -> float:
        variant = kept_variant(channels, kept)
        return float(weighted(variant_losses(interventions, [variant], parts, config.batch_tokens))[0])

    means = weighted(curve_losses(interventions, order, parts, config.batch_tokens, progress))
    curve = faithfulness(means)
    circuit = smallest_faithful(order, means, loss_of, config.circuit_faithfulness)
    return {c.name: (k, curve[k]) for k, c in enumerate(order, 1)}, circuit


def effect_sample(held_out: DataSlice, config: IngestConfig) -> DataSlice:
    """The held-out prompts the rank search, fidelity, exact ablation and faithfulness read, spread
    over them: as many as ``effect_tokens`` tokens hold, and at least ``effect_prompts`` (all of
    them if there are fewer), however long the prompts are."""
    by_tokens = config.effect_tokens * held_out.n_sequences // held_out.n_tokens
    return held_out.spread(max(1, by_tokens, config.effect_prompts))


def run_digest(config: IngestConfig, data_args: list[str]) -> str:
    """What makes two ingests of one checkpoint the same: the settings, the ``--data`` arguments,
    and the content of each data file (a file rewritten in place is other data, not a resume)."""
    contents = []
    for argument in data_args:
        path = Path(argument.rpartition("=")[2]).expanduser()
        contents.append(hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None)
    identity = [config.digest(), list(data_args)] + ([contents] if any(contents) else [])
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:16]


def artifact_path(out_root: Path, model_name: str, label: str, config: IngestConfig, data_args: list[str]) -> Path:
    return Path(out_root) / f"{model_name.replace('/', '--')}__{label}__{run_digest(config, data_args)[:8]}"


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
    fidelity and exact ablation from at most ``effect_tokens`` held-out tokens of each slice; the
    attribution pass reads every sequence of every slice.
    """
    started = time.time()
    spec = model.spec
    name = model_name or checkpoint.model_name or spec.name
    layout = ChannelLayout(spec)
    channels = layout.channels
    slices = load_slices(model, data_args, config)
    union = IngestData(slices)
    splits = {s.name: s.split(config.holdout, config.seed) for s in slices}
    fit_tokens = sum(fit.n_tokens for fit, _ in splits.values())
    share = min(1.0, config.statistics_tokens / fit_tokens)
    fit = [fit.spread(max(1, round(fit.n_sequences * share))) for fit, _ in splits.values()]
    samples = {name: effect_sample(held_out, config) for name, (_, held_out) in splits.items()}
    sample = list(samples.values())
    if config.baseline is not None and config.baseline not in samples:
        raise UserError(f"--baseline {config.baseline!r} is not a --data slice; the slices are {', '.join(samples)}.")
    if config.ablation == "counterfactual":
        lacking = [s.name for s in slices if s.corrupted is None]
        if lacking or config.baseline is not None:
            raise UserError(
                f"--ablation counterfactual patches each prompt from its own counterfactual prompt: every slice "
                f"needs counterfactual_tokens or counterfactual_text in its rows (task slices), and it takes no "
                f"--baseline. {'Slice ' + repr(lacking[0]) + ' has none.' if lacking else ''}".strip()
            )

    @functools.cache
    def measured_on(source: str) -> Baseline:
        with profile(f"baseline {source}"):
            return Baseline.measure(model, samples[source], config.ablation, config.batch_tokens, config.seed)

    def measure_baseline(name: str) -> Baseline:
        """The baseline slice ``name``'s channels are ablated to: measured on its own sample, or on
        --baseline's (once for every slice)."""
        return measured_on(config.baseline or name)

    baselines = {name: measure_baseline(name) for name in samples}

    echo(f"[{checkpoint.label}] statistics over {sum(f.n_tokens for f in fit):,} tokens on {model.device} ...")
    with profile("statistics"):
        batch = statistics_batch_tokens(spec, max(s.tokens.shape[1] for s in slices), config.batch_tokens)
        moments = accumulate_moments(model, fit, batch, config.seed, progress)
    with profile("decompositions"):
        weighted = moments if config.importance == "fisher" else activation_weighted(moments, model.reader_grams())
        decompositions = decompose(weighted, model.weights)
    with profile("rank search"):
        target = None if config.energy is not None else config.fidelity
        compression, report = choose_fraction(
            model,
            decompositions,
            baselines,
            layout,
            sample,
            target,
            config.energy,
            config.max_rank,
            config.floor,
            config.batch_tokens,
        )
    recovered = report.loss_recovered if report.loss_recovered is None else round(report.loss_recovered, 4)
    echo(
        f"[{checkpoint.label}] rank fraction {report.fraction}: all channels compressed at once recover "
        f"{recovered} of the loss on {sum(s.n_tokens for s in sample):,} held-out tokens; mean ranks "
        + ", ".join(f"{g} {r:.2f}" for g, r in report.mean_ranks.items())
    )
    interventions = Interventions(model, compression, baselines)
    names = [c.name for c in channels]
    clean, ablated, ablation, ablation_se = {}, {}, {}, {}

    def ablate(name: str) -> None:
        """Clean and per-channel ablated losses and effects of slice ``name`` on its sample."""
        with profile(f"ablation {name}"):
            clean[name], ablated[name] = ablation_losses(
                interventions, samples[name], config.batch_tokens, progress, desc=f"ablation {name}"
            )
            ablation[name] = ablation_effects(names, clean[name], ablated[name])
            ablation_se[name] = ablation_errors(names, clean[name], ablated[name])

    faithful: dict[str, dict[str, tuple[int, float | None]]] = {}
    circuits: dict[str, FaithfulCircuit] = {}

    def curve(name: str, weights: dict[str, float]) -> None:
        """Slice ``name``'s faithfulness curve and circuit by faithfulness."""
        with profile(f"faithfulness {name}"):
            faithful[name], circuits[name] = faithfulness_curve(
                interventions, channels, ablation[name], samples, weights, config, progress
            )

    for s in slices:
        ablate(s.name)
    weights = union.weights()
    ablation[union.name] = {c: sum(weights[s] * ablation[s][c] for s in weights) for c in names}
    ablation_se[union.name] = {  # independent samples: their variances add, weighted
        c: None
        if any(ablation_se[s][c] is None for s in weights)
        else sum((weights[s] * ablation_se[s][c]) ** 2 for s in weights) ** 0.5
        for c in names
    }
    for scored in ablation:
        curve(scored, weights if scored == union.name else {scored: 1.0})
    with profile("fidelity"):
        compressed = compression_losses(interventions, sample, config.batch_tokens, progress)
        per_channel = channel_fidelity(
            names,
            torch.cat([clean[s.name] for s in slices]),
            compressed,
            torch.cat([ablated[s.name] for s in slices], 1),
        )
    with profile("structural scores"):
        structural = structural_scores(compression, moments, layout, model.weights.W_O)

    def attribution(data: DataSlice) -> SliceScores:
        with profile(f"attribution {data.name}"):
            return slice_scores(
                model,
                compression,
                moments,
                layout,
                data,
                config.batch_tokens,
                progress,
                desc=f"attribution {data.name}",
                examples=config.examples,
            )

    per_slice = {s.name: attribution(s) for s in slices}
    per_slice[union.name] = per_slice.get(union.name) or SliceScores.combined(list(per_slice.values()))

    def patch(name: str, pairs: list[tuple[int, int]]) -> torch.Tensor:
        with profile(f"edge patching {name}"):
            return patched_effects(model, layout, pairs, samples[name], baselines[name], config.batch_tokens, progress)

    # The named slices share their candidates, so that the union's patched effects are theirs weighted.
    # First-order attribution undercounts edges through saturated attention (an induction head's
    # keys), which flow, a structural share, does not: the top of both are patched.
    scores = [per_slice[s.name].attribution for s in slices] + [structural.flow]
    pairs = candidate_edges(layout, scores, config.patched_edges)
    patched = {s.name: patch(s.name, pairs) for s in slices}
    patched[union.name] = sum(weights[s] * patched[s] for s in weights)
    situations = []
    if config.situations:
        with profile("situations"):
            effects = [per_slice[s.name].sequence_effects for s in slices]
            effect_names = [c.name for c in (*layout.writers, layout.unembed)]
            situations, silhouette = discover(
                slices, effects, effect_names, config.situations, config.seed, model.tokenizer
            )
        echo(
            f"[{checkpoint.label}] {len(situations)} situation(s) discovered (silhouette {silhouette:.2f})"
            if situations
            else f"[{checkpoint.label}] one situation: no clustering reached silhouette {MIN_SILHOUETTE}"
        )
    for d in situations:  # scored like the named slices
        samples[d.name] = effect_sample(d.split(config.holdout, config.seed)[1], config)  # its own prompts
        baselines[d.name] = measure_baseline(d.name)
        ablate(d.name)
        curve(d.name, {d.name: 1.0})
        per_slice[d.name] = attribution(d)
        scores = [per_slice[d.name].attribution, structural.flow]
        patched[d.name] = patch(d.name, candidate_edges(layout, scores, config.patched_edges))
    flat = {scored: flat_gradients(per_slice[scored], ablation[scored]) for scored in per_slice}
    for flat_slice in (scored for scored, is_flat in flat.items() if is_flat):
        echo(
            f"[{checkpoint.label}] warning: slice {flat_slice!r} has flat gradients: its largest first-order channel "
            f"effect is {max(per_slice[flat_slice].activity.values()):.2g} nats against an exact "
            f"{max(ablation[flat_slice].values()):.2g} (a saturated model?). Its attribution scores say little; "
            "judge its edges by patched and its channels by ablation (--importance activation weighs the "
            "subspaces without gradients)."
        )
    with profile("fingerprints"):
        prints, pattern_scores = channel_fingerprints(model, compression, moments, layout, config.batch_tokens)
    with profile("artifact"):
        bases = {f"{c.name}/{role}": compression.basis(c, role).float().cpu() for c in channels for role in c.roles}
        tables = artifact_tables(
            layout,
            compression,
            structural,
            per_slice,
            patched,
            ablation,
            ablation_se,
            faithful,
            circuits,
            per_channel,
            prints,
            pattern_scores,
            union.name,
        )
        tables["matches"] = matches(channels, bases, prints, previous, config.match_threshold)
        examples = example_rows([*slices, *situations], per_slice, config.example_context, model.tokenizer)
        tables["examples"] = frame("examples", examples)
    manifest = {
        "model": {**spec.as_dict(), "name": name},
        "checkpoint": {
            "label": checkpoint.label,
            "step": checkpoint.step,
            "tokens_seen": checkpoint.tokens_seen,
            "loss": report.loss_clean,
            "source": checkpoint.source,
            "revision": checkpoint.revision,
        },
        "slices": [
            entry | {"flat_gradients": flat[entry["name"]], "circuit": circuits[entry["name"]].entry()}
            for entry in [slice_entry(s, baselines[s.name]) for s in [*slices, *situations]]
            + ([union.entry()] if len(slices) > 1 else [])
        ],
        "ingest_slice": union.name,
        "config": asdict(config),
        "config_hash": config.digest(),
        "data": list(data_args),
        "fidelity": report.as_dict(),
        "fingerprint_features": list(FEATURES),
        "code_version": __version__,
        "device": str(model.device),
        "started": started,
        "finished": time.time(),
    }
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
    on_artifact: Callable[[Path], None] | None = None,
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
        sources = [(model, CheckpointSource(model.spec.source, None, "main", 0, None, None))]
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
