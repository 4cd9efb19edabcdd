"""A consistent cut of a running Structured Streaming checkpoint, and putting one back.

Spark writes a micro-batch ``N`` in this order: the source logs (``sources/<i>/``), the planned
offsets ``offsets/N``, the state store versions ``N + 1`` (``state/<op>/<partition>/...``) and
the file sinks' logs ``<sink>/_spark_metadata/N``, and last ``commits/N``. Every file is written
under a temporary name and renamed, so a file at its final name is complete and never changes.

While the query keeps running, `take` copies (hard links where it can) such a directory:

1. ``C`` = the newest batch in ``commits/``, read first. Everything batch ``C`` needs was written
   before ``commits/C`` and is immutable, so it is there when the rest is copied.
2. Everything else is copied afterwards and then trimmed to the cut: commits ``<= C``, offsets
   ``<= C + 1`` (a planned but uncommitted batch is re-run with exactly the same offsets), state
   store versions ``<= C + 1``, file-sink log entries ``<= C + 1`` when ``offsets/C+1`` was copied,
   else ``<= C``. Source logs are kept whole: entries planned after the cut are files Spark has
   seen but not processed, and a restarted query processes them in its next batch.

So a restored query re-runs at most the batches after ``C`` (with the logged offsets for ``C + 1``)
and its state equals the state after batch ``C``: nothing is counted twice or lost in state.

`install` puts a cut back: the query directory is used as the query's ``checkpointLocation`` and
each file sink's ``_spark_metadata`` is replaced by the one in the cut, so the sink's log and the
query's commits agree (data files of batches after the cut stay on disk unreferenced; readers that
go through the log, as Spark's own do, ignore them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from taskpoint.errors import CheckpointError, TaskpointError
from taskpoint.integrations._toolkit import link_or_copy

FORMAT = 1
META_FILE = "taskpoint-spark.json"
QUERY_DIR = "query"
SINK_LOG = "_spark_metadata"
OWNER_FILE = ".taskpoint-owner"  # ignored by Spark: not a batch number

_LOG_NAME = re.compile(r"^\.?(\d+)(?:\.compact)?(?:\.crc)?$")
_STATE_NAME = re.compile(
    r"^\.?(\d+)(?:_[0-9A-Za-z-]+)?\.(?:delta|snapshot|zip|changelog)(?:\.crc)?$"
)


def latest_commit(location: Path) -> int | None:
    """The newest committed batch id in a query checkpoint directory, or ``None``."""
    try:
        names = os.listdir(location / "commits")
    except FileNotFoundError:
        return None
    ids = [int(name) for name in names if name.isdigit()]
    return max(ids, default=None)


def take(location: Path, sinks: Sequence[Path], dest: Path, after: int | None) -> int | None:
    """Copy a consistent cut of ``location`` (and the sinks' logs) into ``dest``.

    Returns the cut's batch id ``C``, or ``None`` (nothing copied) when no batch newer than
    ``after`` is committed.
    """
    cut = latest_commit(location)
    if cut is None or (after is not None and cut <= after):
        return None
    offsets = _copy_query(location, dest / QUERY_DIR, cut)
    sink_limit = cut + 1 if cut + 1 in offsets else cut
    present = []
    for index, sink in enumerate(sinks):
        present.append(
            _copy_log(sink / SINK_LOG, dest / "sinks" / str(index) / SINK_LOG, sink_limit)
        )
    meta = {"format": FORMAT, "batch": cut, "sinks": [str(s) for s in sinks], "present": present}
    (dest / META_FILE).write_text(json.dumps(meta))
    return cut


def _copy_query(location: Path, dest: Path, cut: int) -> set[int]:
    """Copy the query directory trimmed to ``cut``; return the offsets batch ids copied."""
    offsets: set[int] = set()
    for dirpath, _dirnames, filenames in os.walk(location):
        rel = Path(dirpath).relative_to(location)
        top = rel.parts[0] if rel.parts else ""
        target = dest / rel
        target.mkdir(parents=True, exist_ok=True)
        for name in filenames:
            if name.endswith(".tmp"):
                continue
            if top in ("commits", "offsets") and len(rel.parts) == 1:
                batch = _log_id(name)
                limit = cut if top == "commits" else cut + 1
                if batch is None or batch > limit:
                    continue
            elif top == "state":
                match = _STATE_NAME.match(name)
                if match and int(match.group(1)) > cut + 1:
                    continue
            if link_or_copy(Path(dirpath) / name, target / name) and top == "offsets":
                batch = _log_id(name)
                if batch is not None and name.isdigit():
                    offsets.add(batch)
    return offsets


def _copy_log(src: Path, dest: Path, limit: int) -> bool:
    """Copy a file-sink log's entries ``<= limit``; False if the sink has no log yet."""
    try:
        names = os.listdir(src)
    except FileNotFoundError:
        return False
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        batch = _log_id(name)
        if batch is not None and batch <= limit and not name.endswith(".tmp"):
            link_or_copy(src / name, dest / name)
    return True


def _log_id(name: str) -> int | None:
    match = _LOG_NAME.match(name)
    return int(match.group(1)) if match else None


def read_meta(restored: Path) -> dict[str, Any]:
    try:
        meta = json.loads((restored / META_FILE).read_text())
    except FileNotFoundError:
        raise CheckpointError(
            f"the task's latest checkpoint (restored into {restored}) is not a Spark streaming "
            "snapshot: it has no taskpoint-spark.json. Use one checkpoint scope (one task) per "
            "streaming query and do not write other versions into it"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(
            f"unsupported Spark streaming snapshot format in {restored}: {meta!r}; it was written "
            "by another taskpoint version"
        )
    return meta


def install(restored: Path, sinks: Sequence[Path], owner: str) -> Path:
    """Put a restored cut in place; return the query's checkpoint location."""
    meta = read_meta(restored)
    if meta["sinks"] != [str(s) for s in sinks]:
        raise TaskpointError(
            f"the checkpoint was taken with file sinks {meta['sinks']} but this attempt passes "
            f"{[str(s) for s in sinks]}; pass the same sinks, in the same order, on every attempt"
        )
    for index, sink in enumerate(sinks):
        live = sink / SINK_LOG
        _check_owner(live, owner)
        shutil.rmtree(live, ignore_errors=True)
        saved = restored / "sinks" / str(index) / SINK_LOG
        if meta["present"][index]:
            shutil.copytree(saved, live)
        _mark_owner(live, owner)
    return restored / QUERY_DIR


def start_fresh(sinks: Sequence[Path], owner: str) -> None:
    """No snapshot yet: roll back logs that an earlier attempt of this task left in its sinks."""
    for sink in sinks:
        live = sink / SINK_LOG
        _check_owner(live, owner)
        shutil.rmtree(live, ignore_errors=True)
        _mark_owner(live, owner)


def _check_owner(log_dir: Path, owner: str) -> None:
    try:
        entries = [n for n in os.listdir(log_dir) if _log_id(n) is not None]
    except FileNotFoundError:
        return
    if not entries:
        return
    try:
        found = (log_dir / OWNER_FILE).read_text()
    except FileNotFoundError:
        found = None
    if found != owner:
        raise TaskpointError(
            f"the file sink {log_dir.parent} already holds a Spark sink log written by another "
            "query or task; Spark would skip this query's batches whose ids it already lists. "
            "Give this task a new, empty output path (or delete that one)"
        )


def _mark_owner(log_dir: Path, owner: str) -> None:
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / OWNER_FILE).write_text(owner)
