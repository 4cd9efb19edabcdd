"""`taskpoint stop` from another terminal: a real driver is stopped gracefully (a preemption:
the attempt commits, the execution is resumable) or at once with --now."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cli_paths import WORKFLOWS

from support.fixtures import tp_env
from support.polling import wait_for_file
from taskpoint.records import Records

FLOW = WORKFLOWS / "stoppable_flow.py"
TASKPOINT = [sys.executable, "-m", "taskpoint"]

pytestmark = pytest.mark.slow  # real drivers, signalled


def start_driver(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, Path, Path]:
    started, release = tmp_path / "started", tmp_path / "release"
    args = ["run", FLOW, "counting", "--started", started, "--release", release, *extra]
    driver = subprocess.Popen(
        [*TASKPOINT, *map(str, args)],
        env=tp_env(tmp_path / "home"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_file(started, timeout=120, proc=driver)
    return driver, started, release


def taskpoint(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*TASKPOINT, *args],
        env=tp_env(tmp_path / "home"),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("isolated", [False, True], ids=["inline", "process"])
def test_graceful_stop_commits_and_resume_continues(tmp_path, isolated):
    driver, _, release = start_driver(tmp_path, *(["--isolated"] if isolated else []))
    try:
        (rec,) = Records(tmp_path / "home").list_executions()
        stopped = taskpoint(tmp_path, "stop", rec.id)
        assert stopped.returncode == 0, stopped.stderr
        assert f"execution {rec.id} preempted" in stopped.stdout
        assert driver.wait(120) == 143  # the driver's own exit status: preempted
    finally:
        if driver.poll() is None:
            driver.kill()
    shown = json.loads(taskpoint(tmp_path, "show", rec.id, "--json").stdout)
    (node,) = shown["nodes"]
    (attempt,) = node["attempts"]
    assert shown["status"] == "preempted" and attempt["status"] == "preempted"
    committed = attempt["checkpoint_at_end"]
    assert committed, "the stopped attempt committed its step"
    release.touch()
    resumed = taskpoint(tmp_path, "resume", rec.id, "--json")
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(resumed.stdout)["result"]
    assert result.startswith("from ") and not result.startswith("from 0 "), result


def test_stop_now_aborts(tmp_path):
    driver, _, release = start_driver(tmp_path)
    try:
        (rec,) = Records(tmp_path / "home").list_executions()
        stopped = taskpoint(tmp_path, "stop", "--now", rec.id)
        assert stopped.returncode == 0, stopped.stderr
        assert f"execution {rec.id} aborted" in stopped.stdout
        assert driver.wait(120) == 130
    finally:
        release.touch()
        if driver.poll() is None:
            driver.kill()


def test_stop_refuses_what_is_not_running(tmp_path):
    driver, _, release = start_driver(tmp_path)
    release.touch()
    assert driver.wait(120) == 0
    (rec,) = Records(tmp_path / "home").list_executions()
    refused = taskpoint(tmp_path, "stop", rec.id)
    assert refused.returncode == 1 and "is not running (it is succeeded)" in refused.stderr
    unknown = taskpoint(tmp_path, "stop", "feedbeef")
    assert unknown.returncode == 2 and "feedbeef" in unknown.stderr
