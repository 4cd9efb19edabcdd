"""What a backend is asked to run (``AttemptJob``) and what it answers (``Outcome``).

This is the contract between the engine and the transports that sit above it: a backend
*submits* an attempt and returns a handle whose ``result()`` says how the attempt ended. Running
the attempt itself is engine code (``engine/execute.py``, ``execute_attempt``) wherever it runs.
A backend never decides to retry; the attempt loop in ``engine/node.py`` does. A backend that
loses track of an attempt (its process or worker died, the connection closed) answers an
``Outcome`` with status ``lost``.

The engine imports no backend: the table of backends (name -> import path + install hint) is
declared above it and installs itself here (``install_backend_table``) when ``taskpoint`` is
imported, as a codec registry does; an ``Engine`` resolves backend names through it.
"""

from __future__ import annotations

import pickle
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from taskpoint.records.status import AttemptStatus

if TYPE_CHECKING:
    from taskpoint.engine.events import AttemptInfo, Listener
    from taskpoint.engine.preempt import PreemptionGuard
    from taskpoint.engine.task import Task


@dataclass
class Outcome:
    status: str  # succeeded | failed | recoverable | preempted | lost | aborted
    value: Any = None
    error: BaseException | None = None
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    checkpoint_at_end: Any = None  # CheckpointVersion | None
    pid: int | None = None
    # What the attempt measured of itself (engine/meter.py: goodput ledger, resume guard);
    # None when it could not report (its process died).
    ledger: dict[str, Any] | None = None

    @classmethod
    def from_error(cls, status: str, exc: BaseException, checkpoint: Any = None) -> Outcome:
        return cls(
            status=status,
            error=exc,
            error_type=type(exc).__name__,
            error_message=str(exc),
            traceback="".join(traceback.format_exception(exc)),
            checkpoint_at_end=checkpoint,
        )

    @property
    def error_text(self) -> str | None:
        if self.error_type is None:
            return None
        return f"{self.error_type}: {self.error_message}" if self.error_message else self.error_type


@dataclass
class AttemptJob:
    """One attempt of one node. ``info`` carries the execution id, node key, attempt number,
    checkpoint URL and storage options explicitly, so a remote worker needs nothing else."""

    task: Task
    arguments: dict[str, Any]
    info: AttemptInfo
    guard: PreemptionGuard  # the driver's signal state (remote backends only read it)
    listener: Listener


class AttemptHandle(Protocol):
    def result(self) -> Outcome:
        """Block until the attempt ended; never raises for the task's own errors."""

    def cancel(self) -> None:
        """Stop the attempt (the execution is ending); ``result()`` then says ``aborted``."""


class Backend(Protocol):
    name: str
    in_driver: bool  # attempts run in the driver process itself (their checkpoint is reused)
    concurrency: int  # nodes that may run at once; 1 = one after another, in the caller's thread

    def submit(self, job: AttemptJob) -> AttemptHandle: ...

    def close(self) -> None: ...


class BackendTable(Protocol):
    """Backends by name (``create``) and the shared one a task's ``isolation=`` asks for."""

    def create(self, name: str, **options: Any) -> Backend: ...

    def for_isolation(self, isolation: str) -> Backend: ...


_table: BackendTable | None = None


def install_backend_table(table: BackendTable) -> None:
    """Called once by the backend table's own module (imported by ``taskpoint/__init__``)."""
    global _table
    _table = table


def backend_table() -> BackendTable:
    if _table is None:
        from taskpoint.errors import TaskpointError

        raise TaskpointError("no backend table is installed: import taskpoint first")
    return _table


class DoneHandle:
    """The handle of an attempt that already ended (in-driver backends run it in ``submit``)."""

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome

    def result(self) -> Outcome:
        return self.outcome

    def cancel(self) -> None:
        pass


def portable(outcome: Outcome, task: Task) -> Outcome:
    """The outcome made safe to send to the driver: an exception that would not survive the trip
    is dropped (the driver rebuilds one from its type name and message), and an output that
    cannot be pickled turns the attempt into a failure that says so."""
    if outcome.error is not None:
        try:  # exceptions with custom __init__ often pickle but fail to unpickle
            pickle.loads(pickle.dumps(outcome.error))
        except Exception:
            outcome.error = None
    if outcome.status == AttemptStatus.SUCCEEDED:
        try:
            pickle.dumps(outcome.value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            replacement = TypeError(
                f"task {task.name!r} returned a value that cannot be pickled ({exc}); "
                "outputs must be picklable so they can be stored and returned on resume"
            )
            return Outcome.from_error(AttemptStatus.FAILED, replacement, outcome.checkpoint_at_end)
    return outcome
