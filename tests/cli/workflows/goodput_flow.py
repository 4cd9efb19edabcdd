"""Workflows of tests/cli/test_cli_goodput.py: a retry that ignores its checkpoint (inline and
in a child process), and a process-isolated task that SIGKILLs itself a known time after its
last commit, then resumes."""

import os
import signal
import time

from taskpoint import RecoverableError, current_context, task, workflow


def _forget(steps: int) -> int:
    """Attempt 1 commits steps 1-3 and fails; attempt 2 never reads and starts at step 1."""
    ctx = current_context()
    cp = ctx.checkpoint
    if ctx.attempt == 1:
        for i in range(1, 4):
            cp.write(str(i).encode(), step=i)
        raise RecoverableError("fails after step 3")
    for i in range(1, steps + 1):
        cp.write(str(i).encode(), step=i)
    return steps


@task(retries=1)
def forgetful(steps: int) -> int:
    return _forget(steps)


@task(retries=1, isolation="process")
def forgetful_child(steps: int) -> int:
    return _forget(steps)


@workflow
def forgets(steps: int = 5, in_child: bool = False) -> int:
    if in_child:
        return forgetful_child(steps=steps)
    return forgetful(steps=steps)


@task(isolation="process", system_retries=2)
def killed_once(steps: int, nap: float) -> int:
    ctx = current_context()
    cp = ctx.checkpoint
    prev = cp.read()
    start = int(prev) if prev else 0
    for i in range(start, steps):
        cp.write(str(i + 1).encode(), step=i + 1)
        if ctx.attempt == 1 and i + 1 == 2:
            time.sleep(nap)  # work after the last commit, lost with the process
            os.kill(os.getpid(), signal.SIGKILL)
    return start


@workflow
def crashes(steps: int = 4, nap: float = 0.3) -> int:
    return killed_once(steps=steps, nap=nap)
