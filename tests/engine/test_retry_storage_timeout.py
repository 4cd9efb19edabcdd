"""A checkpoint request past its storage timeout is the infrastructure's failure: the attempt is
``lost`` and retried under ``system_retries`` (engine/retry.py)."""

from __future__ import annotations

from taskpoint import CheckpointError, CheckpointTimeoutError, RecoverableError
from taskpoint.engine.retry import BUDGET_OF_STATUS, SYSTEM_BUDGET, classify
from taskpoint.records.status import AttemptStatus


def _raised_from(error: BaseException, cause: BaseException) -> BaseException:
    try:
        raise error from cause
    except BaseException as exc:
        return exc


def test_a_storage_timeout_is_lost_on_the_system_budget():
    timeout = CheckpointTimeoutError("could not write ... at s3://b/x: timed out (3 s)")
    assert classify(timeout) == AttemptStatus.LOST
    assert BUDGET_OF_STATUS[classify(timeout)] == SYSTEM_BUDGET
    # even when the task lists CheckpointError (or Exception) in retry_on
    assert classify(timeout, (CheckpointError,)) == AttemptStatus.LOST


def test_an_async_write_that_timed_out_surfaces_at_the_next_write_and_counts_the_same():
    later = _raised_from(CheckpointError("an earlier async checkpoint write failed: ..."),
                         CheckpointTimeoutError("timed out"))  # fmt: skip
    assert classify(later) == AttemptStatus.LOST


def test_other_storage_errors_are_unchanged():
    assert classify(CheckpointError("dropped")) == AttemptStatus.FAILED
    assert classify(CheckpointError("dropped"), (CheckpointError,)) == AttemptStatus.RECOVERABLE
    # a user's own error raised from a timeout is the user's
    assert classify(_raised_from(ValueError("bad"), CheckpointTimeoutError("t"))) == "failed"
    assert classify(RecoverableError("again")) == AttemptStatus.RECOVERABLE
