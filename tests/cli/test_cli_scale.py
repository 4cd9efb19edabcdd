"""Records that scale (issue 20, "How the cost grows"): a history written in one batch
(`taskpoint.records.bulk`), ``list --status`` selecting in SQL through the ``executions_status``
index instead of reading every execution, an older database gaining that index, and ``show`` of
an id prefix found through the primary key's index."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest

from taskpoint.records import AttemptRecord, ExecutionRecord, NodeRecord, Records
from taskpoint.records.bulk import insert_records
from taskpoint.records.liveness import hostname


def _execution(eid: str, created: float, status: str = "succeeded", **fields) -> ExecutionRecord:
    values = dict(
        id=eid,
        name="flow",
        kind="workflow",
        module=None,
        file=None,
        qualname="flow",
        inputs='{"x": 1}',
        inputs_ref=None,
        storage="unused://",
        status=status,
        result_ref=None,
        error_type=None,
        error_message=None,
        traceback=None,
        failed_node=None,
        created=created,
        started=created,
        ended=None if status == "running" else created + 1,
        driver_pid=None,
        driver_host=None,
        driver_token=None,
    )
    values.update(fields)
    return ExecutionRecord(**values)


def _node(eid: str, created: float) -> NodeRecord:
    return NodeRecord(eid, "inc#1", "inc", "succeeded", 1, 1, None, None, None, None, created,
                      created + 0.5, "2")  # fmt: skip


def _attempt(eid: str, created: float) -> AttemptRecord:
    return AttemptRecord(eid, "inc#1", 1, "succeeded", None, None, None, created, created + 0.5,
                         99, None, None, 1)  # fmt: skip


def _history(records: Records, count: int, failed_every: int = 0, start: float = 1e9) -> None:
    execs = [
        _execution(
            f"{i:012x}",
            start + i,
            "failed" if failed_every and i % failed_every == 0 else "succeeded",
        )
        for i in range(count)
    ]
    insert_records(
        records,
        execs,
        [_node(e.id, e.created) for e in execs],
        [_attempt(e.id, e.created) for e in execs],
    )


def _ids(cli, *args: str) -> list[str]:
    r = cli("list", "--json", *args)
    assert r.code == 0, r.err
    return [row["id"] for row in json.loads(r.out)]


def test_a_history_is_written_in_one_batch_and_reads_like_the_engines(cli, tp_home):
    records = Records(tp_home)
    _history(records, 30)
    assert _ids(cli, "--limit", "3") == [f"{i:012x}" for i in (29, 28, 27)]
    shown = cli("show", f"{7:012x}")
    assert shown.code == 0 and "inc#1" in shown.out and "succeeded" in shown.out
    assert [a.n for a in records.attempts(f"{7:012x}")] == [1]

    # One transaction: a batch with a duplicate key writes nothing of itself.
    with pytest.raises(sqlite3.IntegrityError):
        insert_records(
            records,
            [_execution("new-one", 2e9), _execution(f"{3:012x}", 2e9)],
        )
    assert "new-one" not in _ids(cli, "--limit", "100")


def test_list_status_selects_in_sql_and_stops_at_the_limit(cli, tp_home):
    records = Records(tp_home)
    _history(records, 2000, failed_every=500)  # failed: 0, 500, 1000, 1500
    assert _ids(cli, "--status", "failed", "--limit", "2") == [f"{1500:012x}", f"{1000:012x}"]
    assert len(_ids(cli, "--status", "failed,succeeded", "--limit", "50")) == 50
    assert "no preempted executions" in cli("list", "--status", "preempted").out

    sql = "SELECT id FROM executions WHERE status IN (?) ORDER BY created DESC, rowid DESC LIMIT 2"
    plan = " ".join(str(row) for row in records.db.query(f"EXPLAIN QUERY PLAN {sql}", ("failed",)))
    assert "executions_status" in plan, plan
    counts = "SELECT status, count(*) FROM executions WHERE status != ? GROUP BY status"
    plan = " ".join(str(row) for row in records.db.query(f"EXPLAIN QUERY PLAN {counts}", ("x",)))
    assert "COVERING INDEX executions_status" in plan, plan


def test_running_and_interrupted_are_told_apart_when_filtering(cli, tp_home):
    records = Records(tp_home)
    _history(records, 20)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    insert_records(
        records,
        [
            _execution("a11ve0000000", 3e9, "running", driver_pid=None, driver_host="elsewhere"),
            _execution(
                "dead00000000",
                3e9 + 1,
                "running",
                driver_pid=dead.pid,
                driver_host=hostname(),
                driver_token="gone",
            ),
        ],
    )
    assert _ids(cli, "--status", "interrupted") == ["dead00000000"]
    assert _ids(cli, "--status", "running") == ["a11ve0000000"]
    assert _ids(cli, "--status", "running,interrupted", "--limit", "1") == ["dead00000000"]


def test_a_schema_4_database_gains_the_status_index(tp_home):
    from taskpoint.records import db as db_module
    from taskpoint.records import schema

    records = Records(tp_home)
    _history(records, 5)
    with records.db.transaction() as c:
        c.execute("DROP INDEX executions_status")
    records.db.conn.execute("PRAGMA user_version=4")
    db_module._connections.clear()  # the next Records opens (and migrates) anew
    reopened = Records(tp_home)
    names = {row[0] for row in reopened.db.query("SELECT name FROM sqlite_master")}
    assert "executions_status" in names
    assert reopened.db.query("PRAGMA user_version") == [(schema.SCHEMA_VERSION,)]
    assert len(reopened.list_executions(statuses={"succeeded"})) == 5


def test_show_finds_an_id_prefix_through_the_index(cli, tp_home):
    records = Records(tp_home)
    _history(records, 3000)
    insert_records(records, [_execution("abcdef012345", 5e9)])
    assert "abcdef012345" in cli("show", "abcdef").out  # a unique prefix
    assert "abcdef012345" in cli("show", "ABCDEF").out  # ids match whatever the case
    ambiguous = cli("show", "000000000a")
    assert ambiguous.code != 0 and "ambiguous" in ambiguous.err
    missing = cli("show", "zz")
    assert missing.code != 0 and "no execution 'zz'" in missing.err
