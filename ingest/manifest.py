"""The artifact's manifest: what a checkpoint's artifact says about itself besides its tables.

Its slice entries (each ``--data`` slice, each discovered situation, and the union of several
slices, which is a slice of its own in the catalog), the run's identity (:func:`run_digest`, which
also names the artifact's folder, so a rerun of the same settings and data finds it complete), and
the whole manifest of one checkpoint (:func:`checkpoint_manifest`; its keys are
:data:`.artifact.MANIFEST_KEYS`).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from circuit_atlas.version import __version__

from .baselines import Baseline
from .checkpoints import CheckpointSource
from .config import IngestConfig
from .data import DataSlice
from .fidelity import RankSearchReport
from .fingerprints import FEATURES
from .model_adapter import ModelSpec
from .slice_scorer import ScoredSlice


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


def slice_entry(data: DataSlice, baseline: Baseline | None = None) -> dict:
    """A slice's manifest entry; ``baseline``: what its channels were ablated to. A discovered slice
    also lists its prompts (``[slice, index]``) and, when it scores given positions, each prompt's."""
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
        | ({"positions": scored_positions(data.positions)} if data.discovered and data.positions is not None else {})
    )


def scored_positions(positions: torch.Tensor) -> list[list[int]]:
    """Each prompt's scored positions [n, m] (-1 padded) as lists (a token situation's: where it was found)."""
    return [[q for q in row if q >= 0] for row in positions.tolist()]


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


def checkpoint_manifest(
    name: str,
    spec: ModelSpec,
    checkpoint: CheckpointSource,
    config: IngestConfig,
    data_args: list[str],
    report: RankSearchReport,
    scored: dict[str, ScoredSlice],
    slices: list[DataSlice],
    union: IngestData,
    device: torch.device,
    started: float,
) -> dict:
    """The manifest of one checkpoint's artifact: model ``name`` and shape, the checkpoint, an entry per
    slice of ``slices`` (the named ones, then the situations) and for the ``union`` of several, the
    settings and data, the rank search's ``report``, and when and where it ran."""
    return {
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
            entry | scored[entry["name"]].manifest_entry()
            for entry in [slice_entry(s, scored[s.name].baseline) for s in slices]
            + ([union.entry()] if len(union.slices) > 1 else [])
        ],
        "ingest_slice": union.name,
        "config": asdict(config),
        "config_hash": config.digest(),
        "data": list(data_args),
        "fidelity": report.as_dict(),
        "fingerprint_features": list(FEATURES),
        "code_version": __version__,
        "device": str(device),
        "started": started,
        "finished": time.time(),
    }
