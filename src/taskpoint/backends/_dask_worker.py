"""What a Dask worker runs for one attempt (imported by name there: taskpoint must be installed
on the workers, as any library a Dask task uses).

The worker touches only the checkpoint storage: the task opens ``Checkpoint.open(url,
attempt=n, storage_options=...)`` itself, from what the attempt carries. The outcome goes back as
the task's result; the driver records it.
"""

from __future__ import annotations

import os
from typing import Any

from taskpoint.engine.attempt import AttemptJob, Outcome, portable
from taskpoint.engine.events import AttemptInfo, Listener
from taskpoint.errors import AttemptLost, TaskpointError
from taskpoint.records.status import AttemptStatus

CLAIM = "taskpoint-claim"


def run_attempt(payload: Any, info: AttemptInfo, grace: float) -> Outcome:
    from taskpoint.backends import shipping
    from taskpoint.engine.execute import execute_attempt
    from taskpoint.engine.preempt import PreemptionGuard

    try:
        claimed = _claim()
    except Exception as exc:  # the scheduler is unreachable: not the task's fault, retry it
        why = f"could not claim it with the Dask scheduler ({type(exc).__name__}: {exc})"
        return Outcome.from_error(
            AttemptStatus.LOST, AttemptLost(f"{info.node} attempt {info.attempt}: {why}")
        )
    if not claimed:
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
    # Not the main thread: no signal handlers; a worker's own shutdown makes the attempt lost.
    job = AttemptJob(task, arguments, info, PreemptionGuard(grace), Listener())
    outcome = execute_attempt(job)
    outcome.pid = os.getpid()
    return portable(outcome, task)


def _claim() -> bool:
    """True the first time this attempt's Dask task starts; False when Dask runs it again
    because the worker that started it left (it may still be running there, frozen)."""
    try:
        from distributed import get_client, get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return True  # not on a Dask worker (called directly): nothing to fence
    key = worker.get_current_task()
    client = get_client()
    # Scheduler-side metadata of this task's key: dropped with the key when it is forgotten.
    if client.get_metadata([key, CLAIM], default=None) is not None:
        return False
    client.set_metadata([key, CLAIM], worker.address)
    return True
