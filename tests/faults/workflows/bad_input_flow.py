"""A valid workflow for the CLI's bad-input cases (tests/faults/test_bad_input.py), copied into
the working directory as ``flow.py``."""

from taskpoint import task, workflow


@task
def add(a: int, b: int = 1) -> int:
    return a + b


@workflow
def flow(a: int) -> int:
    return add(a=a)
