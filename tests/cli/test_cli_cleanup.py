"""`taskpoint delete` and `taskpoint gc`: records, inputs, outputs and checkpoints go together,
what was freed is printed, a running execution is never touched."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cli_paths import WORKFLOWS

from support.fixtures import tp_env
from support.polling import wait_for_file
from taskpoint.engine.cleanup import parse_age, select_for_gc
from taskpoint.records import Records

FLOW = WORKFLOWS / "cleanup_flow.py"


def run_flow(cli, name: str, *args: str) -> str:
    r = cli("run", FLOW, name, "--json", *args)
    return json.loads(r.out)["id"]


def blob_dir(home: Path, execution_id: str) -> Path:
    return home / "blobs" / execution_id


def listed(cli) -> list[str]:
    r = cli("list", "--json")
    assert r.code == 0, r.err
    return [row["id"] for row in json.loads(r.out)]


def test_delete_removes_records_and_every_blob(cli, tp_home):
    keep = run_flow(cli, "filled")
    gone = run_flow(cli, "filled", "--megabytes", "2")
    assert blob_dir(tp_home, gone).is_dir()
    r = cli("delete", gone)
    assert r.code == 0, r.err
    assert f"deleted {gone}" in r.out
    assert "freed 2.1 MiB" in r.out, r.out  # the latest 2 MiB version (success pruned), output
    assert not blob_dir(tp_home, gone).exists()
    assert listed(cli) == [keep]
    db = Records(tp_home).db
    for table, column in (("nodes", "execution_id"), ("attempts", "execution_id")):
        assert db.query(f"SELECT count(*) FROM {table} WHERE {column}=?", (gone,)) == [(0,)]
    assert blob_dir(tp_home, keep).is_dir()  # the other execution is untouched
    assert cli("show", gone).code == 2


def test_delete_of_an_unknown_id_deletes_nothing(cli, tp_home):
    first = run_flow(cli, "filled")
    r = cli("delete", first, "nope00")
    assert r.code == 2 and "nope00" in r.err
    assert listed(cli) == [first] and blob_dir(tp_home, first).is_dir()


def test_dry_run_only_says(cli, tp_home):
    first = run_flow(cli, "filled")
    r = cli("delete", "--dry-run", first)
    assert r.code == 0 and f"would delete {first}" in r.out and "would free" in r.out
    assert listed(cli) == [first] and blob_dir(tp_home, first).is_dir()


def test_gc_by_status_and_keep_last(cli, tp_home):
    ok = [run_flow(cli, "filled") for _ in range(3)]
    bad = run_flow(cli, "failing")
    r = cli("gc", "--status", "failed")
    assert r.code == 0, r.err
    assert f"deleted {bad}" in r.out and not blob_dir(tp_home, bad).exists()
    r = cli("gc", "--status", "succeeded", "--keep-last", "1")
    assert r.code == 0, r.err
    assert listed(cli) == [ok[-1]]
    for gone in ok[:-1]:
        assert not blob_dir(tp_home, gone).exists()


def test_gc_needs_a_filter_and_a_valid_age(cli, tp_home):
    run_flow(cli, "filled")
    r = cli("gc")
    assert r.code == 2 and "--older-than" in r.err and "--keep-last" in r.err
    r = cli("gc", "--older-than", "soon")
    assert r.code == 2 and "--older-than" in r.err and "30d" in r.err
    r = cli("gc", "--older-than", "1h")
    assert r.code == 0 and "nothing to collect" in r.out


def test_selection_rules():
    from taskpoint.records import ExecutionRecord

    def rec(i: str, status: str, created: float, ended: float | None) -> ExecutionRecord:
        return ExecutionRecord(
            i, "f", "workflow", None, None, "f", None, None, "/s", status, None, None, None,
            None, None, created, created, ended, None, None, None,
        )  # fmt: skip

    now = 1_000_000.0
    execs = [
        rec("old_ok", "succeeded", now - 90 * 86400, now - 89 * 86400),
        rec("old_failed", "failed", now - 40 * 86400, now - 40 * 86400),
        rec("new_ok", "succeeded", now - 3600, now - 3000),
    ]
    pick = select_for_gc(execs, older_than=parse_age("30d"), now=now)
    assert [r.id for r in pick] == ["old_failed", "old_ok"]
    pick = select_for_gc(execs, statuses={"succeeded"}, keep_last=1, now=now)
    assert [r.id for r in pick] == ["old_ok"]
    assert parse_age("2w") == 14 * 86400 and parse_age("90m") == 5400
    with pytest.raises(ValueError):
        parse_age("-1d")


def test_a_running_execution_is_never_deleted(tmp_path):
    """A real driver, alive in another process: delete refuses, gc skips it."""
    home = tmp_path / "home"
    env = tp_env(home)
    release, started = tmp_path / "release", tmp_path / "started"
    cmd = [sys.executable, "-m", "taskpoint"]
    driver = subprocess.Popen(
        [*cmd, "run", FLOW, "hold", "--started", started, "--release", release],
        env=env,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_file(started, timeout=120, proc=driver)
        (running,) = [r.id for r in Records(home).list_executions()]
        refused = subprocess.run([*cmd, "delete", running], env=env, capture_output=True, text=True)
        assert refused.returncode == 2 and "is running" in refused.stderr
        collected = subprocess.run(
            [*cmd, "gc", "--older-than", "0s"], env=env, capture_output=True, text=True
        )
        assert collected.returncode == 0 and "nothing to collect" in collected.stdout
        assert [r.id for r in Records(home).list_executions()] == [running]
    finally:
        release.touch()
        try:
            driver.wait(60)
        finally:
            if driver.poll() is None:
                driver.send_signal(signal.SIGKILL)
