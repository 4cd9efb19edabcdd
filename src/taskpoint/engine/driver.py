"""The driver: runs one execution (fresh or resumed) in this process and records how it ends."""

from __future__ import annotations

import contextvars
import logging
import pickle
import time
import traceback
from collections.abc import Callable
from typing import Any

from taskpoint.engine import blobs
from taskpoint.engine.attempt import Backend
from taskpoint.engine.config import Engine
from taskpoint.engine.execution import Execution, load_execution
from taskpoint.engine.fanout import Fanout
from taskpoint.engine.node import NodeRun
from taskpoint.engine.preempt import PreemptionGuard
from taskpoint.engine.task import Target, Task
from taskpoint.errors import Preempted
from taskpoint.records import ExecutionRecord, NodeRecord, Records
from taskpoint.records.heartbeat import Heartbeat
from taskpoint.records.status import ExecutionStatus, NodeStatus

log = logging.getLogger("taskpoint")

_current_run: contextvars.ContextVar[Run | None] = contextvars.ContextVar(
    "taskpoint_run", default=None
)


def current_run() -> Run | None:
    return _current_run.get()


class Run:
    """One driver's pass over an execution: node keys, stored outputs, signals, the outcome."""

    def __init__(
        self,
        records: Records,
        rec: ExecutionRecord,
        engine: Engine,
        *,
        resumed: bool,
        from_scratch: bool = False,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.records = records
        self.rec = rec
        self.execution_id = rec.id
        self.storage = rec.storage  # from the record, so a resume finds the same blobs
        self.engine = engine
        self.storage_options = engine.storage_options_for(self.storage)
        self.storage_timeout = engine.resolved_storage_timeout()
        self.local_copy = engine.resolved_local_copy()  # None: each attempt's machine decides
        self.listener = engine.listener
        self.guard = PreemptionGuard(engine.grace)
        self.resumed = resumed
        self.run_number = rec.runs or 1  # this driver run of the execution (1 + resumes)
        # `resume --from-scratch`: a node whose recorded checkpoints are missing from the
        # storage starts from zero (logged) instead of failing with CheckpointMissingError.
        self.from_scratch = from_scratch
        self.sleep = sleep or time.sleep
        self.counters: dict[str, int] = {}
        self.previous = {n.key: n for n in records.nodes(rec.id)} if resumed else {}
        # (node, error, type, message) of each failed node; several when mapped nodes fail
        self.failures: list[tuple[str, BaseException, str | None, str | None]] = []
        self.preempted_node: str | None = None
        self.fanout = Fanout(self)

    def storage_timeout_for(self, task: Task) -> float | None:
        """The task's ``storage_timeout``, else the engine's (``None``: the store's own)."""
        return task.storage_timeout if task.storage_timeout is not None else self.storage_timeout

    def next_key(self, name: str) -> str:
        # The n-th call of a task in this execution: deterministic, so a resumed run maps each
        # call to the node that the first run recorded for it.
        n = self.counters.get(name, 0) + 1
        self.counters[name] = n
        return f"{name}#{n}"

    def call_task(self, task: Task, args: tuple, kwargs: dict) -> Any:
        return self.call_bound(task, task.bind(args, kwargs))

    def backend_for(self, task: Task) -> Backend:
        return self.engine.backend_for(task)

    def call_bound(self, task: Task, arguments: dict[str, Any]) -> Any:
        return self.run_node(task, self.next_key(task.name), arguments)

    def run_node(self, task: Task, key: str, arguments: dict[str, Any]) -> Any:
        if self.guard.preempted:
            self.preempted_node = self.preempted_node or key
            raise Preempted(
                f"execution {self.execution_id} preempted before node {key} started",
                execution_id=self.execution_id,
                node=key,
            )
        previous = self.previous.get(key)
        if previous is not None and previous.status == NodeStatus.SUCCEEDED:
            found, value = _stored_output(previous, self.storage_options)
            if found:
                self.listener.node_reused(self.execution_id, key)
                return value
        return NodeRun(self, task, key, arguments, previous).execute()

    def wait_for(self, key: str, handle: Any) -> Any:
        """The outcome of an attempt in flight (which ``fanout.stop`` may cancel)."""
        return self.fanout.wait_for(key, handle)

    def is_stopped(self, key: str) -> bool:
        return self.fanout.is_stopped(key)

    # -- the whole execution ---------------------------------------------------------------------

    def execute(self, target: Target, arguments: dict[str, Any]) -> Execution:
        token = _current_run.set(self)
        try:
            with self.guard.installed(), Heartbeat(self.records.path, self.execution_id):
                self.listener.execution_started(self.execution_id, target.name, self.resumed)
                try:
                    if isinstance(target, Task):
                        value = self.call_bound(target, arguments)
                    else:
                        value = target.call_bound(arguments)
                    self.fanout.close(failed=False)  # submitted nodes nobody waited for
                except BaseException as exc:
                    self.fanout.close(failed=True)
                    return self._finish_error(exc)
                return self._finish_ok(value)
        finally:
            _current_run.reset(token)

    def _finish_ok(self, value: Any) -> Execution:
        if self.preempted_node is not None:  # the workflow swallowed Preempted
            return self._finish_error(Preempted(execution_id=self.execution_id))
        ref = f"{blobs.execution_url(self.storage, self.execution_id)}/result.pkl"
        try:
            blobs.put_pickle(ref, value, self.storage_options)
        except Exception as exc:
            error = TypeError(f"the workflow's result cannot be pickled ({exc})")
            return self._finish_error(error)
        self.records.finish_execution(self.execution_id, ExecutionStatus.SUCCEEDED, result_ref=ref)
        return load_execution(self.records, self.execution_id, result=value)

    def _finish_error(self, exc: BaseException) -> Execution:
        node = None
        error_type: str | None = type(exc).__name__
        error_message: str | None = str(exc)
        if isinstance(exc, KeyboardInterrupt):
            status = ExecutionStatus.ABORTED
        elif self.preempted_node is not None or (
            isinstance(exc, Preempted) and self.guard.preempted
        ):
            status, node = ExecutionStatus.PREEMPTED, self.preempted_node
        else:
            status = ExecutionStatus.FAILED
            for failure in self.failures:
                if _caused_by(exc, failure[1]):
                    # As the task raised it (an attempt's child may only have sent its text).
                    node, _, error_type, error_message = failure
                    break
        self.records.finish_execution(
            self.execution_id,
            status,
            error_type=error_type,
            error_message=error_message,
            traceback="".join(traceback.format_exception(exc)),
            failed_node=node,
        )
        return load_execution(self.records, self.execution_id, exception=exc)


def _stored_output(node: NodeRecord, options: dict[str, Any]) -> tuple[bool, Any]:
    try:
        if node.output is not None:
            return True, pickle.loads(node.output)
        if node.output_ref:
            return True, blobs.get_pickle(node.output_ref, options)
    except Exception as exc:  # lost or unreadable: running the node again is always correct
        log.warning(
            "taskpoint: stored output of %s is unusable (%s); running it again", node.key, exc
        )
    return False, None


def _caused_by(exc: BaseException, cause: BaseException) -> bool:
    seen = 0
    while exc is not None and seen < 20:
        if exc is cause:
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
        seen += 1
    return False


def run_eagerly(target: Target, args: tuple, kwargs: dict) -> Any:
    """A top-level call of a workflow or task: run an execution on the default engine, return
    its result or raise."""
    from taskpoint.engine.config import default_engine

    execution = default_engine().run(target, *args, **kwargs)
    return execution.unwrap()
