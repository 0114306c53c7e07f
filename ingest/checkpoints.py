"""Where a model's checkpoints come from: local checkpoint directories, hub revisions, or the
weights files of a TransformerLens config.

A checkpoint has a ``label`` (its name in the catalog: ``<model>@<label>``) and a training
``step`` that orders a model's checkpoints. A local directory may carry a sidecar file
(:data:`~circuit_atlas.ingest.model_adapter.CHECKPOINT_SIDECAR`) naming its model, label, step
and tokens seen, as the reference models' checkpoints do; otherwise the label is the directory
name (or the revision, such as Pythia's ``step1000``, or a weights file's stem such as
``ckpt_1500``) and the step its last number.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from circuit_atlas.errors import UserError

from .model_adapter import CHECKPOINT_SIDECAR
from .native import is_native_config


@dataclass(frozen=True)
class CheckpointSource:
    source: str  # hub name, local directory, or TransformerLens config JSON
    revision: str | None  # hub revision, or the weights file of a TransformerLens config
    label: str
    step: int
    tokens_seen: int | None
    model_name: str | None  # from the sidecar, if any


def step_of(label: str) -> int:
    numbers = re.findall(r"\d+", label)
    return int(numbers[-1]) if numbers else 0


def checkpoint_source(source: str, revision: str | None = None) -> CheckpointSource:
    sidecar = Path(source).expanduser() / CHECKPOINT_SIDECAR
    if revision is None and sidecar.is_file():
        try:
            meta = json.loads(sidecar.read_text())
            return CheckpointSource(
                source, None, str(meta["label"]), int(meta["step"]), meta.get("tokens_seen"), meta.get("model")
            )
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise UserError(
                f"{sidecar} is not a valid checkpoint sidecar ({error!r}): it needs JSON with "
                f"'label' and 'step'. Fix or delete it."
            ) from error
    if revision is not None:
        return CheckpointSource(source, revision, revision, step_of(revision), None, None)
    local = Path(source).expanduser()
    label = local.name if local.exists() else "main"
    return CheckpointSource(source, None, label, step_of(label) if local.exists() else 0, None, None)


def weights_sources(config: str, weights: list[str]) -> list[CheckpointSource]:
    """The checkpoints of a TransformerLens config: one per weights file, labelled by its stem."""
    if not weights:
        raise UserError(
            f"{config} is a TransformerLens config: give its weights with --weights STATE.pt (or several "
            f"weights files of one run with --checkpoint, one each)."
        )
    missing = [w for w in weights if not Path(w).expanduser().is_file()]
    if missing:
        raise UserError(f"Weights file {missing[0]} does not exist.")
    stems = [Path(w).stem for w in weights]
    if len(set(stems)) < len(stems):
        raise UserError(f"Weights files share a file name ({', '.join(stems)}): their stems label the checkpoints.")
    return [
        CheckpointSource(config, str(Path(w).expanduser()), s, step_of(s), None, None) for w, s in zip(weights, stems)
    ]


def resolve_checkpoints(model: str, checkpoints: list[str]) -> list[CheckpointSource]:
    """``--checkpoint`` values in step order: local checkpoint directories, revisions of ``model``
    (a hub model's only: a local model has none), or, when ``model`` is a TransformerLens config
    JSON, its weights files."""
    if is_native_config(model):
        return sorted(weights_sources(model, checkpoints), key=lambda c: c.step)
    if not checkpoints:
        return [checkpoint_source(model)]
    resolved = []
    for checkpoint in checkpoints:
        as_path = Path(checkpoint).expanduser()
        if not as_path.exists() and Path(model).expanduser().exists():
            raise UserError(
                f"--checkpoint {checkpoint}: no such folder. {model} is a local model, which has no hub "
                f"revisions: give its checkpoints as existing folders."
            )
        resolved.append(checkpoint_source(str(as_path)) if as_path.exists() else checkpoint_source(model, checkpoint))
    return sorted(resolved, key=lambda c: c.step)
