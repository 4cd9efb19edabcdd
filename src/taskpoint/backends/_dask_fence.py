"""Keeping one attempt number from running twice on Dask, without a round trip per attempt.

Dask runs a task again when the worker that had it left (killed, or removed for missed
heartbeats while it may still run, frozen) or when the result it held was lost before the driver
fetched it. Such a re-run must not run the attempt again under the same number: it reports
``lost`` (or the outcome its preempted first run published, see ``_dask_worker``).

The fence is the attempt's claim, scheduler metadata under its key that the worker writes
before the task starts. Reading it back before starting costs a round trip to the scheduler,
which a busy ``map`` paid on every attempt while holding the worker's only thread. So the
scheduler tells the worker, in the task's own annotations, when it needs to read:

- `RerunMarker`, a scheduler plugin the backend registers, watches the backend's tasks
  (annotated `FENCED`): once a task was sent to a worker, any later transition other than to
  ``memory`` (its result arrived) marks it `RERUN`, and the mark travels with the task when the
  scheduler sends it again.
- An unmarked task was never on another worker: its worker writes the claim (waiting only until
  the message is with the operating system, which delivers it even if the process then freezes
  or is killed) and starts. A marked one reads and writes the claim in one round trip, as every
  attempt did before, and runs only if no claim was there.

Why not mark when a task is sent: a task sent to a worker that left before starting it is no
re-run (that worker never claimed it), nor is a task that work stealing moves, without a
transition, from a worker that had not started it. The claim, not the mark, decides.

Why the write is enough: a re-run is sent only after the first worker left (its connection
closed, or silent for the scheduler's worker TTL); the re-run's read then needs a round trip
through another worker, long after the first worker's claim reached the scheduler's socket.

A scheduler that cannot load the plugin (taskpoint not installed next to it) gets tasks without
`FENCED`; their workers read every claim in a round trip (``_dask_worker``).
"""

from __future__ import annotations

from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

FENCED = "taskpoint-fenced"  # set by the backend: the scheduler runs RerunMarker
RERUN = "taskpoint-rerun"  # set by RerunMarker: this task was on a worker before
KEY_PREFIX = "taskpoint-"  # the backend's task keys (DaskBackend.submit)
PLUGIN_NAME = "taskpoint-rerun-marker"


class RerunMarker(SchedulerPlugin):
    """Marks the backend's tasks that Dask sends to a worker again."""

    name = PLUGIN_NAME
    idempotent = True  # another backend on the same scheduler shares the one registered

    def __init__(self) -> None:
        self._scheduler: Any = None
        self._sent: set[str] = set()  # keys sent to a worker, until forgotten

    async def start(self, scheduler: Any) -> None:
        self._scheduler = scheduler

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        # Called for every transition of every task of the cluster: keep the common path short.
        if not (isinstance(key, str) and key.startswith(KEY_PREFIX)):
            return
        if finish == "processing":
            self._sent.add(key)
            return
        if key not in self._sent or finish == "memory":
            return
        if finish == "forgotten":
            self._sent.discard(key)
            return
        # A transition through "released" is reported from "released" (processing -> waiting
        # says released -> waiting): hence "any transition after a send", not "from processing".
        task = self._scheduler.tasks.get(key)
        if task is not None and task.annotations and task.annotations.get(FENCED):
            # A new dict: the one sent with the first run may still be queued to its worker.
            task.annotations = {**task.annotations, RERUN: True}


def sent_before(worker: Any, key: str) -> bool | None:
    """Whether the scheduler sent the worker's task ``key`` to a worker before (`RERUN`);
    ``None`` when `RerunMarker` does not watch it (the worker must read its claim)."""
    task = worker.state.tasks.get(key)
    annotations = getattr(task, "annotations", None) or {}
    if not annotations.get(FENCED):
        return None
    return bool(annotations.get(RERUN, False))
