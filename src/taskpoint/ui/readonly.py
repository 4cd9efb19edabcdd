"""Read-only access to the records database for the web view.

The engine's `Records` opens the database read-write (it creates the home, sets WAL and migrates
the schema). The web view must never write, so it opens ``file:<home>/taskpoint.db?mode=ro`` on
every request (a connect costs ~100 us; a fresh connection per request needs no locking across the
server's threads) and reuses `Records`' query methods over that connection. SQLite itself may
create the usual ``-wal``/``-shm`` companion files next to a WAL database, as any reader does; the
database file is never modified (a write through this connection fails with "readonly database").

The executions list is read a page at a time (`ReadOnlyRecords.executions_page`), newest first,
walking the index on ``executions(created)`` and stopping once the page is full; a search
(`ExecutionQuery`) matches an id prefix, a part of the workflow's name (both case-insensitive)
or a status. Counting the matches of each status reads every row, so a count (`Tally`) is kept
and reused while the database and its WAL keep their size and modification time, for at most
`COUNTS_MAX_AGE` seconds (`TallyCache`); the drivers of its running executions are checked
anew on each use, as a driver dies without writing anything.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from taskpoint.records import ExecutionRecord, Records, schema
from taskpoint.records.db import BUSY_TIMEOUT_MS, DB_NAME
from taskpoint.records.status import ExecutionStatus

STATUSES = tuple(ExecutionStatus)
NEWEST_FIRST = "ORDER BY created DESC, rowid DESC"  # walks the index on executions(created)
COUNTS_MAX_AGE = 10.0  # seconds a count is reused while the database files look unchanged
COUNTS_KEPT = 32  # searches whose counts are kept


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

    def rows(self, sql: str, params: tuple = ()) -> Iterator[tuple]:
        """The rows of ``sql`` one at a time: a caller that stops early reads no further."""
        with self.lock:
            cursor = self.conn.execute(sql, params)
            try:
                yield from cursor
            finally:
                cursor.close()

    def close(self) -> None:
        self.conn.close()


def _stored(status: str) -> str:
    """The status stored for an effective one (``interrupted`` is a ``running`` row)."""
    return ExecutionStatus.RUNNING if status == ExecutionStatus.INTERRUPTED else status


def _like_escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass(frozen=True)
class ExecutionQuery:
    """Which executions the list shows: one effective ``status`` and/or a search text ``q``,
    which matches an execution whose id starts with it or whose workflow name contains it
    (both ignoring ASCII case), or whose status it names exactly."""

    status: str | None = None
    q: str | None = None

    @property
    def q_status(self) -> str | None:
        return self.q.lower() if self.q and self.q.lower() in STATUSES else None

    def text_match(self) -> tuple[str, tuple]:
        """An SQL expression true where the id or the name matches ``q`` (false without q)."""
        if not self.q:
            return "0", ()
        q = _like_escaped(self.q)
        return (
            "(id LIKE ? ESCAPE '\\' OR name LIKE ? ESCAPE '\\')",
            (q + "%", "%" + q + "%"),
        )

    def where(self) -> tuple[list[str], tuple, bool]:
        """SQL conditions that select a superset of the matches, their parameters, and whether
        that superset is exact (no ``running`` row needs its driver checked to tell it from an
        ``interrupted`` one)."""
        clauses: list[str] = []
        params: tuple = ()
        exact = True
        if self.status is not None:
            clauses.append("status = ?")
            params += (_stored(self.status),)
            exact = _stored(self.status) != ExecutionStatus.RUNNING
        if self.q:
            text, text_params = self.text_match()
            if self.q_status is not None:
                clauses.append(f"({text} OR status = ?)")
                params += (*text_params, _stored(self.q_status))
                exact = exact and _stored(self.q_status) != ExecutionStatus.RUNNING
            else:
                clauses.append(text)
                params += text_params
        return clauses, params, exact

    def keeps(self, status: str, text_matched: bool) -> bool:
        """Whether a row the SQL selected, of this effective status, is a match."""
        if self.status is not None and status != self.status:
            return False
        return not self.q or text_matched or status == self.q_status


@dataclass
class Tally:
    """What counting the executions a search selects found: those that ended, by status, and
    the running rows, whose drivers may die at any time without writing anything."""

    ended: dict[str, int]
    running: list[tuple[ExecutionRecord, bool]]  # each with whether its id or name matched

    def counts(self, query: ExecutionQuery) -> dict[str, int]:
        """By effective status: the running rows' drivers are checked now."""
        counts = Counter(self.ended)
        for rec, text_matched in self.running:
            status = rec.effective_status
            if query.keeps(status, text_matched):
                counts[status] += 1
        return {s: counts[s] for s in STATUSES if counts[s]}


