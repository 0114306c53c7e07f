"""Artifacts written from a hand-made description of channels and edges (tests and benchmarks).

A synthetic checkpoint reaches the catalog on the same path as an ingested one: tables in the
artifact's one schema (:func:`circuit_atlas.ingest.artifact.write_artifact`), then the loader
(:func:`circuit_atlas.loader.checkpoint_rows` and :func:`~circuit_atlas.loader.write_checkpoint`).
So a query test fails when the loader stops writing what the query reads.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from circuit_atlas.ingest.artifact import frame, read_artifact, write_artifact
from circuit_atlas.ingest.fingerprints import PATTERN_SCORES
from circuit_atlas.loader import checkpoint_rows, write_checkpoint

ROLES = {"attn_head": ["q", "k", "v", "out"], "mlp": ["in", "out"], "embed": ["out"], "unembed": ["in"]}


@dataclass(frozen=True)
class SyntheticChannel:
    """A channel of a synthetic checkpoint (a ``blocks`` row; a subspace per role of its kind)."""

    name: str
    kind: str
    layer: int
    head: int | None = None
    fingerprint: tuple[float, ...] = (1.0, 0.0, 0.0)
    induction: float | None = None


@dataclass(frozen=True)
class Edge:
    writer: str
    reader: str
    role: str
    weight: float
    flow: float
    attribution: float
    patched: float | None = None  # on the ingest data and on every slice (None: not measured)


#: The synthetic circuit by faithfulness: the channels up to the first rank whose synthetic faithfulness reaches it.
CIRCUIT_TARGET = 0.9


def _circuit(ranked: list[tuple[str, float, int, float]]) -> tuple[set[str], float | None]:
    """The members and faithfulness of the synthetic circuit of ``_ranked`` rows."""
    reached = next((i for i, (*_, kept) in enumerate(ranked) if kept is not None and kept >= CIRCUIT_TARGET), None)
    if reached is None:
        return set(), None
    return {name for name, *_ in ranked[: reached + 1]}, ranked[reached][3]


def _ranked(checkpoint: Checkpoint, effects: dict[str, float]) -> list[tuple[str, float, int, float]]:
    """(channel, effect, rank by effect, faithfulness) with a synthetic faithfulness: the share of
    the summed effects that the channels up to this rank hold."""
    order = {c.name: i for i, c in enumerate(checkpoint.channels)}
    ranked = sorted(effects, key=lambda name: (-effects[name], order[name]))
    total, running, rows = sum(effects.values()), 0.0, []
    for rank, name in enumerate(ranked, 1):
        running += effects[name]
        rows.append((name, effects[name], rank, running / total if total else None))
    return rows


@dataclass
class Checkpoint:
    """One checkpoint's content. ``effects[slice][channel]`` is the ablation effect (nats),
    ``slice_attribution[slice][(writer, reader)]`` an edge's attribution on the slice, and
    ``matches`` (channel, similarity) pairs with the checkpoint labelled ``previous``."""

    model: str
    label: str
    step: int
    channels: list[SyntheticChannel]
    edges: list[Edge] = field(default_factory=list)
    effects: dict[str, dict[str, float]] = field(default_factory=dict)
    slice_attribution: dict[str, dict[tuple[str, str], float]] = field(default_factory=dict)
    previous: str | None = None
    matches: list[tuple[str, float]] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.model}@{self.label}"


def write(checkpoint: Checkpoint, root: Path) -> Path:
    """The artifact of ``checkpoint`` under ``root``."""
    c = checkpoint
    d_model = 4
    blocks = frame(
        "blocks",
        (
            {
                "name": ch.name,
                "order": i,
                "kind": ch.kind,
                "layer": ch.layer,
                "head": ch.head,
                "fidelity": 0.99,
                "fingerprint": list(ch.fingerprint),
                **{s: (ch.induction if s == "induction" else None) for s in PATTERN_SCORES},
                "lineage_start": c.label,
                "lineage_similarity": 1.0,
            }
            for i, ch in enumerate(c.channels)
        ),
    ).astype({"head": "Int64"})
    subspaces = frame(
        "subspaces",
        (
            {
                "block": ch.name,
                "role": role,
                "rank": 2,
                "energy": 1.0,
                "singular_values": [2.0, 1.0],
                "basis_key": f"{ch.name}/{role}",
                "similarity_to_first": 1.0,
                "similarity_to_last": 1.0,
                "promoted_tokens": [1, 2] if role == "out" else [],
                "suppressed_tokens": [3, 4] if role == "out" else [],
                "promoted_text": [],
                "suppressed_text": [],
            }
            for ch in c.channels
            for role in ROLES[ch.kind]
        ),
    )
    edges = frame(
        "edges",
        (
            {
                "writer": e.writer,
                "reader": e.reader,
                "role": e.role,
                "weight": e.weight,
                "strength": e.weight,
                "flow": e.flow,
                "attribution": e.attribution,
                "attribution_signed": -e.attribution,
                "patched": e.patched,
            }
            for e in c.edges
        ),
    )
    slice_edges = frame(
        "slice_edges",
        (
            {
                "slice": s,
                "writer": e.writer,
                "reader": e.reader,
                "role": e.role,
                "attribution": by_pair[(e.writer, e.reader)],
                "attribution_signed": -by_pair[(e.writer, e.reader)],
                "patched": e.patched,
            }
            for s, by_pair in c.slice_attribution.items()
            for e in c.edges
        ),
    )
    activity = frame(
        "activity",
        (
            {
                "slice": s,
                "block": name,
                "attribution": abs(effect),
                "attribution_signed": -effect,
                "ablation": effect,
                "ablation_se": 0.01,
                "effect_rank": rank,
                "faithfulness": kept,
                "mean_norm": 1.0,
                "in_circuit": name in _circuit(_ranked(c, by_channel))[0],
            }
            for s, by_channel in c.effects.items()
            for name, effect, rank, kept in _ranked(c, by_channel)
        ),
    )
    examples = frame(
        "examples",
        (
            {
                "slice": s,
                "block": name,
                "ranking": "effect",
                "rank": rank,
                "sequence": rank,
                "position": 3,
                "value": -effect / rank,
                "tokens": [rank, 5, 6],
                "focus": 1,
                "text": f"a«{name}»b",
            }
            for s, by_channel in c.effects.items()
            for name, effect in by_channel.items()
            for rank in (1, 2)
        ),
    )
    steering = frame(  # the first write direction of every writer pushed both ways on every slice
        "steering",
        (
            {
                "slice": s,
                "block": name,
                "direction": 0,
                "push": push,
                "loss_delta": push * effect / 10,
                "loss_se": 0.01,
                "accuracy_delta": None,
                "kl": abs(effect) / 10,
                "flipped": min(1.0, abs(effect) / 10),
            }
            for s, by_channel in c.effects.items()
            for name, effect in by_channel.items()
            if "out" in ROLES[next(ch.kind for ch in c.channels if ch.name == name)]
            for push in (3.0, -3.0)
        ),
    )
    matches = frame(
        "matches",
        (
            {
                "previous_checkpoint": c.previous,
                "block": name,
                "similarity": similarity,
                "fingerprint_similarity": similarity,
            }
            for name, similarity in c.matches
        ),
    )
    tables = {
        "blocks": blocks,
        "subspaces": subspaces,
        "edges": edges,
        "slice_edges": slice_edges,
        "activity": activity,
        "examples": examples,
        "steering": steering,
        "matches": matches,
    }
    bases = {f"{ch.name}/{role}": torch.eye(d_model)[:, :2] for ch in c.channels for role in ROLES[ch.kind]}
    manifest = {
        "model": {
            "name": c.model,
            "family": "synthetic",
            "n_layers": max(ch.layer for ch in c.channels) + 1,
            "d_model": d_model,
            "n_heads": 1,
            "d_head": 2,
            "d_mlp": 8,
            "act_fn": "relu",
            "n_ctx": 8,
            "d_vocab": 8,
            "positional": "rotary",
            "normalization": "LN",
            "parallel_attn_mlp": False,
            "source": "synthetic",
        },
        "checkpoint": {
            "label": c.label,
            "step": c.step,
            "tokens_seen": None,
            "loss": 3.0,
            "source": "synthetic",
            "revision": None,
        },
        "slices": [
            {
                "id": f"{s}:h",
                "name": s,
                "description": f"slice {s}",
                "n_tokens": 64,
                "n_sequences": 8,
                "metric": "next_token_loss",
                "scored": "every next token",
                "circuit": {
                    "target": CIRCUIT_TARGET,
                    "faithfulness": _circuit(_ranked(c, by_channel))[1],
                    "reason": None,
                },
            }
            for s, by_channel in c.effects.items()
        ],
        "ingest_slice": next(iter(c.effects), "none"),
        "config": {},
        "config_hash": "synthetic",
        "data": list(c.effects),
        "fidelity": {"loss_recovered": 0.97, "fraction": 0.99, "reason": None},
        "ranks": {"rule": "searched on this checkpoint", "searched": None},
        "series": [c.label],
        # names with the ";" that the bulk import once split arrays at
        "fingerprint_features": [f"feature;{i}" for i in range(len(c.channels[0].fingerprint))],
        "code_version": "synthetic",
        "device": "cpu",
        "started": 0.0,
        "finished": 0.0,
    }
    return write_artifact(Path(root) / f"{c.model}__{c.label}", manifest, tables, bases)


def load(driver, database: str, checkpoint: Checkpoint, root: Path, complete: bool = True) -> None:
    """Write ``checkpoint`` as an artifact and load it with the loader (every edge kept);
    ``complete=False`` leaves it staged and unpublished, as a load killed half way would."""
    rows = checkpoint_rows(read_artifact(write(checkpoint, root)), top_k=None)
    write_checkpoint(driver, database, rows, complete=complete)


def rehash(artifact: Path, name: str) -> None:
    """Update the manifest's SHA-256 of the file ``name`` of ``artifact``, as a hand edit of the artifact would."""
    manifest = json.loads((artifact / "manifest.json").read_text())
    manifest["files"][name] = hashlib.sha256((artifact / name).read_bytes()).hexdigest()
    (artifact / "manifest.json").write_text(json.dumps(manifest))
