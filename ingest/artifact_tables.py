"""The artifact's tables built from one checkpoint's scores, row by row in the columns that
:data:`.artifact.TABLES` lists (``matches`` and ``examples`` come from their own modules)."""

from __future__ import annotations

import math

import pandas as pd
import torch

from .artifact import frame
from .channels import ChannelLayout
from .compression import Compression
from .direct_effects import OutputTokens, empty
from .fingerprints import PATTERN_SCORES
from .matching import SeriesPlace
from .slice_scorer import ScoredSlice
from .structural import StructuralScores


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
    scored: dict[str, ScoredSlice],
    channel_recovery: dict[str, float | None],
    prints: dict[str, list[float]],
    pattern_scores: dict[str, torch.Tensor],
    ingest_slice: str,
    tokens: dict[str, OutputTokens],
) -> dict[str, pd.DataFrame]:
    """Every table of the artifact but ``matches``, ``examples`` and ``steering``, in the schema of
    :mod:`.artifact` (``tokens``: each write subspace's output tokens, :mod:`.direct_effects`), with
    the columns of the checkpoint's place in its series empty until :func:`placed` fills them."""
    channels = layout.channels
    ingest = scored[ingest_slice]

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
                "fidelity": channel_recovery[c.name],
                "fingerprint": prints[c.name],
                **{s: pattern(c, s) for s in PATTERN_SCORES},
                "lineage_start": None,
                "lineage_similarity": None,
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
                "energy": compression.coverage(c, role),
                "basis_key": f"{c.name}/{role}",
                "singular_values": compression.singular_values(c, role).float().cpu().tolist(),
                "similarity_to_first": None,
                "similarity_to_last": None,
                **vars(tokens.get(f"{c.name}/{role}", empty())),
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
                "attribution": ingest.scores.attribution,
                "attribution_signed": ingest.scores.attribution_signed,
                "patched": ingest.patched,
            },
        ),
    )
    slice_edges = frame(
        "slice_edges",
        [
            row
            for name, slice_ in scored.items()
            for row in _edge_rows(
                layout,
                {
                    "attribution": slice_.scores.attribution,
                    "attribution_signed": slice_.scores.attribution_signed,
                    "patched": slice_.patched,
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
                "attribution": slice_.scores.activity[c.name],
                "attribution_signed": slice_.scores.activity_signed[c.name],
                "ablation": slice_.ablation[c.name],
                "ablation_se": slice_.ablation_se[c.name],
                "effect_rank": slice_.curve[c.name][0],
                "faithfulness": slice_.curve[c.name][1],
                "in_circuit": c.name in slice_.circuit.members,
                "mean_norm": slice_.scores.mean_norm[c.name],
            }
            for name, slice_ in scored.items()
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


def placed(tables: dict[str, pd.DataFrame], place: SeriesPlace) -> dict[str, pd.DataFrame]:
    """``tables`` with the checkpoint's ``place`` in its series: each block's lineage (its start's label
    and its similarity there), each subspace's similarity to the series' first and last checkpoints."""
    blocks, subspaces = tables["blocks"], tables["subspaces"]
    keys = subspaces["block"] + "/" + subspaces["role"]
    return tables | {
        "blocks": blocks.assign(
            lineage_start=[place.lineage[name][0] for name in blocks["name"]],
            lineage_similarity=[float(place.lineage[name][1]) for name in blocks["name"]],
        ),
        "subspaces": subspaces.assign(
            similarity_to_first=[_number(place.to_first[k]) for k in keys],
            similarity_to_last=[_number(place.to_last[k]) for k in keys],
        ),
    }


def _number(value: float | None) -> float:
    return math.nan if value is None else float(value)
