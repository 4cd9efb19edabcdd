"""The inline backend: an attempt runs in the driver's own thread, one node after another.

Fastest (no process, no pickling), and the only one where SIGTERM to the driver reaches the task
directly. ``run_inline`` is also what a child process or a Dask worker runs for its attempt.
"""

from __future__ import annotations

import logging
from typing import Any

from taskpoint.checkpoint import Checkpoint
from taskpoint.context import TaskContext, reset_context, set_context
from taskpoint.engine.attempt import AttemptJob, DoneHandle, Outcome
from taskpoint.engine.events import AttemptInfo, Listener
from taskpoint.engine.preempt import PreemptibleCheckpoint, PreemptionGuard
from taskpoint.engine.retry import classify
from taskpoint.engine.task import Task

log = logging.getLogger("taskpoint")


class InlineBackend:
    name = "inline"
    in_driver = True
    concurrency = 1  # sequential: signals and the task context belong to the main thread

    def submit(self, job: AttemptJob) -> DoneHandle:
        outcome = run_inline(
            job.task, job.arguments, job.info, job.guard, job.listener, job.checkpoint
        )
        return DoneHandle(outcome)

    def close(self) -> None:
        pass


def run_inline(
    task: Task,
    arguments: dict[str, Any],
    info: AttemptInfo,
    guard: PreemptionGuard,
    listener: Listener,
    checkpoint: Any = None,
) -> Outcome:
    """Run the task function once, with its context set, and close its checkpoint after."""

    def open_checkpoint(ctx: TaskContext) -> PreemptibleCheckpoint:
        cp = checkpoint or Checkpoint.open(
            info.checkpoint_url,
            attempt=info.attempt,
            keep=task.keep,
            storage_options=info.storage_options or None,
        )
        return PreemptibleCheckpoint(cp, ctx, guard, info, listener)

    ctx = TaskContext(info.execution_id, info.node, task.name, info.attempt, open_checkpoint)
    token = set_context(ctx)
    guard.task_started(ctx)
    try:
        try:
            value = task.call_bound(arguments)
        finally:
            guard.task_finished()
            reset_context(token)
    except BaseException as exc:
        status = classify(exc, task.retry_on)
        if ctx.preempted and status == "failed":
            # Whatever a task raises once SIGTERM arrived (a framework's own SIGTERM exception,
            # a SystemExit, an error from a half-torn-down library) is the preemption's doing.
            status = "preempted"
        outcome = Outcome.from_error(status, exc)
    else:
        outcome = Outcome("succeeded", value=value)
    if ctx.checkpoint_opened:
        outcome.checkpoint_at_end = _settle(ctx.checkpoint.inner, info, guard)
    else:
        if checkpoint is not None:
            checkpoint.close()
        outcome.checkpoint_at_end = info.checkpoint_at_start
    return outcome


def _settle(checkpoint: Any, info: AttemptInfo, guard: PreemptionGuard) -> Any:
    """Wait for the attempt's async writes (within the grace period when preempted), close the
    checkpoint and return the latest committed version."""
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
