"""Tasks the Dask tests run. This file is not importable on the workers: the backend ships its
source, as it does for a file run by `taskpoint run`. The tasks and the tests signal each other
through marker files in a folder they share."""

from __future__ import annotations

import os
import time
from pathlib import Path

from taskpoint import current_context, task, workflow


def wait_path(path: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return True
        time.sleep(0.01)
    return False


@task(system_retries=3)
def count(total: int, markers: str) -> dict:
    """Counts to ``total`` with a checkpoint per step; attempt 1 announces its pid after step 3
    and then waits to be killed."""
    ctx = current_context()
    cp = ctx.checkpoint
    prev = cp.read()
    start = int(prev) if prev else 0
    for i in range(start, total):
        cp.write(str(i + 1).encode(), step=i + 1)
        if ctx.attempt == 1 and i == 2:
            (Path(markers) / "victim").write_text(str(os.getpid()))
            wait_path(Path(markers) / "never", timeout=120)
    return {"start": start, "attempt": ctx.attempt, "pid": os.getpid()}


@workflow
def counting(total: int, markers: str) -> dict:
    return count(total=total, markers=markers)


@task(system_retries=3)
def frozen_count(total: int, markers: str) -> dict:
    """Attempt 1 is frozen (SIGSTOP) after step 3; once woken it writes late versions as a zombie
    (one or more: its worker, closing, preempts it).
    The successor waits, after its first write, until the zombie wrote, then finishes."""
    ctx = current_context()
    cp = ctx.checkpoint
    m = Path(markers)
    prev = cp.read()
    start = int(prev) if prev else 0
    for i in range(start, total):
        cp.write(str(i + 1).encode(), step=i + 1)
        if ctx.attempt == 1 and i == 2:
            (m / "frozen").write_text(str(os.getpid()))
            wait_path(m / "release", timeout=120)  # SIGSTOPped in here, then SIGCONTinued
            try:
                for step in (100, 101, 102):
                    cp.write(b"zombie", step=step)
            finally:
                # Woken, the removed worker is told to close, and closing preempts its
                # attempts (PreemptionPlugin): a late write may commit and raise Preempted.
                (m / "zombie-wrote").write_text("yes")
            return {"zombie": True}
        if ctx.attempt > 1 and i == start:
            (m / "successor").write_text(str(os.getpid()))
            wait_path(m / "zombie-wrote", timeout=20)
    final = cp.read()
    return {"start": start, "attempt": ctx.attempt, "pid": os.getpid(), "final": final.decode()}


@workflow
def freezing(total: int, markers: str) -> dict:
    return frozen_count(total=total, markers=markers)


@task(system_retries=3)
def item(x: int, victim: int, markers: str) -> dict:
    """One mapped item: 4 checkpointed steps; item ``victim`` waits after step 2 on attempt 1
    (its worker is killed there). Every attempt appends a line to ``runs-<x>``."""
    ctx = current_context()
    cp = ctx.checkpoint
    m = Path(markers)
    prev = cp.read()
    start = int(prev) if prev else 0
    with (m / f"runs-{x}").open("a") as f:
        f.write(f"{ctx.attempt} {start}\n")
    for i in range(start, 4):
        cp.write(str(i + 1).encode(), step=i + 1)
        if x == victim and ctx.attempt == 1 and i == 1:
            (m / "victim").write_text(str(os.getpid()))
            wait_path(m / "never", timeout=120)
        time.sleep(0.05)
    return {"x": x, "start": start, "attempt": ctx.attempt}


@workflow
def fan_out(n: int, victim: int, markers: str) -> list:
    return item.map(x=list(range(n)), victim=[victim] * n, markers=[markers] * n)


@task(system_retries=3)
def held_count(total: int, markers: str) -> dict:
    """Attempt 1 holds after step 3 until ``release`` appears, then goes on."""
    ctx = current_context()
    cp = ctx.checkpoint
    m = Path(markers)
    prev = cp.read()
    start = int(prev) if prev else 0
    for i in range(start, total):
        cp.write(str(i + 1).encode(), step=i + 1)
        if ctx.attempt == 1 and i == 2:
            (m / "held").write_text(str(os.getpid()))
            wait_path(m / "release", timeout=120)
    if ctx.attempt == 1:
        (m / "first-done").write_text("yes")
    return {"start": start, "attempt": ctx.attempt}


@workflow
def holding(total: int, markers: str) -> dict:
    return held_count(total=total, markers=markers)


@task(system_retries=3)
def preemptible_count(total: int, markers: str) -> dict:
    """Counts to ``total`` with a checkpoint per step. Attempt 1 announces its pid after step 3
    and waits until its preemption ran its ``on_preempt`` callback (its worker got SIGTERM);
    its next write, step 4, then commits and raises ``Preempted``."""
    ctx = current_context()
    cp = ctx.checkpoint
    m = Path(markers)
    ctx.on_preempt(lambda: (m / f"on-preempt-{ctx.attempt}").write_text(str(os.getpid())))
    prev = cp.read()
    start = int(prev) if prev else 0
    for i in range(start, total):
        if ctx.attempt == 1 and i == 3:
            (m / "victim").write_text(str(os.getpid()))
            wait_path(m / "on-preempt-1", timeout=120)
        cp.write(str(i + 1).encode(), step=i + 1)
    return {"start": start, "attempt": ctx.attempt, "pid": os.getpid()}


@workflow
def preempting(total: int, markers: str) -> dict:
    return preemptible_count(total=total, markers=markers)
