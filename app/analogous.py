"""ANALOGOUS links: channels of different models that behave alike.

For every two complete checkpoints of different models whose fingerprints have the same features,
each block is linked to the :data:`TOP_K` most similar blocks of the same kind in the other
checkpoint that share at least one distinguishing feature with it and whose fingerprint similarity
(:func:`circuit_atlas.ingest.fingerprints.similarity`, 1 / (1 + ||a - b||^2)) is at least
:data:`MIN_SIMILARITY`, in both directions; a pair found from both sides is one link.
The embedding, the positional embedding and the unembedding (:data:`STRUCTURAL_KINDS`) are one
block per model and one role in every model: the two checkpoints' blocks of such a kind are linked
whatever their similarity, named by their shared features or, without any, by the kind
(``kind_unembed``).
The rule depends only on the two checkpoints, so the links do not depend on the order in which
checkpoints are loaded. Each linked pair is one relationship, stored from the block with the
smaller id to the other whichever checkpoint was published first; it means the same both ways,
so queries read it undirected (``-[:ANALOGOUS]-``). It carries its ``similarity`` and
``features``: the distinguishing features both channels express (same sign, magnitude at least
:data:`SHARED_FEATURE` in both; the kind is not one), strongest shared first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby

import numpy as np

from circuit_atlas.ingest.fingerprints import similarity

#: Links per block and other checkpoint, at most.
TOP_K = 3
#: Least fingerprint similarity of a link (1 / (1 + d^2): squared distance at most 1).
MIN_SIMILARITY = 0.5
#: Least magnitude, in both channels, of a feature named on a link.
SHARED_FEATURE = 0.1
#: Kinds of which a model has one block, with one role in every model: linked whatever the similarity.
STRUCTURAL_KINDS = ("embed", "pos_embed", "unembed")


@dataclass(frozen=True)
class Fingerprinted:
    """A block as the linking needs it."""

    block_id: str
    checkpoint_id: str
    model_id: str
    kind: str
    fingerprint: Sequence[float]


def shared_features(a: Sequence[float], b: Sequence[float], names: Sequence[str]) -> list[str]:
    """The features both fingerprints express with the same sign, strongest shared first."""
    x, y = np.asarray(a), np.asarray(b)
    strength = np.where(np.sign(x) == np.sign(y), np.minimum(np.abs(x), np.abs(y)), 0.0)
    order = np.argsort(-strength, kind="stable")
    return [names[i] for i in order if strength[i] >= SHARED_FEATURE and not names[i].startswith("kind_")]


def analogous_links(blocks: Sequence[Fingerprinted], new_checkpoint: str, features: Sequence[str]) -> list[dict]:
    """The links between ``new_checkpoint``'s blocks and the blocks of other models' checkpoints in
    ``blocks`` (which hold the new checkpoint's too): rows ``{source, target, similarity, features}``."""
    by_checkpoint = {
        c: list(group) for c, group in groupby(sorted(blocks, key=lambda b: b.checkpoint_id), lambda b: b.checkpoint_id)
    }
    mine = by_checkpoint.pop(new_checkpoint, [])
    links: dict[tuple[str, str], dict] = {}
    for other in by_checkpoint.values():
        if not mine or other[0].model_id == mine[0].model_id:
            continue
        for kind in {b.kind for b in mine}:
            here = [block for block in mine if block.kind == kind]
            there = [block for block in other if block.kind == kind]
            if not there:
                continue
            sim = similarity([block.fingerprint for block in here], [block.fingerprint for block in there])
            if kind in STRUCTURAL_KINDS and len(here) == len(there) == 1:
                source, target = sorted((here[0].block_id, there[0].block_id))
                shared = shared_features(here[0].fingerprint, there[0].fingerprint, features)
                links[source, target] = {"similarity": float(sim[0, 0]), "features": shared or [f"kind_{kind}"]}
                continue
            for readers, candidates, scores in ((here, there, sim), (there, here, sim.T)):
                for reader, row in zip(readers, scores):
                    kept = 0
                    for j in np.argsort(-row, kind="stable"):
                        if row[j] < MIN_SIMILARITY or kept == TOP_K:
                            break
                        shared = shared_features(reader.fingerprint, candidates[j].fingerprint, features)
                        if shared:
                            source, target = sorted((reader.block_id, candidates[j].block_id))
                            links[source, target] = {"similarity": float(row[j]), "features": shared}
                            kept += 1
    return [{"source": s, "target": t, **properties} for (s, t), properties in sorted(links.items())]
