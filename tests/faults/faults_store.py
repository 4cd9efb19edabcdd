"""A checkpoint reader in a child process, for store damage that could hang or read forever.

A payload or manifest replaced by a FIFO blocks a naive ``open()`` for good, and one replaced by a
link to ``/dev/zero`` reads until memory or the disk is full. The test suite must survive the
code it tests getting that wrong, so such reads run here: under an address-space and a file-size
limit, killed by the parent at a deadline.

    python faults_store.py URL TARGET OP...

opens the scope at URL (a reader: attempt 99), then runs each OP in turn (``read``,
``read_with``, ``restore`` into ``TARGET/<n>-restore``, ``latest``, ``versions``) and prints a
JSON line when it starts one (so a hang names it) and one with its outcome: the result, the
warnings it raised, the error it raised (with its class's MRO names), and how many bytes the
process read meanwhile (``rchar`` of /proc/self/io: every read(2) of every thread).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import warnings
from pathlib import Path
from typing import Any

ADDRESS_SPACE = 3 << 30  # reading /dev/zero into memory fails here, not in the OOM killer
FILE_SIZE = 256 << 20  # copying /dev/zero into a restore target stops here (EFBIG)


def _read_bytes() -> int:
    with open("/proc/self/io") as io:
        for line in io:
            if line.startswith("rchar:"):
                return int(line.split()[1])
    return -1


def _tree(root: Path) -> dict[str, str]:
    """Every entry under ``root``: file contents (latin-1), link targets, directories."""
    tree = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            tree[rel] = f"-> {os.readlink(path)}"
        elif path.is_dir():
            tree[rel + "/"] = ""
        elif path.is_file():
            tree[rel] = path.read_bytes().decode("latin-1")
        else:
            tree[rel] = "<special file>"
    return tree


def _run(cp: Any, op: str, target: Path) -> Any:
    if op == "read":
        data = cp.read()
        return None if data is None else data.decode("latin-1")
    if op == "read_with":
        data = cp.read_with(lambda reader: reader.read(reader.size))
        return None if data is None else data.decode("latin-1")
    if op == "restore":
        out = cp.restore(target)
        return None if out is None else _tree(out)
    if op == "latest":
        version = cp.latest()
        return None if version is None else version.id
    if op == "versions":
        return [v.id for v in cp.versions()]
    raise ValueError(f"unknown op {op!r}")


def main(url: str, target_root: str, ops: list[str]) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE, FILE_SIZE))
    from taskpoint import Checkpoint

    cp = Checkpoint.open(url, attempt=99)
    cp.prev_exists()  # imports and first listing before anything is measured
    for n, op in enumerate(ops):
        print(json.dumps({"op": op, "started": True}), flush=True)
        outcome: dict[str, Any] = {"op": op, "result": None, "error": None, "error_mro": []}
        before = _read_bytes()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                outcome["result"] = _run(cp, op, Path(target_root) / f"{n}-{op}")
            except Exception as exc:
                outcome["error"] = f"{type(exc).__name__}: {exc}"
                outcome["error_mro"] = [c.__name__ for c in type(exc).__mro__]
        outcome["read_bytes"] = _read_bytes() - before
        outcome["warnings"] = [f"{w.category.__name__}: {w.message}" for w in caught]
        print(json.dumps(outcome), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
