"""The engine's memory: executions, nodes and attempts (persistence only, no decisions)."""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from taskpoint.errors import ExecutionNotFound
from taskpoint.records import schema
from taskpoint.records.db import Database, open_database
from taskpoint.records.liveness import hostname, process_token
from taskpoint.records.models import AttemptRecord, ExecutionRecord, NodeRecord
from taskpoint.records.status import ExecutionStatus, NodeStatus


@dataclass
class AttemptStart:
    """What is written when an attempt starts (with its node's row, in one transaction)."""

    task: str
    max_attempts: int
    pid: int
    checkpoint_at_start: str | None = None
    step_at_start: int | None = None  # the step of checkpoint_at_start, when it has one
    run: int | None = None  # the driver run (executions.runs) the attempt runs in
    retries: int | None = None  # the node's budgets (the task's retries= and system_retries=)
    system_retries: int | None = None
    budget_from: int | None = None  # the first attempt its current budgets count from


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
    budget: str | None = None  # the budget its retry spends ("retries" | "system_retries")
    last_commit: float | None = None  # when checkpoint_at_end was committed, if its own
    step_at_end: int | None = None  # the step of checkpoint_at_end
    ended: float | None = None  # the end time, when not now (an attempt recorded after the fact)
    measured: dict[str, Any] | None = None  # schema.LEDGER_COLUMNS -> what the attempt measured


