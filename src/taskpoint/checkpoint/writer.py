"""The single background writer behind ``write(..., blocking=False)``.

At most one job is queued and one is in flight. A newer job replaces the queued one (latest
wins: the replaced future resolves to ``None``); the one in flight always finishes. An error is
kept and re-raised by `wait()` or by the next submit, so a failed async write is never silent.

Against a deadline (``deadline.py``) the scope may take the queued job back to commit it itself,
and may *abandon* the one in flight: `wait()` and `close()` stop waiting for it (the process may
end while it runs; the commit protocol leaves nothing visible of a version cut short).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from taskpoint.errors import CheckpointError

log = logging.getLogger("taskpoint.checkpoint")
# The writer thread waits for work under SCHED_BATCH and commits under the normal policy. A
# thread woken under the normal policy may preempt the one that woke it on its CPU; on a busy
# machine the training thread that just queued a write (holding the GIL, mid-call) can then wait
# a whole time slice for a CPU while another process runs: 1-4 ms calls, where the call itself
# takes 20 us (measured beside two busy processes on 2 cores). A SCHED_BATCH thread never
# preempts on its wake-up. Back to the normal policy for the commit, so a commit's own wake-ups
# (after each fsync) are not held back on a busy machine. Linux only; elsewhere, or where the
# thread was started under another policy (real-time, idle), the policy is left alone.
_IDLE_POLICY = getattr(os, "SCHED_BATCH", None)
_BUSY_POLICY = getattr(os, "SCHED_OTHER", None)
LAZY_CHORES = 8  # chores that may wait for a write or a wait(), at most (see `defer`)
_writers: weakref.WeakSet[AsyncWriter] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for writer in list(_writers):
        writer._forked()


class AsyncWriter:
    def __init__(self, commit: Callable[[Any], Any], discard: Callable[[Any], None], name: str):
        self._commit = commit
        self._discard = discard
        self._name = name
        self._cond = threading.Condition()
        self._queued: tuple[Any, Future[Any]] | None = None
        self._inflight: tuple[Any, Future[Any], float] | None = None  # job, future, started
        self._abandoned = False  # nobody waits for the job in flight any more
        self._busy_job = False
        self._busy_chores = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._closing = False
        self._pid = os.getpid()
        self._chores: list[Callable[[], None]] = []
        _writers.add(self)

    def _forked(self) -> None:
        """In a forked child: the thread, its job, the queue and the housekeeping all stayed in
        the parent (which finishes them), and the lock may have been held by that thread."""
        self._cond = threading.Condition()
        self._queued, self._busy_job, self._busy_chores = None, False, False
        self._chores, self._thread, self._closing = [], None, False
        self._inflight, self._abandoned = None, False
        self._pid = os.getpid()

    def defer(self, chore: Callable[[], None], soon: bool = True) -> None:
        """Run ``chore`` on the writer thread (slow deletes stay off the caller's path): soon,
        or, with ``soon=False`` (a small delete that may wait), once `LAZY_CHORES` are queued,
        at the next `wait()` or with the next write, whichever comes first. Waking the thread
        costs a small sync write a tenth of its time."""
        with self._cond:
            self._chores.append(chore)
            self._ensure_thread()
            if soon or len(self._chores) >= LAZY_CHORES:
                self._cond.notify_all()

    def submit(self, job: Any) -> Future[Any]:
        """Queue ``job`` (replacing a queued one) and return at once: the caller's thread only
        swaps it in under the lock; everything else happens on the writer thread."""
        future: Future[Any] = Future()
        with self._cond:
            self._raise_error_locked()
            superseded, self._queued = self._queued, (job, future)
            if self._thread is None or self._pid != os.getpid():
                self._ensure_thread()
            if not self._busy_job:
                self._cond.notify_all()  # a busy writer looks at the queue when it is done
        if superseded is not None:  # outside the lock: the writer is never held up by it
            old_job, old_future = superseded
            self._discard(old_job)
            old_future.set_result(None)  # superseded before it started
        return future

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._pid != os.getpid():
            # Inherited through fork: the thread did not come along, nor did its job.
            self._thread, self._busy_job, self._busy_chores = None, False, False
        if self._thread is None:
            self._pid = os.getpid()
            self._closing = False
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def raise_error(self) -> None:
        with self._cond:
            self._raise_error_locked()

    def wait(self, timeout: float | None = None, *, chores: bool = True) -> None:
        """Wait for queued and running writes (and, with ``chores``, for housekeeping too)."""
        done = self._idle if chores else self._writes_done
        with self._cond:
            if chores and self._chores:
                self._cond.notify_all()  # chores left to wait (`defer(soon=False)`): now
            idle = self._cond.wait_for(done, timeout)
            self._raise_error_locked()
            if not idle:
                raise TimeoutError(f"async checkpoint writes still pending after {timeout} s")

    def pending(self) -> bool:
        """Whether a write is queued or running (housekeeping left to run does not count: a
        delete deferred with ``soon=False`` may wait for the next write)."""
        with self._cond:
            return not self._writes_done()

    def in_flight(self, abandoned: bool = False) -> tuple[Any, Future[Any], float] | None:
        """The job being committed now, its future and when it started; ``None`` if none (or
        if it was abandoned, unless ``abandoned``)."""
        with self._cond:
            return None if self._abandoned and not abandoned else self._inflight

    @property
    def abandoned(self) -> bool:
        """A job abandoned in flight still runs (and holds the scope's commit lock)."""
        with self._cond:
            return self._abandoned

    def take_queued(self) -> tuple[Any, Future[Any]] | None:
        """Take the queued job back before it starts: the caller now owns it and its future."""
        with self._cond:
            queued, self._queued = self._queued, None
            self._cond.notify_all()
            return queued

    def abandon(self) -> None:
        """Stop waiting for the job in flight: `wait()` and `close()` return without it (and
        without the housekeeping queued behind it). It still runs, in the background."""
        with self._cond:
            if self._busy_job:
                self._abandoned = True
                self._cond.notify_all()

    def _writes_done(self) -> bool:
        return self._queued is None and (not self._busy_job or self._abandoned)

    def _idle(self) -> bool:
        chores_done = self._abandoned or (not self._busy_chores and not self._chores)
        return self._writes_done() and chores_done

    def close(self, timeout: float | None = None) -> None:
        try:
            self.wait(timeout)
        finally:
            with self._cond:
                self._closing = True
                self._cond.notify_all()
                thread, self._thread = self._thread, None
                abandoned = self._abandoned
            if thread is not None and thread is not threading.current_thread() and not abandoned:
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
        policy = _PolicySwitch()
        while True:
            with self._cond:
                if not self._has_work():
                    policy.idle()
                self._cond.wait_for(self._has_work)
                policy.busy()
                if self._queued is None and not self._chores:
                    return  # closing and nothing left
                # Housekeeping (deleting retired versions) runs between commits: left until
                # the writer idles, a steady stream of writes would pile payloads up on disk.
                chores: list[Callable[[], None]] = []
                job_and_future = None
                if self._chores:
                    chores, self._chores = self._chores, []
                    self._busy_chores = True
                else:
                    job_and_future, self._queued = self._queued, None
                    self._busy_job = True
                    if job_and_future is not None:
                        self._inflight = (*job_and_future, time.monotonic())
            if job_and_future is None:
                self._run_chores(chores)
            else:
                self._run_job(*job_and_future)

    def _has_work(self) -> bool:
        """Whether the thread has something to do: a write, housekeeping, or closing."""
        return self._queued is not None or bool(self._chores) or self._closing

    def _run_job(self, job: Any, future: Future[Any]) -> None:
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
                self._busy_job, self._inflight, self._abandoned = False, None, False
                self._cond.notify_all()

    def _run_chores(self, chores: list[Callable[[], None]]) -> None:
        try:
            for chore in chores:
                try:
                    chore()
                except Exception as exc:
                    log.warning("checkpoint housekeeping failed: %s", exc)
        finally:
            with self._cond:
                self._busy_chores = False
                self._cond.notify_all()


class _PolicySwitch:
    """Switches the calling thread between the idle and the busy policy (see the top)."""

    def __init__(self) -> None:
        self.enabled = _IDLE_POLICY is not None and _current_policy() == _BUSY_POLICY
        self._idle = False

    def idle(self) -> None:
        if self.enabled and not self._idle:
            self._idle = self._switch(_IDLE_POLICY)

    def busy(self) -> None:
        if self._idle:
            self._idle = not self._switch(_BUSY_POLICY)

    def _switch(self, policy: int | None) -> bool:
        try:
            os.sched_setscheduler(0, policy, os.sched_param(0))  # type: ignore[arg-type]
        except (OSError, AttributeError) as exc:  # a sandbox may refuse it: leave it be
            log.debug("checkpoint writer: scheduling policy not changed: %s", exc)
            self.enabled = False
            return False
        return True


def _current_policy() -> int | None:
    try:
        return os.sched_getscheduler(0)
    except (OSError, AttributeError):
        return None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