class TallyCache:
    """Tallies by search text, reused while ``taskpoint.db`` and its ``-wal`` keep their inode,
    size and modification time (every commit changes the WAL), for `COUNTS_MAX_AGE` seconds at
    most (a change a coarse clock could hide shows up after that)."""

    def __init__(self, db_path: Path) -> None:
        self.paths = (db_path, db_path.with_name(db_path.name + "-wal"))
        self.lock = threading.Lock()
        self.entries: OrderedDict[str | None, tuple[tuple, float, Tally]] = OrderedDict()

    def signature(self) -> tuple:
        found: list[tuple[int, int, int] | None] = []
        for path in self.paths:
            try:
                st = path.stat()
            except FileNotFoundError:
                found.append(None)
                continue
            found.append((st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(found)

    def get(self, q: str | None, count: Callable[[], Tally]) -> Tally:
        # Taken before counting: a commit during the count makes the next use count again.
        signature, now = self.signature(), time.monotonic()
        with self.lock:
            kept = self.entries.get(q)
            if kept is not None and kept[0] == signature and now - kept[1] < COUNTS_MAX_AGE:
                self.entries.move_to_end(q)
                return kept[2]
        tally = count()
        with self.lock:
            self.entries[q] = (signature, now, tally)
            self.entries.move_to_end(q)
            while len(self.entries) > COUNTS_KEPT:
                self.entries.popitem(last=False)
        return tally


class ReadOnlyRecords(Records):
    """`Records` over a read-only connection; its write methods fail, its readers work."""

    def __init__(self, db_path: Path, tallies: TallyCache | None = None) -> None:
        # No super().__init__: that opens read-write.
        self.db = _ReadOnlyDatabase(db_path)  # type: ignore[assignment]
        self.path = db_path
        self.tallies = tallies
        # A database written by an older taskpoint is read as it is (never migrated from here):
        # columns added since then read as NULL.
        ((version,),) = self.db.query("PRAGMA user_version")
        self.execution_columns = schema.columns_for(schema.EXECUTION_COLUMNS, version)
        self.node_columns = schema.columns_for(schema.NODE_COLUMNS, version)
        self.attempt_columns = schema.columns_for(schema.ATTEMPT_COLUMNS, version)

    def ready(self) -> bool:
        """Whether the tables exist (a driver creating the database may not have made them)."""
        return bool(self.db.query("SELECT 1 FROM sqlite_master WHERE name = 'executions'"))

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

    def page_sql(self, query: ExecutionQuery, offset: int, limit: int) -> tuple[str, tuple, int]:
        """The SQL of one page (one row more than ``limit``, to tell whether more follow), its
        parameters, and how many of its matches to skip in Python (where SQL cannot tell a
        running execution from an interrupted one, the offset is applied to the matches)."""
        clauses, params, exact = query.where()
        text, text_params = query.text_match()
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT {self.execution_columns}, {text} FROM executions{where} {NEWEST_FIRST}"
        params = (*text_params, *params)
        if exact:
            return f"{sql} LIMIT ? OFFSET ?", (*params, limit + 1, offset), 0
        return sql, params, offset

    def executions_page(
        self, query: ExecutionQuery, offset: int, limit: int
    ) -> tuple[list[tuple[ExecutionRecord, str]], bool]:
        """Up to ``limit`` matches of ``query`` after the first ``offset``, newest first, each
        with its effective status, and whether more follow."""
        sql, params, skip = self.page_sql(query, offset, limit)
        found: list[tuple[ExecutionRecord, str]] = []
        for row in self.db.rows(sql, params):  # type: ignore[attr-defined]
            rec = ExecutionRecord(*row[:-1])
            status = rec.effective_status
            if not query.keeps(status, bool(row[-1])):
                continue
            if skip:
                skip -= 1
                continue
            if len(found) == limit:
                return found, True
            found.append((rec, status))
        return found, False

    def status_counts(self, q: str | None = None) -> dict[str, int]:
        """How many executions of each effective status the search ``q`` matches (all of them
        without one)."""
        if self.tallies is None:
            tally = self.tally(q)
        else:
            tally = self.tallies.get(q, lambda: self.tally(q))
        return tally.counts(ExecutionQuery(q=q))

    def tally(self, q: str | None = None) -> Tally:
        """Count the executions ``q`` matches: those that ended by status, and the running
        rows themselves (few), whose drivers decide whether they are running or interrupted."""
        query = ExecutionQuery(q=q)
        clauses, params, _ = query.where()
        where = "".join(f" AND {c}" for c in clauses)
        ended = self.db.query(
            f"SELECT status, count(*) FROM executions WHERE status != ?{where} GROUP BY status",
            (ExecutionStatus.RUNNING, *params),
        )
        text, text_params = query.text_match()
        running = self.db.query(
            f"SELECT {self.execution_columns}, {text} FROM executions WHERE status = ?{where}",
            (*text_params, ExecutionStatus.RUNNING, *params),
        )
        return Tally(dict(ended), [(ExecutionRecord(*row[:-1]), bool(row[-1])) for row in running])


class RecordsSource:
    """Where the records are: ``<home>/taskpoint.db``, opened read-only per request."""

    def __init__(self, home: str | Path) -> None:
        self.home = Path(home).expanduser().resolve()
        self.db_path = self.home / DB_NAME
        self.tallies = TallyCache(self.db_path)

    def exists(self) -> bool:
        return self.db_path.is_file()

    @contextmanager
    def open(self) -> Iterator[ReadOnlyRecords | None]:
        """The records, or ``None`` while no execution was ever recorded under this home (no
        database yet, or one whose tables are still being created)."""
        if not self.exists():
            yield None
            return
        records = ReadOnlyRecords(self.db_path, self.tallies)
        try:
            yield records if records.ready() else None
        finally:
            records.db.close()  # type: ignore[attr-defined]
