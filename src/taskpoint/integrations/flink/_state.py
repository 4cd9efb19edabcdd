"""Flink checkpoint directories as taskpoint checkpoint payloads (pure file logic, no JVM).

A payload is ``state/`` (the files of one completed Flink checkpoint ``chk-N`` or of a canonical
savepoint) plus ``taskpoint-flink.json`` (what it is). Flink's ``_metadata`` is written last and
atomically (a temporary file renamed on commit), so a ``chk-N`` directory holding ``_metadata`` is
complete; its files never change afterwards, they are only deleted when Flink retires the
checkpoint, which a copy survives because it hard-links them first.

Movability: state written into the checkpoint's own directory is referenced *relative* to
``_metadata`` (Flink does that for exclusive state and savepoints), and small state is inlined in
``_metadata``. State in the job's ``shared/`` or ``taskowned/`` directories (RocksDB incremental
checkpoints, file merging) is referenced by absolute path and cannot be moved to another directory
or machine: `take` finds such references (``file:`` URIs in ``_metadata`` naming files that exist)
and refuses the checkpoint with an error that says so.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from taskpoint.errors import CheckpointError
from taskpoint.integrations._toolkit import link_or_copy

FORMAT = 1
META_FILE = "taskpoint-flink.json"
STATE_DIR = "state"

_CHK = re.compile(r"^chk-(\d+)$")

# Settings that make checkpoints reference state outside the checkpoint directory.
UNMOVABLE_SETTINGS = {
    "execution.checkpointing.incremental": "true",
    "state.backend.incremental": "true",
    "execution.checkpointing.file-merging.enabled": "true",
}


def newest_checkpoint(job_dir: Path, after: int | None) -> tuple[int, Path] | None:
    """The newest completed ``chk-N`` (``_metadata`` present) newer than ``after``, or None."""
    try:
        names = os.listdir(job_dir)
    except FileNotFoundError:
        return None
    found = sorted(
        (int(m.group(1)), job_dir / name)
        for name in names
        if (m := _CHK.match(name)) and (after is None or int(m.group(1)) > after)
    )
    for number, path in reversed(found):
        if (path / "_metadata").exists():
            return number, path
    return None


def take(source: Path, dest: Path, meta: dict[str, Any]) -> bool:
    """Copy (hard-link) a checkpoint or savepoint directory into ``dest/state``.

    Returns False if Flink deleted it meanwhile. Raises `CheckpointError` if its ``_metadata``
    references state outside it by absolute path.
    """
    target = dest / STATE_DIR
    try:
        for dirpath, _dirs, files in os.walk(source):
            rel = Path(dirpath).relative_to(source)
            (target / rel).mkdir(parents=True, exist_ok=True)
            for name in files:
                if not link_or_copy(Path(dirpath) / name, target / rel / name):
                    return False  # retired by Flink meanwhile
        metadata = (target / "_metadata").read_bytes()
    except FileNotFoundError:
        return False
    outside = absolute_references(metadata)
    if outside:
        raise CheckpointError(
            f"Flink checkpoint {source} references state outside its directory by absolute path "
            f"({', '.join(outside[:3])}{', ...' if len(outside) > 3 else ''}): it cannot be "
            "restored from another directory or machine. Turn off incremental checkpoints "
            "(execution.checkpointing.incremental=false) and checkpoint file merging"
        )
    (dest / META_FILE).write_text(json.dumps({"format": FORMAT, **meta}))
    return True


def absolute_references(metadata: bytes) -> list[str]:
    """Existing files that ``_metadata`` names by an absolute ``file:`` URI.

    Flink writes paths with Java's ``writeUTF``: a two-byte big-endian length, then the text.
    Inlined (small) state also carries a path-like name inside the checkpoint directory, but no
    file exists there; only names of existing files are references that would break on a move.
    """
    found = []
    start = metadata.find(b"file:")
    while start >= 0:
        size = int.from_bytes(metadata[start - 2 : start], "big") if start >= 2 else 0
        if 6 <= size <= 4096 and start + size <= len(metadata):
            uri = metadata[start : start + size].decode("utf-8", "replace")
            path = "/" + uri[len("file:") :].lstrip("/")
            if os.path.isfile(path):
                found.append(path)
        start = metadata.find(b"file:", start + 5)
    return found


def read_meta(restored: Path) -> dict[str, Any]:
    try:
        meta = json.loads((restored / META_FILE).read_text())
    except FileNotFoundError:
        raise CheckpointError(
            f"the task's latest checkpoint (restored into {restored}) is not Flink state: it has "
            "no taskpoint-flink.json. Use one checkpoint scope (one task) per Flink job"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"unsupported Flink state format in {restored}: {meta!r}")
    if not (restored / STATE_DIR / "_metadata").is_file():
        raise CheckpointError(f"the Flink state restored into {restored} has no _metadata")
    return meta
