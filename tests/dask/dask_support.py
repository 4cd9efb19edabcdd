"""Helpers of the Dask tests: wait for a marker file, stop a (maybe frozen) process."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


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
