"""``run`` and ``resume``: the engine's entry points for programs, on the default engine; the
``Engine`` methods (the CLI uses them) call ``run_with`` / ``resume_with`` here."""

from __future__ import annotations

import logging
import os
import shlex
import sys
import time
from typing import Any

from taskpoint.engine import blobs
from taskpoint.engine.config import Engine, default_engine
from taskpoint.engine.driver import Run
from taskpoint.engine.events import Listener
from taskpoint.engine.execution import Execution, load_execution, stored_result
from taskpoint.engine.task import Target
from taskpoint.errors import TaskpointError
from taskpoint.records import ExecutionRecord, Records
from taskpoint.records.preview import inputs_preview, make_preview
from taskpoint.records.status import ExecutionStatus

log = logging.getLogger("taskpoint")

# Targets run by this process, by execution id: a resume in the same process needs no import
# (and works for workflows defined inside functions).
_targets: dict[str, Target] = {}


def run(fn: Target, /, *args: Any, **kwargs: Any) -> Execution:
    """Run ``fn`` (a ``@workflow`` or ``@task``) as a new execution and return it.

    Never raises for a failed execution: look at ``.status`` / ``.error``, or call
    ``.unwrap()``. Raises ``TypeError`` (before anything runs) when inputs do not match the
    type hints. Uses the default engine (see ``configure``); ``Engine(...).run`` uses another.

    Examples:
        >>> import tempfile
        >>> import taskpoint
        >>> from taskpoint import task, workflow
        >>> _ = taskpoint.configure(home=tempfile.mkdtemp())
        >>> @task
        ... def add(a: int, b: int) -> int:
        ...     return a + b
        >>> @workflow
        ... def pipeline(n: int) -> int:
        ...     return add(a=n, b=1)
        >>> execution = taskpoint.run(pipeline, n=41)
        >>> print(execution.status, execution.result, len(execution.id))
        succeeded 42 12
    """
    return run_with(default_engine(), fn, args, kwargs)


def run_with(engine: Engine, fn: Target, args: tuple, kwargs: dict[str, Any]) -> Execution:
    if not isinstance(fn, Target):
        raise TypeError(f"run() needs a @workflow or @task, got {fn!r}; decorate it first")
    arguments = fn.bind(args, kwargs)
    records = engine.records()
    storage = engine.resolved_storage()
    engine.resolved_storage_timeout()  # a bad TASKPOINT_STORAGE_TIMEOUT fails before any record
    rec = _new_record(fn, arguments, storage, records)
    options = engine.storage_options_for(storage)
    rec.inputs_ref = _store_inputs(fn, arguments, storage, rec.id, options)
    records.create_execution(rec)
    _targets[rec.id] = fn
    _announce(engine, rec.id, fn.name)
    return _with_preview(records, Run(records, rec, engine, resumed=False).execute(fn, arguments))


def resume(execution_id: str, *, from_scratch: bool = False) -> Execution:
    """Continue an execution that did not succeed: succeeded nodes return their stored outputs
    without running, the unfinished node starts from its latest checkpoint. A succeeded
    execution is returned as it is, with its result, and nothing runs.

    A node whose records show committed checkpoints that its storage no longer holds fails with
    ``CheckpointMissingError`` rather than starting from zero; ``from_scratch=True`` restarts
    such nodes from zero on purpose (each one is logged).

    Examples:
        >>> import tempfile
        >>> import taskpoint
        >>> from taskpoint import task, workflow
        >>> _ = taskpoint.configure(home=tempfile.mkdtemp())
        >>> calls = []
        >>> @task
        ... def prepare() -> int:
        ...     calls.append("prepare")
        ...     return 20
        >>> @task
        ... def train(x: int) -> int:
        ...     calls.append("train")
        ...     if calls.count("train") == 1:
        ...         raise ValueError("a bug, fixed before the resume")
        ...     return x + 1
        >>> @workflow
        ... def pipeline() -> int:
        ...     return train(x=prepare())
        >>> first = taskpoint.run(pipeline)
        >>> again = taskpoint.resume(first.id)
        >>> print(first.status, again.status, again.result, calls)
        failed succeeded 21 ['prepare', 'train', 'train']
    """
    return resume_with(default_engine(), execution_id, from_scratch=from_scratch)


