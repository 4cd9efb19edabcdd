"""Retry budgets, failure classes, checkpoint hand-off and the context API (in-process)."""

from __future__ import annotations

import pytest

import taskpoint
from taskpoint import (
    ExecutionFailed,
    Preempted,
    RecoverableError,
    TaskpointError,
    current_context,
    task,
    workflow,
)
from taskpoint.engine.retry import AttemptState, RetryPolicy, classify


def statuses(execution, key=None):
    node = execution.nodes[0] if key is None else next(n for n in execution.nodes if n.key == key)
    return [a.status for a in node.attempts]


def test_recoverable_errors_spend_the_user_budget_then_fail():
    calls = []

    @task(retries=2)
    def flaky() -> int:
        calls.append(current_context().attempt)
        raise RecoverableError("not yet")

    execution = taskpoint.run(flaky)
    assert execution.status == "failed"
    assert calls == [1, 2, 3]
    assert statuses(execution) == ["recoverable"] * 3
    assert execution.nodes[0].status == "failed"
    assert execution.failed_node == "flaky#1"
    assert execution.error == "RecoverableError: not yet"


def test_retry_on_types_use_the_user_budget():
    calls = []

    @task(retries=1, retry_on=(ConnectionError,))
    def net() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("reset")
        return "ok"

    assert net() == "ok"
    assert len(calls) == 2


def test_other_exceptions_fail_at_once_with_one_attempt():
    calls = []

    @task(retries=5)
    def broken() -> None:
        calls.append(1)
        raise ValueError("bad input")

    @workflow
    def flow() -> None:
        broken()

    with pytest.raises(ExecutionFailed) as info:
        flow()
    assert calls == [1]
    assert isinstance(info.value.__cause__, ValueError)
    assert info.value.node == "broken#1"
    assert info.value.execution_id
    assert "bad input" in str(info.value)


def test_preemptions_spend_the_system_budget_not_the_user_one():
    calls = []

    @task(retries=0, system_retries=2)
    def spot() -> int:
        calls.append(1)
        if len(calls) <= 2:
            raise Preempted("spot reclaimed")
        return len(calls)

    execution = taskpoint.run(spot)
    assert execution.status == "succeeded"
    assert execution.result == 3
    assert statuses(execution) == ["preempted", "preempted", "succeeded"]


def test_system_budget_runs_out():
    @task(retries=5, system_retries=1)
    def spot() -> None:
        raise Preempted("again")

    execution = taskpoint.run(spot)
    assert execution.status == "failed"
    assert statuses(execution) == ["preempted", "preempted"]


def test_budgets_are_separate():
    seq = iter([Preempted, RecoverableError, Preempted, RecoverableError, None])

    @task(retries=2, system_retries=2)
    def mixed() -> str:
        exc = next(seq)
        if exc is not None:
            raise exc("x")
        return "done"

    execution = taskpoint.run(mixed)
    assert execution.result == "done"
    assert statuses(execution) == [
        "preempted",
        "recoverable",
        "preempted",
        "recoverable",
        "succeeded",
    ]


def test_retry_reads_latest_checkpoint_even_if_previous_attempt_wrote_none():
    seen = []

    @task(retries=3)
    def work() -> int:
        ctx = current_context()
        data = ctx.checkpoint.read()
        seen.append(data)
        if ctx.attempt == 1:
            ctx.checkpoint.write(b"from attempt 1")
            raise RecoverableError("1")
        if ctx.attempt == 2:
            raise RecoverableError("2 wrote nothing")
        return ctx.attempt

    execution = taskpoint.run(work)
    assert execution.result == 3
    assert seen == [None, b"from attempt 1", b"from attempt 1"]
    attempts = execution.nodes[0].attempts
    assert attempts[2].checkpoint_at_start == attempts[0].checkpoint_at_end == "0001-000001"


def test_retry_delay_uses_the_injected_sleep():
    slept = []
    state = AttemptState()
    policy = RetryPolicy.for_task(retries=2, system_retries=1, retry_delay=1.5, sleep=slept.append)
    state.ended(1, "recoverable", RecoverableError())
    assert policy.should_retry(state)
    assert policy.spend(state) == 1.5
    state.ended(2, "preempted", Preempted())
    assert policy.should_retry(state)
    assert policy.spend(state) == 0.0  # preemption retries at once
    state.ended(3, "lost", None)
    assert not policy.should_retry(state)  # system budget (1) spent
    state.ended(3, "failed", ValueError())
    assert not policy.should_retry(state)


def test_engine_sleeps_retry_delay_between_recoverable_attempts(monkeypatch):
    import taskpoint.engine.driver as driver

    slept = []
    real_init = driver.Run.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        self.sleep = slept.append

    monkeypatch.setattr(driver.Run, "__init__", init)
    n = iter(range(10))

    @task(retries=2, retry_delay=7.0)
    def slow() -> int:
        if next(n) < 2:
            raise RecoverableError("wait")
        return 1

    assert slow() == 1
    assert slept == [7.0, 7.0]


def test_classify():
    assert classify(RecoverableError()) == "recoverable"
    assert classify(Preempted()) == "preempted"
    assert classify(KeyError(), (KeyError,)) == "recoverable"
    assert classify(KeyError()) == "failed"
    assert classify(KeyboardInterrupt()) == "aborted"


def test_context_fields_and_on_preempt_registration():
    seen = {}

    @task
    def probe(x: int) -> int:
        ctx = current_context()
        seen.update(
            execution_id=ctx.execution_id,
            node=ctx.node,
            task=ctx.task_name,
            attempt=ctx.attempt,
            preempted=ctx.preempted,
        )
        ctx.on_preempt(lambda: None)
        assert ctx.checkpoint.prev_exists() is False
        return x

    @workflow
    def flow() -> int:
        return probe(x=1) + probe(x=2)

    execution = taskpoint.run(flow)
    assert execution.result == 3
    assert [n.key for n in execution.nodes] == ["probe#1", "probe#2"]
    assert seen == {
        "execution_id": execution.id,
        "node": "probe#2",
        "task": "probe",
        "attempt": 1,
        "preempted": False,
    }


def test_current_context_outside_a_task_raises():
    with pytest.raises(TaskpointError, match="outside a task"):
        current_context()


def test_checkpoints_are_scoped_per_node():
    @task
    def writer(tag: str) -> bytes | None:
        cp = current_context().checkpoint
        before = cp.read()
        cp.write(tag.encode())
        return before

    @workflow
    def flow() -> list:
        return [writer(tag="a"), writer(tag="b")]

    assert taskpoint.run(flow).result == [None, None]


def test_failure_in_workflow_code_is_recorded_without_a_node():
    @task
    def fine() -> int:
        return 1

    @workflow
    def flow() -> int:
        fine()
        raise RuntimeError("workflow bug")

    execution = taskpoint.run(flow)
    assert execution.status == "failed"
    assert execution.failed_node is None
    assert execution.error == "RuntimeError: workflow bug"
    assert execution.nodes[0].status == "succeeded"


def test_unpicklable_output_fails_the_node():
    @task
    def gen() -> object:
        return (i for i in range(3))

    execution = taskpoint.run(gen)
    assert execution.status == "failed"
    assert "cannot be pickled" in execution.error


def test_large_outputs_go_to_the_blob_store(tp_home):
    @task
    def big() -> bytes:
        return b"x" * 100_000

    execution = taskpoint.run(big)
    assert execution.result == b"x" * 100_000
    assert list((tp_home / "blobs" / execution.id / "nodes").glob("*/output.pkl"))
