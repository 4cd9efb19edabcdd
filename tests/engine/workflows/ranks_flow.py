"""Rank-group tasks for tests/engine/test_rank_group*.py: two gloo ranks on CPU.

Each rank announces itself in ``out`` (a folder the test watches: ``<name>`` holds JSON, written
whole and renamed into place) at the point where the test kills, stops or signals it. Rank 0
commits the step counter after each step; every rank reads the latest version before the
rendezvous, so all resume from the same step. torch is imported inside the tasks: the driver
(the test process) decides on its own whether it has torch loaded.
"""

import json
import os
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from taskpoint import Preempted, RecoverableError, current_context, task, workflow

VARIABLES = (
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "OMP_NUM_THREADS",
)
WAIT = 60.0  # seconds a rank waits to be killed or signalled before it gives up

# The helpers below are tests/support/ranks.py's, written out again: this file is also run on its
# own by `taskpoint run` (tests/engine/test_rank_group_driver.py), where tests/ is not importable.


def announce(out: str, name: str, **fields: Any) -> None:
    path = Path(out) / name
    partial = path.with_name(f".{name}.partial")
    partial.write_text(json.dumps({"pid": os.getpid(), **fields}))
    partial.replace(path)


def rendezvous() -> Any:
    import torch.distributed as dist

    dist.init_process_group("gloo", timeout=timedelta(seconds=WAIT))
    return dist


def total_of(dist: Any, value: float) -> float:
    import torch

    tensor = torch.tensor([float(value)])
    dist.all_reduce(tensor)
    return float(tensor.item())


def start_step() -> int:
    """The latest committed step, read before the rendezvous (no rank has written yet)."""
    prev = current_context().checkpoint.read()
    return int(prev) if prev else 0


@task(isolation="process", nproc=2)
def reduce_and_describe(out: str) -> dict:
    ctx = current_context()
    env = {name: os.environ.get(name) for name in VARIABLES}
    dist = rendezvous()
    total = total_of(dist, ctx.rank + 1)
    announce(
        out,
        f"rank{ctx.rank}",
        env=env,
        rank=ctx.rank,
        world_size=ctx.world_size,
        execution=ctx.execution_id,
        node=ctx.node,
        attempt=ctx.attempt,
        scope=ctx.checkpoint.url,
        dist=[dist.get_rank(), dist.get_world_size()],
    )
    dist.destroy_process_group()
    return {"rank": ctx.rank, "total": total}


def _count(out: str, total: int, pause: int) -> dict:
    """Steps ``start..total`` (an all-reduce each, rank 0 commits); in attempt 1 both ranks
    announce ``ready-r<rank>`` after step ``pause`` is committed, then rank 1 waits to be killed
    or stopped while rank 0 waits for it in the next collective."""
    ctx = current_context()
    start = start_step()
    dist = rendezvous()
    for i in range(start, total):
        total_of(dist, 1)
        if ctx.rank == 0:
            ctx.checkpoint.write(str(i + 1).encode(), step=i + 1)
        if ctx.attempt == 1 and i + 1 == pause:
            announce(out, f"ready-r{ctx.rank}")
            if ctx.rank == 1:
                time.sleep(WAIT)
    dist.destroy_process_group()
    return {"rank": ctx.rank, "start": start, "attempt": ctx.attempt}


@task(isolation="process", nproc=2, system_retries=2)
def count(out: str, total: int) -> dict:
    return _count(out, total, pause=3)


@task(isolation="process", nproc=2, system_retries=2, heartbeat_timeout=4)
def count_watched(out: str, total: int) -> dict:
    return _count(out, total, pause=2)


@task(isolation="process", nproc=2, retries=1)
def recover(out: str) -> dict:
    """Attempt 1: rank 1 asks for a retry after one collective; rank 0 goes on to the next one
    (which cannot complete)."""
    ctx = current_context()
    dist = rendezvous()
    total_of(dist, 1)
    announce(out, f"a{ctx.attempt}-r{ctx.rank}")
    if ctx.attempt == 1 and ctx.rank == 1:
        # The request ends the group at once: it waits until rank 0 is known (on a loaded
        # machine rank 0 was killed before it announced, and the test waited for it in vain).
        deadline = time.monotonic() + WAIT
        while not (Path(out) / "a1-r0").exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        raise RecoverableError("rank 1 asks for another attempt")
    total_of(dist, 1)
    dist.destroy_process_group()
    return {"rank": ctx.rank, "attempt": ctx.attempt}


@task(isolation="process", nproc=2, system_retries=2)
def preemptible(out: str, total: int) -> dict:
    """Attempt 1 waits after step 3 until it is preempted; then the ranks save together (a
    collective, rank 0 commits step 4 and its write raises ``Preempted``; rank 1 stops too)."""
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
    return {"rank": ctx.rank, "start": start, "attempt": ctx.attempt}


@workflow
def preempted_flow(out: str, total: int) -> dict:
    """``preemptible`` run by ``taskpoint run`` (a driver of its own, to send SIGTERM to)."""
    return preemptible(out=out, total=total)


@task(isolation="process", nproc=2, retries=1)
def hang_at_exit(out: str) -> dict:
    """Attempt 1: both ranks ask for a retry, and rank 1 cannot exit (a thread that never ends
    keeps its interpreter from shutting down)."""
    ctx = current_context()
    dist = rendezvous()
    total_of(dist, 1)
    # Announced before the teardown, which itself hangs now and then in gloo (then the rank is
    # killed all the same, and the test still finds its pid).
    announce(out, f"a{ctx.attempt}-r{ctx.rank}")
    dist.destroy_process_group()
    if ctx.attempt == 1:
        # Rank 0's retry request ends the group at once: it waits until rank 1 is known.
        deadline = time.monotonic() + WAIT
        while not (Path(out) / "a1-r1").exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        if ctx.rank == 1:
            threading.Thread(target=threading.Event().wait, name="never-ends").start()
        raise RecoverableError(f"rank {ctx.rank} asks for another attempt")
    return {"rank": ctx.rank, "attempt": ctx.attempt}


@task(isolation="process", nproc=2, system_retries=1)
def hang_in_teardown(out: str) -> dict:
    """Attempt 1: rank 1 never returns (as when gloo's teardown hangs in
    ``destroy_process_group()``) while rank 0 returns."""
    ctx = current_context()
    dist = rendezvous()
    total_of(dist, 1)
    announce(out, f"a{ctx.attempt}-r{ctx.rank}")
    if ctx.attempt == 1 and ctx.rank == 1:
        threading.Event().wait(WAIT)
    return {"rank": ctx.rank, "attempt": ctx.attempt}
