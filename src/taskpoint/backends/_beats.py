"""Heartbeats of an attempt's child process, so its driver can tell a frozen attempt from a
long one.

A child that is stopped (SIGSTOP, a debugger), stuck in the kernel (a hung NFS mount) or
deadlocked (a collective waiting for a peer that is gone) never reports and never dies: without
a sign of life its driver would wait forever. The child sends a beat on its result pipe from a
thread, every ``BEAT_EVERY`` seconds; a thread keeps beating through a long computation that
releases the GIL (NumPy, torch, I/O), but not while the process is stopped or its threads are
blocked. The driver kills a child that sent nothing for the task's ``heartbeat_timeout`` and
records the attempt lost; the next attempt resumes from the latest checkpoint.

A pure-Python or GIL-holding C call that runs longer than the timeout also stops the beats:
raise the timeout for such a task, or turn it off (``heartbeat_timeout=None``).
"""

from __future__ import annotations

import threading
import time
from multiprocessing.connection import Connection
from typing import Any

BEAT = "taskpoint-beat"  # the message: a plain string pickles in a few bytes
BEAT_EVERY = 0.5  # seconds between beats
# Before its first beat a child may still be starting (a spawned one imports the task's module
# before it can beat): it gets at least this long.
FIRST_BEAT_ALLOWANCE = 120.0


class BeatingSender:
    """The child's end of its result pipe, shared by the attempt (its outcome) and a daemon
    thread (the beats): one lock, so two messages never interleave on the pipe."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        # The first beat goes before the task runs: the driver learns the child started, and
        # judges it by the timeout alone from then on.
        self.send(BEAT)
        self._thread = threading.Thread(target=self._beat, name="taskpoint-beats", daemon=True)
        self._thread.start()

    def send(self, message: Any) -> None:
        with self._lock:
            self._connection.send(message)

    def close(self) -> None:
        """Stop beating (the outcome was sent) and close the pipe."""
        self._stopped.set()
        with self._lock:
            self._connection.close()

    def _beat(self) -> None:
        while not self._stopped.wait(BEAT_EVERY):
            with self._lock:
                if self._stopped.is_set():
                    return
                try:
                    self._connection.send(BEAT)
                except (OSError, ValueError):  # the driver is gone: nobody listens
                    return


class BeatWatch:
    """The driver's view of one child's beats: ``frozen()`` once none came for ``timeout``
    seconds (``None``: never)."""

    def __init__(self, timeout: float | None, clock: Any = time.monotonic) -> None:
        self.timeout = timeout
        self._clock = clock
        self._last = clock()
        self._beaten = False

    def beat(self) -> None:
        self._last = self._clock()
        self._beaten = True

    def silent_for(self) -> float:
        return self._clock() - self._last

    def frozen(self) -> bool:
        if self.timeout is None:
            return False
        limit = self.timeout if self._beaten else max(self.timeout, FIRST_BEAT_ALLOWANCE)
        return self.silent_for() > limit
