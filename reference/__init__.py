"""Reference models with circuits known from their construction.

Trained here (``training``: the shared train-save-cache loop): they need nothing from a model hub,
are deterministic for a seed on one kind of CPU, and are cached under :func:`default_reference_dir`
(a folder whose recipe matches is reused). The recipes the demo and the tests use are shipped
trained in ``checkpoints/`` and copied into the cache, so they are the same on every machine.
``induction``: a 2-layer model with a previous-token head and induction heads (the README's demo
and the validation tests); ``attention_only``: the induction task on an attention-only model with
LayerNorm and learned absolute positions, saved as TransformerLens-native checkpoints;
``keyvalue``: the induction model fine-tuned to look up the value paired with a query key (a
previous-token head, then lookup heads), with a task slice and a trivial one;
``stdlib_text``: a byte-level model of this Python's standard library source text, real data with
situations no one planted.

Compiled (``tracr_fixtures``): RASP programs compiled by tracr, shipped in ``tracr/`` as
TransformerLens-native checkpoints with their exact residual layout.
"""

from __future__ import annotations

from pathlib import Path

from circuit_atlas.cache import cache_dir


def default_reference_dir() -> Path:
    """``$CIRCUIT_ATLAS_CACHE/reference-models`` (default ``~/.cache/circuit-atlas/reference-models``)."""
    return cache_dir() / "reference-models"
