"""Engine test fixtures: a private taskpoint home per test. Workflow files the tests run as real
drivers live in ``workflows/`` (see ``workflow_copy`` in tests/support/fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def tp_home(tp_home: Path) -> Path:
    """This suite runs the engine in every test: the shared private home (tests/conftest.py)."""
    return tp_home
