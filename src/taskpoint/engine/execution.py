"""``Execution``: what ``run``/``resume`` return and ``taskpoint show`` prints (from records).

Loading an execution never unpickles anything (DESIGN.md, trust boundaries): ``show``,
``checkpoints`` and the web view get the bounded previews stored in the records
(``result_preview``, each node's ``output_preview``; see `taskpoint.records.preview`). Only a
run that needs the value unpickles it: `stored_result` (``resume`` of a succeeded execution).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from taskpoint.errors import ExecutionFailed, Preempted
from taskpoint.records import AttemptRecord, ExecutionRecord, NodeRecord, Records
from taskpoint.records.status import ExecutionStatus


@dataclass
class Attempt:
    n: int
    status: str
    error: str | None
    started: float
    ended: float | None
    pid: int | None
    checkpoint_at_start: str | None
    checkpoint_at_end: str | None
    traceback: str | None = field(default=None, repr=False)


@dataclass
class Node:
    key: str
    task: str
    status: str
    attempts: list[Attempt]
    max_attempts: int | None
    started: float | None
    ended: float | None
    error: str | None
    output_preview: str | None = None  # JSON text, see taskpoint.records.preview


@dataclass
class Execution:
    """One run of a workflow (or of a lone task) and how it went.

    ``status`` is ``succeeded | failed | preempted | aborted | running | interrupted``;
    ``result`` is the return value when it succeeded (as returned by ``run``/``resume``; an
    execution loaded from the records for display has ``None`` there and ``result_preview``
    instead); ``error`` is ``"Type: message"`` otherwise.
    """

    id: str
    name: str
    status: str
    result: Any
    error: str | None
    nodes: list[Node]
    failed_node: str | None
    created: float
    started: float | None
    ended: float | None
    inputs: str | None
    storage: str
    traceback: str | None = field(default=None, repr=False)
    exception: BaseException | None = field(default=None, repr=False)
    result_preview: str | None = None  # JSON text, see taskpoint.records.preview

    @property
    def succeeded(self) -> bool:
        return self.status == ExecutionStatus.SUCCEEDED

    def unwrap(self) -> Any:
        """The result if the execution succeeded; otherwise raise what the caller should see:
        ``ExecutionFailed`` chained to the task's exception, ``Preempted``, or
        ``KeyboardInterrupt`` for an aborted one."""
        if self.status == ExecutionStatus.SUCCEEDED:
            return self.result
        exc = self.exception
        if self.status == ExecutionStatus.ABORTED:
            raise KeyboardInterrupt from exc
        if self.status == ExecutionStatus.PREEMPTED:
            raise Preempted(
                f"execution {self.id} was preempted; `taskpoint resume {self.id}` continues it",
                execution_id=self.id,
                node=self.failed_node,
            ) from exc
        where = f" in node {self.failed_node}" if self.failed_node else ""
        message = f"execution {self.id} failed{where}: {self.error}"
        raise ExecutionFailed(self.id, self.failed_node, message) from exc


def load_execution(
    records: Records,
    id_or_rec: str | ExecutionRecord,
    *,
    result: Any = None,
    exception: BaseException | None = None,
) -> Execution:
    """The execution as recorded. ``result`` is what a run returned (the live value); without
    it the result is ``None``: nothing is unpickled here, `result_preview` shows it."""
    rec = id_or_rec if isinstance(id_or_rec, ExecutionRecord) else records.get_execution(id_or_rec)
    status = rec.effective_status
    attempts: dict[str, list[Attempt]] = {}
    for a in records.attempts(rec.id):
        attempts.setdefault(a.node_key, []).append(_attempt(a, status))
    nodes = [_node(n, attempts.get(n.key, []), status) for n in records.nodes(rec.id)]
    error = None
    if rec.error_type:
        error = f"{rec.error_type}: {rec.error_message}" if rec.error_message else rec.error_type
    return Execution(
        id=rec.id,
        name=rec.name,
        status=status,
        result=result,
        error=error,
        nodes=nodes,
        failed_node=rec.failed_node,
        created=rec.created,
        started=rec.started,
        ended=rec.ended,
        inputs=rec.inputs,
        storage=rec.storage,
        traceback=rec.traceback,
        exception=exception,
        result_preview=rec.result_preview if rec.status == ExecutionStatus.SUCCEEDED else None,
    )


def stored_result(rec: ExecutionRecord, options: dict[str, Any] | None = None) -> Any:
    """Unpickle a succeeded execution's stored result. Only for a run that needs the value
    (``resume``): whoever can write the blob store can make this run code."""
    if rec.status != ExecutionStatus.SUCCEEDED or not rec.result_ref:
        return None
    from taskpoint.engine import blobs

    try:
        return blobs.get_pickle(rec.result_ref, options)
    except (OSError, ImportError, AttributeError):
        return None  # e.g. the result's class is defined in a module not loaded here


def _live(status: str, execution_status: str) -> str:
    return (
        ExecutionStatus.INTERRUPTED
        if status == ExecutionStatus.RUNNING and execution_status == ExecutionStatus.INTERRUPTED
        else status
    )


def _attempt(a: AttemptRecord, execution_status: str) -> Attempt:
    return Attempt(
        n=a.n,
        status=_live(a.status, execution_status),
        error=a.error,
        started=a.started,
        ended=a.ended,
        pid=a.pid,
        checkpoint_at_start=a.checkpoint_at_start,
        checkpoint_at_end=a.checkpoint_at_end,
        traceback=a.traceback,
    )


def _node(n: NodeRecord, attempts: list[Attempt], execution_status: str) -> Node:
    error = None
    if n.error_type:
        error = f"{n.error_type}: {n.error_message}" if n.error_message else n.error_type
    return Node(
        key=n.key,
        task=n.task,
        status=_live(n.status, execution_status),
        attempts=attempts,
        max_attempts=n.max_attempts,
        started=n.started,
        ended=n.ended,
        error=error,
        output_preview=n.output_preview,
    )
