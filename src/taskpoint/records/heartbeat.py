"""The driver's heartbeat: ``executions.last_seen``, rewritten every few seconds while it runs.

A driver that is SIGKILLed records nothing more; its last heartbeat (with the last attempt start
or end it recorded, and the versions its attempts committed) is its *last sign of life*, where
`restart_execution` ends its run and its lost attempts. The heartbeat stays off the engine's hot
path: one thread per process (started with its first execution) writes one small UPDATE per
records database every ``HEARTBEAT_EVERY`` seconds for the executions running in the process, on
a connection of its own with a short busy timeout (it never waits on, nor holds up, the engine's
writes; a busy database just skips a beat). Entering and leaving ``Heartbeat`` only adds and
removes an execution id.

A fork (process isolation) waits for a beat in progress, so a child never inherits SQLite in the
middle of a call made by a thread that does not exist in the child.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path
from types import TracebackType

HEARTBEAT_EVERY = 2.0  # seconds between beats
BUSY_TIMEOUT = 0.5  # seconds a beat waits for a busy database before skipping

_fork_lock = threading.Lock()
os.register_at_fork(
    before=_fork_lock.acquire,
    after_in_parent=_fork_lock.release,
    after_in_child=_fork_lock.release,
)


class _Beats:
    """The executions this process runs, by records database, and the thread that beats."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: dict[tuple[str, str], int] = {}  # (database, execution id) -> count
        self.owner: int | None = None  # the pid whose thread beats (a forked child has none)

    def add(self, db_path: str, execution_id: str) -> None:
        with self.lock:
            key = (db_path, execution_id)
            self.running[key] = self.running.get(key, 0) + 1
            if self.owner != os.getpid():
                self.owner = os.getpid()
                threading.Thread(target=self._run, name="taskpoint-heartbeat", daemon=True).start()

    def remove(self, db_path: str, execution_id: str) -> None:
        with self.lock:
            key = (db_path, execution_id)
            left = self.running.get(key, 0) - 1
            if left > 0:
                self.running[key] = left
            else:
                self.running.pop(key, None)

    def _run(self) -> None:
        connections: dict[str, sqlite3.Connection] = {}
        pid = os.getpid()
        while True:
            time.sleep(HEARTBEAT_EVERY)
            if os.getpid() != pid:
                return  # not reached in a fork (this thread is not copied); kept for safety
            with _fork_lock:  # a fork waits for the beat (and this thread's locks) to end
                with self.lock:
                    by_db: dict[str, list[str]] = {}
                    for db_path, execution_id in self.running:
                        by_db.setdefault(db_path, []).append(execution_id)
                for db_path, ids in by_db.items():
                    _beat(connections, db_path, ids)


def _beat(connections: dict[str, sqlite3.Connection], db_path: str, ids: list[str]) -> None:
    try:
        conn = connections.get(db_path)
        if conn is None:
            conn = connections[db_path] = sqlite3.connect(
                db_path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
            )
        marks = ", ".join("?" * len(ids))
        conn.execute(
            f"UPDATE executions SET last_seen=? WHERE id IN ({marks})", (time.time(), *ids)
        )
    except sqlite3.Error:
        pass  # busy or gone: the next beat tries again


_beats = _Beats()


class Heartbeat:
    """``with Heartbeat(db_path, execution_id):`` the execution's driver beats meanwhile."""

    def __init__(self, db_path: Path, execution_id: str) -> None:
        self.db_path = str(db_path)
        self.execution_id = execution_id

    def __enter__(self) -> Heartbeat:
        _beats.add(self.db_path, self.execution_id)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _beats.remove(self.db_path, self.execution_id)
