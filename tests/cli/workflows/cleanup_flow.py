"""Workflows that leave checkpoints, outputs and inputs behind, for the cleanup tests."""

from __future__ import annotations

from taskpoint import RecoverableError, current_context, task, workflow


@task(keep=3)
def fill(megabytes: int) -> bytes:
    cp = current_context().checkpoint
    for step in range(3):
        cp.write(bytes([step]) * (megabytes << 20), step=step)
    return b"x" * (64 << 10)  # an output large enough to go to the blob store


@workflow
def filled(megabytes: int = 1) -> int:
    return len(fill(megabytes=megabytes))


@task
def broken(megabytes: int) -> int:
    current_context().checkpoint.write(b"\0" * (megabytes << 20))
    raise RecoverableError("no retries left")


@workflow
def failing(megabytes: int = 1) -> int:
    return broken(megabytes=megabytes)


@task
def hold(started: str, release: str) -> int:
    """Say it started, then wait until the test releases it (a live driver to protect)."""
    import os
    import time

    with open(started, "w") as f:
        f.write("1")
    while not os.path.exists(release):
        time.sleep(0.05)
    return 1
