"""isolation="process": attempts in a child process; a killed child is a lost attempt retried
from the latest checkpoint; SIGTERM to the child is a preemption retried at once."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

import taskpoint
from support.fixtures import tp_env
from support.polling import wait_for_file, wait_gone
from taskpoint import RecoverableError, current_context, task

WORKFLOWS = Path(__file__).parent / "workflows"


def kill_when_ready(marker: Path, sig: int, times: int = 1) -> threading.Thread:
    """Kill the pid written into ``marker`` (by the attempt's child) with ``sig``, ``times``
    times over successive attempts."""

    def killer() -> None:
        for _ in range(times):
            try:
                pid = int(wait_for_file(marker, 30).strip())
            except AssertionError:
                return  # no attempt announced itself: the test's asserts tell
            marker.unlink()
            os.kill(pid, sig)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    return thread


def counting_task(marker: Path, stop_after: int):
    """Checkpoints 0..9; the first ``stop_after`` attempts announce themselves after their
    third write and then sleep, waiting to be killed."""

    @task(isolation="process", system_retries=3)
    def count(total: int) -> list:
        ctx = current_context()
        cp = ctx.checkpoint
        prev = cp.read()
        start = int(prev) if prev else 0
        for i in range(start, total):
            cp.write(str(i + 1).encode(), step=i + 1)
            if ctx.attempt <= stop_after and i == start + 2:
                marker.write_text(str(os.getpid()))
                time.sleep(60)
        return [start, ctx.attempt, os.getpid()]

    return count


def test_process_attempt_runs_in_a_child_and_returns_its_output():
    @task(isolation="process")
    def where(x: int) -> int:
        return os.getpid() * 0 + x * 2

    execution = taskpoint.run(where, x=21)
    assert execution.result == 42
    attempt = execution.nodes[0].attempts[0]
    assert attempt.pid != os.getpid()


def test_sigkill_of_the_child_is_lost_and_retried_from_the_checkpoint(tmp_path):
    marker = tmp_path / "pid"
    count = counting_task(marker, stop_after=1)
    killer = kill_when_ready(marker, signal.SIGKILL)
    execution = taskpoint.run(count, total=6)
    killer.join(5)

    assert execution.status == "succeeded", execution.error
    start, attempt, pid = execution.result
    assert (start, attempt) == (3, 2)  # resumed after the 3 committed writes
    assert pid != os.getpid()
    first, second = execution.nodes[0].attempts
    assert first.status == "lost"
    assert "SIGKILL" in first.error
    assert first.checkpoint_at_end == "0001-000003"
    assert second.checkpoint_at_start == "0001-000003"


def test_sigterm_of_the_child_is_a_preemption_retried_at_once(tmp_path):
    marker = tmp_path / "pid"
    hook = tmp_path / "on_preempt"

    @task(isolation="process", retries=0, system_retries=2)
    def count(total: int) -> list:
        ctx = current_context()
        ctx.on_preempt(lambda: hook.write_text(str(ctx.attempt)))
        cp = ctx.checkpoint
        prev = cp.read()
        start = int(prev) if prev else 0
        for i in range(start, total):
            if ctx.attempt == 1 and i == 2:
                marker.write_text(str(os.getpid()))
                deadline = time.monotonic() + 30
                while not ctx.preempted and time.monotonic() < deadline:
                    time.sleep(0.005)  # working on step 3 when SIGTERM arrives
            cp.write(str(i + 1).encode())  # commits step 3, then raises Preempted
        return [start, ctx.attempt]

    killer = kill_when_ready(marker, signal.SIGTERM)
    execution = taskpoint.run(count, total=5)
    killer.join(5)

    assert execution.status == "succeeded", execution.error
    assert execution.result == [3, 2]  # the write in flight at SIGTERM was committed
    first, second = execution.nodes[0].attempts
    assert first.status == "preempted"
    assert second.status == "succeeded"
    assert hook.read_text() == "1"


def test_a_child_dying_on_its_own_is_lost_and_the_system_budget_runs_out():
    @task(isolation="process", retries=5, system_retries=1)
    def crash() -> None:
        import faulthandler

        faulthandler.disable()  # no crash report from the child in the test output
        os.kill(os.getpid(), signal.SIGSEGV)

    execution = taskpoint.run(crash)
    assert execution.status == "failed"
    assert [a.status for a in execution.nodes[0].attempts] == ["lost", "lost"]
    assert "SIGSEGV" in execution.error


def test_process_errors_are_classified_like_inline_ones():
    calls = []

    class Custom(Exception):
        def __init__(self, a, b):  # unpicklable in the driver: rebuilt from its text
            super().__init__(f"{a}-{b}")

    @task(isolation="process", retries=1)
    def flaky(fail_hard: bool) -> str:
        calls.append(1)  # in the child: not seen here
        if current_context().attempt == 1:
            raise RecoverableError("once")
        if fail_hard:
            raise Custom(1, 2)
        return "ok"

    assert flaky(fail_hard=False) == "ok"
    execution = taskpoint.run(flaky, fail_hard=True)
    assert [a.status for a in execution.nodes[0].attempts] == ["recoverable", "failed"]
    assert execution.error == "Custom: 1-2"
    assert calls == []


def test_spawn_isolation_runs_in_a_fresh_interpreter_and_resumes_lost_attempts():
    from engine_spawn_tasks import spawned

    execution = taskpoint.run(spawned, total=4)
    assert execution.status == "succeeded", execution.error
    start, attempt, pid = execution.result
    assert (start, attempt) == (2, 2)
    assert pid != os.getpid()
    assert [a.status for a in execution.nodes[0].attempts] == ["lost", "succeeded"]


def test_an_error_raised_after_sigterm_counts_as_the_preemption():
    """A framework that turns SIGTERM into its own exception (Lightning's SIGTERMException, a
    SystemExit) must not fail the node: the attempt is preempted and retried."""

    @task(isolation="process", system_retries=2)
    def torn_down(x: int) -> int:
        ctx = current_context()
        if ctx.attempt == 1:
            os.kill(os.getpid(), signal.SIGTERM)
            deadline = time.monotonic() + 10
            while not ctx.preempted and time.monotonic() < deadline:
                time.sleep(0.01)
            raise SystemExit("the framework's SIGTERM handler stopped training")
        return x + ctx.attempt

    execution = taskpoint.run(torn_down, x=40)
    assert execution.status == "succeeded", execution.error
    assert execution.result == 42
    assert [a.status for a in execution.nodes[0].attempts] == ["preempted", "succeeded"]


def test_with_torch_loaded_attempts_come_from_a_fork_server(monkeypatch):
    """torch in the driver makes fork unsafe: importable tasks run in children of a fork server
    that preloaded torch. They still resume lost attempts and see the driver's environment as
    it is when each attempt starts (the server started earlier, with another one)."""
    import pytest

    pytest.importorskip("torch")
    from engine_spawn_tasks import after_torch

    from taskpoint.backends.process import start_method

    assert start_method(after_torch) == "forkserver"
    for marker in ("first", "second"):  # the second run reuses the server started by the first
        monkeypatch.setenv("TASKPOINT_TEST_MARKER", marker)
        execution = taskpoint.run(after_torch, total=4)
        assert execution.status == "succeeded", execution.error
        assert [a.status for a in execution.nodes[0].attempts] == ["lost", "succeeded"]
        start, attempt, pid, ppid, torch_loaded, seen = execution.result
        assert (start, attempt) == (2, 2)
        assert pid != os.getpid() and ppid != os.getpid()  # forked by the server
        assert torch_loaded and seen == marker


def test_a_fork_server_attempt_stops_when_its_driver_is_killed(tmp_path):
    """The attempt's parent is the fork server, not the driver: SIGKILL the driver and the
    attempt must still stop (the server exits with the driver, and its death signals the
    attempt) instead of running on unobserved."""
    import subprocess
    import sys

    import pytest

    pytest.importorskip("torch")
    pidfile = tmp_path / "attempt.pid"
    driver = subprocess.Popen(
        [sys.executable, str(WORKFLOWS / "fork_server_driver.py"), str(pidfile)],
        env=tp_env(tmp_path / "home"),
    )
    try:
        attempt = int(wait_for_file(pidfile, 60, proc=driver))
        assert _parent_of(attempt) != driver.pid
        driver.kill()
        driver.wait()
        wait_gone([attempt], 20)  # else it outlived its driver
        assert (tmp_path / "attempt.pid.sigterm").exists()  # stopped as a preemption
    finally:
        driver.kill()


def _parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as handle:
        return int(handle.read().rsplit(")", 1)[1].split()[1])


@pytest.mark.parametrize("server", [False, True], ids=["fork", "fork-server"])
def test_a_retry_does_not_wait_for_the_killed_attempts_children_and_they_end_with_it(
    tmp_path, monkeypatch, server
):
    """The first attempt starts a grandchild that would sleep a minute, holding every descriptor
    the attempt had, and is then SIGKILLed: the retry starts at once, and the grandchild is
    gone (it belonged to the attempt's process group). With torch in the driver the attempts
    come from the fork server."""
    from engine_spawn_tasks import leaves_a_grandchild

    from taskpoint.backends import process

    if server:
        pytest.importorskip("torch")
    else:  # plain fork even where torch was imported by an earlier test
        monkeypatch.setattr(process, "start_method", lambda task: "fork")
    pidfile = tmp_path / "grandchild"
    started = time.monotonic()
    execution = taskpoint.run(leaves_a_grandchild, pidfile=str(pidfile))
    took = time.monotonic() - started

    assert execution.status == "succeeded", execution.error
    assert execution.result == 2
    assert [a.status for a in execution.nodes[0].attempts] == ["lost", "succeeded"]
    assert took < 30, f"the retry waited {took:.1f} s for the killed attempt's grandchild"
    wait_gone([int(pidfile.read_text())], 10)


def test_a_frozen_attempt_process_is_killed_lost_and_the_next_attempt_resumes(tmp_path):
    """SIGSTOP the attempt's child after its commit: it sends no heartbeat, the driver kills it
    after ``heartbeat_timeout``, records the attempt lost and the next one resumes."""
    marker = tmp_path / "pid"

    @task(isolation="process", system_retries=2, heartbeat_timeout=3)
    def freezes_once() -> list:
        ctx = current_context()
        prev = ctx.checkpoint.read()
        if ctx.attempt == 1:
            ctx.checkpoint.write(b"5", step=5)
            marker.write_text(str(os.getpid()))
            time.sleep(300)  # stopped by the test meanwhile
        return [int(prev) if prev else 0, ctx.attempt]

    stopper = kill_when_ready(marker, signal.SIGSTOP)
    started = time.monotonic()
    execution = taskpoint.run(freezes_once)
    stopper.join(5)

    assert execution.status == "succeeded", execution.error
    assert execution.result == [5, 2]
    first, second = execution.nodes[0].attempts
    assert (first.status, second.status) == ("lost", "succeeded")
    assert "no heartbeat" in first.error and "heartbeat_timeout=3" in first.error
    assert time.monotonic() - started < 60


def test_heartbeat_timeout_is_checked_when_the_task_is_defined():
    with pytest.raises(ValueError, match="heartbeat_timeout must be seconds >= 2"):
        task(heartbeat_timeout=0.5)(lambda: None)
    assert task(heartbeat_timeout=None)(lambda: None).heartbeat_timeout is None


def test_a_task_defined_in_the_drivers_script_comes_from_the_fork_server_after_torch_ran(
    tmp_path,
):
    """``python job.py`` whose driver ran torch ops: its own tasks' attempts are forked by the
    fork server (which loads the script as ``__mp_main__``), not from the driver, and resume
    after a SIGKILL with results of the script's own classes."""
    import json
    import subprocess
    import sys

    pytest.importorskip("torch")
    out = tmp_path / "out.json"
    done = subprocess.run(
        [sys.executable, str(WORKFLOWS / "torch_main_driver.py"), str(out)],
        env=tp_env(tmp_path / "home"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["method"] == "forkserver"
    assert report["status"] == "succeeded" and report["is_report"]
    assert (report["start"], report["attempt"]) == (2, 2)
    assert report["statuses"] == ["lost", "succeeded"]
    assert report["ppid"] != report["driver"]  # forked by the server, not the driver
