"""A workflow whose options the CLI derives from its signature (tests/cli/test_cli_commands.py):
every kind of parameter with and without a default, a docstring for ``--help``, and a task that
fails. Annotations stay evaluated (no ``from __future__ import annotations``) and ``Optional``
stays spelled out: both are what the CLI is tested on."""

import dataclasses
from pathlib import Path
from typing import Optional

from taskpoint import task, workflow


@dataclasses.dataclass
class Opt:
    lr: float
    name: str = "adam"


@task
def combine(
    n: int,
    ratio: float,
    tags: list[str],
    out: Optional[Path],  # noqa: UP045
    verbose: bool,
    opt: Opt,
    raw: bytes,
) -> str:
    return f"{n}|{ratio}|{tags}|{out}|{verbose}|{opt}|{raw!r}"


@workflow
def flow(
    n: int,
    ratio: float = 0.5,
    tags: list[str] = ("a",),
    out: Optional[Path] = None,  # noqa: UP045
    verbose: bool = False,
    opt: Opt = Opt(0.1),  # noqa: B008
    raw: bytes = b"",
) -> str:
    """Combine the options into one string."""
    return combine(n=n, ratio=ratio, tags=list(tags), out=out, verbose=verbose, opt=opt, raw=raw)


@task
def fails(n: int) -> int:
    raise ValueError(f"cannot handle {n}")
