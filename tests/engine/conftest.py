"""Engine test fixtures: a private taskpoint home per test, and helpers to run real processes."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from taskpoint.engine.events import Listener
from taskpoint.engine.settings import settings


@pytest.fixture(autouse=True)
def tp_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own records home (blobs under it) and default engine settings."""
    home = tmp_path / "home"
    monkeypatch.setenv("TASKPOINT_HOME", str(home))
    monkeypatch.delenv("TASKPOINT_STORAGE", raising=False)
    monkeypatch.setattr(settings, "home", None)
    monkeypatch.setattr(settings, "storage", None)
    monkeypatch.setattr(settings, "grace", 30.0)
    monkeypatch.setattr(settings, "listener", Listener())
    return home


@pytest.fixture
def script(tmp_path: Path):
    """Write a workflow file: ``script(source, name="flow.py") -> Path``."""

    def write(source: str, name: str = "flow.py") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(source))
        return path

    return write
