"""Run `taskpoint` as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "taskpoint.cli", *args]


def run_cli(*args: str, home: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TASKPOINT_HOME": str(home)}
    return subprocess.run(
        cli_command(*args), capture_output=True, text=True, env=env, timeout=timeout
    )


def start_cli(*args: str, home: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "TASKPOINT_HOME": str(home)}
    return subprocess.Popen(
        cli_command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