def resume_with(engine: Engine, execution_id: str, *, from_scratch: bool = False) -> Execution:
    records = engine.records()
    rec = records.get_execution(execution_id)
    options = engine.storage_options_for(rec.storage)  # the recorded store, not the engine's
    if rec.status == ExecutionStatus.SUCCEEDED:
        result = stored_result(rec, options)  # a run needs the value
        return load_execution(records, rec, result=result)
    if rec.status == ExecutionStatus.RUNNING and rec.driver_alive:
        raise TaskpointError(
            f"execution {rec.id} is still running (driver pid {rec.driver_pid} on "
            f"{rec.driver_host}); wait for it, or stop it before resuming"
        )
    if not rec.inputs_ref:
        raise TaskpointError(f"execution {rec.id} stored no inputs, so it cannot be resumed")
    target = _targets.get(rec.id)
    if target is None:
        from taskpoint.engine.loader import load_recorded

        target = load_recorded(rec.module, rec.file, rec.qualname)
        _targets[rec.id] = target
    try:
        arguments = blobs.get_pickle(rec.inputs_ref, options)
    except FileNotFoundError as exc:
        raise TaskpointError(f"the stored inputs of execution {rec.id} are missing: {exc}") from exc
    engine.resolved_storage_timeout()  # a bad setting fails before the execution restarts
    records.restart_execution(rec.id)
    rec = records.get_execution(rec.id)
    resumed = Run(records, rec, engine, resumed=True, from_scratch=from_scratch)
    return _with_preview(records, resumed.execute(target, arguments))


def _announce(engine: Engine, execution_id: str, name: str) -> None:
    """A program run with plain ``python train.py`` (no listener of its own) says which
    execution it is and how to resume it, before anything can kill it."""
    if type(engine.listener) is not Listener:
        return  # the CLI, or the program's own listener, reports progress
    home = engine.resolved_home()
    where = "" if home == Engine().resolved_home() else f"--home {shlex.quote(home)} "
    print(
        f"taskpoint: execution {execution_id} ({name}) started; if it stops, resume it with: "
        f"taskpoint {where}resume {execution_id}",
        file=sys.stderr,
        flush=True,
    )


def _with_preview(records: Records, execution: Execution) -> Execution:
    """Store the bounded preview of a succeeded execution's result: `show` and the web view
    show it, and never unpickle the result (DESIGN.md, trust boundaries)."""
    if execution.status == ExecutionStatus.SUCCEEDED:
        execution.result_preview = make_preview(execution.result)
        records.set_result_preview(execution.id, execution.result_preview)
    return execution


def _store_inputs(
    fn: Target, arguments: dict[str, Any], storage: str, execution_id: str, options: dict[str, Any]
) -> Any:
    """Pickle the inputs into the blob store (for resume); an unusable store fails the run now,
    before anything runs, and is not mistaken for unpicklable inputs."""
    import pickle

    try:
        data = pickle.dumps(arguments, protocol=pickle.HIGHEST_PROTOCOL)
    except (TypeError, AttributeError, ValueError, pickle.PicklingError) as exc:
        log.warning(
            "taskpoint: inputs of %s cannot be pickled (%s): it cannot be resumed", fn.name, exc
        )
        return None
    ref = f"{blobs.execution_url(storage, execution_id)}/inputs.pkl"
    try:
        blobs.put_bytes(ref, data, options)
    except Exception as exc:
        raise TaskpointError(
            f"cannot write to the storage {storage} ({type(exc).__name__}: {exc}); point "
            "--storage or TASKPOINT_STORAGE at a writable location"
        ) from exc
    return ref


def _new_record(
    fn: Target, arguments: dict[str, Any], storage: str, records: Records
) -> ExecutionRecord:
    module_name = fn.fn.__module__
    module = sys.modules.get(module_name)
    file = getattr(module, "__file__", None)
    now = time.time()
    return ExecutionRecord(
        id=os.urandom(6).hex(),
        name=fn.name,
        kind=fn.kind,
        module=module_name,
        file=os.path.abspath(file) if file else None,
        qualname=fn.fn.__qualname__,
        inputs=inputs_preview(arguments),
        inputs_ref=None,
        storage=storage,
        status=ExecutionStatus.RUNNING,
        result_ref=None,
        error_type=None,
        error_message=None,
        traceback=None,
        failed_node=None,
        created=now,
        started=now,
        ended=None,
        **records.driver_fields(),
    )
