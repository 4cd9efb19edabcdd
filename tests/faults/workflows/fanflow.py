"""Many small checkpointing nodes, inline and in child processes, some failing once
(tests/faults/test_concurrency.py). Each node appends its index to ``progress-<tag>`` when done.
Run from a copy: the progress files are written next to this file."""

import time
from pathlib import Path

from taskpoint import RecoverableError, current_context, task, workflow

HERE = Path(__file__).parent


def _work(tag, i):
    ctx = current_context()
    cp = ctx.checkpoint
    prev = cp.read()
    for k in range(int(prev) if prev else 0, 3):
        cp.write(str(k + 1).encode(), step=k + 1)
    if i % 4 == 1 and ctx.attempt == 1:
        raise RecoverableError("fails once, on purpose")
    with open(HERE / f"progress-{tag}", "a") as f:
        f.write(f"{i}\n")
    time.sleep(0.03)
    return i * i


@task(retries=2)
def step(tag: str, i: int) -> int:
    return _work(tag, i)


@task(retries=2, isolation="process")
def boxed(tag: str, i: int) -> int:
    return _work(tag, i)


@workflow
def fan(tag: str, n: int) -> int:
    return sum(step(tag=tag, i=i) if i % 3 else boxed(tag=tag, i=i) for i in range(n))
