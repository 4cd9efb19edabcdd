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


@task(isolation="process", system_retries=2)
def leaves_a_grandchild(pidfile: str) -> int:
    """The first attempt forks a grandchild that would sleep a minute (it inherits every
    descriptor the attempt has), writes its pid to ``pidfile`` and dies by SIGKILL."""
    ctx = current_context()
    if ctx.attempt == 1:
        import time

        pid = os.fork()
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        with open(pidfile, "w") as handle:
            handle.write(str(pid))
        os.kill(os.getpid(), signal.SIGKILL)
    return ctx.attempt
