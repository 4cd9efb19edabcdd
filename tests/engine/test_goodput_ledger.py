"""The goodput ledger against runs with known injected failures: work lost since the last
commit, restore time, time to first step, save stalls and the ETTR built on them (definitions
in engine/goodput.py), as recorded, shown by ``show --json`` and read from older records."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time

import pytest

import taskpoint
from support.fixtures import run_cli
from taskpoint import RecoverableError, current_context, task
from taskpoint.engine.goodput import execution_totals, node_ledger
from taskpoint.records import schema

NAP = 0.5  # seconds of work the killed attempt does after its last commit


@task(isolation="process", system_retries=2)
def killed_after_commit(steps: int, nap: float) -> int:
    """Commits steps 1..3, works ``nap`` seconds more, SIGKILLs itself (attempt 1 only); the
    next attempt restores and finishes."""
    ctx = current_context()
    cp = ctx.checkpoint
    prev = cp.read()
    start = int(prev) if prev else 0
    for i in range(start, steps):
        time.sleep(0.02)  # one step of work
        cp.write(str(i + 1).encode(), step=i + 1)
        if ctx.attempt == 1 and i + 1 == 3:
            time.sleep(nap)  # work after the last commit: lost with the process
            os.kill(os.getpid(), signal.SIGKILL)
    return start


def test_a_sigkilled_attempt_lost_the_work_since_its_last_commit(tp_home):
    execution = taskpoint.run(killed_after_commit, steps=6, nap=NAP)
    assert execution.status == "succeeded", execution.error
    assert execution.result == 3
    node = execution.nodes[0]
    now = time.time()
    (killed, resumed), totals = node_ledger(node, now)
    assert (killed.status, resumed.status) == ("lost", "succeeded")

    # The killed attempt reported nothing: its work lost comes from its record (its end minus
    # its last commit), and it is at least the time it worked after that commit.
    assert not killed.measured and killed.start_s is None and killed.restore_s is None
    assert killed.work_lost_s is not None and NAP <= killed.work_lost_s < NAP + 10
    assert node.attempts[0].last_commit is not None

    # The next attempt measured itself: it loaded the killed attempt's last version.
    assert resumed.measured and resumed.work_lost_s == 0.0
    assert (resumed.loaded_version, resumed.loaded_step) == ("0001-000003", 3)
    assert resumed.restore_s is not None and resumed.restore_s > 0
    assert resumed.start_s is not None and resumed.start_s >= 0
    assert resumed.first_step_s is not None
    assert resumed.start_s + resumed.restore_s <= resumed.first_step_s + 1e-6
    assert resumed.first_step_s < resumed.time_s
    assert resumed.stall_s is not None and resumed.stall_s > 0  # three sync writes

    # ETTR: productive time over the node's time, below 1 by at least the lost work.
    assert totals.failures == {"lost": 1} and totals.attempts == 2
    assert totals.time_s >= killed.time_s + resumed.time_s
    assert totals.wait_s >= 0
    ettr = totals.ettr
    assert ettr is not None and 0 < ettr < (totals.time_s - NAP) / totals.time_s
    assert totals.productive_s == pytest.approx(killed.productive_s + resumed.productive_s)
    assert execution_totals(execution, now).ettr == pytest.approx(ettr)

    # `show --json` carries the same figures, per attempt and per node and execution.
    shown = run_cli("show", execution.id, "--json", home=tp_home)
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    attempts = doc["nodes"][0]["attempts"]
    assert attempts[0]["ledger"]["measured"] is False
    assert attempts[0]["ledger"]["work_lost_s"] >= NAP
    assert attempts[1]["ledger"]["loaded_version"] == "0001-000003"
    assert attempts[1]["ledger"]["restore_s"] > 0
    goodput = doc["nodes"][0]["goodput"]
    assert goodput["failures"] == {"lost": 1} and 0 < goodput["ettr"] < 1
    assert doc["goodput"]["ettr"] == goodput["ettr"]
    text = run_cli("show", execution.id, home=tp_home)
    assert "goodput" in text.stdout and "ETTR" in text.stdout


def test_a_recoverable_failure_measures_its_own_work_lost():
    @task(retries=1)
    def flaky(nap: float) -> int:
        ctx = current_context()
        cp = ctx.checkpoint
        prev = cp.read()
        if ctx.attempt == 1:
            cp.write(b"1", step=1)
            cp.write(b"2", step=2)
            time.sleep(nap)  # work after the last commit, then the failure
            raise RecoverableError("fails 'nap' seconds after step 2")
        return int(prev or 0)

    execution = taskpoint.run(flaky, nap=0.3)
    assert execution.status == "succeeded", execution.error
    (failed, ok), totals = node_ledger(execution.nodes[0], time.time())
    assert failed.measured and failed.status == "recoverable"
    assert 0.3 <= failed.work_lost_s < 0.3 + 5
    assert failed.loaded_version is None and failed.restore_s is not None
    assert ok.work_lost_s == 0.0 and ok.loaded_version == "0001-000002"
    assert totals.failures == {"recoverable": 1}
    assert totals.work_lost_s == pytest.approx(failed.work_lost_s)


def test_a_failure_free_run_is_almost_all_productive():
    @task
    def smooth(steps: int) -> int:
        cp = current_context().checkpoint
        cp.read()
        for i in range(steps):
            time.sleep(0.1)  # one step of work
            cp.write(str(i + 1).encode(), step=i + 1, blocking=False)
        return steps

    execution = taskpoint.run(smooth, steps=10)
    assert execution.status == "succeeded", execution.error
    (only,), totals = node_ledger(execution.nodes[0], time.time())
    assert only.measured and only.work_lost_s == 0.0
    assert totals.failures == {} and totals.wait_s == pytest.approx(0.0, abs=1e-6)
    # Productive = time - set-up - save stalls, and that is nearly all of it.
    assert only.productive_s == pytest.approx(only.time_s - only.setup_s - only.stall_s)
    assert totals.ettr is not None and 0.9 < totals.ettr <= 1.0


def test_a_task_without_checkpoints_is_productive_from_its_start():
    @task
    def plain() -> int:
        time.sleep(0.2)
        return 1

    execution = taskpoint.run(plain)
    (only,), totals = node_ledger(execution.nodes[0], time.time())
    assert only.measured and only.loaded_version is None and only.first_step_s is None
    assert only.restore_s == 0.0 and only.stall_s == 0.0
    assert totals.ettr is not None and totals.ettr > 0.8


def test_records_from_schema_3_are_migrated_and_read_as_unmeasured(tp_home):
    execution = taskpoint.run(killed_after_commit, steps=4, nap=0.1)
    assert execution.status == "succeeded", execution.error
    db_path = tp_home / "taskpoint.db"
    with sqlite3.connect(db_path) as db:  # what taskpoint wrote at schema 3
        columns = [row[1] for row in db.execute("PRAGMA table_info(attempts)")]
        kept = ", ".join(c for c in columns if schema.ADDED_IN.get(c, 0) <= 3)
        db.execute(f"CREATE TABLE old_attempts AS SELECT {kept} FROM attempts")
        db.execute("DROP TABLE attempts")
        db.execute("ALTER TABLE old_attempts RENAME TO attempts")
        db.execute("PRAGMA user_version=3")
    db.close()

    from taskpoint.ui.readonly import ReadOnlyRecords

    records = ReadOnlyRecords(db_path)  # the web view reads it as it is
    try:
        rows = records.attempts(execution.id)
    finally:
        records.db.close()
    assert [r.start_s for r in rows] == [None, None]

    shown = run_cli("show", execution.id, "--json", home=tp_home)  # the CLI migrates
    assert shown.returncode == 0, shown.stderr
    node = json.loads(shown.stdout)["nodes"][0]
    assert [a["ledger"]["measured"] for a in node["attempts"]] == [False, False]
    assert node["attempts"][0]["ledger"]["work_lost_s"] >= 0.1  # from the record alone
    with sqlite3.connect(db_path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (schema.SCHEMA_VERSION,)
    db.close()
