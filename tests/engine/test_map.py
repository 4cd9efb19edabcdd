"""``t.map(...)`` / ``taskpoint.map`` / ``t.submit(...)``: one node per item, results in input
order, each item with its own checkpoints and retries. Inline runs them one after another."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import taskpoint
from taskpoint import RecoverableError, TaskpointError, current_context, task, workflow


def test_map_returns_results_in_input_order_with_one_node_per_item():
    @task
    def square(x: int) -> int:
        return x * x

    @workflow
    def flow(xs: list[int]) -> list[int]:
        return square.map(x=xs)

    execution = taskpoint.run(flow, xs=[3, 1, 2])
    assert execution.result == [9, 1, 4]
    assert [n.key for n in execution.nodes] == ["square#1", "square#2", "square#3"]
    assert all(n.status == "succeeded" for n in execution.nodes)


def test_taskpoint_map_zips_positional_and_named_iterables():
    @task
    def add(a: int, b: int) -> int:
        return a + b

    @workflow
    def flow() -> list[int]:
        return taskpoint.map(add, [1, 2], b=[10, 20])

    assert taskpoint.run(flow).result == [11, 22]


def test_inline_map_runs_items_one_after_another_in_the_driver():
    @task
    def where(x: int) -> int:
        return os.getpid()

    @workflow
    def flow() -> list[int]:
        return where.map(x=[1, 2, 3])

    execution = taskpoint.run(flow)
    assert execution.result == [os.getpid()] * 3
    starts = [n.attempts[0].started for n in execution.nodes]
    ends = [n.attempts[0].ended for n in execution.nodes]
    assert all(ends[i] <= starts[i + 1] for i in range(2))  # no overlap


def test_each_item_retries_from_its_own_checkpoint():
    @task(retries=2)
    def count(x: int) -> list:
        ctx = current_context()
        prev = ctx.checkpoint.read()
        start = int(prev) if prev else 0
        for i in range(start, 4):
            ctx.checkpoint.write(str(i + 1).encode(), step=i + 1)
            if x == 1 and ctx.attempt == 1 and i == 1:
                raise RecoverableError("item 1 fails once after two steps")
        return [x, start, ctx.attempt]

    @workflow
    def flow() -> list:
        return count.map(x=[0, 1, 2])

    execution = taskpoint.run(flow)
    assert execution.result == [[0, 0, 1], [1, 2, 2], [2, 0, 1]]
    attempts = {n.key: [a.status for a in n.attempts] for n in execution.nodes}
    assert attempts == {
        "count#1": ["succeeded"],
        "count#2": ["recoverable", "succeeded"],
        "count#3": ["succeeded"],
    }


def test_a_failed_item_fails_the_execution_and_later_items_do_not_run(tmp_path: Path):
    ran = tmp_path / "ran"

    @task
    def check(x: int) -> int:
        with ran.open("a") as f:
            f.write(f"{x}\n")
        if x == 2:
            raise ValueError("two is bad")
        return x

    @workflow
    def flow() -> list[int]:
        return check.map(x=[1, 2, 3])

    execution = taskpoint.run(flow)
    assert execution.status == "failed"
    assert execution.failed_node == "check#2"
    assert "two is bad" in execution.error
    assert ran.read_text().split() == ["1", "2"]


def test_resume_skips_the_items_that_succeeded(tmp_path: Path):
    runs = tmp_path / "runs"
    broken = tmp_path / "broken"
    broken.write_text("yes")

    @task
    def item(x: int) -> int:
        with runs.open("a") as f:
            f.write(f"{x}\n")
        if x == 3 and broken.exists():
            raise ValueError("not yet")
        return x * 10

    @workflow
    def flow() -> list[int]:
        return item.map(x=[1, 2, 3, 4])

    first = taskpoint.run(flow)
    assert first.status == "failed"
    broken.unlink()
    again = taskpoint.resume(first.id)
    assert again.status == "succeeded", again.error
    assert again.result == [10, 20, 30, 40]
    assert runs.read_text().split() == ["1", "2", "3", "3", "4"]


def test_submit_returns_futures():
    @task
    def double(x: int) -> int:
        return 2 * x

    @workflow
    def flow() -> int:
        futures = [double.submit(x=i) for i in range(4)]
        return sum(f.result() for f in futures)

    assert taskpoint.run(flow).result == 12


def test_map_inputs_are_all_checked_before_any_item_runs(tmp_path: Path):
    ran = tmp_path / "ran"

    @task
    def typed(x: int) -> int:
        ran.write_text("ran")
        return x

    @workflow
    def flow() -> list[int]:
        return typed.map(x=[1, "two"])

    execution = taskpoint.run(flow)
    assert execution.status == "failed"
    assert "TypeError" in execution.error
    assert not ran.exists()


def test_map_misuse_says_what_to_do():
    @task
    def one(x: int) -> int:
        return x

    with pytest.raises(TaskpointError, match="inside a @workflow"):
        one.map(x=[1])
    with pytest.raises(TaskpointError, match="inside a @workflow"):
        one.submit(x=1)

    @workflow
    def uneven() -> list[int]:
        return one.map(x=[1, 2], y=[1])

    assert "differ in length" in taskpoint.run(uneven).error


def test_map_inside_a_task_is_a_plain_loop():
    @task
    def inner(x: int) -> int:
        return x + 1

    @task
    def outer(n: int) -> list[int]:
        return inner.map(x=list(range(n)))

    execution = taskpoint.run(outer, n=3)
    assert execution.result == [1, 2, 3]
    assert [n.key for n in execution.nodes] == ["outer#1"]
