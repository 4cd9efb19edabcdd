"""``Execution``: what ``run``/``resume`` return and ``taskpoint show`` prints (from records).

Times (the same in ``list``, ``show``, ``--json`` and the web view):

- An attempt runs from its start to its end; an attempt cut short by its driver's death ends at
  its *last sign of life*: its driver's last heartbeat or recorded attempt start or end, or the
  last checkpoint it committed if later (filled in when the execution is resumed).
- A node's wall time spans its first attempt's start to its last attempt's end; its running
  time is the sum of its attempts' times.
- An execution's wall time spans its first driver run's start to its end (to now while it
  runs, to its last sign of life when its driver died); its running time is the sum of its
  driver runs' times (``runs`` of them: the first run and one per ``resume``).

Budgets: see `Node.budgets` and docs/concepts/executions-nodes-attempts.md.

Loading an execution never unpickles anything (DESIGN.md, trust boundaries): ``show``,
``checkpoints`` and the web view get the bounded previews stored in the records
(``result_preview``, each node's ``output_preview``; see `taskpoint.records.preview`). Only a
run that needs the value unpickles it: `stored_result` (``resume`` of a succeeded execution).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from taskpoint.engine.retry import BUDGET_OF_STATUS, SYSTEM_BUDGET, USER_BUDGET
from taskpoint.errors import ExecutionFailed, Preempted
from taskpoint.records import AttemptRecord, ExecutionRecord, NodeRecord, Records
from taskpoint.records.schema import LEDGER_COLUMNS
from taskpoint.records.status import AttemptStatus, ExecutionStatus

# The budgets by the task options that set them, as recorded (attempts.budget) and shown.
BUDGET_NAMES = {USER_BUDGET: "retries", SYSTEM_BUDGET: "system_retries"}


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
    run: int | None = None  # the driver run it ran in (None in older records)
    budget: str | None = None  # the budget its retry spent: "retries" | "system_retries"
    last_commit: float | None = None  # when it committed checkpoint_at_end (its own version)
    step_at_start: int | None = None
    step_at_end: int | None = None
    last_seen: float | None = None  # an interrupted attempt: its driver's last sign of life
    # What the attempt measured of itself (records schema 4; None in older records and when it
    # could not report): see engine/meter.py, and engine/goodput.py for the ledger built on it.
    loaded_version: str | None = None
    loaded_step: int | None = None
    resume_warning: str | None = None
    start_s: float | None = None
    restore_s: float | None = None
    first_step_s: float | None = None
    stall_s: float | None = None
    work_lost_s: float | None = None

    def until(self, now: float) -> float:
        """When it ended: as recorded; ``now`` while it runs; an interrupted one (its driver
        died, not resumed yet) at its driver's last sign of life or its last commit."""
        if self.ended is not None:
            return self.ended
        if self.status == AttemptStatus.RUNNING:
            return now
        return max(self.started, self.last_seen or 0.0, self.last_commit or 0.0)

    def duration(self, now: float) -> float:
        return max(0.0, self.until(now) - self.started)


@dataclass
class Budget:
    """One retry budget of a node: retries spent since ``Node.budget_from``, of ``limit``."""

    spent: int
    limit: int


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
    # "retries" / "system_retries" -> Budget, counted from attempt ``budget_from`` (a node that
    # failed and was resumed starts a fresh budget there); None in records older than budgets.
    budgets: dict[str, Budget] | None = None
    budget_from: int | None = None
    exhausted: str | None = None  # the budget that ran out when the node failed for want of it

    def times(self, now: float) -> tuple[float | None, float, float, int]:
        """``(started, wall seconds, running seconds, driver runs)`` from its attempts."""
        if not self.attempts:
            end = self.ended if self.ended is not None else self.started
            wall = max(0.0, end - self.started) if self.started and end else 0.0
            return self.started, wall, wall, 1
        start = min(a.started for a in self.attempts)
        end = max(a.until(now) for a in self.attempts)
        running = sum(a.duration(now) for a in self.attempts)
        return start, max(0.0, end - start), running, len({a.run or 1 for a in self.attempts})


@dataclass
class Execution:
    """One run of a workflow (or of a lone task) and how it went.

    ``status`` is ``succeeded | failed | preempted | aborted | running | interrupted``;
    ``result`` is the return value when it succeeded (as returned by ``run``/``resume``; an
    execution loaded from the records for display has ``None`` there and ``result_preview``
    instead); ``error`` is ``"Type: message"`` otherwise.

    Examples:
        >>> import tempfile
        >>> import taskpoint
        >>> from taskpoint import task
        >>> _ = taskpoint.configure(home=tempfile.mkdtemp())
        >>> @task
        ... def parse(text: str) -> int:
        ...     return int(text)
        >>> ok = taskpoint.run(parse, "42")
        >>> print(ok.status, ok.result, [node.key for node in ok.nodes])
        succeeded 42 ['parse#1']
        >>> bad = taskpoint.run(parse, "forty-two")      # never raises: look at it
        >>> print(bad.status, bad.failed_node, bad.error.split(":")[0])
        failed parse#1 ValueError
        >>> try:
        ...     bad.unwrap()                              # the result, or raise
        ... except taskpoint.ExecutionFailed as exc:
        ...     print(type(exc.__cause__).__name__)
        ValueError
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
    runs: int = 1  # driver runs: the first and one per resume
    ran_before_s: float = 0.0  # seconds the driver runs before the latest one ran
    last_seen: float | None = None  # an interrupted one: its driver's last sign of life

    @property
    def first_started(self) -> float:
        """When its first driver run started (``started`` is the latest run's start)."""
        return self.created

    def until(self, now: float) -> float:
        """The end its times run to: recorded; ``now`` while it runs; its driver's last sign of
        life when the driver died."""
        return run_end(self.status, self.started, self.ended, self.last_seen, now)

    def times(self, now: float | None = None) -> tuple[float, float, int]:
        """``(wall seconds, running seconds, driver runs)``."""
        now = time.time() if now is None else now
        return _times(self.created, self.started, self.ran_before_s, self.runs, self.until(now))

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
    rows = records.attempts(rec.id)
    last_seen = None
    if status == ExecutionStatus.INTERRUPTED:
        last_seen = last_sign_of_life(rec, [_activity(a) for a in rows])
    attempts: dict[str, list[Attempt]] = {}
    for a in rows:
        attempts.setdefault(a.node_key, []).append(_attempt(a, status, last_seen))
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
        runs=rec.runs or 1,
        ran_before_s=rec.ran_before_s or 0.0,
        last_seen=last_seen,
    )


