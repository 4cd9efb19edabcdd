"""Preemption: SIGTERM handling, the deadline, and the checkpoint hook that stops a task.

On SIGTERM the running attempt's context is marked ``preempted`` with a ``preempt_deadline``
(the signal's time plus the grace period; its ``on_preempt`` callbacks run and may move it, as
may anything that learns of the cloud's own notice) and a SIGALRM is armed for the deadline,
re-armed whenever it moves. The task stops at its next checkpoint write, planned against the
deadline (``checkpoint/deadline.py``: the newest state is committed first, a write that would
not fit is skipped rather than cut), which then raises ``Preempted`` naming the step saved; a
task that writes no checkpoint before the deadline gets ``Preempted`` from the alarm, so the
engine can still record the attempt before the machine goes away. With process isolation the
driver forwards SIGTERM to the attempt's child, which runs this same flow.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from taskpoint.checkpoint import CheckpointHook
from taskpoint.checkpoint.deadline import describe_version, has_pending, latest_known
from taskpoint.context import TaskContext
from taskpoint.engine.events import AttemptInfo, Listener
from taskpoint.errors import Preempted

log = logging.getLogger("taskpoint")


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
        self._planner: threading.Thread | None = None

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
            self.ctx.mark_preempted(self.deadline)
            self._arm()
            self._plan_pending(self.ctx)

    def set_deadline(self, deadline: float) -> None:
        """``ctx.preempt_deadline`` was set: stop the attempt by then instead (a deadline set
        before any SIGTERM is a preemption notice that came another way)."""
        self.deadline = deadline
        noticed = not self.preempted
        if noticed:
            self.preempted = True
            for pid in list(self.children):
                send_signal(pid, signal.SIGTERM)
        if self._task_running:
            self._arm()
            if noticed and self.ctx is not None:
                self._plan_pending(self.ctx)

    def _plan_pending(self, ctx: TaskContext) -> None:
        """Plan the attempt's pending async writes against the deadline at once, on a thread of
        their own: the task may compute on until the alarm, which leaves no time after it."""
        if self.deadline is None or not ctx.checkpoint_opened or not has_pending(ctx.checkpoint):
            return
        self._planner = threading.Thread(
            target=flush_on_preemption,
            args=(ctx.checkpoint, ctx.node, ctx.attempt, self.deadline),
            name=f"taskpoint-preempted:{ctx.node}",
            daemon=True,
        )
        self._planner.start()

    def join_planner(self) -> None:
        """Wait (until the deadline at most) for the plan `_plan_pending` started: writes are
        planned one plan at a time, so versions keep their order."""
        planner, self._planner = self._planner, None
        if planner is not None and planner is not threading.current_thread():
            planner.join(self.remaining())

    def flush(self, checkpoint: Any, node: str, attempt: int) -> None:
        """After a preempted attempt's task ended: commit what its pending async writes can
        by the deadline, the newest first."""
        self.join_planner()
        if self.deadline is not None:
            flush_on_preemption(checkpoint, node, attempt, self.deadline)

    def remaining(self) -> float | None:
        """Seconds left before the deadline (``None`` when not preempted)."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())

    # -- the running attempt ---------------------------------------------------------------------

    def task_started(self, ctx: TaskContext) -> None:
        self.ctx = ctx
        self._task_running = True
        ctx.listen_to_deadline(self.set_deadline)
        if self.preempted:  # SIGTERM came between attempts: this one stops at its first write
            ctx.mark_preempted(self.deadline)
            self._arm()

    def task_finished(self) -> None:
        self._task_running = False
        self._disarm()
        if self.ctx is not None:
            self.ctx.listen_to_deadline(None)
        self.ctx = None

    def _arm(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            # Only the main thread may install a handler; an alarm already armed can be moved.
            if signal.getsignal(signal.SIGALRM) == self._on_alarm:
                signal.setitimer(signal.ITIMER_REAL, max(self.remaining() or 0.0, 0.001))
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
                "preempted: no checkpoint write before the deadline (the "
                f"{self.grace:g} s grace period, or the preempt_deadline set); "
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
    listener, and once the attempt is preempted plan each write against its deadline
    (``Checkpoint.deadline``) and raise `Preempted` after it, naming what was saved."""

    def __init__(
        self, ctx: TaskContext, guard: PreemptionGuard, info: AttemptInfo, listener: Listener
    ) -> None:
        self._ctx = ctx
        self._guard = guard
        self._info = info
        self._listener = listener

    def before_write(self, checkpoint: Any, step: int | None) -> None:
        if self._ctx.preempted:  # a blocking write is committed only if it fits
            self._guard.join_planner()
            checkpoint.deadline = self._ctx.preempt_deadline

    def after_write(self, checkpoint: Any, result: Any, blocking: bool) -> None:
        if blocking and result is not None:
            self._listener.checkpoint_written(self._info, result)
        if not self._ctx.preempted:
            return
        version = result
        if not blocking:
            deadline = self._ctx.preempt_deadline
            if deadline is None:  # marked preempted by hand: no deadline to plan against
                result.result(timeout=self._guard.remaining())
            else:  # planned at once if the deadline was known; else now, with what is pending
                self._guard.join_planner()
                checkpoint.flush(deadline)
            version = result.result() if result.done() else None
            if version is not None:
                self._listener.checkpoint_written(self._info, version)
        if version is not None:
            what = f"committed {describe_version(version)}"
        else:
            what = f"its last write was not saved in time; the latest is {latest_known(checkpoint)}"
        log.warning(
            "taskpoint: %s attempt %d preempted: %s", self._ctx.node, self._ctx.attempt, what
        )
        raise Preempted(
            f"node {self._ctx.node} attempt {self._ctx.attempt} preempted: {what}; it resumes "
            "from its latest committed checkpoint",
            execution_id=self._ctx.execution_id,
            node=self._ctx.node,
        )


def flush_on_preemption(checkpoint: Any, node: str, attempt: int, deadline: float) -> None:
    """Commit what a preempted attempt's pending async writes can by the deadline, the newest
    first, and say what was saved."""
    try:
        report = checkpoint.flush(deadline)
    except Exception as exc:  # the outcome is the task's; the engine reports what it can
        log.warning("taskpoint: %s attempt %d: checkpoint writer failed: %s", node, attempt, exc)
        return
    if report.saved is not None or report.skipped or report.abandoned is not None:
        log.warning("taskpoint: %s attempt %d preempted: %s", node, attempt, report.summary())
