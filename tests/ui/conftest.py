"""UI test fixtures: one home filled by real `taskpoint run`s, served read-only, per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from ui_support import Home, fill_home, serving

from taskpoint.ui.server import UiServer


@pytest.fixture(scope="session")
def ui_home(tmp_path_factory: pytest.TempPathFactory) -> Home:
    """Executions that retried (seed, n=12), were preempted (process and inline), lost an
    attempt, failed, hold a 16 MiB checkpoint, and printed to their logs (chatty)."""
    return fill_home(tmp_path_factory.mktemp("ui") / "home")


@pytest.fixture(scope="session")
def ui_server(ui_home: Home) -> Iterator[UiServer]:
    with serving(ui_home.path) as server:
        yield server


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ui-screenshots")
