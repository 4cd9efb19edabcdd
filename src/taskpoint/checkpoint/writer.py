"""The single background writer behind ``write(..., blocking=False)``.

At most one job is queued and one is in flight. A newer job replaces the queued one (latest
wins: the replaced future resolves to ``None``); the one in flight always finishes. An error is
kept and re-raised by `wait()` or by the next submit, so a failed async write is never silent.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from taskpoint.errors import CheckpointError


class AsyncWriter:
    def __init__(self, commit: Callable[[Any], Any], discard: Callable[[Any], None], name: str):
        self._commit = commit
        self._discard = discard
        self._name = name
        self._cond = threading.Condition()
        self._queued: tuple[Any, Future[Any]] | None = None
        self._busy = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._closing = False

    def submit(self, job: Any) -> Future[Any]:
        future: Future[Any] = Future()
        with self._cond:
            self._raise_error_locked()
            if self._queued is not None:
                old_job, old_future = self._queued
                self._discard(old_job)
                old_future.set_result(None)  # superseded before it started
            self._queued = (job, future)
            if self._thread is None:
                self._closing = False
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify_all()
        return future

    def raise_error(self) -> None:
        with self._cond:
            self._raise_error_locked()

    def wait(self, timeout: float | None = None) -> None:
        with self._cond:
            idle = self._cond.wait_for(lambda: self._queued is None and not self._busy, timeout)
            self._raise_error_locked()
            if not idle:
                raise TimeoutError(f"async checkpoint writes still pending after {timeout} s")

    def pending(self) -> bool:
        with self._cond:
            return self._queued is not None or self._busy

    def close(self, timeout: float | None = None) -> None:
        try:
            self.wait(timeout)
        finally:
            with self._cond:
                self._closing = True
                self._cond.notify_all()
                thread, self._thread = self._thread, None
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout)

    def _raise_error_locked(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            if isinstance(error, CheckpointError):
                raise CheckpointError(
                    f"an earlier async checkpoint write failed: {error}"
                ) from error
            raise error

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queued is not None or self._closing)
                if self._queued is None:
                    return
                (job, future), self._queued = self._queued, None
                self._busy = True
            try:
                result = self._commit(job)
            except BaseException as exc:
                future.set_exception(exc)
                with self._cond:
                    self._error = exc
            else:
                future.set_result(result)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
