"""Where a model's checkpoints come from: local checkpoint directories or hub revisions.

A checkpoint has a ``label`` (its name in the catalog: ``<model>@<label>``) and a training
``step`` that orders a model's checkpoints. A local directory may carry a sidecar file
(:data:`~circuit_atlas.ingest.model_adapter.CHECKPOINT_SIDECAR`) naming its model, label, step
and tokens seen, as the reference models' checkpoints do; otherwise the label is the directory
name (or the revision, such as Pythia's ``step1000``) and the step its last number.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from circuit_atlas.errors import UserError

from .model_adapter import CHECKPOINT_SIDECAR


@dataclass(frozen=True)
class CheckpointSource:
    source: str  # hub name or local directory
    revision: str | None  # hub revision, if any
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


def resolve_checkpoints(model: str, checkpoints: list[str]) -> list[CheckpointSource]:
    """``--checkpoint`` values in step order: local checkpoint directories, or revisions of ``model``."""
    if not checkpoints:
        return [checkpoint_source(model)]
    resolved = []
    for checkpoint in checkpoints:
        as_path = Path(checkpoint).expanduser()
        resolved.append(checkpoint_source(str(as_path)) if as_path.exists() else checkpoint_source(model, checkpoint))
    return sorted(resolved, key=lambda c: c.step)
