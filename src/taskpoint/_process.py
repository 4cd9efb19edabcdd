"""Is a process still alive on this host? (Shared by the records, the checkpoint sweep, the
integrations' JVM work directories, ...)

A pid alone lies (pids are reused, and a killed child stays a zombie until reaped), so the
record also keeps the process's start time read from /proc where there is one. This is the one
place that reads ``/proc/<pid>/stat``.
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


def proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (field 3 on, so ``[0]`` is the
    state and ``[19]`` the start time), or ``None`` where the process or ``/proc`` is missing."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode(errors="replace")
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    return data[data.rfind(")") + 2 :].split()


def process_token(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks since boot (with the pid, it names one process);
    ``None`` where the process is gone or a zombie, or /proc is missing (not Linux)."""
    fields = proc_stat(pid)
    if fields is None or len(fields) <= 19 or fields[0] in ("Z", "X"):  # exited, not reaped
        return None
    return fields[19]


def parent_pid(pid: int) -> int | None:
    """The parent's pid, or ``None`` where /proc does not tell."""
    fields = proc_stat(pid)
    return int(fields[1]) if fields is not None and len(fields) > 1 else None


def process_alive(pid: int | None, token: str | None = None) -> bool:
    if not pid:
        return False
    fields = proc_stat(pid)
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
