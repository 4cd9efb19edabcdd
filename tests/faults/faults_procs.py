"""Real processes for the fault suite: `taskpoint` drivers in their own session (so a whole
"machine" can be SIGKILLed at once), safe signalling of attempt children, and event-driven
waits on the log files the tasks write."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from faults_stats import record

from support.fixtures import cli_command, tp_env
from support.polling import wait_until

SLOW = float(os.environ.get("TASKPOINT_FAULTS_SLOW", "1"))  # scale every deadline
DEADLINE = 120 * SLOW


class Driver:
    """A `taskpoint` CLI process in a new session; stdout and stderr go to files."""

    def __init__(self, home: Path, workdir: Path, *args: str, env: dict[str, str] | None = None):
        workdir.mkdir(parents=True, exist_ok=True)
        n = len(list(workdir.glob("driver-*.out")))
        self.out_path = workdir / f"driver-{n}.out"
        self.err_path = workdir / f"driver-{n}.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                cli_command(*args),
                stdout=out,
                stderr=err,
                env=env or tp_env(home),
                cwd=workdir,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float = DEADLINE) -> int:
        return self.proc.wait(timeout)

    def kill_group(self) -> None:
        """SIGKILL the driver and everything in its session (its attempt children too, which
        lead process groups of their own): the machine dies."""
        kill_session(self.proc.pid)
        self.proc.wait(DEADLINE)
        record("kills")

    def kill_driver(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(DEADLINE)
        record("kills")

    def output(self) -> tuple[str, str]:
        return self.out_path.read_text(), self.err_path.read_text()

    def close(self) -> None:
        if self.alive():
            kill_session(self.proc.pid)
            self.proc.wait(DEADLINE)


class Proc:
    """A process we did not start directly (an attempt's child), addressed through a pidfd so a
    reused pid is never signalled by mistake. With ``parent``, a process whose parent is another
    one (the pid was reused before we looked) counts as already gone."""

    def __init__(self, pid: int, parent: int | None = None) -> None:
        self.pid = pid
        try:
            self.fd: int | None = os.pidfd_open(pid)
        except ProcessLookupError:
            self.fd = None
            return
        if parent is not None and _stat(pid)[1] != parent:
            self.close()

    def signal(self, sig: int) -> bool:
        if self.fd is None:
            return False
        try:
            signal.pidfd_send_signal(self.fd, sig)
        except ProcessLookupError:
            return False
        return True

    def gone(self) -> bool:
        if self.fd is None:
            return True
        import select

        return bool(select.select([self.fd], [], [], 0)[0])  # readable once it exited

    def wait_gone(self, timeout: float = DEADLINE) -> None:
        wait_until(self.gone, timeout, f"process {self.pid} to exit")

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _stat(pid: int) -> tuple[str, int, int, int]:
    """(state, parent pid, process group, session) of ``pid`` from /proc; ("X", 0, 0, 0) if
    gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode(errors="replace")
    except OSError:
        return "X", 0, 0, 0
    fields = data[data.rfind(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[2]), int(fields[3])


def session_members(sid: int) -> list[int]:
    """Live processes of session ``sid`` (exited ones not yet reaped by an init that does not
    reap count as gone)."""
    members = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            state, _, _, session = _stat(int(name))
            if session == sid and state not in ("Z", "X"):
                members.append(int(name))
    return members


def session_gone(sid: int) -> bool:
    """Nothing of the driver that leads session ``sid`` runs any more: it, its attempts'
    children (each leads a process group of its own, in the same session) and theirs."""
    return not session_members(sid)


def kill_session(sid: int) -> None:
    """SIGKILL every process of session ``sid``, again until none is left (one may fork while
    the others are killed)."""
    for _ in range(100):
        members = session_members(sid)
        if not members:
            return
        for pid in members:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)


def log_lines(path: Path) -> list[list[str]]:
    """Complete lines of a log a task appends to (a kill may cut the last one short)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [line.split() for line in text.splitlines(keepends=True) if line.endswith("\n")]


def append_line(path: Path | str, line: str) -> None:
    """Append one line and fsync it: the task's proof of what it did before a kill."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
