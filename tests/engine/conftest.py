"""Engine test fixtures: a private taskpoint home per test, and helpers to run real processes."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def tp_home(tp_home: Path) -> Path:
    """This suite runs the engine in every test: the shared private home (tests/conftest.py)."""
    return tp_home


@pytest.fixture
def script(tmp_path: Path):
    """Write a workflow file: ``script(source, name="flow.py") -> Path``."""

    def write(source: str, name: str = "flow.py") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(source))
        return path

    return write
