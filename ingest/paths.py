"""Whether a file or folder can be written, asked before any work that would write it.

The nearest existing ancestor must be a folder in which a file can really be created (a probe file
is made and removed: ``os.access`` says yes to root under ``/proc``), and every new name must fit
the file system (at most ``NAME_MAX`` bytes, 255 on Linux).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def unwritable(path: Path) -> str | None:
    """Why ``path`` (a file or folder, existing or not) cannot be written, or None if it can."""
    path = Path(path).expanduser().absolute()
    folder = path
    while not _exists(folder) and folder != folder.parent:
        folder = folder.parent
    if folder == path and not path.is_dir():
        folder = path.parent
    if not folder.is_dir():
        return f"{folder} is not a folder"
    limit = os.pathconf(folder, "PC_NAME_MAX")
    long = [part for part in path.relative_to(folder).parts if len(part.encode()) > limit]
    if long:
        return f"the name {long[0][:40]}... is {len(long[0].encode())} bytes, over this file system's {limit}"
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".circuit-atlas-probe-"):
            pass
    except OSError as error:
        return f"{folder} is not a writable folder ({error.strerror or error})"
    return None


def _exists(path: Path) -> bool:
    """``path.exists()``, False for a name the system refuses to look up (too long)."""
    try:
        return path.exists()
    except OSError:
        return False
