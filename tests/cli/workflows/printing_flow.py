"""Tasks that print on stdout and stderr, fail once, or print until released."""

from __future__ import annotations

import os
import sys
import threading
import time

from taskpoint import RecoverableError, current_context, task, workflow


def _talk() -> str:
    n = current_context().attempt
    print(f"out line of attempt {n}")
    print(f"err line of attempt {n}", file=sys.stderr)
    if n == 1:
        raise RecoverableError("once more")
    return f"done in attempt {n}"


@task(retries=1)
def talk_inline() -> str:
    return _talk()


@task(retries=1, isolation="process")
def talk_process() -> str:
    # In a child process every thread's output is the attempt's.
    worker = threading.Thread(target=lambda: print("from a thread of the child"))
    worker.start()
    worker.join()
    return _talk()


@workflow
def talking(isolated: bool = False) -> str:
    return talk_process() if isolated else talk_inline()


@task
def chatter(release: str) -> int:
    n = 0
    while not os.path.exists(release):
        n += 1
        print(f"tick {n}", flush=True)
        time.sleep(0.02)
    print("released")
    return n


@workflow
def chatting(release: str) -> int:
    return chatter(release=release)
