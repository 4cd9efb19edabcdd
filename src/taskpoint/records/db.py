"""SQLite connection and the one transaction helper.

WAL lets `taskpoint list/show` read while a driver writes; ``synchronous=NORMAL`` in WAL mode
skips the fsync per commit (a power loss may lose the last records, never corrupt the file), which
keeps the engine's hot path to a few tens of microseconds per attempt.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from taskpoint.errors import TaskpointError
from taskpoint.records import schema

DB_NAME = "taskpoint.db"
BUSY_TIMEOUT_MS = 10_000
# An inline attempt's start is written with its end, or after this many seconds if it is
# still running (see records/deferred.py).
START_RECORD_DELAY = 0.05

_lock = threading.Lock()
_connections: dict[tuple[str, int], Database] = {}


class Database:
    """One connection to ``<home>/taskpoint.db``, shared by the threads of one process."""

    def __init__(self, path: Path) -> None:
        from taskpoint.records.deferred import DeferredStarts

        self.path = path
        self.lock = threading.RLock()
        self.conn = _connect(path)
        self.deferred = DeferredStarts(self.lock, self._write_starts, START_RECORD_DELAY)

    def _write_starts(self, rows: list[tuple]) -> None:
        from taskpoint.records.store import write_starts

        write_starts(self, rows)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back on any error, Ctrl-C included)."""
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self.lock:
            return self.conn.execute(sql, params).fetchall()


def open_database(home: str | os.PathLike[str]) -> Database:
    """The process's cached connection for ``home`` (a forked child gets its own, never ours)."""
    path = Path(home).expanduser().resolve() / DB_NAME
    key = (str(path), os.getpid())
    db = _connections.get(key)
    if db is None:
        with _lock:
            db = _connections.get(key)
            if db is None:
                db = _connections[key] = Database(path)
    return db


def _connect(path: Path) -> sqlite3.Connection:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
        )
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        _migrate(conn)
    except (OSError, sqlite3.Error) as exc:
        raise TaskpointError(
            f"cannot open the records database {path}: {exc}; point --home or TASKPOINT_HOME "
            "at a writable directory"
        ) from exc
    return conn


def _migrate(conn: sqlite3.Connection) -> None:
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version == schema.SCHEMA_VERSION:
        return
    if version > schema.SCHEMA_VERSION:
        raise sqlite3.DatabaseError(
            f"schema version {version} is newer than this taskpoint ({schema.SCHEMA_VERSION})"
        )
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Read again under the write lock: another process may have migrated meanwhile.
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version > schema.SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"schema version {version} is newer than this taskpoint")
        if version == 0:  # a new database: created at the current version
            for statement in schema.ALL:
                conn.execute(statement)
        else:  # an older one: each step adds what its version brought
            for step in range(version + 1, schema.SCHEMA_VERSION + 1):
                for statement in schema.MIGRATIONS.get(step, ()):
                    conn.execute(statement)
        conn.execute(f"PRAGMA user_version={schema.SCHEMA_VERSION}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
