"""Many records in one transaction: a history imported or generated in bulk (a benchmark's home
of 100,000 executions, a test's fixture) at ``executemany`` speed.

The engine writes one execution, node or attempt at a time, each change in its own short
transaction (a driver must record an attempt before the next may start). Writing a whole history
that way costs one commit per row: about 30 us each in WAL mode, ~10 s for 300,000 rows. Here
each table's rows go in one ``executemany`` and all of them in one transaction, so a reader sees
all of the batch or none of it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from taskpoint.records import schema
from taskpoint.records.models import AttemptRecord, ExecutionRecord, NodeRecord
from taskpoint.records.store import Records

_TABLES = (
    ("executions", schema.EXECUTION_COLUMNS),
    ("nodes", schema.NODE_COLUMNS),
    ("attempts", schema.ATTEMPT_COLUMNS),
)


def insert_records(
    records: Records,
    executions: Iterable[ExecutionRecord] = (),
    nodes: Iterable[NodeRecord] = (),
    attempts: Iterable[AttemptRecord] = (),
) -> None:
    """Insert these rows in one transaction; a row whose key exists fails the whole batch
    (``sqlite3.IntegrityError``) and nothing of it is written."""
    batches: tuple[Iterable[Any], ...] = (executions, nodes, attempts)
    with records.db.transaction() as c:
        for (table, columns), rows in zip(_TABLES, batches, strict=True):
            names = [name.strip() for name in columns.split(",")]
            marks = ", ".join("?" * len(names))
            c.executemany(
                f"INSERT INTO {table} ({columns}) VALUES ({marks})",
                (tuple(getattr(row, name) for name in names) for row in rows),
            )
