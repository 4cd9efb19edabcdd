"""What a Dask worker runs for one attempt (imported by name there: taskpoint must be installed
on the workers, as any library a Dask task uses).

The worker touches only the checkpoint storage: the task opens ``Checkpoint.open(url,
attempt=n, storage_options=...)`` itself, from what the attempt carries. The outcome goes back as
the task's result; the driver records it.

Preemption: the attempt registers its guard with the worker's registry (``_dask_attempts``), so
the worker's `PreemptionPlugin` can turn a SIGTERM into its preemption. A preempted attempt also
publishes its outcome in the scheduler's metadata under its key: if the worker goes before the
driver fetched the result, Dask runs the key again elsewhere, and that re-run (fenced: the
scheduler marks it, ``_dask_fence``, or the worker claims it) answers the published outcome
instead of ``lost``.

A task with ``nproc=N`` runs its N ranks on this worker's machine, driven from this thread
(``_dask_ranks``); claim, preemption and publishing are the same.
"""

from __future__ import annotations

import os
import pickle
from typing import Any

from taskpoint.engine.attempt import AttemptJob, Outcome, portable
from taskpoint.engine.events import AttemptInfo, Listener
from taskpoint.errors import AttemptLost, Preempted, TaskpointError
from taskpoint.records.status import AttemptStatus

CLAIM = "taskpoint-claim"
OUTCOME = "taskpoint-outcome"


def run_attempt(payload: Any, info: AttemptInfo, grace: float) -> Outcome:
    from taskpoint.backends import shipping

    try:
        claimed = _claim()
    except Exception as exc:  # the scheduler is unreachable: not the task's fault, retry it
        why = f"could not claim it with the Dask scheduler ({type(exc).__name__}: {exc})"
        return Outcome.from_error(
            AttemptStatus.LOST, AttemptLost(f"{info.node} attempt {info.attempt}: {why}")
        )
    if not claimed:
        published = _published()
        if published is not None:  # its worker was preempted after it ended: its own outcome
            return published
        return Outcome.from_error(
            AttemptStatus.LOST,
            AttemptLost(
                f"{info.node} attempt {info.attempt}: its Dask worker left while running it and "
                "Dask started it again elsewhere; it runs as a new attempt instead"
            ),
        )
    try:
        task, arguments = shipping.unpack(payload)
    except Exception as exc:  # deterministic: retrying on another worker would not help
        error = TaskpointError(
            f"cannot load the task of {info.node} on Dask worker pid {os.getpid()}: "
            f"{type(exc).__name__}: {exc}"
        )
        return Outcome.from_error(AttemptStatus.FAILED, error)
    return _run(task, arguments, info, grace, payload)


def _run(
    task: Any, arguments: dict[str, Any], info: AttemptInfo, grace: float, payload: Any = None
) -> Outcome:
    from taskpoint.backends._dask_attempts import ATTEMPTS, WorkerAttemptGuard

    guard = WorkerAttemptGuard(grace)
    worker, key = _current()
    if key is None:  # not on a Dask worker (called directly): nothing can preempt it
        return _execute(task, arguments, info, guard, payload)
    entry = ATTEMPTS.start(key, worker, guard)
    if entry is None:
        outcome = Outcome.from_error(
            AttemptStatus.PREEMPTED,
            Preempted(
                f"{info.node} attempt {info.attempt} was not started: its Dask worker (pid "
                f"{os.getpid()}) is being preempted (SIGTERM); it resumes elsewhere"
            ),
            info.checkpoint_at_start,
        )
        _publish(key, outcome)
        return outcome
    try:
        outcome = _execute(task, arguments, info, guard, payload)
        if entry.preempted:
            _publish(key, outcome)
        return outcome
    finally:
        ATTEMPTS.finish(entry)


