"""Reference models that the project trains itself, with circuits known from their construction.

They need nothing from a model hub, are deterministic for a seed, and are cached under
:func:`default_reference_dir` (a folder whose recipe matches is reused). ``induction``: a 2-layer
model with a previous-token head and induction heads (the README's demo and the validation tests).
"""

from __future__ import annotations

import os
from pathlib import Path


def default_reference_dir() -> Path:
    """``$CIRCUIT_ATLAS_CACHE/reference-models`` (default ``~/.cache/circuit-atlas/reference-models``)."""
    return Path(os.environ.get("CIRCUIT_ATLAS_CACHE", Path.home() / ".cache" / "circuit-atlas")) / "reference-models"
