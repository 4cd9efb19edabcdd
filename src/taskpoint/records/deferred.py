"""Attempt-start records written late: at the attempt's end, or by a small thread once the
attempt has run for ``delay`` seconds.

A trivial task then costs one transaction per attempt (start and end written together), while
a long one still shows up as running in `taskpoint show` within ``delay``. Lock order is
always the database lock, then this object's condition: whoever pops a pending start holds the
database lock until it is written, so an end record never updates a row not yet inserted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

StartKey = tuple[str, str, int]  # (execution id, node key, attempt)


class DeferredStarts:
    def __init__(self, db_lock: Any, write: Callable[[list[tuple]], None], delay: float) -> None:
        self._db_lock = db_lock
        self._write = write
        self.delay = delay
        self._cond = threading.Condition()
        self._pending: dict[StartKey, tuple[float, tuple]] = {}
        self._idle = True
        self._thread: threading.Thread | None = None

    def add(self, key: StartKey, row: tuple) -> None:
        with self._cond:
            self._pending[key] = (time.monotonic() + self.delay, row)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="taskpoint-records", daemon=True
                )
                self._thread.start()
            elif self._idle:
                self._cond.notify()

    def take(self, key: StartKey) -> tuple | None:
        """The start row if it was not written yet (call with the database lock held)."""
        with self._cond:
            entry = self._pending.pop(key, None)
        return None if entry is None else entry[1]

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    self._idle = True
                    self._cond.wait()
                self._idle = False
                wait = min(due for due, _ in self._pending.values()) - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
            self._flush_due()

    def _flush_due(self) -> None:
        with self._db_lock:
            with self._cond:
                now = time.monotonic()
                due = [k for k, (deadline, _) in self._pending.items() if deadline <= now]
                rows = [self._pending.pop(k)[1] for k in due]
            if rows:
                try:
                    self._write(rows)
                except Exception:  # a busy database: the end record will carry the start
                    pass
