"""Resume: succeeded nodes return stored outputs without running; the unfinished node starts
from its latest checkpoint; a succeeded execution runs nothing."""

from __future__ import annotations

import os
import time

import pytest

import taskpoint
from taskpoint import RecoverableError, TaskpointError, current_context, task, workflow
from taskpoint.errors import ExecutionNotFound
from taskpoint.records import Records


def test_resume_reuses_succeeded_nodes_and_resumes_the_failed_one(tmp_path):
    counter = tmp_path / "prepare_runs"
    broken = tmp_path / "broken"
    broken.write_text("yes")

    @task
    def prepare(n: int) -> list:
        with counter.open("a") as f:
            f.write("x")
        return list(range(n))

    @task(retries=1)
    def consume(items: list) -> int:
        cp = current_context().checkpoint
        done = int(cp.read() or b"0")
        for i in range(done, len(items)):
            if i == 2 and broken.exists():
                raise RecoverableError("resource missing")
            cp.write(str(i + 1).encode())
        return done * 100 + len(items)

    @workflow
    def flow(n: int) -> int:
        return consume(items=prepare(n=n))

    first = taskpoint.run(flow, n=4)
    assert first.status == "failed"
    assert [a.status for a in first.nodes[1].attempts] == ["recoverable", "recoverable"]

    broken.unlink()
    resumed = taskpoint.resume(first.id[:6])  # a unique id prefix is enough
    assert resumed.id == first.id
    assert resumed.status == "succeeded"
    assert resumed.result == 204  # started from the checkpoint after item 2
    assert counter.read_text() == "x"  # prepare did not run again
    prepare_node, consume_node = resumed.nodes
    assert len(prepare_node.attempts) == 1
    assert [a.n for a in consume_node.attempts] == [1, 2, 3]

    again = taskpoint.resume(first.id)  # succeeded: nothing runs
    assert again.status == "succeeded" and again.result == 204
    assert counter.read_text() == "x"
    assert len(again.nodes[1].attempts) == 3


def test_resume_unknown_execution():
    with pytest.raises(ExecutionNotFound, match="no execution 'nope'"):
        taskpoint.resume("nope")


def test_resume_refuses_a_running_execution(tp_home):
    seen = {}

    @task
    def peek() -> None:
        seen["id"] = current_context().execution_id
        with pytest.raises(TaskpointError, match="still running"):
            taskpoint.resume(seen["id"])

    assert taskpoint.run(peek).status == "succeeded"


def test_records_show_interrupted_when_the_driver_is_gone(tp_home):
    @task
    def quick() -> int:
        return 1

    execution = taskpoint.run(quick)
    records = Records(tp_home)
    db = records.db
    with db.transaction() as c:  # pretend its driver died while running
        c.execute(
            "UPDATE executions SET status='running', driver_pid=?, driver_token=NULL WHERE id=?",
            (dead_pid(), execution.id),
        )
    assert records.get_execution(execution.id).effective_status == "interrupted"
    with db.transaction() as c:
        c.execute("UPDATE executions SET driver_pid=? WHERE id=?", (os.getpid(), execution.id))
    assert records.get_execution(execution.id).effective_status == "running"


def dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_database_is_wal_with_busy_timeout(tp_home):
    @task
    def quick() -> int:
        return 1

    taskpoint.run(quick)
    conn = Records(tp_home).db.conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
    assert (tp_home / "taskpoint.db").exists()


def test_attempt_records_have_times_pid_and_errors():
    @task(retries=1)
    def once() -> int:
        if current_context().attempt == 1:
            raise RecoverableError("first")
        return 2

    execution = taskpoint.run(once)
    first, second = execution.nodes[0].attempts
    assert first.error == "RecoverableError: first"
    assert "RecoverableError" in first.traceback
    assert first.pid == second.pid == os.getpid()
    assert first.started <= first.ended <= second.started <= second.ended
    assert execution.started <= execution.ended


def test_running_attempt_is_recorded_within_the_start_delay(tp_home):
    from taskpoint.records.db import START_RECORD_DELAY

    seen = []

    @task
    def long_running() -> None:
        ctx = current_context()
        records = Records(tp_home)
        seen.append([a.status for a in records.attempts(ctx.execution_id)])  # not yet written
        time.sleep(START_RECORD_DELAY * 4)
        seen.append([a.status for a in records.attempts(ctx.execution_id)])

    execution = taskpoint.run(long_running)
    assert seen == [[], ["running"]]
    assert [a.status for a in execution.nodes[0].attempts] == ["succeeded"]
