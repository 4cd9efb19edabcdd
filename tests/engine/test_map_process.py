"""``map`` on the process backend: items run in a bounded pool of child processes, each item a
node with its own checkpoints; a killed child is retried alone; a failure stops the others; a
SIGTERM to the driver preempts every running child and ``taskpoint resume`` finishes them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path

import pytest

import taskpoint
from support.fixtures import run_cli, start_cli
from support.polling import wait_for_file, wait_until
from taskpoint import current_context, task, workflow
from taskpoint.backends.process import ProcessBackend
from taskpoint.engine import configure


@pytest.fixture
def pool_of():
    def use(concurrency: int) -> None:
        configure(backend=ProcessBackend(concurrency=concurrency))  # tp_home resets it

    return use


def test_items_run_at_the_same_time_in_child_processes(tmp_path: Path, pool_of):
    pool_of(2)

    @task
    def meet(x: int) -> int:
        (tmp_path / f"started-{x}").write_text("")
        # Each item waits for the other: both finish only if they ran at the same time.
        wait_until((tmp_path / f"started-{1 - x}").exists, 60, "the other item to start")
        return os.getpid()

    @workflow
    def flow() -> list[int]:
        return meet.map(x=[0, 1])

    execution = taskpoint.run(flow)
    assert execution.status == "succeeded", execution.error
    assert len(set(execution.result)) == 2
    assert os.getpid() not in execution.result


def test_the_pool_is_bounded(pool_of):
    pool_of(2)

    @task
    def nap(x: int) -> int:
        time.sleep(0.3)
        return x

    @workflow
    def flow() -> list[int]:
        return nap.map(x=list(range(5)))

    execution = taskpoint.run(flow)
    assert execution.result == [0, 1, 2, 3, 4]
    spans = [(a.started, a.ended) for n in execution.nodes for a in n.attempts]
    for start, _ in spans:
        running = sum(1 for s, e in spans if s <= start < e)
        assert running <= 2


def test_a_killed_item_is_retried_alone_from_its_own_checkpoint(tmp_path: Path, pool_of):
    pool_of(2)

    @task(system_retries=2)
    def count(x: int) -> list:
        ctx = current_context()
        prev = ctx.checkpoint.read()
        start = int(prev) if prev else 0
        for i in range(start, 5):
            ctx.checkpoint.write(str(i + 1).encode(), step=i + 1)
            if x == 1 and ctx.attempt == 1 and i == 2:
                (tmp_path / "victim").write_text(str(os.getpid()))
                time.sleep(60)  # killed here
        return [x, start, ctx.attempt]

    @workflow
    def flow() -> list:
        return count.map(x=[0, 1, 2])

    import threading

    def killer() -> None:
        with contextlib.suppress(AssertionError):  # no victim: the asserts below tell
            wait_until((tmp_path / "victim").exists, 60, "the victim's pid")
            time.sleep(0.05)
            os.kill(int((tmp_path / "victim").read_text()), signal.SIGKILL)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    execution = taskpoint.run(flow)
    thread.join(5)
    assert execution.status == "succeeded", execution.error
    assert execution.result == [[0, 0, 1], [1, 3, 2], [2, 0, 1]]
    attempts = {n.key: [a.status for a in n.attempts] for n in execution.nodes}
    assert attempts == {
        "count#1": ["succeeded"],
        "count#2": ["lost", "succeeded"],
        "count#3": ["succeeded"],
    }


def test_a_failed_item_stops_the_running_ones(tmp_path: Path, pool_of):
    pool_of(2)

    @task
    def item(x: int) -> int:
        ctx = current_context()
        if x == 0:
            wait_until((tmp_path / "slow-running").exists, 60, "item 1 to run")
            raise ValueError("item 0 is broken")
        (tmp_path / "slow-running").write_text("")
        deadline = time.monotonic() + 60
        while not ctx.preempted and time.monotonic() < deadline:
            time.sleep(0.01)
        ctx.checkpoint.write(b"stopped")  # commits, then stops the attempt
        return x

    @workflow
    def flow() -> list[int]:
        return item.map(x=[0, 1])

    began = time.monotonic()
    execution = taskpoint.run(flow)
    assert time.monotonic() - began < 30
    assert execution.status == "failed"
    assert execution.failed_node == "item#1"
    slow = next(n for n in execution.nodes if n.key == "item#2")
    assert [a.status for a in slow.attempts] == ["aborted"]
    assert slow.attempts[0].checkpoint_at_end is not None


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="the default pool has one slot")
def test_sigterm_to_the_driver_preempts_every_running_item(workflow_copy, tp_home: Path):
    path = workflow_copy("map_flow.py")  # its items write their markers next to it
    proc = start_cli("run", str(path), "flow", "--json", home=tp_home)
    for x in (0, 1):
        wait_for_file(path.parent / f"ready-{x}", 60, proc=proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    first = json.loads(out)
    assert [n["status"] for n in first["nodes"]] == ["preempted", "preempted"]

    done = run_cli("resume", first["id"], "--json", home=tp_home, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["result"] == [[0, 3, 2], [1, 3, 2]]  # each from its own checkpoint
