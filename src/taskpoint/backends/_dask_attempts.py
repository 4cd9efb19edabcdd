"""The attempts running in one Dask worker process, as the preemption plugin sees them.

An attempt runs in one of the worker's executor threads (``_dask_worker.run_attempt``), where no
signal handler can be installed; the worker's SIGTERM lands in its main thread, the event loop,
where `PreemptionPlugin` (``_dask_plugin.py``) has its handler. This registry joins the two: each
attempt registers its guard under its Dask key; the plugin preempts the guards of its worker,
then waits until each preempted attempt ended *and* the driver fetched its outcome (the key was
released), so the worker does not exit with an outcome nobody has read.

No ``distributed`` import here: ``run_attempt`` also runs outside a worker (called directly).
"""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

from taskpoint.engine.preempt import PreemptionGuard


class WorkerAttemptGuard(PreemptionGuard):
    """The guard of an attempt in a Dask worker thread: no handler and no alarm of its own
    (only the main thread may have them, and an alarm there would interrupt the worker's event
    loop, not the task); the plugin preempts it, and the task stops at its next checkpoint
    write, which commits and raises ``Preempted``."""

    def preempt(self) -> None:
        """What SIGTERM does to an attempt in the main thread: mark its context preempted
        (``on_preempt`` callbacks run here), set its deadline, plan its pending async writes."""
        self._on_sigterm(signal.SIGTERM, None)


@dataclass
class RunningAttempt:
    key: str
    worker: Any  # the distributed.Worker it runs on (a process may hold several, in threads)
    guard: WorkerAttemptGuard
    preempted: bool = False  # by its worker's plugin: its outcome is published (_dask_worker)
    done: bool = False  # run_attempt returned its outcome
    released: bool = False  # the driver fetched the outcome (the worker released the key)


class Attempts:
    """The registry of one worker process (`ATTEMPTS`); thread-safe."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._running: dict[str, RunningAttempt] = {}
        self._stopping: set[int] = set()  # id() of workers being preempted

    def start(self, key: str, worker: Any, guard: WorkerAttemptGuard) -> RunningAttempt | None:
        """Register an attempt; ``None`` when its worker is already being preempted (the
        attempt must not start: it would lose its work when the worker goes)."""
        with self._cond:
            if id(worker) in self._stopping:
                return None
            entry = RunningAttempt(key, worker, guard)
            self._running[key] = entry
            return entry

    def finish(self, entry: RunningAttempt) -> None:
        """The attempt's outcome is ready (and published, when it was preempted)."""
        with self._cond:
            entry.done = True
            if not entry.preempted or entry.released:
                self._running.pop(entry.key, None)
            self._cond.notify_all()

    def released(self, key: str) -> None:
        """The worker released ``key`` (the driver has the outcome, or gave up on it)."""
        with self._cond:
            entry = self._running.get(key)
            if entry is None:
                return
            entry.released = True
            if entry.done:
                del self._running[key]
            self._cond.notify_all()

    def running_on(self, worker: Any) -> bool:
        with self._cond:
            return any(e.worker is worker and not e.done for e in self._running.values())

    def preempt(self, worker: Any) -> float:
        """Stop ``worker`` from starting attempts and preempt those it runs; returns the
        latest of their deadlines (``time.monotonic()``), or now when it runs none."""
        with self._cond:
            self._stopping.add(id(worker))
            entries = [e for e in self._running.values() if e.worker is worker and not e.done]
            for entry in entries:
                entry.preempted = True
        for entry in entries:  # outside the lock: on_preempt callbacks are the user's code
            entry.guard.preempt()
        deadlines = [e.guard.deadline for e in entries if e.guard.deadline is not None]
        return max(deadlines, default=time.monotonic())

    def wait_reported(self, worker: Any, until: float, fetched: bool = True) -> bool:
        """Wait (until ``until`` at most) for ``worker``'s preempted attempts to end and, with
        ``fetched``, for their outcomes to be fetched; True when all were."""
        with self._cond:
            while True:
                pending = [
                    e
                    for e in self._running.values()
                    if e.worker is worker
                    and e.preempted
                    and not (e.done and (e.released or not fetched))
                ]
                left = until - time.monotonic()
                if not pending or left <= 0:
                    return not pending
                self._cond.wait(left)

    def forget_worker(self, worker: Any) -> None:
        """``worker`` closed: its attempts can report no more."""
        with self._cond:
            self._stopping.discard(id(worker))
            for key in [k for k, e in self._running.items() if e.worker is worker]:
                del self._running[key]
            self._cond.notify_all()


ATTEMPTS = Attempts()
