"""Workflows of tests/cli/test_cli_history.py: one that succeeds, one whose task fails (in the
driver, and in a child process), and one whose task spends its one retry and fails."""

from taskpoint import RecoverableError, task, workflow


@task
def double(n: int) -> int:
    return 2 * n


@workflow
def ok(n: int) -> int:
    return double(n=n)


@task
def broken(n: int) -> int:
    raise ValueError(f"cannot handle {n}")  # the frame the one-line error names


@workflow
def fails(n: int) -> int:
    return broken(n=n)


@task(isolation="process")
def broken_child(n: int) -> int:
    raise ValueError(f"the child cannot handle {n}")  # the frame the one-line error names


@workflow
def fails_in_child(n: int) -> int:
    return broken_child(n=n)


@task(retries=1)
def flaky(n: int) -> int:
    raise RecoverableError(f"flaky {n}")


@workflow
def spends(n: int) -> int:
    return flaky(n=n)
