"""Preemption: SIGTERM handling, the grace deadline, and the checkpoint proxy that stops a task.

On SIGTERM the running attempt's context is marked ``preempted`` (its ``on_preempt`` callbacks
run) and a SIGALRM is armed for the end of the grace period. The task stops at its next
checkpoint write, which commits first and then raises ``Preempted``; a task that writes no
checkpoint before the deadline gets ``Preempted`` from the alarm, so the engine can still record
the attempt before the machine goes away. With process isolation the driver forwards SIGTERM to
the attempt's child, which runs this same flow.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from taskpoint.checkpoint import CheckpointHook
from taskpoint.context import TaskContext
from taskpoint.engine.events import AttemptInfo, Listener
from taskpoint.errors import Preempted


class PreemptionGuard:
    """Signal state of one process (a driver, or an attempt's child) during an execution."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.preempted = False
        self.deadline: float | None = None
        self.ctx: TaskContext | None = None
        # Attempts' child processes (several at once when mapped nodes run in a pool).
        self.children: set[int] = set()
        self._task_running = False

    # -- installation ----------------------------------------------------------------------------

    @contextmanager
    def installed(self) -> Iterator[PreemptionGuard]:
        """Handle SIGTERM while the block runs (only in the main thread, where signals land)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        try:
            yield self
        finally:
            signal.signal(signal.SIGTERM, previous)
            self._disarm()

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        if self.preempted:
            return
        self.preempted = True
        self.deadline = time.monotonic() + self.grace
        for pid in list(self.children):
            send_signal(pid, signal.SIGTERM)
        if self.ctx is not None:
            self.ctx.mark_preempted()
            self._arm()

    def remaining(self) -> float | None:
        """Seconds left of the grace period (``None`` when not preempted)."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())

    # -- the running attempt ---------------------------------------------------------------------

    def task_started(self, ctx: TaskContext) -> None:
        self.ctx = ctx
        self._task_running = True
        if self.preempted:  # SIGTERM came between attempts: this one stops at its first write
            ctx.mark_preempted()
            self._arm()

    def task_finished(self) -> None:
        self._task_running = False
        self._disarm()
        self.ctx = None

    def _arm(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGALRM) not in (signal.SIG_DFL, None, self._on_alarm):
            return  # the user's program owns SIGALRM: rely on its next checkpoint write
        signal.signal(signal.SIGALRM, self._on_alarm)
        signal.setitimer(signal.ITIMER_REAL, max(self.remaining() or 0.0, 0.001))

    def _disarm(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGALRM) == self._on_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, signal.SIG_DFL)

    def _on_alarm(self, signum: int, frame: Any) -> None:
        if self._task_running:
            self._task_running = False
            raise Preempted(
                f"preempted: no checkpoint write within the {self.grace:g} s grace period; "
                "the attempt resumes from its latest committed checkpoint"
            )


def send_signal(pid: int, sig: int) -> None:
    """``os.kill``, quiet when the process is already gone."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


class PreemptionHook(CheckpointHook):
    """The engine's hook on the task's `Checkpoint`: report each commit to the progress
    listener, and once the attempt is preempted raise `Preempted` after the write committed
    (an async one is committed first, within the grace period)."""

    def __init__(
        self, ctx: TaskContext, guard: PreemptionGuard, info: AttemptInfo, listener: Listener
    ) -> None:
        self._ctx = ctx
        self._guard = guard
        self._info = info
        self._listener = listener

    def after_write(self, checkpoint: Any, result: Any, blocking: bool) -> None:
        if blocking and result is not None:
            self._listener.checkpoint_written(self._info, result)
        if self._ctx.preempted:
            if not blocking:
                result.result(timeout=self._guard.remaining())  # commit it before stopping
            raise Preempted(
                f"node {self._ctx.node} attempt {self._ctx.attempt} preempted after committing "
                "its checkpoint; it resumes from there",
                execution_id=self._ctx.execution_id,
                node=self._ctx.node,
            )
