"""The artifact directory: what the compute step hands to the load step.

One self-describing directory per (model, checkpoint, slices, config)::

    manifest.json         model, checkpoint, slices, config (+ hash), code version, device,
                          times, fidelity report, and the SHA-256 of every other file
    blocks.parquet        one row per channel: name, kind, layer, head, fidelity, fingerprint,
                          attention pattern scores
    subspaces.parquet     block, role, rank, energy, singular_values (all of them), basis_key
    edges.parquet         writer, reader, role, weight, strength, flow, attribution,
                          attribution_signed (on all the ingest data); every pair, unpruned
    slice_edges.parquet   slice, writer, reader, role, attribution, attribution_signed
    activity.parquet      slice, block, attribution, attribution_signed, ablation, mean_norm
    matches.parquet       previous_checkpoint, block, similarity, fingerprint_similarity
    bases.safetensors     "<block>/<role>" -> float32 [d_model, rank], orthonormal columns

It is written under a temporary name and renamed when complete, so a directory that exists is
whole; :func:`read_artifact` checks every hash before anything is loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from .errors import UserError

FORMAT_VERSION = 1
TABLES = ("blocks", "subspaces", "edges", "slice_edges", "activity", "matches")
BASES = "bases.safetensors"


@dataclass
class Artifact:
    path: Path
    manifest: dict
    tables: dict[str, pd.DataFrame]

    def bases(self) -> dict[str, torch.Tensor]:
        return load_file(self.path / BASES)

    def basis_uri(self, key: str) -> str:
        return f"{(self.path / BASES).resolve().as_uri()}#{key}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_artifact(final: Path, manifest: dict, tables: dict[str, pd.DataFrame], bases: dict[str, torch.Tensor]) -> Path:
    """Write everything under ``<final>.partial-<pid>``, then rename it to ``final`` (replacing)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = final.with_name(f".{final.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    for name in TABLES:
        tables[name].to_parquet(partial / f"{name}.parquet", index=False)
    save_file({k: v.detach().to("cpu", torch.float32).contiguous() for k, v in bases.items()}, partial / BASES)
    files = sorted(p.name for p in partial.iterdir())
    manifest = {**manifest, "format_version": FORMAT_VERSION, "files": {f: _sha256(partial / f) for f in files}}
    (partial / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    if final.exists():
        retired = final.with_name(f".{final.name}.old-{os.getpid()}")
        final.rename(retired)
        partial.rename(final)
        shutil.rmtree(retired)
    else:
        partial.rename(final)
    return final


def read_artifact(path: Path) -> Artifact:
    """Read and verify an artifact directory; :class:`UserError` if it is not a whole one."""
    path = Path(path)
    manifest_file = path / "manifest.json"
    if not manifest_file.is_file():
        raise UserError(f"{path} is not a Circuit Atlas artifact (no manifest.json). Give a directory "
                        f"written by `circuit-atlas ingest --out`.")
    manifest = json.loads(manifest_file.read_text())
    if manifest.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path} has artifact format {manifest.get('format_version')}; this circuit-atlas "
                        f"reads format {FORMAT_VERSION}. Re-run the ingest with this version.")
    for name, expected in manifest["files"].items():
        file = path / name
        if not file.is_file() or _sha256(file) != expected:
            raise UserError(f"{file} is missing or does not match its hash in the manifest: the artifact "
                            f"is damaged. Re-run the ingest that wrote it.")
    tables = {name: pd.read_parquet(path / f"{name}.parquet") for name in TABLES}
    return Artifact(path, manifest, tables)


def find_artifacts(root: Path) -> list[Path]:
    """``root`` itself if it is an artifact, else every artifact below it, in path order."""
    root = Path(root)
    if (root / "manifest.json").is_file():
        return [root]
    found = sorted(p.parent for p in root.rglob("manifest.json") if not p.parent.name.startswith("."))
    if not found:
        raise UserError(f"No artifact under {root}: expected directories with a manifest.json, "
                        f"as written by `circuit-atlas ingest --out {root}`.")
    return found