def _execute(
    task: Any, arguments: dict[str, Any], info: AttemptInfo, guard: Any, payload: Any = None
) -> Outcome:
    from taskpoint.engine.execute import execute_attempt

    if task.nproc > 1:  # N rank processes on this worker's machine, one attempt (_dask_ranks)
        from taskpoint.backends import shipping
        from taskpoint.backends._dask_ranks import run_group

        # The ranks unpack the task as shipped (a re-pack here may miss the module's file).
        payload = payload if payload is not None else shipping.pack(task, arguments)
        return portable(run_group(payload, task, arguments, info, guard), task)

    # Not the main thread: the worker's PreemptionPlugin preempts the guard on SIGTERM.
    outcome = execute_attempt(AttemptJob(task, arguments, info, guard, Listener()))
    outcome.pid = os.getpid()
    return portable(outcome, task)


def _current() -> tuple[Any, str | None]:
    """The Dask worker and the key of the task running this attempt; ``(None, None)`` when not
    on a worker (called directly)."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return None, None
    return worker, str(worker.get_current_task())  # the backend's keys are strings


def _claim() -> bool:
    """True the first time this attempt's Dask task starts; False when Dask runs it again
    because the worker that started it left (it may still be running there, frozen).

    A task the scheduler never sent elsewhere (``_dask_fence``) only writes its claim; one it
    did, or one on a scheduler without taskpoint's marker, reads and writes it in a round trip.
    """
    worker, key = _current()
    if worker is None or key is None:
        return True  # not on a Dask worker (called directly): nothing to fence
    from distributed.utils import sync

    from taskpoint.backends._dask_fence import sent_before

    if sent_before(worker, key) is False:
        sync(worker.loop, _write_claim, worker, key)
        return True
    return bool(sync(worker.loop, _claim_on_scheduler, worker, key))


def _claim_message(worker: Any, key: str) -> dict[str, Any]:
    # A re-run overwrites the claim with its own worker: any claim at all means "started before".
    return {"op": "set_metadata", "keys": [key, CLAIM], "value": worker.address, "reply": False}


async def _write_claim(worker: Any, key: str) -> None:
    """Claim the key without waiting for the scheduler: ``comm.write`` returns once the
    message is with the operating system."""
    address = worker.scheduler.addr
    comm = await worker.rpc.connect(address)
    try:
        await comm.write(_claim_message(worker, key))
    except BaseException:
        comm.abort()
        raise
    worker.rpc.reuse(address, comm)


async def _claim_on_scheduler(worker: Any, key: str) -> bool:
    """Read the key's claim and claim it, in one round trip: both messages go on one connection,
    whose messages the scheduler handles in order, so the read sees the claim as it was before
    ours. (A read, then a write, each awaited, cost two round trips.)

    The claim is scheduler-side metadata of the task's key, dropped when the key is forgotten.
    """
    address = worker.scheduler.addr
    comm = await worker.rpc.connect(address)
    try:
        await comm.write({"op": "get_metadata", "keys": [key, CLAIM], "default": None})
        await comm.write(_claim_message(worker, key))
        before = await comm.read()
    except BaseException:
        comm.abort()
        raise
    worker.rpc.reuse(address, comm)
    if isinstance(before, dict) and before.get("status") == "uncaught-error":
        raise TaskpointError(f"the scheduler could not read the claim: {before.get('exception')}")
    return before is None


def _publish(key: str, outcome: Outcome) -> None:
    """Leave a preempted attempt's outcome with the scheduler, for a re-run of its key."""
    try:
        from distributed import get_client

        get_client().set_metadata([key, OUTCOME], pickle.dumps(outcome))
    except Exception:  # best effort: the result itself still goes back the usual way
        pass


def _published() -> Outcome | None:
    _, key = _current()
    if key is None:
        return None
    try:
        from distributed import get_client

        data = get_client().get_metadata([key, OUTCOME], default=None)
    except Exception:
        return None
    # Written by this cluster's own worker for this key (as the task results Dask moves).
    return pickle.loads(data) if isinstance(data, bytes) else None
