"""Deleting executions: their records, inputs, outputs, logs and checkpoints together.

Everything an execution stored lives under ``<storage>/<execution id>/`` (``engine/blobs.py``)
and in three tables of the records database. A delete removes the blobs first and the records
last, so a delete that fails half-way (a network error, Ctrl-C) leaves the execution listed, and
running it again finishes the job. An execution whose driver is alive is never deleted.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass

from taskpoint.engine import blobs
from taskpoint.engine.config import Engine
from taskpoint.errors import TaskpointError
from taskpoint.records import ExecutionRecord, Records
from taskpoint.records.status import ExecutionStatus


class StillRunning(TaskpointError):
    """The execution's driver is alive: stop it first."""


@dataclass
class Freed:
    """What deleting one execution removed (or, in a dry run, would remove)."""

    execution: ExecutionRecord
    files: int
    size: int


def measure(engine: Engine, rec: ExecutionRecord) -> tuple[int, int]:
    """(files, bytes) under the execution's blob prefix; (0, 0) when it holds nothing."""
    url = blobs.execution_url(rec.storage, rec.id)
    local = blobs.local_path(url)
    if local is not None:
        files = size = 0
        for root, _dirs, names in os.walk(local):
            for name in names:
                try:
                    size += os.lstat(os.path.join(root, name)).st_size
                    files += 1
                except FileNotFoundError:
                    continue
        return files, size
    fs, path = blobs.remote_fs(url, engine.storage_options_for(rec.storage))
    found = fs.find(path, detail=True)
    return len(found), sum(int(info.get("size") or 0) for info in found.values())


def delete_execution(engine: Engine, records: Records, rec: ExecutionRecord) -> Freed:
    """Delete one execution's blobs, then its records; ``StillRunning`` if its driver lives."""
    if rec.status == ExecutionStatus.RUNNING and rec.driver_alive:
        raise StillRunning(
            f"execution {rec.id} is running (driver pid {rec.driver_pid} on {rec.driver_host}); "
            f"stop it first (taskpoint stop {rec.id}), then delete it"
        )
    files, size = measure(engine, rec)
    url = blobs.execution_url(rec.storage, rec.id)
    local = blobs.local_path(url)
    if local is not None:
        if os.path.isdir(local):
            shutil.rmtree(local)
    else:
        fs, path = blobs.remote_fs(url, engine.storage_options_for(rec.storage))
        if fs.exists(path):
            fs.rm(path, recursive=True)
    with records.db.transaction() as c:
        c.execute("DELETE FROM attempts WHERE execution_id=?", (rec.id,))
        c.execute("DELETE FROM nodes WHERE execution_id=?", (rec.id,))
        c.execute("DELETE FROM executions WHERE id=?", (rec.id,))
    return Freed(rec, files, size)


def select_for_gc(
    executions: Iterable[ExecutionRecord],
    *,
    older_than: float | None = None,
    statuses: set[str] | None = None,
    keep_last: int | None = None,
    now: float | None = None,
) -> list[ExecutionRecord]:
    """The executions ``gc`` deletes: not running, finished (or created) more than
    ``older_than`` seconds ago, with one of ``statuses``, and not among the ``keep_last`` newest
    of those that match the other filters. Newest first."""
    now = time.time() if now is None else now
    chosen = []
    for rec in sorted(executions, key=lambda r: r.created, reverse=True):
        status = rec.effective_status
        if status == ExecutionStatus.RUNNING:
            continue  # a live driver: never collected
        if statuses is not None and status not in statuses:
            continue
        if older_than is not None and now - (rec.ended or rec.created) < older_than:
            continue
        chosen.append(rec)
    return chosen[keep_last:] if keep_last else chosen


def parse_age(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``45s`` or ``2w`` -> seconds; ``ValueError`` otherwise."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    text = text.strip().lower()
    number, unit = text[:-1], text[-1:]
    if unit not in units:
        raise ValueError(
            f"{text!r} is not an age: give a number and a unit (s, m, h, d, w), e.g. 30d"
        )
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"{text!r} is not an age: e.g. 30d, 12h, 90m") from None
    if value < 0:
        raise ValueError(f"{text!r}: an age cannot be negative")
    return value * units[unit]
