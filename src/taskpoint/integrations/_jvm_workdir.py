"""Local work directories of JVM-backed integrations (Spark, Flink), one per attempt.

A streaming query or a Flink job needs its checkpoint state on a local path while it runs. Each
attempt gets ``<base>/taskpoint-<kind>/<scope hash>/a<attempt>-<pid>-<rand>/``, where the scope
hash names the task's checkpoint scope, so attempts of one task node find each other's leftovers.

An attempt killed with SIGKILL leaves its JVM running for a moment (Spark's and Flink's gateway
JVMs exit when their stdin closes, about two seconds later), and that JVM may still write to the
job's sinks. `AttemptDir.retire_previous` therefore waits for the JVMs that earlier attempts of
the same node recorded (by pid and process start time, so a reused pid is never mistaken for
one), kills any that outlive the wait, and deletes their directories. This works on one machine
(Linux ``/proc``); on another machine there is nothing of the earlier attempt to wait for.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import tempfile
import time
import uuid
from pathlib import Path

from taskpoint._process import process_alive, process_token

log = logging.getLogger("taskpoint.integrations")

_JVM_FILE = "jvm.json"


class AttemptDir:
    """The local work directory of one attempt (created on construction)."""

    def __init__(self, scope_url: str, attempt: int, kind: str, base: str | None = None) -> None:
        digest = hashlib.sha256(scope_url.encode()).hexdigest()[:20]
        self.scope = Path(base or tempfile.gettempdir()) / f"taskpoint-{kind}" / digest
        name = f"a{attempt:04d}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.path = self.scope / name
        self.path.mkdir(parents=True)

    def record_jvm(self, pid: int | None) -> None:
        """Remember the JVM this attempt drives, so a later attempt can wait for it to exit."""
        if pid is None:
            return
        record = {"pid": pid, "start": process_token(pid), "owner": os.getpid()}
        tmp = self.path / f".{_JVM_FILE}.tmp"
        tmp.write_text(json.dumps(record))
        os.replace(tmp, self.path / _JVM_FILE)

    def retire_previous(self, timeout: float = 30.0) -> None:
        """Wait for (then kill) JVMs of dead earlier attempts, and delete their directories."""
        for other in sorted(self.scope.iterdir()):
            if other == self.path or not other.is_dir() or _owner_alive(other.name):
                continue
            jvm = _read_jvm(other)
            if jvm is not None and _same_process(jvm["pid"], jvm["start"]):
                _wait_or_kill(jvm["pid"], jvm["start"], timeout)
            shutil.rmtree(other, ignore_errors=True)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        try:
            self.scope.rmdir()  # the last attempt of this scope leaves nothing behind
        except OSError:
            pass  # not empty (another attempt's directory) or already gone


def _owner_alive(name: str) -> bool:
    """Directory names are ``a<attempt>-<pid>-<rand>``: is that pid a live process?"""
    parts = name.split("-")
    if len(parts) != 3 or not parts[1].isdigit():
        return True  # not ours: leave it alone
    pid = int(parts[1])
    # Our own pid: another use in this process, which removes its own directory.
    return pid == os.getpid() or process_alive(pid)


def _read_jvm(directory: Path) -> dict | None:
    try:
        record = json.loads((directory / _JVM_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("pid"), int):
        return None
    return record


def _same_process(pid: int, start: str | None) -> bool:
    if start is None:
        return False  # cannot tell a reused pid apart: never touch it
    return process_token(pid) == start


def _wait_or_kill(pid: int, start: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _same_process(pid, start):
            return
        time.sleep(0.1)
    log.warning("taskpoint: the JVM %d of an earlier attempt is still running; killing it", pid)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    while _same_process(pid, start):
        time.sleep(0.05)


def jvm_pid(gateway: object) -> int | None:
    """The pid of the JVM behind a py4j gateway (asked through the gateway itself)."""
    try:
        return int(gateway.jvm.java.lang.ProcessHandle.current().pid())  # type: ignore[attr-defined]
    except Exception:
        return None
