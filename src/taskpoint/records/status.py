"""The statuses the records store, as ``StrEnum``s.

Members compare equal to (and are stored as) their plain strings, so rows read back from SQLite
stay plain ``str`` and compare against these members directly.
"""

from __future__ import annotations

from enum import StrEnum


class AttemptStatus(StrEnum):
    """How one attempt ended (an ``Outcome``'s status), or ``running`` in its row while it runs."""

    RUNNING = "running"  # only the stored row of an attempt in progress, never an Outcome's
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RECOVERABLE = "recoverable"
    PREEMPTED = "preempted"
    LOST = "lost"
    ABORTED = "aborted"


class NodeStatus(StrEnum):
    """A node's status: ``running`` until its last attempt ends."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PREEMPTED = "preempted"
    ABORTED = "aborted"


class ExecutionStatus(StrEnum):
    """An execution's status; ``interrupted`` is never stored, only derived for a dead driver."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PREEMPTED = "preempted"
    ABORTED = "aborted"
    INTERRUPTED = "interrupted"
