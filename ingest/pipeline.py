"""The compute step: model and data in, one artifact directory per checkpoint out.

model -> statistics (Fisher pass) -> compression (rank fraction by fidelity) -> per-channel
fidelity -> structural edge scores -> attribution pass per slice -> fingerprints -> matches with
the previous checkpoint -> artifact. Nothing here touches Neo4j (the load step does).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch

from . import __version__
from .artifacts import write_artifact
from .channels import Channel, feeds, model_channels
from .compression import decompose
from .data import DataSlice, load_slice, synthetic_tokens
from .edges import SliceScores, read_roles, slice_scores, structural_scores, writers
from .errors import UserError
from .fidelity import ablation_effects, channel_fidelity, choose_fraction
from .fingerprints import PATTERN_SCORES, attention_scores, fingerprints, probe_tokens
from .model_adapter import CHECKPOINT_SIDECAR, load_model
from .statistics import accumulate_moments

PROBE_SEQUENCES = 32


@dataclass(frozen=True)
class IngestConfig:
    seq_len: int | None = None  # default: min(context, 128)
    n_seq: int = 256  # sequences per built-in slice
    holdout: float = 0.2  # fraction of each slice held out for fidelity
    fidelity: float = 0.95  # target loss recovered when the fraction is searched
    energy: float | None = None  # fixed rank fraction instead of the search
    max_rank: int | None = None
    floor: float = 1e-3  # a role below this share of its group's largest importance has rank 0
    batch_tokens: int = 4096
    seed: int = 0
    match_threshold: float = 0.8  # MATCHES between neighbouring checkpoints at or above this
    ablation_sequences: int = 64  # sequences per slice for the exact per-channel ablation effect

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class CheckpointSource:
    source: str
    revision: str | None
    label: str
    step: int
    tokens_seen: int | None
    model_name: str | None  # from the sidecar, if any


def _step_of(label: str) -> int:
    numbers = re.findall(r"\d+", label)
    return int(numbers[-1]) if numbers else 0


def _checkpoint_source(source: str, revision: str | None) -> CheckpointSource:
    sidecar = Path(source).expanduser() / CHECKPOINT_SIDECAR
    if revision is None and sidecar.is_file():
        meta = json.loads(sidecar.read_text())
        return CheckpointSource(source, None, meta["label"], int(meta["step"]), meta.get("tokens_seen"), meta.get("model"))
    if revision is not None:
        return CheckpointSource(source, revision, revision, _step_of(revision), None, None)
    local = Path(source).expanduser()
    label = local.name if local.exists() else "main"
    return CheckpointSource(source, None, label, _step_of(label) if local.exists() else 0, None, None)


def resolve_checkpoints(model: str, checkpoints: list[str]) -> list[CheckpointSource]:
    """``--checkpoint`` values: local checkpoint directories, or revisions of ``model`` on the hub."""
    if not checkpoints:
        return [_checkpoint_source(model, None)]
    resolved = []
    for checkpoint in checkpoints:
        as_path = Path(checkpoint).expanduser()
        resolved.append(_checkpoint_source(str(as_path), None) if as_path.exists() else _checkpoint_source(model, checkpoint))
    return sorted(resolved, key=lambda c: c.step)


def spread_rows(tokens: torch.Tensor, count: int) -> torch.Tensor:
    """At most ``count`` rows spread evenly over ``tokens`` (a union slice mixes its parts)."""
    rows = torch.linspace(0, tokens.shape[0] - 1, min(count, tokens.shape[0])).round().long()
    return tokens[rows]


def all_slices(slices: list[DataSlice], union: DataSlice) -> list[DataSlice]:
    """The given slices, and the ingest data as a slice of its own when it is their union."""
    return slices if union in slices else [*slices, union]


def _union(slices: list[DataSlice]) -> DataSlice:
    if len(slices) == 1:
        return slices[0]
    lengths = {s.tokens.shape[1] for s in slices}
    if len(lengths) > 1:
        raise UserError(f"The slices have different sequence lengths {sorted(lengths)}; give them one "
                        f"length (--seq-len cuts built-in and flat data).")
    names = "+".join(s.name for s in slices)
    return DataSlice(names, "the ingest data: " + "; ".join(f"{s.name} ({s.description})" for s in slices),
                     torch.cat([s.tokens for s in slices]))


def _similarity(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """Mean squared cosine of the principal angles between column spaces (None if either is empty)."""
    if a.shape[1] == 0 or b.shape[1] == 0:
        return None
    return float((a.T @ b).square().sum()) / min(a.shape[1], b.shape[1])


@dataclass
class PreviousCheckpoint:
    label: str
    bases: dict[str, torch.Tensor]
    fingerprints: dict[str, list[float]]


def _matches(channels: list[Channel], bases: dict[str, torch.Tensor], prints: dict[str, list[float]],
             previous: PreviousCheckpoint | None, threshold: float) -> pd.DataFrame:
    rows = []
    if previous is not None:
        for c in channels:
            roles = [*c.read_roles, *(["out"] if c.writes else [])]
            values = [_similarity(bases[f"{c.name}/{r}"], previous.bases[f"{c.name}/{r}"]) for r in roles
                      if f"{c.name}/{r}" in previous.bases]
            values = [v for v in values if v is not None]
            if not values:
                continue
            similarity = sum(values) / len(values)
            fp_now, fp_before = torch.tensor(prints[c.name]), torch.tensor(previous.fingerprints[c.name])
            fingerprint_similarity = float(torch.nn.functional.cosine_similarity(fp_now, fp_before, dim=0))
            if similarity >= threshold:
                rows.append({"previous_checkpoint": previous.label, "block": c.name,
                             "similarity": similarity, "fingerprint_similarity": fingerprint_similarity})
    return pd.DataFrame(rows, columns=["previous_checkpoint", "block", "similarity", "fingerprint_similarity"])


def _edge_rows(readers, sources, matrices: dict[str, torch.Tensor], extra: dict | None = None) -> list[dict]:
    rows = []
    for i, reader in enumerate(readers):
        for j, writer in enumerate(sources):
            if feeds(writer, reader.channel):
                row = {"writer": writer.name, "reader": reader.channel.name, "role": reader.role}
                row.update({name: float(m[i, j]) for name, m in matrices.items()})
                rows.append({**(extra or {}), **row})
    return rows


def _combined(scores: list[SliceScores]) -> SliceScores:
    """The ingest data's scores from its slices' (means weighted by sequence counts)."""
    n = sum(s.n_sequences for s in scores)

    def mean(get):
        return sum(get(s) * s.n_sequences for s in scores) / n

    names = scores[0].activity
    return SliceScores(n, mean(lambda s: s.attribution), mean(lambda s: s.attribution_signed),
                       {k: mean(lambda s: s.activity[k]) for k in names},
                       {k: mean(lambda s: s.activity_signed[k]) for k in names},
                       {k: mean(lambda s: s.mean_norm[k]) for k in names})


def ingest_checkpoint(checkpoint: CheckpointSource, data_args: list[str], out_root: Path, config: IngestConfig,
                      device: str, model_name: str | None = None, previous: PreviousCheckpoint | None = None,
                      progress: bool = True, echo: Callable[[str], None] = print
                      ) -> tuple[Path, PreviousCheckpoint]:
    started = time.time()
    model = load_model(checkpoint.source, checkpoint.revision, device)
    spec = model.spec
    name = model_name or checkpoint.model_name or spec.name
    channels = model_channels(spec)
    seq_len = config.seq_len or min(spec.n_ctx, 128)
    slices = [load_slice(arg, spec, model.tokenizer, seq_len, config.n_seq, config.seed + i)
              for i, arg in enumerate(data_args)]
    if not slices:
        raise UserError("No data: give at least one --data slice (for example --data repeated --data random).")
    if len({s.name for s in slices}) < len(slices):
        raise UserError(f"Two --data slices share a name ({[s.name for s in slices]}); name them NAME=SOURCE.")
    union = _union(slices)
    splits = [s.split(config.holdout) for s in slices]
    fit, heldout = torch.cat([f for f, _ in splits]), torch.cat([h for _, h in splits])

    echo(f"[{checkpoint.label}] statistics over {fit.numel():,} tokens on {device} ...")
    moments = accumulate_moments(model, fit, config.batch_tokens, config.seed, progress)
    decompositions = decompose(moments, model.weights)
    target = None if config.energy is not None else config.fidelity
    compression, report = choose_fraction(model, decompositions, moments, channels, heldout, target, config.energy,
                                          config.max_rank, config.floor, config.batch_tokens)
    echo(f"[{checkpoint.label}] rank fraction {report.fraction}: all channels compressed at once recover "
         f"{report.loss_recovered if report.loss_recovered is None else round(report.loss_recovered, 4)} of the loss "
         f"on {heldout.numel():,} held-out tokens; mean ranks " +
         ", ".join(f"{g} {r:.2f}" for g, r in report.mean_ranks.items()))
    per_channel = channel_fidelity(model, compression, moments, channels, heldout, config.batch_tokens)
    structural = structural_scores(compression, moments, channels, model.weights.W_O)

    per_slice = {s.name: slice_scores(model, compression, moments, channels, s.tokens, config.batch_tokens,
                                      progress, desc=f"attribution {s.name}") for s in slices}
    per_slice[union.name] = per_slice.get(union.name) or _combined(list(per_slice.values()))
    ablation = {s.name: ablation_effects(model, compression, moments, channels, spread_rows(s.tokens, config.ablation_sequences),
                                         config.batch_tokens) for s in all_slices(slices, union)}
    probe = probe_tokens(spec.d_vocab, spec.n_ctx)
    pattern_scores = attention_scores(model, probe)
    probes = {kind: slice_scores(model, compression, moments, channels,
                                 synthetic_tokens(kind, spec.d_vocab, PROBE_SEQUENCES, probe.shape[1], 7),
                                 config.batch_tokens, False) for kind in ("random", "repeated")}
    prints = fingerprints(channels, pattern_scores, {k: v.activity for k, v in probes.items()},
                          {k: v.mean_norm for k, v in probes.items()})

    bases, subspace_rows = {}, []
    for c in channels:
        for role in [*c.read_roles, *(["out"] if c.writes else [])]:
            key = f"{c.name}/{role}"
            bases[key] = compression.basis(c, role).float().cpu()
            subspace_rows.append({"block": c.name, "role": role, "rank": compression.rank(c, role),
                                  "energy": compression.energy(c, role), "basis_key": key,
                                  "singular_values": compression.singular_values(c, role).float().cpu().tolist()})
    block_rows = []
    for c in channels:
        row = {"name": c.name, "kind": c.kind, "layer": c.layer, "head": c.head,
               "fidelity": per_channel[c.name], "fingerprint": prints[c.name]}
        row.update({s: float(pattern_scores[s][c.layer, c.head]) if c.kind == "attn_head" else None for s in PATTERN_SCORES})
        block_rows.append(row)
    readers, sources = read_roles(channels), writers(channels)
    ingest_scores = per_slice[union.name]
    tables = {
        "blocks": pd.DataFrame(block_rows).astype({"head": "Int64"}),
        "subspaces": pd.DataFrame(subspace_rows),
        "edges": pd.DataFrame(_edge_rows(readers, sources, {
            "weight": structural.weight, "strength": structural.strength, "flow": structural.flow,
            "attribution": ingest_scores.attribution, "attribution_signed": ingest_scores.attribution_signed})),
        "slice_edges": pd.DataFrame([row for slice_name, scores in per_slice.items() for row in _edge_rows(
            readers, sources, {"attribution": scores.attribution, "attribution_signed": scores.attribution_signed},
            {"slice": slice_name})]),
        "activity": pd.DataFrame([{"slice": slice_name, "block": c.name, "attribution": scores.activity[c.name],
                                   "attribution_signed": scores.activity_signed[c.name],
                                   "ablation": ablation[slice_name][c.name],
                                   "mean_norm": scores.mean_norm[c.name]}
                                  for slice_name, scores in per_slice.items() for c in channels]),
        "matches": _matches(channels, bases, prints, previous, config.match_threshold),
    }
    manifest = {
        "model": {**spec.as_dict(), "name": name},
        "checkpoint": {"label": checkpoint.label, "step": checkpoint.step, "tokens_seen": checkpoint.tokens_seen,
                       "loss": report.loss_clean, "source": checkpoint.source, "revision": checkpoint.revision},
        "slices": [{"id": s.id, "name": s.name, "description": s.description, "n_tokens": s.n_tokens,
                    "n_sequences": int(s.tokens.shape[0]), "metric": s.metric} for s in all_slices(slices, union)],
        "ingest_slice": union.name,
        "config": asdict(config), "config_hash": config.digest(),
        "fidelity": report.as_dict(),
        "code_version": __version__, "device": str(model.device),
        "started": started, "finished": time.time(),
    }
    slug = f"{name.replace('/', '--')}__{checkpoint.label}__{config.digest()[:8]}"
    path = write_artifact(Path(out_root) / slug, manifest, tables, bases)
    echo(f"[{checkpoint.label}] artifact: {path}")
    return path, PreviousCheckpoint(checkpoint.label, bases, prints)


def ingest(model: str, checkpoints: list[str], data_args: list[str], out_root: Path, config: IngestConfig,
           device: str, model_name: str | None = None, progress: bool = True,
           echo: Callable[[str], None] = print) -> list[Path]:
    """Ingest every checkpoint of ``model`` in step order; returns the artifact directories."""
    paths, previous = [], None
    for checkpoint in resolve_checkpoints(model, checkpoints):
        path, previous = ingest_checkpoint(checkpoint, data_args, out_root, config, device, model_name,
                                           previous, progress, echo)
        paths.append(path)
    return paths

