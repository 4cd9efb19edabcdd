"""A workflow run the plain way, ``python plain_python_flow.py`` (no taskpoint command)."""

from __future__ import annotations

import taskpoint
from taskpoint import task, workflow


@task
def double(x: int) -> int:
    return 2 * x


@workflow
def doubled(x: int = 21) -> int:
    return double(x=x)


if __name__ == "__main__":
    print("result:", taskpoint.run(doubled).result)
