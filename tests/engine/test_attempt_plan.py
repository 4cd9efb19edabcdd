"""How the driver plans attempts: one read-only view per node, one writable scope per attempt
that checkpoints (opened by the attempt itself), and attempt numbers decided in one place."""

from __future__ import annotations

import pytest

import taskpoint.checkpoint.core as core
from taskpoint import Checkpoint, RecoverableError, current_context, task


@pytest.fixture
def opened(monkeypatch):
    """Every ``Checkpoint.open`` call: (attempt, readonly)."""
    calls: list[tuple[int, bool]] = []
    real_open = core.Checkpoint.open.__func__

    def counting_open(cls, url, **kwargs):
        calls.append((kwargs.get("attempt", 1), kwargs.get("readonly", False)))
        return real_open(cls, url, **kwargs)

    monkeypatch.setattr(core.Checkpoint, "open", classmethod(counting_open))
    return calls


def test_each_attempt_opens_its_scope_once_and_the_driver_only_looks(opened):
    @task(retries=3, keep_checkpoints_on_success="all")  # no pruning open at the end
    def steps() -> int:
        ctx = current_context()
        done = int(ctx.checkpoint.read() or b"0")
        ctx.checkpoint.write(str(done + 1).encode())
        if ctx.attempt < 4:
            raise RecoverableError("again")
        return done + 1

    assert steps() == 4
    writable = [attempt for attempt, readonly in opened if not readonly]
    assert writable == [1, 2, 3, 4]
    assert [readonly for _, readonly in opened].count(True) == 1


def test_a_task_that_never_checkpoints_opens_no_writable_scope(opened):
    @task(retries=2)
    def plain() -> str:
        if current_context().attempt < 3:
            raise RecoverableError("again")
        return "ok"

    assert plain() == "ok"
    assert all(readonly for _, readonly in opened)
    assert len(opened) == 1


def test_attempt_number_moves_past_versions_the_records_lost(tmp_path, opened):
    """Versions of attempts 2 and 3 committed but never recorded (their driver died): the
    next attempt is 4, the lost attempts are recorded, and nothing is overwritten."""
    seen: list[int] = []

    @task(retries=1)
    def resumable() -> bytes:
        ctx = current_context()
        seen.append(ctx.attempt)
        if ctx.attempt == 1:
            # What a killed driver's later attempts would have left in the scope.
            url = ctx.checkpoint.url
            for attempt in (2, 3):
                with Checkpoint.open(url, attempt=attempt) as other:
                    other.write(f"from attempt {attempt}".encode())
            raise RecoverableError("retry")
        return ctx.checkpoint.read()

    from taskpoint import run

    execution = run(resumable)
    assert execution.result == b"from attempt 3"
    assert seen == [1, 4]
    attempts = execution.nodes[0].attempts
    assert [a.n for a in attempts] == [1, 2, 3, 4]
    assert [a.status for a in attempts] == ["recoverable", "lost", "lost", "succeeded"]
    assert attempts[-1].checkpoint_at_start == "0003-000001"
