"""One step of work per checkpoint interval, a checkpoint after each step, sync or async, in a
child process with a large system budget (tests/faults/test_preemption_storm.py). Logs to
``storm.log`` (fsynced) the step each attempt starts from, the step in progress at SIGTERM
(``on_preempt``), every sync commit and the final commit of a preempted attempt. Run from a
copy: the log is written next to this file."""

import hashlib
import os
import time
from pathlib import Path

from taskpoint import Preempted, current_context, task, workflow

HERE = Path(__file__).parent


def log(*fields):
    fd = os.open(HERE / "storm.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (" ".join(map(str, fields)) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def advance(state, step):
    return hashlib.sha256(state + step.to_bytes(8, "little")).digest()


@task(isolation="process", system_retries=200)
def crunch(steps: int, interval: float, blocking: bool) -> str:
    ctx = current_context()
    cp = ctx.checkpoint
    prev = cp.read()
    step, state = (int(prev[:8]), prev[8:]) if prev else (0, bytes(32))
    log("start", ctx.attempt, os.getpid(), step)
    doing = [step + 1]
    ctx.on_preempt(lambda: log("term", ctx.attempt, doing[0]))
    pending = []
    for s in range(step + 1, steps + 1):
        doing[0] = s
        time.sleep(interval)  # one checkpoint interval of work
        state = advance(state, s)
        try:
            result = cp.write(b"%08d" % s + state, step=s, blocking=blocking)
        except Preempted:
            log("final", ctx.attempt, s)  # committed, then stopped
            raise
        if blocking:
            log("commit", ctx.attempt, s)
        else:
            pending.append((result, s))
    return state.hex()


@workflow
def storm(steps: int, interval: float, blocking: bool) -> str:
    return crunch(steps=steps, interval=interval, blocking=blocking)
