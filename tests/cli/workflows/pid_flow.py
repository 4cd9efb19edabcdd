"""One inline task that returns the pid of the process it ran in (tests/cli)."""

import os

from taskpoint import task, workflow


@task
def where() -> int:
    return os.getpid()


@workflow
def flow() -> int:
    return where()
