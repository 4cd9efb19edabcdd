"""One way to wait for something in a test: poll a predicate until it holds or time runs out."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

MAX_INTERVAL = 0.1  # the interval backs off gently up to this


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    what: str = "",
    *,
    interval: float = 0.01,
    proc: subprocess.Popen[Any] | None = None,
) -> T:
    """Call ``predicate`` until it returns something truthy, and return that.

    Raises AssertionError naming ``what`` after ``timeout`` seconds, or as soon as ``proc`` (the
    process expected to bring the condition about) has exited, with its exit code and the tail of
    its stderr.
    """
    deadline = time.monotonic() + timeout
    delay = interval
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            value = predicate()  # it may have done it just before exiting
            if value:
                return value
            raise AssertionError(
                f"process {proc.pid} exited {proc.returncode} before {what or 'the condition'}"
                f"{_stderr_tail(proc)}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or predicate}")
        time.sleep(delay)
        delay = min(delay * 1.5, max(interval, MAX_INTERVAL))


def wait_for_file(path: Path, timeout: float, proc: subprocess.Popen[Any] | None = None) -> str:
    """Wait until ``path`` exists and is non-empty; return its text."""

    def text() -> str | None:
        try:
            return path.read_text() or None
        except FileNotFoundError:
            return None

    value = wait_until(text, timeout, str(path), proc=proc)
    assert value is not None
    return value


def running(pid: int) -> bool:
    """``pid`` is a live process (a zombie, exited but not yet reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode(errors="replace")
    except OSError:
        return not os.path.isdir("/proc")  # no /proc here: trust kill(0); else it just went
    return data[data.rfind(")") + 2 :].split()[0] not in ("Z", "X")


def wait_gone(pids: Iterable[int], timeout: float) -> None:
    """Wait until none of ``pids`` runs any more (see :func:`running`)."""
    pids = list(pids)

    def gone() -> bool:
        return not any(running(pid) for pid in pids)

    try:
        wait_until(gone, timeout, f"processes {pids} to exit")
    except AssertionError as e:
        alive = [pid for pid in pids if running(pid)]
        raise AssertionError(f"{e} (still running: {alive})") from None


def _stderr_tail(proc: subprocess.Popen[Any], chars: int = 2000) -> str:
    if proc.stderr is None:
        return ""
    try:
        _, err = proc.communicate(timeout=5)
    except (subprocess.TimeoutExpired, ValueError, OSError):
        return ""  # a grandchild holds the pipe open, or it was read already
    if isinstance(err, bytes):
        err = err.decode(errors="replace")
    return f"; stderr ends:\n{err[-chars:]}" if err else ""