def run_end(
    status: str, started: float | None, ended: float | None, last_seen: float | None, now: float
) -> float:
    """Where an execution's latest driver run ends for its times (see the module docstring)."""
    if status == ExecutionStatus.RUNNING:
        return now
    if ended is not None:
        return ended
    return max(t for t in (started, last_seen, 0.0) if t is not None)


def record_times(
    rec: ExecutionRecord, status: str, now: float, activity: float | None = None
) -> tuple[float, float, int, float]:
    """`Execution.times` from the record alone, plus the end they run to: ``(wall, running,
    runs, end)``. ``activity`` is its latest recorded attempt start or end (``Records.
    latest_activity``), needed only for an interrupted one."""
    last_seen = None
    if status == ExecutionStatus.INTERRUPTED:
        last_seen = last_sign_of_life(rec, [activity] if activity is not None else [])
    end = run_end(status, rec.started, rec.ended, last_seen, now)
    return (*_times(rec.created, rec.started, rec.ran_before_s or 0.0, rec.runs or 1, end), end)


def _times(
    created: float, started: float | None, ran_before: float, runs: int, end: float
) -> tuple[float, float, int]:
    running = ran_before + max(0.0, end - (started or created))
    return max(0.0, end - created), running, runs


def last_sign_of_life(rec: ExecutionRecord, activity: list[float]) -> float:
    """When a dead driver was last known alive: its last heartbeat, or the latest attempt start
    or end it recorded (``activity``), never before its run started."""
    return max([rec.started or rec.created, rec.last_seen or 0.0, *activity])


def _activity(a: AttemptRecord) -> float:
    return max(a.started, a.ended or 0.0)


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


def _attempt(a: AttemptRecord, execution_status: str, last_seen: float | None) -> Attempt:
    status = _live(a.status, execution_status)
    return Attempt(
        n=a.n,
        status=status,
        error=a.error,
        started=a.started,
        ended=a.ended,
        pid=a.pid,
        checkpoint_at_start=a.checkpoint_at_start,
        checkpoint_at_end=a.checkpoint_at_end,
        traceback=a.traceback,
        run=a.run,
        budget=a.budget,
        last_commit=a.last_commit,
        step_at_start=a.step_at_start,
        step_at_end=a.step_at_end,
        last_seen=last_seen if status == ExecutionStatus.INTERRUPTED else None,
        **{name: getattr(a, name) for name in LEDGER_COLUMNS},
    )


def _node(n: NodeRecord, attempts: list[Attempt], execution_status: str) -> Node:
    error = None
    if n.error_type:
        error = f"{n.error_type}: {n.error_message}" if n.error_message else n.error_type
    status = _live(n.status, execution_status)
    budgets = _budgets(n, attempts)
    exhausted = _exhausted(status, attempts, budgets)
    return Node(
        key=n.key,
        task=n.task,
        status=status,
        attempts=attempts,
        max_attempts=n.max_attempts,
        started=n.started,
        ended=n.ended,
        error=error,
        output_preview=n.output_preview,
        budgets=budgets,
        budget_from=n.budget_from,
        exhausted=exhausted,
    )


def _budgets(n: NodeRecord, attempts: list[Attempt]) -> dict[str, Budget] | None:
    if n.retries is None or n.system_retries is None:
        return None  # recorded before budgets were
    since = n.budget_from or 1
    spent = {name: 0 for name in BUDGET_NAMES.values()}
    for a in attempts:
        if a.n >= since and a.budget in spent:
            spent[a.budget] += 1
    limits = {"retries": n.retries, "system_retries": n.system_retries}
    return {name: Budget(spent[name], limits[name]) for name in BUDGET_NAMES.values()}


def _exhausted(
    status: str, attempts: list[Attempt], budgets: dict[str, Budget] | None
) -> str | None:
    """The budget a failed node ran out of: its last attempt's kind, all of it spent."""
    if status != ExecutionStatus.FAILED or not attempts or budgets is None:
        return None
    kind = BUDGET_OF_STATUS.get(attempts[-1].status)
    name = BUDGET_NAMES.get(kind) if kind else None
    if name is None or budgets[name].spent < budgets[name].limit:
        return None
    return name
