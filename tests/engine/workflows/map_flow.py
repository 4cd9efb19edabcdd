"""``count.map`` over two items in child processes (tests/engine/test_map_process.py): each item
writes its pid to ``ready-<x>`` at step 2 of its first run and waits there until preempted. Run
from a copy: the markers are written next to this file."""

import os
import time
from pathlib import Path

from taskpoint import current_context, task, workflow

HERE = Path(__file__).parent


@task(isolation="process")
def count(x: int) -> list:
    ctx = current_context()
    cp = ctx.checkpoint
    prev = cp.read()
    start = int(prev) if prev else 0
    for i in range(start, 6):
        if i == 2 and start == 0:
            (HERE / f"ready-{x}").write_text(str(os.getpid()))
            deadline = time.monotonic() + 60
            while not ctx.preempted and time.monotonic() < deadline:
                time.sleep(0.01)
        cp.write(str(i + 1).encode(), step=i + 1)
    return [x, start, ctx.attempt]


@workflow
def flow() -> list:
    return count.map(x=[0, 1])
