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
from engine_procs import run_cli, start_cli

from support.polling import wait_for_file, wait_gone, wait_until

FLOW = """
import os
import time
from pathlib import Path

from taskpoint import current_context, task, workflow

HERE = Path(__file__).parent


@task
def prepare(total: int) -> int:
    with (HERE / "prepare_runs").open("a") as f:  # side-effect counter
        f.write("x")
    return total


@task(isolation=ISOLATION)
def count(total: int) -> list:
    ctx = current_context()
    cp = ctx.checkpoint
    prev = cp.read()
    start = int(prev) if prev else 0
    for i in range(start, total):
        if i == 3 and start == 0:
            (HERE / "ready").write_text(str(os.getpid()))
            deadline = time.monotonic() + 60
            while not ctx.preempted and time.monotonic() < deadline:
                time.sleep(0.01)  # stopped here (SIGKILL, SIGINT) or preempted (SIGTERM)
        cp.write(str(i + 1).encode(), step=i + 1)
    return [start, ctx.attempt]


@workflow
def flow(total: int) -> list:
    return count(total=prepare(total=total))
"""


@pytest.fixture
def flow(script):
    def make(isolation: str = "inline") -> Path:
        return script(FLOW.replace("ISOLATION", repr(isolation)))

    return make


def show(home: Path, execution_id: str) -> dict:
    shown = run_cli("show", execution_id, "--json", home=home)
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


def start_and_signal(
    flow_file: Path, home: Path, sig: int, *extra: str, running: bool = False
) -> tuple[int, str, str]:
    """Run `flow`, wait until `count` is at step 3 (and, with ``running``, until its attempt is
    recorded as running), then send ``sig`` to the driver."""
    proc = start_cli(*extra, "run", str(flow_file), "flow", "--total", "6", "--json", home=home)
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


def resume_and_check(home: Path, execution_id: str, start: int, flow_file: Path) -> dict:
    resumed = run_cli("resume", execution_id, "--json", home=home)
    assert resumed.returncode == 0, resumed.stderr
    data = json.loads(resumed.stdout)
    assert data["status"] == "succeeded"
    assert data["result"] == [start, 2]
    assert (flow_file.parent / "prepare_runs").read_text() == "x"  # not run again
    return data


def test_sigterm_preempts_inline_driver_exit_143_then_resume(flow, tp_home):
    flow_file = flow()
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


def test_sigint_aborts_resumable(flow, tp_home):
    flow_file = flow()
    code, out, err = start_and_signal(flow_file, tp_home, signal.SIGINT)
    assert code == 130, err
    data = json.loads(out)
    assert data["status"] == "aborted"
    assert data["nodes"][1]["attempts"][0]["status"] == "aborted"
    resume_and_check(tp_home, data["id"], 3, flow_file)


@pytest.mark.parametrize("isolation", ["inline", "process"])
def test_resume_after_driver_sigkill(flow, tp_home, isolation):
    flow_file = flow(isolation)
    code, out, _ = start_and_signal(flow_file, tp_home, signal.SIGKILL, running=True)
    assert code == -signal.SIGKILL and out == ""
    listed = json.loads(run_cli("list", "--json", home=tp_home).stdout)
    assert [e["status"] for e in listed] == ["interrupted"]
    execution_id = listed[0]["id"]
    before = show(tp_home, execution_id)
    assert before["nodes"][1]["attempts"][0]["status"] == "interrupted"
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


def test_sigterm_to_process_isolated_driver_preempts_the_child(flow, tp_home):
    flow_file = flow("process")
    code, out, err = start_and_signal(flow_file, tp_home, signal.SIGTERM)
    assert code == 143, err
    data = json.loads(out)
    assert data["status"] == "preempted"
    attempt = data["nodes"][1]["attempts"][0]
    assert attempt["status"] == "preempted"
    resume_and_check(tp_home, data["id"], 4, flow_file)
