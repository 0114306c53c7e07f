"""A catalog circuit scored against a reference circuit: the precision and recall of its channels,
and how well each edge score ranks the reference's edges above every other edge of the checkpoint.

The reference is a small JSON file (the circuit a paper publishes, or a model's known mechanism)::

    {"channels": ["L0H0", "L1H0", "L1H1"],
     "edges": [{"writer": "L0H0", "reader": "L1H0", "role": "k"}, ...]}

``edges`` may be empty or absent. Channel precision and recall are given for the circuit at a
threshold (the ``circuit`` query: channels whose exact ablation effect on the slice reaches
``min_effect``) and for the circuit by faithfulness. Each edge score's ROC AUC is over the
checkpoint's edges (one per writer, reader and read role) with the reference's edges as positives:
``weight``, ``strength`` and ``flow`` (the compression's, whatever the slice), and ``attribution``
and ``patched`` on the slice. The patched effect exists only for the edges that were patched, so its
AUC is over those, and the count of edges each AUC ranks is given with it. An AUC needs positives and
negatives among those edges, else it is None.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import UserError

if TYPE_CHECKING:
    from .api import Catalog

#: The edge scores compared, and whether each is the slice's (else the checkpoint's, whatever the slice).
EDGE_SCORES = {"weight": False, "strength": False, "flow": False, "attribution": True, "patched": True}


@dataclass(frozen=True)
class Reference:
    """A reference circuit: its channels and its edges as (writer, reader, read role)."""

    channels: tuple[str, ...]
    edges: tuple[tuple[str, str, str], ...]

    @classmethod
    def read(cls, path: Path) -> Reference:
        """The reference in ``path``, with one clear error for a file that is not one."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise UserError(f"Cannot read the reference circuit {path}: {error}. Give a JSON file.") from error
        shape = 'give {"channels": [names], "edges": [{"writer": ..., "reader": ..., "role": ...}]}'
        channels, edges = (data.get("channels"), data.get("edges", [])) if isinstance(data, dict) else (None, None)
        if not isinstance(channels, list) or not channels or not all(isinstance(c, str) for c in channels):
            raise UserError(f"The reference circuit {path} lists no channels: {shape}.")
        keys = ("writer", "reader", "role")
        if not isinstance(edges, list) or not all(
            isinstance(e, dict) and all(isinstance(e.get(k), str) for k in keys) for e in edges
        ):
            raise UserError(f"The reference circuit {path} has edges without a writer, reader and role: {shape}.")
        return cls(tuple(channels), tuple((e["writer"], e["reader"], e["role"]) for e in edges))


@dataclass(frozen=True)
class Comparison:
    """The circuits' channel precision and recall against the reference, and each edge score's ROC AUC
    with the number of edges it ranks."""

    checkpoint: str
    slice: str
    min_effect: float
    threshold_circuit: tuple[str, ...]
    faithful_circuit: tuple[str, ...]
    reference: Reference
    edge_auc: dict[str, tuple[float | None, int]]

    def precision_recall(self, members: tuple[str, ...]) -> tuple[float | None, float]:
        """(precision, recall) of ``members`` against the reference channels (precision None for none)."""
        found = set(members) & set(self.reference.channels)
        return (len(found) / len(members) if members else None), len(found) / len(self.reference.channels)

    def rows(self) -> list[dict]:
        """One row per measure, for printing."""
        rows = []
        for name, members in (
            (f"circuit at {self.min_effect} nats", self.threshold_circuit),
            ("circuit by faithfulness", self.faithful_circuit),
        ):
            precision, recall = self.precision_recall(members)
            rows.append({"measure": f"{name}: precision", "value": precision, "over": len(members)})
            rows.append({"measure": f"{name}: recall", "value": recall, "over": len(self.reference.channels)})
        for score, (auc, count) in self.edge_auc.items():
            rows.append({"measure": f"edge ROC AUC by {score}", "value": auc, "over": count})
        return rows


def compare(
    catalog: Catalog, checkpoint: str, slice_name: str, reference: Reference, min_effect: float | None = None
) -> Comparison:
    """``checkpoint``'s circuits on ``slice_name`` against ``reference`` (see the module docstring)."""
    from sklearn.metrics import roc_auc_score

    known = {row["channel"] for row in catalog.rows("checkpoint_channels", checkpoint=checkpoint)}
    if not known:
        raise UserError(f"No complete checkpoint {checkpoint!r}: `circuit-atlas query checkpoints` lists them.")
    unknown = sorted({*reference.channels, *(c for e in reference.edges for c in e[:2])} - known)
    if unknown:
        raise UserError(
            f"The reference names channels {unknown} that checkpoint {checkpoint!r} does not have; "
            f"its channels are {', '.join(sorted(known))}."
        )
    circuit = catalog.circuit(checkpoint, slice_name, min_effect)
    [faithful] = catalog.rows("faithful_circuit", checkpoint=checkpoint, slice=slice_name) or [{"channels": []}]
    whole = {
        (r["writer"], r["reader"], r["role"]): r
        for r in catalog.rows("top_edges", checkpoint=checkpoint, by="weight", limit=2**62)
    }
    on_slice = {
        (r["writer"], r["reader"], r["role"]): r
        for r in catalog.rows("top_slice_edges", checkpoint=checkpoint, slice=slice_name, limit=2**62, by="attribution")
    }
    missing = sorted(set(reference.edges) - set(whole))
    if missing:
        raise UserError(
            f"The reference's edges {missing} are not edges of checkpoint {checkpoint!r} (writer, reader, role)."
        )
    positives = set(reference.edges)
    auc: dict[str, tuple[float | None, int]] = {}
    for score, per_slice in EDGE_SCORES.items():
        rows = on_slice if per_slice else whole
        scored = [(edge, row[score]) for edge, row in rows.items() if row.get(score) is not None]
        labels = [edge in positives for edge, _ in scored]
        both = 0 < sum(labels) < len(labels)
        auc[score] = (float(roc_auc_score(labels, [value for _, value in scored])) if both else None, len(scored))
    return Comparison(
        checkpoint,
        slice_name,
        circuit.min_effect,
        tuple(c.name for c in circuit.channels),
        tuple(faithful["channels"]),
        reference,
        auc,
    )
