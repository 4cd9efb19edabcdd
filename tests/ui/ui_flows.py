"""Workflows the UI tests run with `taskpoint run` to fill a real home.

- ``interrupted_training``: process isolation; attempt 1 is preempted (SIGTERM to its own child
  process), attempt 2 is lost (SIGKILL), attempt 3 succeeds. Every write has a step, and ``keep``
  is large so every version stays.
- ``broken_pipeline``: ``prepare`` succeeds, then ``crunch`` fails with a ValueError (one attempt).
- ``inline_preempted``: inline isolation; SIGTERM to the driver stops the execution as preempted.
- ``big_state``: one checkpoint of ``megabytes`` MiB (downloads stream it in bounded memory).
- ``waits_for(marker)``: runs until the file ``marker`` exists (a live execution), printing a
  line at each checkpoint it commits.
- ``chatty``: inline; each attempt prints numbered lines on stdout and `MARKUP` on stderr, and
  commits no checkpoint; attempt 1 fails recoverably, attempt 2 succeeds.
- ``forgets``: attempt 1 commits steps 1-3 and fails recoverably; attempt 2 ignores its
  checkpoint and starts again at step 1 (the resume guard flags it).
"""

import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from taskpoint import RecoverableError, current_context, task, workflow

# What a page must show as text, never run or render: the log view's escaping is checked with it.
MARKUP = '<img src=x onerror="document.body.dataset.owned=1"><b>bold?</b> déjà vu ✓'


@task(isolation="process", system_retries=3, keep=50, keep_checkpoints_on_success="all")
def train(steps: int) -> int:
    ctx = current_context()
    cp = ctx.checkpoint
    prev = cp.read()
    start = int(prev.decode()) if prev else 0
    for i in range(start, steps):
        time.sleep(0.03)
        if ctx.attempt == 1 and i == 4:
            os.kill(os.getpid(), signal.SIGTERM)  # preempted: the next write commits, then stops
        if ctx.attempt == 2 and i == 9:
            time.sleep(0.05)  # some work that no checkpoint will save
            os.kill(os.getpid(), signal.SIGKILL)  # the attempt's process dies: lost
        cp.write(str(i + 1).encode(), step=i + 1)
    return steps


@workflow
def interrupted_training(steps: int) -> int:
    return train(steps=steps)


@task(keep=5, keep_checkpoints_on_success="all")
def prepare(rows: int) -> int:
    cp = current_context().checkpoint
    time.sleep(0.02)
    cp.write(b"rows 0", step=1)
    time.sleep(0.02)
    with tempfile.TemporaryDirectory() as tmp:  # a directory version: tree, empty dir, link
        state = Path(tmp) / "state"
        (state / "shards").mkdir(parents=True)
        (state / "empty").mkdir()
        (state / "shards" / "part-0.bin").write_bytes(bytes(range(256)) * 40)
        (state / "meta.json").write_text(f'{{"rows": {rows}}}')
        (state / "latest").symlink_to("shards/part-0.bin")
        cp.save(state, step=2)
    return rows


@task(retries=2)
def crunch(rows: int) -> int:
    cp = current_context().checkpoint
    for i in range(3):
        time.sleep(0.02)
        cp.write(bytes([i]) * 1000, step=(i + 1) * 10)
    raise ValueError(f"cannot crunch {rows} rows: column 'price' has NaN at row 17")


@workflow
def broken_pipeline(rows: int) -> int:
    return crunch(rows=prepare(rows=rows))


@task
def steady(total: int) -> int:
    cp = current_context().checkpoint
    for i in range(total):
        time.sleep(0.02)
        cp.write(str(i).encode(), step=i)
        if i == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # the driver itself: inline preemption
    return total


@workflow
def inline_preempted(total: int) -> int:
    return steady(total=total)


@task
def big(megabytes: int) -> int:
    cp = current_context().checkpoint
    cp.write(bytes(range(256)) * (4096 * megabytes), step=megabytes)
    return megabytes


@workflow
def big_state(megabytes: int) -> int:
    return big(megabytes=megabytes)


@task
def wait_for_file(marker: str) -> str:
    cp = current_context().checkpoint
    i = 0
    while not Path(marker).exists():
        i += 1
        cp.write(str(i).encode(), step=i)
        print(f"committed step {i}, waiting for {Path(marker).name}")
        time.sleep(0.1)
    print("found the marker")
    return marker


@workflow
def waits_for(marker: str) -> str:
    return wait_for_file(marker=marker)


@task(retries=1)
def chatter(lines: int) -> int:
    attempt = current_context().attempt
    for i in range(lines):
        print(f"attempt {attempt} line {i}")
    print(MARKUP, file=sys.stderr)
    if attempt == 1:
        raise RecoverableError("attempt 1 gives up after printing")
    return lines


@workflow
def chatty(lines: int) -> int:
    return chatter(lines=lines)


@task(retries=1)
def forgetful(steps: int) -> int:
    ctx = current_context()
    cp = ctx.checkpoint
    if ctx.attempt == 1:
        for i in range(1, 4):
            cp.write(str(i).encode(), step=i)
        raise RecoverableError("fails after step 3")
    for i in range(1, steps + 1):  # never reads what attempt 1 committed
        cp.write(str(i).encode(), step=i)
    return steps


@workflow
def forgets(steps: int) -> int:
    return forgetful(steps=steps)
