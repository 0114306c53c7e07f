"""Where Circuit Atlas keeps what it downloads or builds on this machine: the local Neo4j runtime's
jars, the reference models, the local mirrors of artifact URLs. Stdlib only, so every layer may use it."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$CIRCUIT_ATLAS_CACHE``, by default ``~/.cache/circuit-atlas``."""
    return Path(os.environ.get("CIRCUIT_ATLAS_CACHE", Path.home() / ".cache" / "circuit-atlas"))
