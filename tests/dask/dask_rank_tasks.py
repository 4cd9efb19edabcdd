"""Rank-group tasks the Dask tests run (``@task(nproc=2)``: two gloo ranks on CPU). Shipped to the
workers by source, as dask_tasks.py is; each rank unpacks it again in its own interpreter.

Each rank announces itself in ``out`` (``<name>`` holds JSON, written whole and renamed into
place) with its pid and its parent's (the Dask worker that started it), at the point where the
test kills or signals something. Rank 0 commits the step counter after each step; every rank
reads the latest version before the rendezvous, so all resume from the same step.
"""

import os
import time

from support.ranks import WAIT, announce, rendezvous, start_step, total_of
from taskpoint import Preempted, current_context, task, workflow

VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@task(isolation="process", nproc=2)
def describe(out: str) -> dict:
    ctx = current_context()
    env = {name: os.environ.get(name) for name in VARIABLES}
    dist = rendezvous()
    total = total_of(dist, ctx.rank + 1)
    announce(out, f"rank{ctx.rank}", env=env, rank=ctx.rank, world_size=ctx.world_size)
    dist.destroy_process_group()
    return {"rank": ctx.rank, "total": total, "pid": os.getpid()}


@workflow
def describing(out: str) -> dict:
    return describe(out=out)


@task(isolation="process", nproc=2, system_retries=2)
def count(out: str, total: int) -> dict:
    """Attempt 1: after step 3 is committed both ranks announce ``ready-r<rank>``, then rank 1
    waits to be killed while rank 0 waits for it in the next collective."""
    ctx = current_context()
    start = start_step()
    dist = rendezvous()
    for i in range(start, total):
        total_of(dist, 1)
        if ctx.rank == 0:
            ctx.checkpoint.write(str(i + 1).encode(), step=i + 1)
        if ctx.attempt == 1 and i + 1 == 3:
            total_of(dist, 1)  # step 3 is committed before either rank announces
            announce(out, f"ready-r{ctx.rank}")
            if ctx.rank == 1:
                time.sleep(WAIT)
    dist.destroy_process_group()
    return {"rank": ctx.rank, "start": start, "attempt": ctx.attempt, "ppid": os.getppid()}


@workflow
def counting(out: str, total: int) -> dict:
    return count(out=out, total=total)


@task(isolation="process", nproc=2, system_retries=2)
def preemptible(out: str, total: int) -> dict:
    """Attempt 1 waits after step 3 until it is preempted (its worker got SIGTERM); then the
    ranks save together: a collective, rank 0 commits step 4 and its write raises
    ``Preempted``, rank 1 stops too."""
    ctx = current_context()
    ctx.on_preempt(lambda: announce(out, f"preempted-a{ctx.attempt}-r{ctx.rank}"))
    start = start_step()
    dist = rendezvous()
    for i in range(start, total):
        total_of(dist, 1)
        if ctx.attempt == 1 and i == 3:
            announce(out, f"ready-r{ctx.rank}")
            deadline = time.monotonic() + WAIT
            while not ctx.preempted and time.monotonic() < deadline:
                time.sleep(0.005)
        if ctx.preempted:
            total_of(dist, 1)  # every rank is here: the group saves together
            if ctx.rank == 0:
                ctx.checkpoint.write(str(i + 1).encode(), step=i + 1)  # raises Preempted
            raise Preempted(f"rank {ctx.rank} stops with its group")
        if ctx.rank == 0:
            ctx.checkpoint.write(str(i + 1).encode(), step=i + 1)
    dist.destroy_process_group()
    return {"rank": ctx.rank, "start": start, "attempt": ctx.attempt, "ppid": os.getppid()}


@workflow
def preempting(out: str, total: int) -> dict:
    return preemptible(out=out, total=total)
