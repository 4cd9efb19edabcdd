from taskpoint import task


@task
def one() -> int:
    return 1
