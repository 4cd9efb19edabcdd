"""Running one attempt, wherever a backend put it (the driver's thread, a child process, a Dask
worker): set the task context, call the task, classify how it ended (a failure after SIGTERM
counts as preempted), settle the checkpoint's async writes and report the latest version."""

from __future__ import annotations

import logging
from typing import Any

from taskpoint.checkpoint import Checkpoint
from taskpoint.checkpoint.interval import Pacer
from taskpoint.context import TaskContext, reset_context, set_context
from taskpoint.engine.attempt import AttemptJob, Outcome
from taskpoint.engine.events import AttemptInfo
from taskpoint.engine.logs import AttemptLog, captured
from taskpoint.engine.meter import AttemptMeter
from taskpoint.engine.preempt import PreemptionGuard, PreemptionHook
from taskpoint.engine.retry import classify
from taskpoint.extras import install_hint
from taskpoint.records.status import AttemptStatus

log = logging.getLogger("taskpoint")


def execute_attempt(job: AttemptJob, whole_process: bool = False) -> Outcome:
    """Run the task function once, with its context set, and close its checkpoint after.

    What the task prints is copied into the attempt's log (``info.log_url``): what its own
    thread prints, or with ``whole_process`` (an attempt's child process) every thread.
    Never raises for the task's own errors: they become the outcome's status and error."""
    task, info, guard = job.task, job.info, job.guard
    meter = AttemptMeter(info, task)  # the ledger's figures and the resume guard

    def open_checkpoint(ctx: TaskContext) -> Checkpoint:
        # Opened when the task first touches ``ctx.checkpoint``, once: a task that never
        # checkpoints costs no store access.
        cp = info.open_checkpoint()
        cp.add_hook(meter.guard)
        cp.add_hook(PreemptionHook(ctx, guard, info, job.listener))
        cp.pacer = Pacer(cp.stats, info.history, lambda: ctx.preempted)  # for due()
        return cp

    ctx = TaskContext(
        info.execution_id,
        info.node,
        task.name,
        info.attempt,
        open_checkpoint,
        rank=info.rank,
        world_size=info.world_size,
    )
    token = set_context(ctx)
    guard.task_started(ctx)
    try:
        try:
            with captured(_open_log(info), whole_process):
                value = task.call_bound(job.arguments)
        finally:
            guard.task_finished()
            reset_context(token)
    except BaseException as exc:
        status = classify(exc, task.retry_on)
        if ctx.preempted and status == AttemptStatus.FAILED:
            # Whatever a task raises once SIGTERM arrived (a framework's own SIGTERM exception,
            # a SystemExit, an error from a half-torn-down library) is the preemption's doing.
            status = AttemptStatus.PREEMPTED
        outcome = Outcome.from_error(status, exc)
        hint = install_hint(exc)
        if hint is not None:  # a framework the task imports is not installed here
            outcome.error_message = f"{outcome.error_message}; install it with: {hint}"
    else:
        outcome = Outcome(AttemptStatus.SUCCEEDED, value=value)
    meter.task_ended()
    if ctx.checkpoint_opened:
        outcome.checkpoint_at_end = _settle(ctx.checkpoint, info, guard)
    else:
        outcome.checkpoint_at_end = info.checkpoint_at_start
    return meter.finish(outcome, ctx)


def _open_log(info: AttemptInfo) -> AttemptLog | None:
    if info.log_url is None:
        return None
    try:
        return AttemptLog(info.log_url, info.storage_options)
    except Exception as exc:  # no log is better than no attempt
        log.warning(
            "taskpoint: %s attempt %d: cannot open its log: %s", info.node, info.attempt, exc
        )
        return None


def _settle(checkpoint: Any, info: AttemptInfo, guard: PreemptionGuard) -> Any:
    """Wait for the attempt's async writes (within the grace period when preempted), close the
    checkpoint and return the latest committed version."""
    if guard.deadline is not None:  # preempted: the newest state first, as the deadline allows
        guard.flush(checkpoint, info.node, info.attempt)
    timeout = guard.remaining()
    try:
        checkpoint.wait(timeout=timeout)
    except TimeoutError:
        log.warning(
            "taskpoint: %s attempt %d: async checkpoint writes did not finish within the grace "
            "period; the latest committed version is kept",
            info.node,
            info.attempt,
        )
        return _latest(checkpoint)
    except Exception as exc:
        log.warning(
            "taskpoint: %s attempt %d: checkpoint writer failed: %s", info.node, info.attempt, exc
        )
    latest = _latest(checkpoint)
    try:
        checkpoint.close()
    except Exception as exc:
        log.warning("taskpoint: closing the checkpoint of %s failed: %s", info.node, exc)
    return latest


def _latest(checkpoint: Any) -> Any:
    try:
        return checkpoint.latest()
    except Exception as exc:  # a corrupt store must not hide the task's own outcome
        log.warning("taskpoint: cannot read the latest checkpoint: %s", exc)
        return None
