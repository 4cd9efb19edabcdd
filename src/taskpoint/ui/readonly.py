"""Read-only access to the records database for the web view.

The engine's `Records` opens the database read-write (it creates the home, sets WAL and migrates
the schema). The web view must never write, so it opens ``file:<home>/taskpoint.db?mode=ro`` on
every request (a connect costs ~100 us; a fresh connection per request needs no locking across the
server's threads) and reuses `Records`' query methods over that connection. SQLite itself may
create the usual ``-wal``/``-shm`` companion files next to a WAL database, as any reader does; the
database file is never modified (a write through this connection fails with "readonly database").
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from taskpoint.records import ExecutionRecord, Records, schema
from taskpoint.records.db import BUSY_TIMEOUT_MS, DB_NAME


class _ReadOnlyDatabase:
    """The part of `records.db.Database` that `Records`' readers use: ``path`` and ``query``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.RLock()
        self.conn = sqlite3.connect(
            path.as_uri() + "?mode=ro",
            uri=True,
            check_same_thread=False,
            timeout=BUSY_TIMEOUT_MS / 1000,
        )

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self.lock:
            return self.conn.execute(sql, params).fetchall()

    def close(self) -> None:
        self.conn.close()


class ReadOnlyRecords(Records):
    """`Records` over a read-only connection; its write methods fail, its readers work."""

    def __init__(self, db_path: Path) -> None:  # no super().__init__: that opens read-write
        self.db = _ReadOnlyDatabase(db_path)  # type: ignore[assignment]
        self.path = db_path
        # A database written by an older taskpoint is read as it is (never migrated from here):
        # columns added since then read as NULL.
        ((version,),) = self.db.query("PRAGMA user_version")
        self.execution_columns = schema.columns_for(schema.EXECUTION_COLUMNS, version)
        self.node_columns = schema.columns_for(schema.NODE_COLUMNS, version)
        self.attempt_columns = schema.columns_for(schema.ATTEMPT_COLUMNS, version)

    def execution_exact(self, execution_id: str) -> ExecutionRecord | None:
        """The execution whose id is exactly ``execution_id`` (no prefix matching)."""
        rows = self.db.query(
            f"SELECT {self.execution_columns} FROM executions WHERE id=?", (execution_id,)
        )
        return ExecutionRecord(*rows[0]) if rows else None

    def attempt_counts(self, execution_ids: list[str]) -> dict[str, int]:
        """How many attempts each execution has used, all nodes together."""
        if not execution_ids:
            return {}
        marks = ", ".join("?" * len(execution_ids))
        rows = self.db.query(
            f"SELECT execution_id, count(*) FROM attempts WHERE execution_id IN ({marks}) "
            "GROUP BY execution_id",
            tuple(execution_ids),
        )
        return dict(rows)


class RecordsSource:
    """Where the records are: ``<home>/taskpoint.db``, opened read-only per request."""

    def __init__(self, home: str | Path) -> None:
        self.home = Path(home).expanduser().resolve()
        self.db_path = self.home / DB_NAME

    def exists(self) -> bool:
        return self.db_path.is_file()

    @contextmanager
    def open(self) -> Iterator[ReadOnlyRecords | None]:
        """The records, or ``None`` while no execution was ever recorded under this home."""
        if not self.exists():
            yield None
            return
        records = ReadOnlyRecords(self.db_path)
        try:
            yield records
        finally:
            records.db.close()  # type: ignore[attr-defined]
