"""Checkpoints steps 1..steps and fails once at ``fail_at`` while ``fail-once`` exists
(tests/faults/test_missing_checkpoints.py). Appends ``<attempt> <step it started from>`` to
``starts.log`` (fsynced) as soon as it read its checkpoint. Run from a copy: the log and the
marker are next to this file."""

import os
from pathlib import Path

from taskpoint import current_context, task, workflow

HERE = Path(__file__).resolve().parent


def note(line):
    fd = os.open(HERE / "starts.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def count(steps, fail_at):
    ctx = current_context()
    prev = ctx.checkpoint.read()
    start = int(prev.decode()) if prev else 0
    note(f"{ctx.attempt} {start}")
    for step in range(start + 1, steps + 1):
        ctx.checkpoint.write(str(step).encode(), step=step)
        marker = HERE / "fail-once"
        if step == fail_at and marker.exists():
            marker.unlink()
            raise ValueError("stopped on purpose")  # not retried: the test resumes
    return steps


@task
def tally(steps: int, fail_at: int) -> int:
    return count(steps, fail_at)


@task(on_missing_checkpoints="restart")
def tally_restarts(steps: int, fail_at: int) -> int:
    return count(steps, fail_at)


@workflow
def flow(steps: int, fail_at: int, restart: bool = False) -> int:
    chosen = tally_restarts if restart else tally
    return chosen(steps=steps, fail_at=fail_at)
