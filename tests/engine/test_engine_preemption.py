"""Inline preemption in this process: SIGTERM sets `preempted`, runs the callbacks, the next
checkpoint write commits and raises Preempted, and the execution stops resumable."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path

import pytest

import taskpoint
from support.polling import wait_until
from taskpoint import Checkpoint, Preempted, current_context, task, workflow
from taskpoint.engine import blobs, configure


def sigterm_when(marker: Path) -> threading.Thread:
    def send() -> None:
        with contextlib.suppress(AssertionError):  # sent anyway: the test's asserts tell
            wait_until(marker.exists, 30, str(marker))
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def make_counter(marker: Path, calls: list, blocking: bool = True):
    @task(retries=0)
    def count(total: int) -> list:
        ctx = current_context()
        ctx.on_preempt(lambda: calls.append(("on_preempt", ctx.attempt)))
        cp = ctx.checkpoint
        prev = cp.read()
        start = int(prev) if prev else 0
        for i in range(start, total):
            if i == 2 and start == 0:
                marker.write_text("ready")
                wait_until(lambda: ctx.preempted, 30, "SIGTERM to preempt the attempt")
            result = cp.write(str(i + 1).encode(), blocking=blocking)
            calls.append(("wrote", i + 1, result if blocking else None))
        return [start, ctx.attempt]

    return count


@pytest.mark.parametrize("blocking", [True, False])
def test_sigterm_commits_next_write_then_stops_resumable(tmp_path, blocking):
    marker, calls = tmp_path / "ready", []
    count = make_counter(marker, calls, blocking)

    @workflow
    def flow(total: int) -> list:
        return count(total=total)

    sender = sigterm_when(marker)
    execution = taskpoint.run(flow, total=6)
    sender.join(5)

    assert execution.status == "preempted"
    assert ("on_preempt", 1) in calls
    node = execution.nodes[0]
    assert node.status == "preempted"
    (attempt,) = node.attempts
    assert attempt.status == "preempted"
    # The write after SIGTERM committed (async writes may supersede queued ones: check content).
    url = blobs.checkpoint_url(execution.storage, execution.id, node.key)
    with Checkpoint.open(url) as cp:
        assert cp.read() == b"3"
        assert attempt.checkpoint_at_end == cp.latest().id
    assert execution.failed_node == "count#1"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored

    resumed = taskpoint.resume(execution.id)
    assert resumed.status == "succeeded"
    assert resumed.result == [3, 2]
    assert [a.checkpoint_at_start for a in resumed.nodes[0].attempts] == [
        None,
        attempt.checkpoint_at_end,
    ]


def test_preempted_workflow_call_raises_preempted(tmp_path):
    marker = tmp_path / "ready"
    count = make_counter(marker, [])

    @workflow
    def flow(total: int) -> list:
        return count(total=total)

    sigterm_when(marker)
    with pytest.raises(Preempted) as info:
        flow(total=5)
    assert info.value.execution_id
    assert taskpoint.resume(info.value.execution_id).result == [3, 2]


def test_task_without_checkpoint_writes_is_stopped_at_the_end_of_grace(tmp_path):
    configure(grace=0.3)
    marker = tmp_path / "ready"

    @task
    def stubborn() -> None:
        marker.write_text("ready")
        time.sleep(30)

    sigterm_when(marker)
    began = time.monotonic()
    execution = taskpoint.run(stubborn)
    assert time.monotonic() - began < 10
    assert execution.status == "preempted"
    assert "grace period" in execution.nodes[0].attempts[0].error


def test_a_process_attempt_hung_past_grace_is_killed_by_the_driver(tmp_path):
    """A child stuck where no signal handler runs (native code, signals blocked) must not keep
    the driver past the grace period: the driver kills it and stops."""
    configure(grace=0.5)
    marker = tmp_path / "ready"

    @task(isolation="process")
    def hung() -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGALRM})
        marker.write_text("ready")
        time.sleep(60)

    sigterm_when(marker)
    began = time.monotonic()
    execution = taskpoint.run(hung)
    assert time.monotonic() - began < 20
    assert execution.status in ("preempted", "failed")
    assert execution.nodes[0].attempts[0].status in ("preempted", "lost")
