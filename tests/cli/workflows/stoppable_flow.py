"""A task that checkpoints every step until released, inline or in a child process."""

from __future__ import annotations

import os
import time

from taskpoint import current_context, task, workflow


def _count(started: str, release: str) -> str:
    ctx = current_context()
    step = int(ctx.checkpoint.read() or b"0")
    first = step
    while not os.path.exists(release):
        step += 1
        ctx.checkpoint.write(str(step).encode(), step=step)
        if step == first + 1:
            with open(started, "a") as f:
                f.write(f"{ctx.attempt}\n")
        time.sleep(0.01)  # the work of one step
    return f"from {first} to {step}"


@task
def count_inline(started: str, release: str) -> str:
    return _count(started, release)


@task(isolation="process")
def count_process(started: str, release: str) -> str:
    return _count(started, release)


@workflow
def counting(started: str, release: str, isolated: bool = False) -> str:
    step = count_process if isolated else count_inline
    return step(started=started, release=release)
