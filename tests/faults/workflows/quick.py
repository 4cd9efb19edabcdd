"""A driver that dies (SIGKILL of its own inline attempt) right after two commits, before the
attempt's start is recorded (tests/faults/test_random_kills.py)."""

import os
import signal

import taskpoint.records.db
from taskpoint import current_context, task

# However slow this machine, the driver dies before the start record's delay is up.
taskpoint.records.db.START_RECORD_DELAY = 3600.0


@task
def quick(steps: int) -> int:
    ctx = current_context()
    prev = ctx.checkpoint.read()
    start = int(prev) if prev else 0
    for step in range(start + 1, steps + 1):
        ctx.checkpoint.write(str(step).encode(), step=step)
        if ctx.attempt == 1 and step == 2:
            os.kill(os.getpid(), signal.SIGKILL)  # the driver dies a few ms into the attempt
    return start
