"""Module-level tasks for the isolation="spawn" tests (a spawned attempt imports them)."""

from __future__ import annotations

import os
import signal

from taskpoint import current_context, task


def _count_to(total: int) -> int:
    """Checkpoint 1..total, resuming from the latest; the first attempt dies (SIGKILL) after two
    committed writes. Returns the count it started from."""
    ctx = current_context()
    prev = ctx.checkpoint.read()
    start = int(prev) if prev else 0
    for i in range(start, total):
        ctx.checkpoint.write(str(i + 1).encode())
        if ctx.attempt == 1 and i == 1:
            os.kill(os.getpid(), signal.SIGKILL)
    return start


@task(isolation="spawn", system_retries=1)
def spawned(total: int) -> list:
    start = _count_to(total)
    return [start, current_context().attempt, os.getpid()]


@task(isolation="process", system_retries=1)
def after_torch(total: int) -> list:
    """Run with torch loaded in the driver: the attempt comes from the fork server."""
    import sys

    start = _count_to(total)
    seen = os.environ.get("TASKPOINT_TEST_MARKER", "")
    attempt = current_context().attempt
    return [start, attempt, os.getpid(), os.getppid(), "torch" in sys.modules, seen]
