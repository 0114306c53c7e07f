"""Whether a process that left something behind (a pid file, a temporary folder, a staging
checkpoint) still runs: stdlib only, so the ingest job and the shell can both use it."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def process_is_gone(pid: int) -> bool:
    """True when no process ``pid`` runs on this host. A zombie counts as gone once all its threads
    have ended (a killed JVM's main thread is a zombie while other threads still hold its sockets)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False
    try:
        threads = list(Path(f"/proc/{pid}/task").iterdir())
        states = [(thread / "stat").read_text().rsplit(")", 1)[1].split()[0] for thread in threads]
    except (OSError, IndexError):  # not Linux, or the process ended meanwhile
        return not Path(f"/proc/{pid}").exists() and Path("/proc/self").exists()
    return all(state in ("Z", "X") for state in states)


def this_process() -> str:
    """This process as ``host:pid``, the owner recorded on what it leaves behind."""
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_is_gone(owner: str | None) -> bool:
    """True when ``owner`` (``host:pid``) names a process of this host that no longer runs; an owner
    on another host is never known to be gone."""
    host, _, pid = (owner or "").rpartition(":")
    return host == socket.gethostname() and pid.isdigit() and process_is_gone(int(pid))
