"""Staging areas for async snapshots, and sweeping the ones that killed writers left behind.

A snapshot of files is copied into a staging directory before ``save(..., blocking=False)``
returns. For a local store it lives beside the versions (``<scope>/.staging``) so the writer can
rename the copies into place; for a remote store it lives in the system temp directory
(``$TMPDIR/taskpoint-staging``), shared by every scope on the machine.

Each directory is named ``<attempt:04d>-<host>-<pid>-<unique>``. A killed writer cannot clean up,
so the next writer removes directories of earlier attempts (local stores only: attempts are
per scope) and those whose process is gone on this host.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid

from taskpoint._process import hostname, process_alive

_HOST = hostname().replace("-", "_") or "host"


def new_staging_dir(store_staging_root: str | None, attempt: int) -> str:
    root = store_staging_root or os.path.join(tempfile.gettempdir(), "taskpoint-staging")
    path = os.path.join(root, f"{attempt:04d}-{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:12]}")
    os.makedirs(path)
    return path


def sweep_staging(store_staging_root: str | None, attempt: int) -> None:
    """Remove staging directories whose writer is dead; never touch a live one."""
    per_scope = store_staging_root is not None
    root = store_staging_root or os.path.join(tempfile.gettempdir(), "taskpoint-staging")
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return
    for name in names:
        parts = name.split("-")
        if len(parts) != 4 or not parts[0].isdigit() or not parts[2].isdigit():
            continue
        earlier_attempt = per_scope and int(parts[0]) < attempt
        pid = int(parts[2])
        if earlier_attempt or (parts[1] == _HOST and pid != os.getpid() and not process_alive(pid)):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
