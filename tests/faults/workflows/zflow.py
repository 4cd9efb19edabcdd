"""A chain of checkpointed steps ``interval`` apart, in a child process
(tests/faults/test_zombie.py). Logs to ``zombie.log`` (fsynced) each attempt's start (with its
pid, step and execution id), every commit and the final commit of a preempted attempt. Run from
a copy: the log is written next to this file."""

import hashlib
import os
import time
from pathlib import Path

from taskpoint import Preempted, current_context, task, workflow

HERE = Path(__file__).parent


def log(*fields):
    fd = os.open(HERE / "zombie.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (" ".join(map(str, fields)) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


@task(isolation="process", system_retries=20)
def chain(steps: int, interval: float) -> str:
    ctx = current_context()
    cp = ctx.checkpoint
    prev = cp.read()
    step, state = (int(prev[:8]), prev[8:]) if prev else (0, bytes(32))
    log("start", ctx.attempt, os.getpid(), step, ctx.execution_id)
    for s in range(step + 1, steps + 1):
        time.sleep(interval)
        state = hashlib.sha256(state + s.to_bytes(8, "little")).digest()
        try:
            version = cp.write(b"%08d" % s + state, step=s)
        except Preempted:
            log("final", ctx.attempt, s)
            raise
        log("commit", ctx.attempt, s, version.id)
    return state.hex()


@workflow
def zombies(steps: int, interval: float) -> str:
    return chain(steps=steps, interval=interval)
