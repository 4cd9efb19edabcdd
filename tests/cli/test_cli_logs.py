"""Each attempt's stdout and stderr are kept in the store beside its checkpoints, still shown
live, and `taskpoint logs` prints them by node and attempt, or follows a running execution."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_paths import WORKFLOWS

from support.fixtures import tp_env
from support.polling import wait_until

FLOW = WORKFLOWS / "printing_flow.py"
TASKPOINT = [sys.executable, "-m", "taskpoint"]


def taskpoint(home: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*TASKPOINT, *map(str, args)], env=tp_env(home), capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip


@pytest.mark.parametrize("isolated", [False, True], ids=["inline", "process"])
def test_each_attempt_has_its_own_log_and_the_terminal_still_sees_it(tmp_path, isolated):
    home = tmp_path / "home"
    flags = ["--isolated"] if isolated else []
    ran = taskpoint(home, "run", FLOW, "talking", *flags)
    assert ran.returncode == 0, ran.stderr
    # Shown live, as without taskpoint.
    assert "out line of attempt 1" in ran.stdout and "out line of attempt 2" in ran.stdout
    assert "err line of attempt 1" in ran.stderr
    execution_id = json.loads(taskpoint(home, "list", "--json").stdout)[0]["id"]

    second = taskpoint(home, "logs", execution_id, "--attempt", "2")
    assert second.returncode == 0, second.stderr
    assert "out line of attempt 2" in second.stdout and "err line of attempt 2" in second.stdout
    assert "attempt 1" not in second.stdout.split("<==", 1)[1]  # only attempt 2's lines

    both = taskpoint(home, "logs", execution_id).stdout
    first_block, second_block = both.split("attempt 2 (succeeded) <==")
    assert "attempt 1 (recoverable) <==" in first_block
    assert "out line of attempt 1" in first_block and "err line of attempt 1" in first_block
    assert "out line of attempt 2" in second_block
    # The progress lines of the taskpoint command itself are not part of any attempt's log.
    assert "started, from the start" not in both
    if isolated:
        assert "from a thread of the child" in first_block
    logs = sorted(p.name for p in home.glob("blobs/*/nodes/*/logs/*"))
    assert logs == ["attempt-0001.log", "attempt-0002.log"]


def test_unknown_attempt_and_node_are_usage_errors(tmp_path):
    home = tmp_path / "home"
    assert taskpoint(home, "run", FLOW, "talking").returncode == 0
    execution_id = json.loads(taskpoint(home, "list", "--json").stdout)[0]["id"]
    r = taskpoint(home, "logs", execution_id, "--attempt", "7")
    assert r.returncode == 2 and "no attempt 7" in r.stderr
    r = taskpoint(home, "logs", execution_id, "nonode")
    assert r.returncode == 2 and "no node 'nonode'" in r.stderr


def test_follow_prints_while_it_runs_and_ends_with_it(tmp_path):
    home = tmp_path / "home"
    release = tmp_path / "release"
    driver = subprocess.Popen(
        [*TASKPOINT, "run", str(FLOW), "chatting", "--release", str(release)],
        env=tp_env(home), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    follower = None
    try:
        from taskpoint.records import Records

        def execution_id():
            try:
                ids = [r.id for r in Records(home).list_executions()]
            except Exception:
                return None
            return ids[0] if ids else None

        eid = wait_until(execution_id, 120, "the execution's record", proc=driver)
        follower = subprocess.Popen(
            [*TASKPOINT, "logs", eid, "--follow"], env=tp_env(home),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        seen = []
        for line in follower.stdout:  # blocks on the follower's own output
            seen.append(line)
            if line.startswith("tick 5"):
                break
        release.touch()
        rest, err = follower.communicate(timeout=120)
        assert follower.returncode == 0, err
        assert "released" in rest, rest  # it kept following until the end
        assert driver.wait(120) == 0
    finally:
        release.touch()
        for proc in (driver, follower):
            if proc is not None and proc.poll() is None:
                proc.kill()


@pytest.mark.parametrize("isolated", [False, True], ids=["inline", "process"])
def test_with_json_stdout_is_only_the_document(tmp_path, isolated):
    """What a task prints goes to stderr while --json owns stdout (and to its log as ever)."""
    home = tmp_path / "home"
    flags = ["--isolated"] if isolated else []
    ran = taskpoint(home, "run", FLOW, "talking", "--json", *flags)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["status"] == "succeeded"  # nothing else on stdout
    assert "out line of attempt 2" in ran.stderr
    execution_id = json.loads(ran.stdout)["id"]
    assert "out line of attempt 2" in taskpoint(home, "logs", execution_id).stdout


@pytest.mark.parametrize("planted", ["fifo", "link"])
def test_a_planted_fifo_or_link_is_reported_not_followed(tmp_path, planted):
    home = tmp_path / "home"
    assert taskpoint(home, "run", FLOW, "talking").returncode == 0
    execution_id = json.loads(taskpoint(home, "list", "--json").stdout)[0]["id"]
    (log,) = home.glob("blobs/*/nodes/*/logs/attempt-0002.log")
    log.unlink()
    if planted == "fifo":
        os.mkfifo(log)  # a reader that opened it plainly would block forever
    else:
        secret = tmp_path / "secret.txt"
        secret.write_text("not a log")
        log.symlink_to(secret)
    shown = taskpoint(home, "logs", execution_id)
    assert shown.returncode == 0, shown.stderr
    assert "cannot read the log of talk_inline#1 attempt 2" in shown.stderr
    assert "not a log" not in shown.stdout
    assert "out line of attempt 1" in shown.stdout  # the other attempt is still shown
