"""Run `taskpoint` as a real process, and wait for marker files the tasks write."""

from __future__ import annotations

import os
import subprocess
import sys
import time
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


def wait_for(path: Path, timeout: float = 30, proc: subprocess.Popen | None = None) -> str:
    """Wait until ``path`` exists and is non-empty; return its text."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size:
            return path.read_text()
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"process exited {proc.returncode} first:\n{out}\n{err}")
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {path}")
