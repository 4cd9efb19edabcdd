"""Helpers of the Dask tests: stopping processes and finding a driver's workers (`taskpoint` as a
real process: tests/support/fixtures.py)."""

from __future__ import annotations

import os
import signal


def stop_process(pid: int) -> None:
    """SIGCONT (it may be frozen) then SIGKILL, ignoring a process that is already gone."""
    for sig in (signal.SIGCONT, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return


def descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
