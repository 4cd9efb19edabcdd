"""Run one attempt of a task node in this process and describe how it ended."""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass
from typing import Any

from taskpoint.checkpoint import Checkpoint
from taskpoint.context import TaskContext, reset_context, set_context
from taskpoint.engine.events import AttemptInfo, Listener
from taskpoint.engine.preempt import PreemptibleCheckpoint, PreemptionGuard
from taskpoint.engine.retry import classify
from taskpoint.engine.task import Task

log = logging.getLogger("taskpoint")


@dataclass
class Outcome:
    status: str  # succeeded | failed | recoverable | preempted | lost | aborted
    value: Any = None
    error: BaseException | None = None
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    checkpoint_at_end: Any = None  # CheckpointVersion | None
    pid: int | None = None

    @classmethod
    def from_error(cls, status: str, exc: BaseException, checkpoint: Any = None) -> Outcome:
        return cls(
            status=status,
            error=exc,
            error_type=type(exc).__name__,
            error_message=str(exc),
            traceback="".join(traceback.format_exception(exc)),
            checkpoint_at_end=checkpoint,
        )

    @property
    def error_text(self) -> str | None:
        if self.error_type is None:
            return None
        return f"{self.error_type}: {self.error_message}" if self.error_message else self.error_type


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
            info.checkpoint_url, attempt=info.attempt, keep=task.keep
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
        outcome = Outcome.from_error(classify(exc, task.retry_on), exc)
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
