"""Real drivers (`taskpoint run` processes) stopped with real signals at real points, then
resumed: SIGTERM -> preempted (exit 143), SIGINT -> aborted, SIGKILL -> interrupted."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from support.fixtures import run_cli, start_cli
from support.polling import wait_for_file, wait_gone, wait_until


@pytest.fixture
def flow_file(workflow_copy) -> Path:
    """The test's own copy of workflows/signal_flow.py (its markers are written next to it)."""
    return workflow_copy("signal_flow.py", as_name="flow.py")


def show(home: Path, execution_id: str) -> dict:
    shown = run_cli("show", execution_id, "--json", home=home)
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


def start_and_signal(
    flow_file: Path,
    home: Path,
    sig: int,
    *extra: str,
    isolation: str = "inline",
    running: bool = False,
) -> tuple[int, str, str]:
    """Run `flow` (its counting task ``isolation``), wait until the task is at step 3 (and, with
    ``running``, until its attempt is recorded as running), then send ``sig`` to the driver."""
    args = ["run", str(flow_file), "flow", "--total", "6", "--isolation", isolation, "--json"]
    proc = start_cli(*extra, *args, home=home)
    wait_for_file(flow_file.parent / "ready", 30, proc=proc)
    if running:
        wait_for_running_attempt(home)
    os.kill(proc.pid, sig)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


def wait_for_running_attempt(home: Path, timeout: float = 30) -> None:
    def running() -> bool:
        with closing(sqlite3.connect(home / "taskpoint.db")) as db:
            return bool(db.execute("SELECT 1 FROM attempts WHERE status='running'").fetchall())

    wait_until(running, timeout, "an attempt recorded as running")


def assert_isolation(execution: dict, isolation: str) -> None:
    """The counting task's first attempt ran in the driver (inline) or in a child (process):
    ``prepare`` runs inline, so its attempt's pid is the driver's."""
    driver_pid = execution["nodes"][0]["attempts"][0]["pid"]
    counted_in = execution["nodes"][1]["attempts"][0]["pid"]
    assert counted_in is not None and (counted_in == driver_pid) == (isolation == "inline")


def resume_and_check(home: Path, execution_id: str, start: int, flow_file: Path) -> dict:
    resumed = run_cli("resume", execution_id, "--json", home=home)
    assert resumed.returncode == 0, resumed.stderr
    data = json.loads(resumed.stdout)
    assert data["status"] == "succeeded"
    assert data["result"] == [start, 2]
    assert (flow_file.parent / "prepare_runs").read_text() == "x"  # not run again
    return data


def test_sigterm_preempts_inline_driver_exit_143_then_resume(flow_file, tp_home):
    code, out, err = start_and_signal(flow_file, tp_home, signal.SIGTERM, "--grace", "10")
    assert code == 143, err
    data = json.loads(out)
    assert data["status"] == "preempted"
    node = data["nodes"][1]
    assert node["key"] == "count#1" and node["status"] == "preempted"
    assert node["attempts"][0]["status"] == "preempted"
    assert node["checkpoints"][-1]["step"] == 4  # the write after SIGTERM committed
    assert node["attempts"][0]["checkpoint_at_end"] == node["checkpoints"][-1]["id"]

    data = resume_and_check(tp_home, data["id"], 4, flow_file)
    attempts = data["nodes"][1]["attempts"]
    assert attempts[1]["checkpoint_at_start"] == attempts[0]["checkpoint_at_end"]


def test_sigint_aborts_resumable(flow_file, tp_home):
    code, out, err = start_and_signal(flow_file, tp_home, signal.SIGINT)
    assert code == 130, err
    data = json.loads(out)
    assert data["status"] == "aborted"
    assert data["nodes"][1]["attempts"][0]["status"] == "aborted"
    resume_and_check(tp_home, data["id"], 3, flow_file)


@pytest.mark.parametrize("isolation", ["inline", "process"])
def test_resume_after_driver_sigkill(flow_file, tp_home, isolation):
    code, out, _ = start_and_signal(
        flow_file, tp_home, signal.SIGKILL, isolation=isolation, running=True
    )
    assert code == -signal.SIGKILL and out == ""
    listed = json.loads(run_cli("list", "--json", home=tp_home).stdout)
    assert [e["status"] for e in listed] == ["interrupted"]
    execution_id = listed[0]["id"]
    before = show(tp_home, execution_id)
    assert before["nodes"][1]["attempts"][0]["status"] == "interrupted"
    assert_isolation(before, isolation)
    start = 3
    if isolation == "process":
        # The orphaned attempt got SIGTERM when its driver died: it committed the write it was
        # at (step 4) and exited, so the resumed attempt starts there.
        wait_gone([int((flow_file.parent / "ready").read_text())], 30)
        start = 4

    data = resume_and_check(tp_home, execution_id, start, flow_file)
    first, second = data["nodes"][1]["attempts"]
    assert first["status"] in ("lost", "preempted")
    assert second["checkpoint_at_start"] is not None


def test_sigterm_to_process_isolated_driver_preempts_the_child(flow_file, tp_home):
    code, out, err = start_and_signal(flow_file, tp_home, signal.SIGTERM, isolation="process")
    assert code == 143, err
    data = json.loads(out)
    assert data["status"] == "preempted"
    attempt = data["nodes"][1]["attempts"][0]
    assert attempt["status"] == "preempted"
    assert_isolation(data, "process")
    resume_and_check(tp_home, data["id"], 4, flow_file)
