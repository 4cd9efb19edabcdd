"""CLI test fixtures: a private home per test; `cli(*args)` runs the CLI in this process."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture(autouse=True)
def tp_home(tp_home: Path) -> Path:
    """This suite runs the engine in every test: the shared private home (tests/conftest.py)."""
    return tp_home


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    from taskpoint.cli.app import run_cli

    def invoke(*args: str) -> Result:
        code = run_cli([str(a) for a in args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return invoke
