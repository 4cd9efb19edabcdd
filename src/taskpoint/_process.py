"""Is a process still alive on this host? (Shared by the records, the checkpoint sweep, ...)

A pid alone lies (pids are reused, and a killed child stays a zombie until reaped), so the
record also keeps the process's start time read from /proc where there is one.
"""

from __future__ import annotations

import os
import socket

_HOST: str | None = None


def hostname() -> str:
    global _HOST
    if _HOST is None:
        _HOST = socket.gethostname()
    return _HOST


def _proc_stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode(errors="replace")
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    return data[data.rfind(")") + 2 :].split()


def process_token(pid: int) -> str | None:
    """Start time of ``pid`` in clock ticks since boot, or ``None`` where /proc is missing."""
    fields = _proc_stat(pid)
    return fields[19] if fields and len(fields) > 19 else None


def process_alive(pid: int | None, token: str | None = None) -> bool:
    if not pid:
        return False
    fields = _proc_stat(pid)
    if fields is not None:
        if fields[0] in ("Z", "X"):  # zombie or dead: exited, not yet reaped
            return False
        return token is None or len(fields) <= 19 or fields[19] == token
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
