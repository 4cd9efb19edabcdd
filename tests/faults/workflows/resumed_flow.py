"""Workflows whose drivers tests/faults/test_resume_records.py SIGKILLs and resumes.

- ``counting(steps, pause)``: one inline task committing steps 1..steps, one every ``pause``
  seconds, resuming from its latest step.
- ``budgeted()``: a task with ``retries=1`` whose attempt 1 raises RecoverableError, attempt 2
  commits a step every 50 ms until its driver is killed, attempt 3 raises RecoverableError
  again and attempt 4 (the "fixed" code) succeeds.
- ``idling(marker)``: attempt 1 writes ``marker`` and then idles without a checkpoint until its
  driver is killed; attempt 2 returns at once.
"""

import time
from pathlib import Path

from taskpoint import RecoverableError, current_context, task, workflow


@task
def count(steps: int, pause: float) -> int:
    cp = current_context().checkpoint
    prev = cp.read()
    start = int(prev) if prev else 0
    for step in range(start + 1, steps + 1):
        time.sleep(pause)
        cp.write(str(step).encode(), step=step)
    return steps


@workflow
def counting(steps: int, pause: float = 0.05) -> int:
    return count(steps=steps, pause=pause)


@task(retries=1)
def flaky() -> str:
    ctx = current_context()
    if ctx.attempt == 1:
        raise RecoverableError("attempt 1 fails")
    if ctx.attempt == 2:
        step = 0
        while True:  # until its driver is killed
            step += 1
            ctx.checkpoint.write(str(step).encode(), step=step)
            time.sleep(0.05)
    if ctx.attempt == 3:
        raise RecoverableError("attempt 3 fails too")
    return "fixed"


@workflow
def budgeted() -> str:
    return flaky()


@task
def idle(marker: str) -> int:
    ctx = current_context()
    if ctx.attempt == 1:
        Path(marker).write_text("started")
        while True:  # no checkpoint: only the driver's heartbeat says it is alive
            time.sleep(0.05)
    return ctx.attempt


@workflow
def idling(marker: str) -> int:
    return idle(marker=marker)
