"""The checkpoint interval inside the engine: each attempt's ``checkpoint.due()`` knows the task's
failure history from the records (this node's earlier attempts, and earlier executions of the
task once there are enough), and a real SIGKILL makes the next attempt save more often."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path

import taskpoint
from support.polling import wait_for_file
from taskpoint import RecoverableError, current_context, task
from taskpoint.records.history import MIN_PRIOR_ATTEMPTS, PRIOR_QUERY, summarize


def _kill_when_ready(marker: Path) -> threading.Thread:
    def killer() -> None:
        try:
            pid = int(wait_for_file(marker, 30).strip())
        except AssertionError:
            return  # the attempt never announced itself: the test's asserts tell
        os.kill(pid, signal.SIGKILL)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    return thread


def test_a_sigkilled_attempt_makes_the_next_one_save_more_often(tmp_path):
    marker, first_report = tmp_path / "pid", tmp_path / "first.json"

    @task(isolation="process", system_retries=2)
    def paced(steps: int) -> dict:
        ctx = current_context()
        cp = ctx.checkpoint
        cp.read()
        payload = bytes(4 << 20)
        for step in range(steps):
            end = time.perf_counter() + 0.004
            while time.perf_counter() < end:  # a step of work
                pass
            cp.due()
            if step % 4 == 3:  # saves the interval does not choose, so that there are some
                cp.write(payload, step=step)
        estimate = cp.pacer.estimate()
        history = cp.pacer.history
        report = {
            "interval": estimate.interval,
            "cost": estimate.cost,
            "measured": estimate.measured,
            "basis": estimate.basis,
            "mtbf": estimate.mtbf,
            "history": [history.run_s, history.failures, history.attempts],
            "no_history_interval": estimate.cost / cp.pacer.budget,
        }
        if ctx.attempt == 1:
            first_report.write_text(json.dumps(report))
            marker.write_text(str(os.getpid()))
            time.sleep(60)  # killed here
        return report

    killer = _kill_when_ready(marker)
    execution = taskpoint.run(paced, steps=40)
    killer.join(5)

    assert execution.status == "succeeded", execution.error
    assert [a.status for a in execution.nodes[0].attempts] == ["lost", "succeeded"]
    first, second = json.loads(first_report.read_text()), execution.result
    assert first["history"] == [0.0, 0, 0] and first["basis"] == "budget"
    assert first["measured"] and second["measured"]
    run_s, failures, attempts = second["history"]
    killed = execution.nodes[0].attempts[0]
    assert (failures, attempts) == (1, 1)
    assert abs(run_s - (killed.ended - killed.started)) < 1e-6  # the lost attempt's run
    assert second["basis"] == "daly" and second["mtbf"] is not None
    # The same save cost with no failure seen would wait far longer; and the first attempt,
    # which had seen none, did.
    assert second["interval"] < second["no_history_interval"]
    assert second["interval"] < first["interval"]


def test_earlier_executions_of_the_task_count_once_there_are_enough():
    @task(retries=3)
    def flaky(fail: int) -> list:
        ctx = current_context()
        history = ctx.checkpoint.pacer.history
        if ctx.attempt <= fail:
            raise RecoverableError("once more")
        return [history.failures, history.attempts, history.run_s > 0]

    assert taskpoint.run(flaky, fail=1).result == [1, 1, True]  # its own first attempt
    # The earlier execution holds 2 attempts: too few to say how often the task fails.
    assert MIN_PRIOR_ATTEMPTS == 3
    assert taskpoint.run(flaky, fail=0).result == [0, 0, False]
    # Now 3 attempts in earlier executions, one of them a failure.
    assert taskpoint.run(flaky, fail=0).result == [1, 3, True]


def test_a_preemption_is_not_a_failure():
    rows = [
        ("n", 1, "preempted", 0.0, 10.0, 1),
        ("n", 2, "lost", 10.5, 20.0, 1),
        ("n", 3, "recoverable", 21.0, 25.0, 1),
        ("n", 4, "succeeded", 27.0, 30.0, 1),
        ("m", 1, "lost", 0.0, 5.0, 1),
        ("m", 2, "succeeded", 600.0, 601.0, 2),  # resumed by another driver run: no restart gap
    ]
    history = summarize(rows)
    assert (history.failures, history.attempts) == (3, 6)
    assert history.run_s == 10 + 9.5 + 4 + 3 + 5 + 1
    assert history.restart_s == 1.5  # the median of 1 s (lost -> 3) and 2 s (recoverable -> 4)


def test_the_history_query_reads_indexes_only(tp_home):
    @task
    def noop() -> int:
        return 1

    taskpoint.run(noop)
    with closing(sqlite3.connect(tp_home / "taskpoint.db")) as db:
        plan = db.execute(f"EXPLAIN QUERY PLAN {PRIOR_QUERY}", ("x", 50, "noop", 500)).fetchall()
    details = [row[-1] for row in plan]
    # Every read of nodes and attempts goes through a primary key; executions through its
    # created index: the cost does not grow with the number of executions in the home.
    assert not [d for d in details if re.match(r"SCAN (nd|a)\b", d)], details
    assert not [d for d in details if d.startswith("SCAN executions") and "INDEX" not in d]
