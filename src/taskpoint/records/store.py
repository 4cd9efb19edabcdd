"""The engine's memory: executions, nodes and attempts (persistence only, no decisions)."""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass

from taskpoint.errors import ExecutionNotFound
from taskpoint.records import schema
from taskpoint.records.db import Database, open_database
from taskpoint.records.liveness import hostname, process_token
from taskpoint.records.models import AttemptRecord, ExecutionRecord, NodeRecord
from taskpoint.records.status import ExecutionStatus, NodeStatus


@dataclass
class AttemptEnd:
    """What is written when an attempt ends (with its node's new state, in one transaction)."""

    status: str
    node_status: str
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    checkpoint_at_end: str | None = None
    output: bytes | None = None  # a small pickled output, kept in the row
    output_ref: str | None = None  # or where a large one was stored
    output_preview: str | None = None  # a bounded preview of the output, for read-only views
    pid: int | None = None  # set when only known at the end (the child of a process attempt)


class Records:
    # The columns its readers select (a read-only reader of an older database narrows them).
    execution_columns = schema.EXECUTION_COLUMNS
    node_columns = schema.NODE_COLUMNS

    def __init__(self, home: str | os.PathLike[str]) -> None:
        self.db: Database = open_database(home)
        self.path = self.db.path

    # -- executions ------------------------------------------------------------------------------

    def create_execution(self, rec: ExecutionRecord) -> None:
        values = tuple(getattr(rec, c.strip()) for c in schema.EXECUTION_COLUMNS.split(","))
        marks = ", ".join("?" * len(values))
        with self.db.transaction() as c:
            c.execute(
                f"INSERT INTO executions ({schema.EXECUTION_COLUMNS}) VALUES ({marks})", values
            )

    def driver_fields(self) -> dict:
        pid = os.getpid()
        return {"driver_pid": pid, "driver_host": hostname(), "driver_token": process_token(pid)}

    def restart_execution(self, execution_id: str) -> None:
        """Mark a resumed execution running under this driver; attempts left running are lost."""
        now = time.time()
        d = self.driver_fields()
        with self.db.transaction() as c:
            c.execute(
                "UPDATE executions SET status='running', ended=NULL, error_type=NULL, "
                "error_message=NULL, traceback=NULL, failed_node=NULL, started=?, driver_pid=?, "
                "driver_host=?, driver_token=? WHERE id=?",
                (now, d["driver_pid"], d["driver_host"], d["driver_token"], execution_id),
            )
            c.execute(
                "UPDATE attempts SET status='lost', ended=?, error_type='AttemptLost', "
                "error_message='the driver process died during this attempt' "
                "WHERE execution_id=? AND status='running'",
                (now, execution_id),
            )

    def finish_execution(
        self,
        execution_id: str,
        status: str,
        *,
        result_ref: str | None = None,
        error_type: str | None = None,
        error_message: str | None = None,
        traceback: str | None = None,
        failed_node: str | None = None,
    ) -> None:
        with self.db.transaction() as c:
            c.execute(
                "UPDATE executions SET status=?, result_ref=?, error_type=?, error_message=?, "
                "traceback=?, failed_node=?, ended=?, result_preview=NULL WHERE id=?",
                (
                    status,
                    result_ref,
                    error_type,
                    error_message,
                    traceback,
                    failed_node,
                    time.time(),
                    execution_id,
                ),
            )
            if status != ExecutionStatus.SUCCEEDED:
                # Nodes that were running when the execution stopped stop with it.
                c.execute(
                    "UPDATE nodes SET status=?, ended=? WHERE execution_id=? AND status='running'",
                    (
                        status
                        if status in (NodeStatus.PREEMPTED, NodeStatus.ABORTED)
                        else NodeStatus.FAILED,
                        time.time(),
                        execution_id,
                    ),
                )

    def set_result_preview(self, execution_id: str, preview: str) -> None:
        """Store the bounded preview of a succeeded execution's result (records/preview.py)."""
        with self.db.transaction() as c:
            c.execute(
                "UPDATE executions SET result_preview=? WHERE id=? AND status='succeeded'",
                (preview, execution_id),
            )

    def get_execution(self, id_or_prefix: str) -> ExecutionRecord:
        """The execution with this id, or the only one whose id starts with it."""
        rows = self.db.query(
            f"SELECT {self.execution_columns} FROM executions WHERE id=?", (id_or_prefix,)
        )
        if not rows and id_or_prefix:
            pattern = id_or_prefix.replace("%", "").replace("_", "") + "%"
            rows = self.db.query(
                f"SELECT {self.execution_columns} FROM executions WHERE id LIKE ? LIMIT 2",
                (pattern,),
            )
            if len(rows) > 1:
                raise ExecutionNotFound(
                    f"execution id prefix {id_or_prefix!r} is ambiguous in {self.path}: "
                    "give more characters of the id"
                )
        if not rows:
            raise ExecutionNotFound(
                f"no execution {id_or_prefix!r} in {self.path} (`taskpoint list` shows them; "
                "check --home / TASKPOINT_HOME)"
            )
        return ExecutionRecord(*rows[0])

    def list_executions(self, limit: int | None = None) -> list[ExecutionRecord]:
        sql = f"SELECT {self.execution_columns} FROM executions ORDER BY created DESC, rowid DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return [ExecutionRecord(*row) for row in self.db.query(sql)]

    # -- nodes and attempts ----------------------------------------------------------------------

    def nodes(self, execution_id: str) -> list[NodeRecord]:
        rows = self.db.query(
            f"SELECT {self.node_columns} FROM nodes WHERE execution_id=? ORDER BY rowid",
            (execution_id,),
        )
        return [NodeRecord(*row) for row in rows]

    def attempts(self, execution_id: str) -> list[AttemptRecord]:
        rows = self.db.query(
            f"SELECT {schema.ATTEMPT_COLUMNS} FROM attempts WHERE execution_id=? "
            "ORDER BY started, n",
            (execution_id,),
        )
        return [AttemptRecord(*row) for row in rows]

    def attempt_started(
        self,
        execution_id: str,
        key: str,
        task: str,
        n: int,
        *,
        max_attempts: int,
        pid: int,
        checkpoint_at_start: str | None,
        defer: bool = False,
    ) -> float:
        """Record an attempt as running. With ``defer`` the row is written with the attempt's
        end, or by a background thread if the attempt is still running after a short delay."""
        now = time.time()
        row = (execution_id, key, task, n, max_attempts, now, pid, checkpoint_at_start)
        if defer:
            self.db.deferred.add((execution_id, key, n), row)
            return now
        with self.db.transaction() as c:
            _insert_start(c, row)
        return now

    def finish_node(self, execution_id: str, key: str, status: str) -> None:
        with self.db.transaction() as c:
            c.execute(
                "UPDATE nodes SET status=?, ended=? WHERE execution_id=? AND key=?",
                (status, time.time(), execution_id, key),
            )

    def attempt_ended(self, execution_id: str, key: str, n: int, end: AttemptEnd) -> float:
        now = time.time()
        node_done = end.node_status != NodeStatus.RUNNING
        with self.db.transaction() as c:
            start = self.db.deferred.take((execution_id, key, n))
            if start is not None:
                _insert_start(c, start)
            c.execute(
                "UPDATE attempts SET status=?, error_type=?, error_message=?, traceback=?, "
                "ended=?, checkpoint_at_end=?, pid=coalesce(?, pid) "
                "WHERE execution_id=? AND node_key=? AND n=?",
                (
                    end.status,
                    end.error_type,
                    end.error_message,
                    end.traceback,
                    now,
                    end.checkpoint_at_end,
                    end.pid,
                    execution_id,
                    key,
                    n,
                ),
            )
            c.execute(
                "UPDATE nodes SET status=?, output=?, output_ref=?, output_preview=?, "
                "error_type=?, error_message=?, ended=? WHERE execution_id=? AND key=?",
                (
                    end.node_status,
                    end.output,
                    end.output_ref,
                    end.output_preview,
                    end.error_type,
                    end.error_message,
                    now if node_done else None,
                    execution_id,
                    key,
                ),
            )
        return now


def _insert_start(c: sqlite3.Connection, row: tuple) -> None:
    execution_id, key, task, n, max_attempts, started, pid, checkpoint_at_start = row
    c.execute(
        "INSERT INTO nodes (execution_id, key, task, status, attempts, max_attempts, started) "
        "VALUES (?, ?, ?, 'running', ?, ?, ?) ON CONFLICT (execution_id, key) DO UPDATE SET "
        "status='running', attempts=excluded.attempts, max_attempts=excluded.max_attempts, "
        "ended=NULL, error_type=NULL, error_message=NULL",
        (execution_id, key, task, n, max_attempts, started),
    )
    c.execute(
        "INSERT OR REPLACE INTO attempts (execution_id, node_key, n, status, started, pid, "
        "checkpoint_at_start) VALUES (?, ?, ?, 'running', ?, ?, ?)",
        (execution_id, key, n, started, pid, checkpoint_at_start),
    )


def write_starts(db: Database, rows: list[tuple]) -> None:
    with db.transaction() as c:
        for row in rows:
            _insert_start(c, row)
