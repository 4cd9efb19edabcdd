"""A file whose import fails on a bad task option (tests/faults/test_bad_input.py)."""

from taskpoint import task


@task(keep=0)
def t() -> int:
    return 1
