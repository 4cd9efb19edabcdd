"""Helpers of the Dask tests: marker files, processes, and `taskpoint` as a real process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def stop_process(pid: int) -> None:
    """SIGCONT (it may be frozen) then SIGKILL, ignoring a process that is already gone."""
    for sig in (signal.SIGCONT, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return


def wait_file(path: Path, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size:
            return path.read_text()
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {path}")


def taskpoint_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "taskpoint.cli", *args]


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 240) -> Any:
    return subprocess.run(
        taskpoint_cli(*args),
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


def descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def wait_gone(pids: list[int], timeout: float = 60) -> list[int]:
    """Wait until none of ``pids`` runs any more; return those still running at the deadline."""
    import psutil

    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if psutil.pid_exists(p) and _not_zombie(p)]
        time.sleep(0.05)
    return alive


def _not_zombie(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
