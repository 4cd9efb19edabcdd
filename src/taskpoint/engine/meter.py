"""What an attempt measures of itself, for the goodput ledger and the resume guard.

Measured where the attempt runs (the driver's thread, a child process, a Dask worker), as
durations of that process's own monotonic clock, so attempts on other machines report the
same way; only ``start_s`` compares two clocks (the driver's recorded start and the attempt's
wall time), and is clamped at 0. The figures travel back in ``Outcome.ledger`` (a plain dict,
picklable across processes and Dask), keyed by the records' column names:

- ``start_s``: from the attempt's recorded start (in the driver) to its code starting here
  (the fork, the fork server or the Dask dispatch);
- ``restore_s``: time in loads (``read``, ``read_with``, ``restore``);
- ``first_step_s``: from the recorded start to the loop's first step: the first
  ``checkpoint.due()`` call or the end of the first load, whichever came first, else the start
  of the first save; ``None`` when the attempt did none of these;
- ``stall_s``: time ``write()``/``save()`` blocked the task, plus the wait for its pending async
  writes when it ended;
- ``work_lost_s``: for an attempt that did not succeed, the time from the state of its last
  committed save (from its first step when it committed nothing) to its end; 0 when it
  succeeded;
- ``loaded_version`` / ``loaded_step``: the newest version its loads returned;
- ``resume_warning``: why it restarted from scratch (see ``resume_guard.py``), or ``None``.

An attempt whose process died reports nothing: the ledger derives what it can from its record
(``engine/goodput.py``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from taskpoint.context import TaskContext
from taskpoint.engine.attempt import Outcome
from taskpoint.engine.events import AttemptInfo
from taskpoint.engine.resume_guard import ResumeGuard
from taskpoint.records.schema import LEDGER_COLUMNS
from taskpoint.records.status import AttemptStatus

log = logging.getLogger("taskpoint")


class AttemptMeter:
    """Created as the attempt starts; ``finish`` fills the outcome's ledger."""

    def __init__(self, info: AttemptInfo, task: Any) -> None:
        self.t0 = time.monotonic()
        self.start_s = max(0.0, time.time() - info.started) if info.started else 0.0
        self.guard = ResumeGuard(info, bool(getattr(task, "require_resume", False)))
        self.task_ended_at: float | None = None

    def task_ended(self) -> None:
        """The task function returned or raised (its async writes are settled after)."""
        self.task_ended_at = time.monotonic()

    def finish(self, outcome: Outcome, ctx: TaskContext) -> Outcome:
        """The outcome with its ledger; an attempt whose write the guard refused fails with
        that refusal, whatever the task did with it (caught it, or returned anyway)."""
        refusal = self.guard.refusal
        if refusal is not None and outcome.error is not refusal:
            replaced = Outcome.from_error(AttemptStatus.FAILED, refusal, outcome.checkpoint_at_end)
            replaced.pid = outcome.pid
            outcome = replaced
        elif refusal is not None:
            outcome.status = AttemptStatus.FAILED  # never retried, not even on preemption
        try:
            outcome.ledger = self.ledger(ctx, outcome.status)
        except Exception as exc:  # measuring must never cost the attempt its outcome
            log.warning("taskpoint: %s: cannot measure the attempt: %s", ctx.node, exc)
        return outcome

    def ledger(self, ctx: TaskContext, status: str) -> dict[str, Any]:
        now = time.monotonic()
        ended = self.task_ended_at if self.task_ended_at is not None else now
        figures: dict[str, Any] = dict.fromkeys(LEDGER_COLUMNS)
        figures.update(start_s=self.start_s, restore_s=0.0, stall_s=0.0)
        figures["resume_warning"] = self.guard.warning
        marker = None
        last_saved = None
        if ctx.checkpoint_opened:
            stats = ctx.checkpoint.stats
            loaded = stats.loaded
            if loaded is not None:
                figures.update(loaded_version=loaded.id, loaded_step=loaded.step)
            figures["restore_s"] = stats.load_s
            # The wait for pending async writes after the task ended stalled it too.
            figures["stall_s"] = stats.stall_s + max(0.0, now - ended)
            early = [t for t in (stats.first_due_at, stats.first_load_at) if t is not None]
            marker = min(early) if early else stats.first_save_at
            if stats.last_commit_at is not None:
                # An async save captured its state when write() returned, before it committed;
                # the earlier of the two is the state the last commit holds.
                last_saved = min(stats.last_commit_at, stats.last_save_at or stats.last_commit_at)
        if marker is not None:
            figures["first_step_s"] = self.start_s + max(0.0, marker - self.t0)
        if status == AttemptStatus.SUCCEEDED:
            figures["work_lost_s"] = 0.0
        else:
            since = last_saved if last_saved is not None else marker
            figures["work_lost_s"] = max(0.0, ended - (since if since is not None else self.t0))
        return figures
