"""Execution records in SQLite (WAL): executions, nodes, attempts. Persistence only."""

from taskpoint.records.models import AttemptRecord, ExecutionRecord, NodeRecord
from taskpoint.records.store import AttemptEnd, AttemptStart, Records

__all__ = [
    "AttemptEnd",
    "AttemptRecord",
    "AttemptStart",
    "ExecutionRecord",
    "NodeRecord",
    "Records",
]
