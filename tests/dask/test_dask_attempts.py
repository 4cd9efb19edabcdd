"""The worker-side registry the preemption plugin works through (backends/_dask_attempts.py),
without a cluster: threads stand for the worker's executor threads."""

from __future__ import annotations

import threading
import time

from taskpoint.backends import _dask_worker
from taskpoint.backends._dask_attempts import Attempts, WorkerAttemptGuard
from taskpoint.engine.events import AttemptInfo
from taskpoint.records.status import AttemptStatus


class Worker:  # stands for a distributed.Worker: the registry only compares identities
    pass


def test_preempting_a_worker_preempts_only_its_attempts_and_refuses_new_ones():
    attempts, one, other = Attempts(), Worker(), Worker()
    mine = attempts.start("k1", one, WorkerAttemptGuard(7.0))
    theirs = attempts.start("k2", other, WorkerAttemptGuard(7.0))
    assert mine is not None and theirs is not None
    before = time.monotonic()
    deadline = attempts.preempt(one)
    assert mine.preempted and mine.guard.preempted
    assert before + 7.0 <= deadline <= time.monotonic() + 7.0  # SIGTERM + grace
    assert not theirs.preempted and not theirs.guard.preempted
    assert attempts.start("k3", one, WorkerAttemptGuard(7.0)) is None  # it is going away
    assert attempts.start("k4", other, WorkerAttemptGuard(7.0)) is not None
    assert attempts.preempt(Worker()) <= time.monotonic()  # nothing to wait for


def test_waiting_for_reports_ends_when_the_outcome_was_fetched_or_at_the_deadline():
    attempts, worker = Attempts(), Worker()
    entry = attempts.start("k", worker, WorkerAttemptGuard(30.0))
    assert entry is not None
    attempts.preempt(worker)
    assert attempts.wait_reported(worker, time.monotonic() + 0.05) is False  # still running

    def report() -> None:
        attempts.finish(entry)
        attempts.released("k")  # the driver fetched the outcome

    threading.Timer(0.05, report).start()
    assert attempts.wait_reported(worker, time.monotonic() + 30) is True
    assert attempts.running_on(worker) is False
    assert attempts.wait_reported(worker, time.monotonic()) is True  # and it was forgotten


def test_a_closing_worker_waits_only_for_its_attempts_to_end():
    attempts, worker = Attempts(), Worker()
    entry = attempts.start("k", worker, WorkerAttemptGuard(30.0))
    assert entry is not None
    attempts.preempt(worker)
    threading.Timer(0.05, attempts.finish, (entry,)).start()
    assert attempts.wait_reported(worker, time.monotonic() + 30, fetched=False) is True
    attempts.forget_worker(worker)
    assert attempts.start("k", worker, WorkerAttemptGuard(30.0)) is not None  # a fresh worker


def test_an_attempt_that_is_not_preempted_leaves_no_trace():
    attempts, worker = Attempts(), Worker()
    entry = attempts.start("k", worker, WorkerAttemptGuard(30.0))
    assert entry is not None
    attempts.finish(entry)
    attempts.preempt(worker)
    assert attempts.wait_reported(worker, time.monotonic()) is True


def test_an_attempt_arriving_at_a_preempted_worker_is_preempted_without_starting(monkeypatch):
    from taskpoint.backends._dask_attempts import ATTEMPTS

    worker = Worker()
    monkeypatch.setattr(_dask_worker, "_current", lambda: (worker, "taskpoint-k"))
    ATTEMPTS.preempt(worker)
    ran = []
    info = AttemptInfo("e1", "t#1", "t", 2, 4, "memory://nowhere")
    try:
        outcome = _dask_worker._run(lambda: ran.append(1), {}, info, grace=5.0)
    finally:
        ATTEMPTS.forget_worker(worker)
    assert outcome.status == AttemptStatus.PREEMPTED
    assert "was not started" in outcome.error_message and "being preempted" in outcome.error_message
    assert ran == []
