"""The settings that decide which edges a load keeps, defined once for the CLI, the API, the loader and
the bulk import, and their check. The pruning itself is :func:`circuit_atlas.loader.pruned_edges`:
per reader subspace, the :data:`TOP_K` writers by attribution with attribution at least
:data:`MIN_ATTRIBUTION` (``top_k=None`` keeps every writer).

This module imports nothing heavy, so the CLI's options and the API's signatures read their
defaults here without loading pandas or torch.
"""

from __future__ import annotations

import math

from .errors import UserError

#: Edges kept per reader subspace, by attribution on the ingest data.
TOP_K = 16
#: Least attribution (nats) of a kept edge.
MIN_ATTRIBUTION = 0.0


def check_pruning(top_k: int | None, min_attribution: float) -> None:
    """:class:`UserError` unless ``top_k`` is None or at least 1 and ``min_attribution`` a finite number >= 0."""
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise UserError(f"--top-k must be a whole number of edges, at least 1; got {top_k!r}.")
    if isinstance(min_attribution, bool) or not isinstance(min_attribution, (int, float)):
        raise UserError(f"--min-attribution must be a number >= 0 (nats); got {min_attribution!r}.")
    if not math.isfinite(min_attribution) or min_attribution < 0:
        raise UserError(f"--min-attribution must be a finite number >= 0 (nats); got {min_attribution!r}.")
