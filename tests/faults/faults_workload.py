"""A checkpointing workflow for the random-kill tests, run by real ``taskpoint`` processes.

The test copies this file next to a ``workload.json`` (checkpoint kind, size, sync/async,
isolation, keep) and runs ``taskpoint run faults_workload.py pipeline --steps N``. The task folds
a SHA-256 chain over its steps, so its result is a pure function of ``steps`` (`final`) whatever
happened in between. Each step commits a checkpoint whose content is a pure function of the step
(`expected`), so any reader can tell a torn or stale version. The task appends, with fsync:

- ``attempts.log``: ``start <execution> <attempt> <pid>``, then ``resume <attempt> <step>`` once it
  read the latest checkpoint;
- ``commits.log``: ``<version id> <step>`` once a write returned or its future resolved;
- ``torn.log``: what was wrong, if a checkpoint it read was not exactly what was written (then it
  fails the attempt).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from taskpoint import current_context, task, workflow

HERE = Path(__file__).resolve().parent
MAGIC = b"TPFAULT1"
HEAD = len(MAGIC) + 8 + 32


def _config() -> dict:
    path = HERE / "workload.json"
    if path.exists():
        return json.loads(path.read_text())
    return {"kind": "bytes", "async": False, "isolation": "inline", "size": 1, "keep": 2}


CFG = _config()


def log(name: str, *fields: object) -> None:
    fd = os.open(HERE / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (" ".join(map(str, fields)) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def advance(state: bytes, step: int) -> bytes:
    return hashlib.sha256(state + step.to_bytes(8, "little")).digest()


def final(steps: int) -> str:
    state = bytes(32)
    for step in range(1, steps + 1):
        state = advance(state, step)
    return state.hex()


def pad(step: int, size: int) -> bytes:
    block = hashlib.sha256(b"pad" + step.to_bytes(8, "little")).digest() * 2048  # 64 KiB
    return (block * (size // len(block) + 1))[:size]


def head(step: int, state: bytes) -> bytes:
    return MAGIC + step.to_bytes(8, "little") + state


def state_at(step: int) -> bytes:
    state = bytes(32)
    for s in range(1, step + 1):
        state = advance(state, s)
    return state


def expected(step: int, kind: str, size: int) -> dict[str, bytes]:
    """The files ``restore()`` must give for the version of ``step``."""
    state = state_at(step)
    if kind == "dir":
        return {"head.bin": head(step, state), "sub/pad.bin": pad(step, size)}
    name = "state.bin" if kind == "file" else "data"
    return {name: head(step, state) + pad(step, size)}


def _tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _load(cp) -> tuple[int, bytes]:
    """The latest committed step and state, checking every byte of what was read."""
    kind, size = CFG["kind"], CFG["size"]
    if kind == "bytes":
        data = cp.read()
        if data is None:
            return 0, bytes(32)
        files = {"data": data}
    else:
        out = cp.restore(Path(tempfile.mkdtemp(prefix="restore-", dir=HERE)))
        if out is None:
            return 0, bytes(32)
        files = _tree(out)
        shutil.rmtree(out)
    first = files.get("head.bin") or next(iter(files.values()), b"")
    step = int.from_bytes(first[len(MAGIC) : len(MAGIC) + 8], "little")
    if first[: len(MAGIC)] != MAGIC or files != expected(step, kind, size):
        log("torn.log", "attempt", current_context().attempt, "read a torn checkpoint", step)
        raise RuntimeError(f"torn checkpoint read (claims step {step})")
    return step, files.get("head.bin", first)[len(MAGIC) + 8 : HEAD]


def _store(cp, step: int, state: bytes, blocking: bool):
    kind, size = CFG["kind"], CFG["size"]
    if kind == "bytes":
        return cp.write(head(step, state) + pad(step, size), step=step, blocking=blocking)
    src = Path(tempfile.mkdtemp(prefix="src-", dir=HERE))
    try:
        for rel, data in expected(step, kind, size).items():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes(data)
        target = src / "state.bin" if kind == "file" else src
        return cp.save(target, step=step, blocking=blocking)
    finally:
        shutil.rmtree(src)  # an async save has its snapshot already


# The checks compare what survives kills with what was committed: no pruning at the end.
@task(
    isolation=CFG["isolation"],
    system_retries=1000,
    keep=CFG["keep"],
    keep_checkpoints_on_success="all",
)
def grind(steps: int) -> str:
    ctx = current_context()
    cp = ctx.checkpoint
    log("attempts.log", "start", ctx.execution_id, ctx.attempt, os.getpid())
    step, state = _load(cp)
    log("attempts.log", "resume", ctx.attempt, step)
    pending = []
    blocking = not CFG["async"]
    for s in range(step + 1, steps + 1):
        state = advance(state, s)
        result = _store(cp, s, state, blocking)
        if blocking:
            log("commits.log", result.id, s)
        else:
            pending.append((result, s))
            for future, done in [p for p in pending if p[0].done()]:
                pending.remove((future, done))
                version = future.result()  # None: superseded by a newer write
                if version is not None:
                    log("commits.log", version.id, done)
        if CFG.get("pause"):
            time.sleep(CFG["pause"])
    cp.wait()
    for future, done in pending:
        version = future.result()
        if version is not None:
            log("commits.log", version.id, done)
    return state.hex()


@workflow
def pipeline(steps: int) -> str:
    return grind(steps=steps)
