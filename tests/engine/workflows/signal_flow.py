"""A driver to stop with real signals (tests/engine/test_engine_faults.py): ``count`` checkpoints
1..total and, in its first run, waits at step 3 (writing its pid to ``ready``) until it is
preempted or killed. ``prepare`` appends to ``prepare_runs``, so a resume that runs it again
shows. Run from a copy: the markers are written next to this file."""

import os
import time
from pathlib import Path

from taskpoint import current_context, task, workflow

HERE = Path(__file__).parent


@task
def prepare(total: int) -> int:
    with (HERE / "prepare_runs").open("a") as f:  # side-effect counter
        f.write("x")
    return total


def _count(total: int) -> list:
    ctx = current_context()
    cp = ctx.checkpoint
    prev = cp.read()
    start = int(prev) if prev else 0
    for i in range(start, total):
        if i == 3 and start == 0:
            (HERE / "ready").write_text(str(os.getpid()))
            deadline = time.monotonic() + 60
            while not ctx.preempted and time.monotonic() < deadline:
                time.sleep(0.01)  # stopped here (SIGKILL, SIGINT) or preempted (SIGTERM)
        cp.write(str(i + 1).encode(), step=i + 1)
    return [start, ctx.attempt]


@task
def count(total: int) -> list:
    return _count(total)


@task(isolation="process")
def count_in_child(total: int) -> list:
    return _count(total)


@workflow
def flow(total: int, isolation: str = "inline") -> list:
    chosen = count_in_child if isolation == "process" else count
    return chosen(total=prepare(total=total))
