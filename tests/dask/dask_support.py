"""Helpers of the Dask tests: marker files, processes, and `taskpoint` as a real process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any


def stop_process(pid: int) -> None:
    """SIGCONT (it may be frozen) then SIGKILL, ignoring a process that is already gone."""
    for sig in (signal.SIGCONT, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return


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
