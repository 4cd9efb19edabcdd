"""A file whose functions and classes must reach the Dask workers (tests/dask/test_dask_cli.py):
``prepare`` returns a dataclass of this file and appends to ``prepare_runs``; ``count``
checkpoints 1..steps and, while ``stall`` exists, writes its pid to ``ready`` at step 3 and
sleeps (the driver is killed meanwhile). Run from a copy: the markers are next to this file."""

import os
import time
from dataclasses import dataclass
from pathlib import Path

from taskpoint import current_context, task, workflow

HERE = Path(__file__).parent


@dataclass
class Job:
    steps: int
    by: int


@task
def prepare(steps: int) -> Job:
    with (HERE / "prepare_runs").open("a") as f:  # side-effect counter
        f.write("x")
    return Job(steps, os.getpid())


@task(system_retries=3, keep_checkpoints_on_success="all")
def count(job: Job) -> list:
    ctx = current_context()
    cp = ctx.checkpoint
    prev = cp.read()
    start = int(prev) if prev else 0
    for i in range(start, job.steps):
        cp.write(str(i + 1).encode(), step=i + 1)
        if i == 2 and start == 0 and (HERE / "stall").exists():
            (HERE / "ready").write_text(str(os.getpid()))
            time.sleep(120)  # the driver is killed meanwhile
    return [start, ctx.attempt, os.getpid(), job.by]


@workflow
def pipeline(steps: int) -> list:
    return count(job=prepare(steps=steps))
