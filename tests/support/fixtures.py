"""Fixtures and process helpers every suite shares (registered in ``tests/conftest.py``).

- ``workflow_copy(name)``: a test's own copy of ``workflows/<name>`` (the folder next to the test
  module) in its ``tmp_path``, for a workflow that writes its markers and logs next to itself.
  A workflow that writes nothing there is run from where it lies.
- ``cli_command``, ``tp_env``, ``run_cli``, ``start_cli``: ``taskpoint`` as a real process, with
  an environment that holds none of the caller's ``TASKPOINT_*`` settings, only those the test
  passes (the records home above all).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

PathLike = str | os.PathLike[str]


def cli_command(*args: PathLike) -> list[str]:
    """The command line of ``taskpoint ARGS...`` in this interpreter."""
    return [sys.executable, "-m", "taskpoint.cli", *map(str, args)]


def tp_env(home: PathLike | None = None, **extra: str) -> dict[str, str]:
    """This process's environment without ``TASKPOINT_*`` (but the suite's own local-copy switch,
    tests/conftest.py), then ``TASKPOINT_HOME=home`` (when given) and ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TASKPOINT_") or k == "TASKPOINT_LOCAL_COPY"
    }
    if home is not None:
        env["TASKPOINT_HOME"] = str(home)
    env.update(extra)
    return env


def run_cli(
    *args: PathLike,
    home: PathLike | None = None,
    env: dict[str, str] | None = None,
    cwd: PathLike | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run ``taskpoint ARGS...`` to its end; ``env`` adds variables to ``tp_env(home)``."""
    return subprocess.run(
        cli_command(*args),
        capture_output=True,
        text=True,
        env=tp_env(home, **(env or {})),
        cwd=cwd,
        timeout=timeout,
    )


def start_cli(
    *args: PathLike,
    home: PathLike | None = None,
    env: dict[str, str] | None = None,
    cwd: PathLike | None = None,
) -> subprocess.Popen[str]:
    """Start ``taskpoint ARGS...`` with its stdout and stderr on pipes (text)."""
    return subprocess.Popen(
        cli_command(*args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=tp_env(home, **(env or {})),
        cwd=cwd,
    )


@pytest.fixture
def workflow_copy(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., Path]:
    """``workflow_copy(name, into=tmp_path, as_name=name) -> Path``: copy ``workflows/<name>``
    from the test module's folder into ``into`` (created if needed) and return the copy."""
    workflows = request.path.parent / "workflows"

    def copy(name: str, into: Path | None = None, as_name: str | None = None) -> Path:
        folder = into if into is not None else tmp_path
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / (as_name or name)
        shutil.copyfile(workflows / name, target)
        return target

    return copy
