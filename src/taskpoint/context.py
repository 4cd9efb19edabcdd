"""The task context: what a running attempt knows about itself (``current_context()``).

Kept dependency-free so ``import taskpoint`` stays fast; the checkpoint of an attempt is opened
lazily, on first use, by a factory the engine provides.
"""

from __future__ import annotations

import contextvars
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from taskpoint.errors import TaskpointError

if TYPE_CHECKING:
    from taskpoint.checkpoint import Checkpoint

log = logging.getLogger("taskpoint")

_current: contextvars.ContextVar[TaskContext | None] = contextvars.ContextVar(
    "taskpoint_task_context", default=None
)


class TaskContext:
    """Context of one attempt of one task node.

    ``checkpoint`` is a :class:`~taskpoint.Checkpoint` scoped to this node of this execution and
    opened with this attempt's number; ``read()`` returns the latest committed version whatever
    attempt wrote it. ``preempted`` turns true when the attempt receives SIGTERM. In a task with
    ``nproc=N`` each of the attempt's N processes has its own context with the same execution,
    node, attempt and checkpoint scope, and its ``rank`` (0..N-1) of ``world_size`` (N); a
    single-process attempt is rank 0 of 1.
    """

    __slots__ = (
        "_callbacks",
        "_checkpoint",
        "_checkpoint_factory",
        "_deadline",
        "_deadline_listener",
        "attempt",
        "execution_id",
        "node",
        "preempted",
        "rank",
        "task_name",
        "world_size",
    )

    def __init__(
        self,
        execution_id: str,
        node: str,
        task_name: str,
        attempt: int,
        checkpoint_factory: Callable[[TaskContext], Any],
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.execution_id = execution_id
        self.node = node
        self.task_name = task_name
        self.attempt = attempt
        self.rank = rank
        self.world_size = world_size
        self.preempted = False
        self._checkpoint_factory = checkpoint_factory
        self._checkpoint: Any = None
        self._callbacks: list[Callable[[], Any]] = []
        self._deadline: float | None = None
        # The engine's preemption guard: re-arms its stop when the deadline moves.
        self._deadline_listener: Callable[[float], Any] | None = None

    @property
    def checkpoint(self) -> Checkpoint:
        if self._checkpoint is None:
            self._checkpoint = self._checkpoint_factory(self)
        return self._checkpoint

    @property
    def checkpoint_opened(self) -> bool:
        return self._checkpoint is not None

    def on_preempt(self, callback: Callable[[], Any]) -> None:
        """Call ``callback()`` when this attempt is preempted (at once if it already was)."""
        self._callbacks.append(callback)
        if self.preempted:
            _call_safely(callback)

    @property
    def preempt_deadline(self) -> float | None:
        """The ``time.monotonic()`` time by which this attempt must be done, once preempted
        (``None`` before). SIGTERM sets it to the signal's time plus the grace period.

        Set it when the machine goes away sooner or later than that (from ``on_preempt``, or
        where the cloud's own notice arrives): the engine moves its stop of the attempt to the
        new time and plans the last checkpoint against it (pending async writes that cannot
        finish give way to the newest state; a write that would not fit is skipped). Setting
        it on an attempt not preempted yet preempts it, as SIGTERM would. (With
        ``isolation="process"`` a driver that got SIGTERM too still stops the attempt's
        process a little after its own grace period: a later time needs a longer ``grace``.)
        """
        return self._deadline

    @preempt_deadline.setter
    def preempt_deadline(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"preempt_deadline takes a time.monotonic() time, not {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"preempt_deadline must be a finite time, got {value!r}")
        self._deadline = float(value)
        if self._deadline_listener is not None:
            self._deadline_listener(self._deadline)
        self.mark_preempted()

    def listen_to_deadline(self, listener: Callable[[float], Any] | None) -> None:
        """Call ``listener(deadline)`` when ``preempt_deadline`` is set (engine internal)."""
        self._deadline_listener = listener

    def mark_preempted(self, deadline: float | None = None) -> None:
        """Set ``preempted`` (and ``preempt_deadline``, unless it was set) and run the
        callbacks once (called from the SIGTERM handler)."""
        if self.preempted:
            return
        if self._deadline is None:
            self._deadline = deadline
        self.preempted = True
        for callback in list(self._callbacks):
            _call_safely(callback)

    def __repr__(self) -> str:
        return (
            f"TaskContext(execution_id={self.execution_id!r}, node={self.node!r}, "
            f"attempt={self.attempt}, rank={self.rank}/{self.world_size}, "
            f"preempted={self.preempted})"
        )


def _call_safely(callback: Callable[[], Any]) -> None:
    # A failing callback must not stop the preemption flow (the checkpoint must still commit).
    try:
        callback()
    except Exception:
        log.exception("taskpoint: on_preempt callback %r failed", callback)


def current_context() -> TaskContext:
    """The context of the task attempt running now.

    Raises :class:`TaskpointError` when called outside a task.

    Examples:
        >>> import tempfile
        >>> import taskpoint
        >>> from taskpoint import current_context, task
        >>> _ = taskpoint.configure(home=tempfile.mkdtemp())
        >>> @task
        ... def where() -> str:
        ...     ctx = current_context()
        ...     ctx.checkpoint.write(b"state")           # this node's checkpoint scope
        ...     return f"{ctx.node}, attempt {ctx.attempt}, preempted: {ctx.preempted}"
        >>> where()
        'where#1, attempt 1, preempted: False'
    """
    ctx = _current.get()
    if ctx is None:
        raise TaskpointError(
            "current_context() was called outside a task: call it from inside a function "
            "decorated with @task while it runs"
        )
    return ctx


def active_context() -> TaskContext | None:
    """The running attempt's context, or ``None`` (engine internal)."""
    return _current.get()


def set_context(ctx: TaskContext | None) -> contextvars.Token:
    return _current.set(ctx)


def reset_context(token: contextvars.Token) -> None:
    _current.reset(token)
