"""The async writer waits for work under SCHED_BATCH (its wake-up never preempts the training
thread that queued the write) and commits under the normal policy (writer.py)."""

from __future__ import annotations

import os
import threading
import time

import pytest

from taskpoint.checkpoint import writer as writer_module
from taskpoint.checkpoint.writer import AsyncWriter

pytestmark = pytest.mark.skipif(
    not hasattr(os, "SCHED_BATCH") or os.sched_getscheduler(0) != os.SCHED_OTHER,
    reason="Linux scheduling policies, in a thread started under the normal policy",
)


def _policy_of(thread: threading.Thread) -> int:
    assert thread.native_id is not None
    return os.sched_getscheduler(thread.native_id)


def _wait_for_policy(thread: threading.Thread, policy: int) -> int:
    deadline = time.monotonic() + 30
    while (seen := _policy_of(thread)) != policy and time.monotonic() < deadline:
        time.sleep(0.001)
    return seen


def test_commits_under_the_normal_policy_and_waits_under_batch() -> None:
    started, release = threading.Event(), threading.Event()
    seen: list[int] = []

    def commit(job: str) -> str:
        seen.append(os.sched_getscheduler(0))
        started.set()
        assert release.wait(30)
        return job

    writer = AsyncWriter(commit, discard=lambda job: None, name="policy-test")
    try:
        future = writer.submit("first")
        assert started.wait(30)
        thread = writer._thread
        assert thread is not None
        assert _policy_of(thread) == os.SCHED_OTHER  # committing
        release.set()
        assert future.result(30) == "first"
        assert _wait_for_policy(thread, os.SCHED_BATCH) == os.SCHED_BATCH  # idle, waiting
        started.clear()
        assert writer.submit("second").result(30) == "second"
        assert seen == [os.SCHED_OTHER, os.SCHED_OTHER]  # woken from batch: normal again
    finally:
        release.set()
        writer.close(30)
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the caller's thread was never touched


def test_a_refused_policy_change_leaves_writes_working(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def refuse(pid: int, policy: int, param: object) -> None:
        calls.append(policy)
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(writer_module.os, "sched_setscheduler", refuse)
    writer = AsyncWriter(lambda job: job * 2, discard=lambda job: None, name="refused")
    try:
        assert writer.submit(21).result(30) == 42
        deadline = time.monotonic() + 30
        while not calls and time.monotonic() < deadline:  # the writer going idle tries it
            time.sleep(0.001)
        assert writer.submit(4).result(30) == 8
    finally:
        writer.close(30)
    assert calls == [os.SCHED_BATCH]  # tried once, then left alone
