"""The resume guard: an attempt that could have resumed from a committed checkpoint but loaded
none, or whose first commit is below that checkpoint's step, restarted from scratch. It is
flagged in its record (and so in ``show`` and the web view) and warned about as it happens;
``require_resume=True`` refuses that first write, commits nothing and fails the attempt."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

import taskpoint
from support.fixtures import run_cli
from taskpoint import Checkpoint, NotResumedError, RecoverableError, current_context, task
from taskpoint.engine.blobs import checkpoint_url
from taskpoint.records import Records


def forgetful_task(*, require: bool = False, isolation: str = "inline", retries: int = 1):
    """Attempt 1 commits steps 1-3 and fails recoverably; attempt 2 never reads its
    checkpoint and writes from step 1 again."""

    @task(retries=retries, isolation=isolation, require_resume=require)
    def forgetful(steps: int) -> list:
        ctx = current_context()
        cp = ctx.checkpoint
        if ctx.attempt == 1:
            for i in range(1, 4):
                cp.write(str(i).encode(), step=i)
            raise RecoverableError("fails after step 3")
        for i in range(1, steps + 1):
            cp.write(str(i).encode(), step=i)
        return [ctx.attempt, os.getpid()]

    return forgetful


def rollback_task(restored: Path, *, require: bool = False):
    """Attempt 1 commits steps 1-4 and fails; attempt 2 restores the oldest version (step 1)
    on purpose and continues from there, committing step 2."""

    @task(retries=1, keep=5, require_resume=require)
    def rollback(steps: int) -> int:
        ctx = current_context()
        cp = ctx.checkpoint
        if ctx.attempt == 1:
            for i in range(1, 5):
                cp.write(str(i).encode(), step=i)
            raise RecoverableError("fails after step 4")
        oldest = cp.versions()[0]
        where = cp.restore(restored, version=oldest.id)
        assert where is not None
        start = int((where / "data").read_bytes())
        for i in range(start, steps):
            cp.write(str(i + 1).encode(), step=i + 1)
        return start

    return rollback


def resuming_task(*, require: bool = False, isolation: str = "inline"):
    @task(retries=1, isolation=isolation, require_resume=require)
    def resuming(steps: int) -> int:
        ctx = current_context()
        cp = ctx.checkpoint
        prev = cp.read()
        start = int(prev) if prev else 0
        for i in range(start, steps):
            cp.write(str(i + 1).encode(), step=i + 1)
            if ctx.attempt == 1 and i + 1 == 3:
                raise RecoverableError("fails after step 3")
        return start

    return resuming


def own_versions(execution: taskpoint.Execution, attempt: int) -> list[str]:
    scope = checkpoint_url(execution.storage, execution.id, execution.nodes[0].key)
    with Checkpoint.open(scope, readonly=True) as cp:
        return [v.id for v in cp.versions() if v.attempt == attempt]


@pytest.mark.parametrize("isolation", ["inline", "process"])
def test_an_attempt_that_ignores_its_checkpoint_is_flagged(isolation, tp_home, caplog):
    caplog.set_level(logging.WARNING, logger="taskpoint")
    execution = taskpoint.run(forgetful_task(isolation=isolation), steps=5)
    assert execution.status == "succeeded", execution.error
    first, second = execution.nodes[0].attempts
    assert first.status == "recoverable" and first.resume_warning is None
    assert second.checkpoint_at_start == "0001-000003"
    assert second.loaded_version is None and second.loaded_step is None
    why = second.resume_warning
    assert why is not None and "checkpoint 0001-000003 (step 3)" in why
    assert "loaded no checkpoint" in why and "step 1" in why
    if isolation == "inline":  # said at once, in the run's output (a child logs to its stderr)
        assert any("restarted from scratch" in r.getMessage() for r in caplog.records)

    shown = run_cli("show", execution.id, home=tp_home)
    assert shown.returncode == 0, shown.stderr
    assert "attempt 2 restarted from scratch" in shown.stdout
    assert "0001-000003" in shown.stdout


@pytest.mark.parametrize("isolation", ["inline", "process"])
def test_require_resume_fails_the_attempt_and_commits_nothing(isolation):
    execution = taskpoint.run(forgetful_task(require=True, isolation=isolation, retries=3), steps=5)
    assert execution.status == "failed"
    node = execution.nodes[0]
    assert [a.status for a in node.attempts] == ["recoverable", "failed"]  # not retried
    refused = node.attempts[1]
    assert refused.error is not None and refused.error.startswith("NotResumedError")
    assert "0001-000003 (step 3) was available" in refused.error
    assert "tried to commit step 1" in refused.error and "loaded none" in refused.error
    assert refused.checkpoint_at_end == "0001-000003"
    assert own_versions(execution, 2) == []  # nothing committed
    with pytest.raises(taskpoint.ExecutionFailed) as info:
        execution.unwrap()
    if isolation == "inline":  # the exception itself, with both versions
        cause = info.value.__cause__
        assert isinstance(cause, NotResumedError)
        assert (cause.available, cause.available_step, cause.loaded, cause.step) == (
            "0001-000003",
            3,
            None,
            1,
        )


def test_require_resume_holds_when_the_task_swallows_the_refusal():
    @task(retries=1, require_resume=True)
    def stubborn() -> str:
        ctx = current_context()
        if ctx.attempt == 1:
            ctx.checkpoint.write(b"1", step=1)
            raise RecoverableError("again")
        for step in (1, 2):
            try:
                ctx.checkpoint.write(b"x", step=step)
            except NotResumedError:
                pass  # every write of the attempt is refused
        return "done anyway"

    execution = taskpoint.run(stubborn)
    assert execution.status == "failed"
    assert execution.nodes[0].attempts[1].error.startswith("NotResumedError")
    assert own_versions(execution, 2) == []


def test_reloading_an_older_version_and_committing_a_lower_step_is_flagged(tmp_path):
    execution = taskpoint.run(rollback_task(tmp_path / "restored"), steps=6)
    assert execution.status == "succeeded", execution.error
    assert execution.result == 1
    second = execution.nodes[0].attempts[1]
    assert (second.loaded_version, second.loaded_step) == ("0001-000001", 1)
    why = second.resume_warning
    assert why is not None
    assert "first commit is step 2, below step 4 of checkpoint 0001-000004" in why
    assert "it loaded checkpoint 0001-000001 (step 1)" in why


def test_reloading_an_older_version_fails_with_require_resume(tmp_path):
    execution = taskpoint.run(rollback_task(tmp_path / "restored", require=True), steps=6)
    assert execution.status == "failed"
    refused = execution.nodes[0].attempts[1]
    assert "0001-000004 (step 4) was available" in refused.error
    assert "loaded checkpoint 0001-000001 (step 1)" in refused.error
    assert "tried to commit step 2" in refused.error
    assert own_versions(execution, 2) == []


@pytest.mark.parametrize("isolation", ["inline", "process"])
def test_a_real_resume_is_not_flagged(isolation, tp_home):
    execution = taskpoint.run(resuming_task(require=True, isolation=isolation), steps=5)
    assert execution.status == "succeeded", execution.error
    assert execution.result == 3
    first, second = execution.nodes[0].attempts
    assert (second.loaded_version, second.loaded_step) == ("0001-000003", 3)
    assert first.resume_warning is None and second.resume_warning is None
    rows = Records(tp_home).attempts(execution.id)
    assert [r.resume_warning for r in rows] == [None, None]
    assert [r.loaded_version for r in rows] == [None, "0001-000003"]
    shown = run_cli("show", execution.id, home=tp_home)
    assert "restarted from scratch" not in shown.stdout


def test_a_first_attempt_and_a_task_that_commits_nothing_are_not_judged():
    @task(retries=1, require_resume=True)
    def reader_only() -> int:
        ctx = current_context()
        if ctx.attempt == 1:
            ctx.checkpoint.write(b"7", step=7)
            raise RecoverableError("again")
        return 7  # loads nothing and commits nothing: claims no progress

    execution = taskpoint.run(reader_only)
    assert execution.status == "succeeded", execution.error
    assert [a.resume_warning for a in execution.nodes[0].attempts] == [None, None]


def test_require_resume_must_be_a_bool():
    with pytest.raises(TypeError, match="require_resume"):
        task(require_resume="yes")(len)  # type: ignore[call-overload]