class Records:
    # The columns its readers select (a read-only reader of an older database narrows them).
    execution_columns = schema.EXECUTION_COLUMNS
    node_columns = schema.NODE_COLUMNS
    attempt_columns = schema.ATTEMPT_COLUMNS

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
        """Mark a resumed execution running under this driver, as its next driver run.

        The previous run's time is added to ``ran_before_s``: up to its recorded end, or, when
        its driver died, up to its last sign of life (its last heartbeat, or the last attempt
        start or end it recorded after that). Attempts it left running become ``lost`` and end
        there too; the next attempt of their node refines that end from the versions they
        committed (see ``reconcile_lost``)."""
        now = time.time()
        d = self.driver_fields()
        with self.db.transaction() as c:
            row = c.execute(
                "SELECT started, ended, last_seen, runs, ran_before_s FROM executions WHERE id=?",
                (execution_id,),
            ).fetchone()
            if row is None:
                return
            started, ended, last_seen, runs, ran_before = row
            (latest,) = c.execute(
                "SELECT max(max(started, coalesce(ended, started))) FROM attempts "
                "WHERE execution_id=?",
                (execution_id,),
            ).fetchone()
            base = started if started is not None else now
            last_sign = (
                ended
                if ended is not None
                else max(t for t in (base, last_seen, latest) if t is not None)
            )
            ran = (ran_before or 0.0) + max(0.0, last_sign - base)
            c.execute(
                "UPDATE executions SET status='running', ended=NULL, error_type=NULL, "
                "error_message=NULL, traceback=NULL, failed_node=NULL, started=?, driver_pid=?, "
                "driver_host=?, driver_token=?, runs=?, ran_before_s=?, last_run_end=?, "
                "last_seen=NULL WHERE id=?",
                (
                    now,
                    d["driver_pid"],
                    d["driver_host"],
                    d["driver_token"],
                    (runs or 1) + 1,
                    ran,
                    last_sign,
                    execution_id,
                ),
            )
            c.execute(
                "UPDATE attempts SET status='lost', ended=max(started, ?), "
                "error_type='AttemptLost', "
                "error_message='the driver process died during this attempt' "
                "WHERE execution_id=? AND status='running'",
                (last_sign, execution_id),
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
            rows = self._by_prefix(id_or_prefix)
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

    def _by_prefix(self, prefix: str) -> list[tuple]:
        """Up to two executions whose id starts with ``prefix``, ignoring case. Through the
        primary key's index first (a range per spelling: the engine's ids are lowercase hex),
        so a home of 100,000 executions answers as fast as one of 100; only when that finds
        nothing (an id made elsewhere in another case, or none) is every id read."""
        columns = self.execution_columns
        for spelling in dict.fromkeys((prefix.lower(), prefix)):
            rows = self.db.query(
                f"SELECT {columns} FROM executions WHERE id >= ? AND id < ? LIMIT 2",
                (spelling, spelling + "\U0010ffff"),
            )
            if rows:
                return rows
        pattern = prefix.replace("%", "").replace("_", "") + "%"
        return self.db.query(
            f"SELECT {columns} FROM executions WHERE id LIKE ? LIMIT 2", (pattern,)
        )

    def list_executions(
        self, limit: int | None = None, statuses: set[str] | None = None
    ) -> list[ExecutionRecord]:
        """The newest ``limit`` executions (all without one); with ``statuses``, only those of
        these effective statuses, selected in SQL (the ``executions_status`` index), a running
        row kept or not once its driver is checked (``interrupted``: its driver died)."""
        wanted = statuses or set()
        stored = sorted({_stored_status(s) for s in wanted})
        where = f" WHERE status IN ({', '.join('?' * len(stored))})" if stored else ""
        sql = f"SELECT {self.execution_columns} FROM executions{where}"
        sql += " ORDER BY created DESC, rowid DESC"
        exact = ExecutionStatus.RUNNING not in stored
        if limit and exact:
            sql += f" LIMIT {int(limit)}"
        found = [ExecutionRecord(*row) for row in self.db.query(sql, tuple(stored))]
        if not exact:
            found = [e for e in found if e.effective_status in wanted][:limit]
        return found

    # -- nodes and attempts ----------------------------------------------------------------------

    def nodes(self, execution_id: str) -> list[NodeRecord]:
        rows = self.db.query(
            f"SELECT {self.node_columns} FROM nodes WHERE execution_id=? ORDER BY rowid",
            (execution_id,),
        )
        return [NodeRecord(*row) for row in rows]

    def attempts(self, execution_id: str) -> list[AttemptRecord]:
        rows = self.db.query(
            f"SELECT {self.attempt_columns} FROM attempts WHERE execution_id=? ORDER BY started, n",
            (execution_id,),
        )
        return [AttemptRecord(*row) for row in rows]

    def attempt_started(
        self,
        execution_id: str,
        key: str,
        n: int,
        start: AttemptStart,
        *,
        defer: bool = False,
        at: float | None = None,
    ) -> float:
        """Record an attempt as running (since ``at``, default now). With ``defer`` the row is
        written with the attempt's end, or by a background thread if the attempt is still
        running after a short delay."""
        now = time.time() if at is None else at
        row = (execution_id, key, n, now, start)
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
        now = time.time() if end.ended is None else end.ended
        node_done = end.node_status != NodeStatus.RUNNING
        with self.db.transaction() as c:
            start = self.db.deferred.take((execution_id, key, n))
            if start is not None:
                _insert_start(c, start)
            # One UPDATE of the attempt's row, its ledger included when measured (each
            # statement costs as much as the rest of an inline task call's bookkeeping).
            measured = end.measured
            c.execute(
                _END_MEASURED if measured else _END,
                (
                    end.status,
                    end.error_type,
                    end.error_message,
                    end.traceback,
                    now,
                    end.checkpoint_at_end,
                    end.pid,
                    end.budget,
                    end.last_commit,
                    end.step_at_end,
                    *(map(measured.get, schema.LEDGER_COLUMNS) if measured else ()),
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

    def latest_activity(self, execution_ids: list[str]) -> dict[str, float]:
        """The latest attempt start or end each execution recorded (a dead driver's last sign
        of life, with its heartbeat)."""
        if not execution_ids:
            return {}
        marks = ", ".join("?" * len(execution_ids))
        rows = self.db.query(
            "SELECT execution_id, max(max(started, coalesce(ended, started))) FROM attempts "
            f"WHERE execution_id IN ({marks}) GROUP BY execution_id",
            tuple(execution_ids),
        )
        return dict(rows)

    # -- reconciling what a dead driver could not record -----------------------------------------

    def unreconciled_lost(self, execution_id: str, key: str) -> list[AttemptRecord]:
        """The node's attempts its dead driver left running (``restart_execution`` made them
        ``lost``) whose end checkpoint is not known yet."""
        rows = self.db.query(
            f"SELECT {self.attempt_columns} FROM attempts WHERE execution_id=? AND node_key=? "
            "AND status='lost' AND error_type='AttemptLost' AND checkpoint_at_end IS NULL "
            "AND last_commit IS NULL ORDER BY n",
            (execution_id, key),
        )
        return [AttemptRecord(*row) for row in rows]

    def reconcile_lost(
        self,
        execution_id: str,
        key: str,
        n: int,
        *,
        checkpoint_at_end: str | None,
        step_at_end: int | None,
        last_commit: float | None,
    ) -> None:
        """Fill in a lost attempt's end from what the store holds: the latest version at its
        end and, when it committed that version itself, when; its end moves to that commit if
        it came after the driver's last heartbeat."""
        with self.db.transaction() as c:
            c.execute(
                "UPDATE attempts SET checkpoint_at_end=?, step_at_end=?, last_commit=?, "
                "ended=max(coalesce(ended, started), coalesce(?, started)) "
                "WHERE execution_id=? AND node_key=? AND n=? AND status='lost'",
                (checkpoint_at_end, step_at_end, last_commit, last_commit, execution_id, key, n),
            )
            if last_commit is not None:
                _extend_last_run(c, execution_id, last_commit)

    def extend_last_run(self, execution_id: str, until: float) -> None:
        """The previous driver run was alive at ``until`` (a version it committed after its
        last heartbeat): it ran until then."""
        with self.db.transaction() as c:
            _extend_last_run(c, execution_id, until)

    def spent_budgets(self, execution_id: str, key: str, since: int) -> dict[str, int]:
        """How many retries of each budget the node's attempts from ``since`` on spent."""
        rows = self.db.query(
            "SELECT budget, count(*) FROM attempts WHERE execution_id=? AND node_key=? AND n>=? "
            "AND budget IS NOT NULL GROUP BY budget",
            (execution_id, key, since),
        )
        return {budget: count for budget, count in rows}


def _stored_status(status: str) -> str:
    """The status stored for an effective one (``interrupted`` is a ``running`` row)."""
    return ExecutionStatus.RUNNING if status == ExecutionStatus.INTERRUPTED else status


def _extend_last_run(c: sqlite3.Connection, execution_id: str, until: float) -> None:
    c.execute(
        "UPDATE executions SET ran_before_s=coalesce(ran_before_s, 0) + (? - last_run_end), "
        "last_run_end=? WHERE id=? AND last_run_end < ?",
        (until, until, execution_id, until),
    )


def _insert_start(c: sqlite3.Connection, row: tuple) -> None:
    execution_id, key, n, started, s = row
    c.execute(
        "INSERT INTO nodes (execution_id, key, task, status, attempts, max_attempts, started, "
        "retries, system_retries, budget_from) VALUES (?, ?, ?, 'running', ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (execution_id, key) DO UPDATE SET status='running', "
        "attempts=excluded.attempts, max_attempts=excluded.max_attempts, ended=NULL, "
        "error_type=NULL, error_message=NULL, retries=excluded.retries, "
        "system_retries=excluded.system_retries, budget_from=excluded.budget_from",
        (
            execution_id,
            key,
            s.task,
            n,
            s.max_attempts,
            started,
            s.retries,
            s.system_retries,
            s.budget_from,
        ),
    )
    c.execute(
        "INSERT OR REPLACE INTO attempts (execution_id, node_key, n, status, started, pid, "
        "checkpoint_at_start, step_at_start, run) VALUES (?, ?, ?, 'running', ?, ?, ?, ?, ?)",
        (execution_id, key, n, started, s.pid, s.checkpoint_at_start, s.step_at_start, s.run),
    )


def write_starts(db: Database, rows: list[tuple]) -> None:
    with db.transaction() as c:
        for row in rows:
            _insert_start(c, row)


# An attempt's end, without and with the goodput ledger's columns (built once: the statement
# runs once per attempt, on an inline task call's hot path).
_END_SET = (
    "UPDATE attempts SET status=?, error_type=?, error_message=?, traceback=?, ended=?, "
    "checkpoint_at_end=?, pid=coalesce(?, pid), budget=?, last_commit=?, step_at_end=?"
)
_END_WHERE = " WHERE execution_id=? AND node_key=? AND n=?"
_END = _END_SET + _END_WHERE
_END_MEASURED = _END_SET + "".join(f", {name}=?" for name in schema.LEDGER_COLUMNS) + _END_WHERE
