"""A writer or a reader of one checkpoint scope, run as its own process by the shared-store tests.

    python faults_shared_store.py writer URL OPTIONS_JSON WRITER_TAG N_SAVES KEEP OUT_JSON
    python faults_shared_store.py reader URL OPTIONS_JSON STOP_FILE MIN_READS OUT_JSON

The writer saves a directory of FILES files, each holding ``<tag>:<save>:<file>``, N times and
records the id each save committed. The reader restores the latest version in a loop until the
stop file exists (and it has read at least MIN_READS times), and records every ``None``, every
error and every torn tree (files from different saves) it saw.
"""

from __future__ import annotations

import json
import sys
import tempfile
import warnings
from pathlib import Path

from taskpoint import Checkpoint

FILES = 40


def write_state(root: Path, tag: str, save: int) -> None:
    for i in range(FILES):
        (root / f"f{i:02d}.txt").write_text(f"{tag}:{save}:{i}")


def check_tree(root: Path) -> str | None:
    """The ``tag:save`` every file agrees on, or ``None`` for a torn or incomplete tree."""
    names = sorted(p.name for p in root.iterdir())
    if names != [f"f{i:02d}.txt" for i in range(FILES)]:
        return None
    heads = {(root / n).read_text().rsplit(":", 1)[0] for n in names}
    return heads.pop() if len(heads) == 1 else None


def writer(url: str, options: dict, tag: str, saves: int, keep: int, out: Path) -> None:
    committed = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        Checkpoint.open(url, keep=keep, storage_options=options or None) as cp,
    ):
        state = Path(tmp) / "state"
        state.mkdir()
        for save in range(saves):
            write_state(state, tag, save)
            committed.append([cp.save(state, step=save).id, f"{tag}:{save}"])
    out.write_text(json.dumps({"committed": committed}))


def reader(url: str, options: dict, stop: Path, min_reads: int, out: Path) -> None:
    result: dict = {"reads": 0, "nones": 0, "torn": 0, "errors": [], "warnings": []}
    cp = Checkpoint.open(url, storage_options=options or None)
    with tempfile.TemporaryDirectory() as tmp:
        while not stop.exists() or result["reads"] < min_reads:
            target = Path(tmp) / f"r{result['reads']}"
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    restored = cp.restore(target)
                result["warnings"] += [str(w.message) for w in caught]
            except Exception as exc:  # recorded, not raised: the test reports them all
                result["errors"].append(f"{type(exc).__name__}: {exc}")
                restored = target
            else:
                if restored is None:
                    result["nones"] += 1
                elif check_tree(restored) is None:
                    result["torn"] += 1
            result["reads"] += 1
    out.write_text(json.dumps(result))


if __name__ == "__main__":
    role, url, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    if role == "writer":
        tag, saves, keep, out = sys.argv[4], int(sys.argv[5]), int(sys.argv[6]), sys.argv[7]
        writer(url, options, tag, saves, keep, Path(out))
    else:
        stop, min_reads, out = Path(sys.argv[4]), int(sys.argv[5]), Path(sys.argv[6])
        reader(url, options, stop, min_reads, Path(out))
