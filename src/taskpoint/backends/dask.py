"""The Dask backend (extra ``taskpoint[dask]``): each attempt is one task on a Dask cluster.

The engine owns retries, so Dask's are off: every attempt is submitted with ``retries=0``,
``pure=False`` and a key of its own, and carries its execution id, node key, attempt number,
checkpoint URL and storage options. The records database stays with the driver; a worker only
opens the node's checkpoint scope on the shared storage (``Checkpoint.open(url, attempt=n)``).

An attempt whose worker died or left (``KilledWorker``, a closed connection, a worker removed for
missing heartbeats) is ``lost``: the engine submits the next attempt, which any worker resumes
from the latest committed checkpoint. Dask itself re-runs a task whose worker left; such a re-run
finds its attempt already claimed (see ``_dask_worker``; the scheduler's `RerunMarker`, which
the backend registers, tells a worker when it must read the claim: ``_dask_fence``) and reports
``lost`` at once, so one attempt number never runs twice. A frozen worker that wakes up later
(a zombie) can only add checkpoint versions under its own, lower attempt number, and its result
goes to a key nobody waits for any more.

A worker's SIGTERM (a spot node going away, a Kubernetes eviction) preempts its attempts instead:
the backend registers `PreemptionPlugin` (``_dask_plugin.py``) on the cluster, which marks them
preempted, so each commits at its next checkpoint write and is recorded ``preempted`` within the
grace period, and keeps the worker alive until the driver has their outcomes; the next attempt
resumes on another worker. ``preemption=False`` leaves the cluster's plugins alone (register
``PreemptionPlugin()`` yourself, or not at all).

A task with ``nproc=N`` runs as one Dask task too: the worker that takes it starts the N ranks
on its own machine (``_dask_ranks.py``) and drives them as the process backend does. Dask knows
nothing of the N processes unless told: with ``resource="CPU"`` (say) every attempt asks for
``nproc`` units of that worker resource (1 for a single process), so a rank group lands only on a
worker started with at least N of them free (``dask worker --resources CPU=8``). Across
machines, start the ranks with torchrun and give each ``Checkpoint.open(url, attempt=...)``.

Without a scheduler address the backend starts a ``LocalCluster`` of worker processes and stops
it in ``close()``.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from typing import Any

from taskpoint.backends._dask_dispatch import Dispatcher, Ticket
from taskpoint.backends.registry import BACKENDS
from taskpoint.engine.attempt import AttemptJob, DoneHandle, Outcome
from taskpoint.engine.blobs import node_dir
from taskpoint.errors import AttemptLost, TaskpointError
from taskpoint.records.status import AttemptStatus

log = logging.getLogger("taskpoint")
INSTALL_HINT = BACKENDS["dask"][1]
# The dispatcher wakes a handle when its driver is preempted; this only bounds a wait.
_WAKE = 1.0


def __getattr__(name: str) -> Any:
    # ``from taskpoint.backends.dask import PreemptionPlugin``: a subclass of distributed's
    # WorkerPlugin, so it is defined only where distributed is installed.
    if name == "PreemptionPlugin":
        require_distributed()
        from taskpoint.backends._dask_plugin import PreemptionPlugin

        return PreemptionPlugin
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def require_distributed() -> Any:
    """``distributed``, or an error that says how to install it."""
    try:
        import distributed
    except ImportError as exc:
        raise TaskpointError(
            f"the dask backend needs dask.distributed, which is not installed here ({exc}); "
            f"install it with: {INSTALL_HINT}"
        ) from exc
    return distributed


class DaskBackend:
    name = "dask"
    in_driver = False
    # Driver threads that each wait on one attempt's future; the cluster bounds what really runs.
    concurrency = 256

    def __init__(
        self,
        scheduler: str | None = None,
        workers: int | None = None,
        client: Any = None,
        preemption: bool = True,
        resource: str | None = None,
        **cluster_options: Any,
    ) -> None:
        require_distributed()
        if client is not None and (scheduler or workers):
            raise ValueError("give a Dask client, or a scheduler address or worker count, not both")
        if scheduler and workers:
            raise ValueError("--workers starts a local cluster: it cannot be used with --scheduler")
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.scheduler = scheduler
        self.workers = workers
        self.cluster_options = cluster_options
        self._client = client
        self._owns_client = client is None
        self.preemption = preemption
        self.resource = resource  # worker resource each attempt asks ``nproc`` units of
        self._plugin_installed = False
        self._fenced: bool | None = None  # the scheduler runs RerunMarker (``_dask_fence``)
        self._cluster: Any = None
        self._dispatch: Dispatcher | None = None  # started with the first attempt
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._connect()
            if self.preemption and not self._plugin_installed:
                self._install_plugin(self._client)
            if self._fenced is None:
                self._fenced = self._install_marker(self._client)
            return self._client

    def start(self) -> DaskBackend:
        """Connect now (start the local cluster) instead of at the first attempt."""
        _ = self.client
        return self

    def _connect(self) -> Any:
        from distributed import Client, LocalCluster

        if self.scheduler:
            return Client(self.scheduler)
        options = {"dashboard_address": ":0", **self.cluster_options}
        self._cluster = LocalCluster(
            n_workers=self.workers or os.cpu_count() or 1,
            processes=True,
            threads_per_worker=1,
            **options,
        )
        return Client(self._cluster)

    def _install_plugin(self, client: Any) -> None:
        """Register `PreemptionPlugin` on every worker, present and future (idempotent: a
        cluster that has it keeps it)."""
        from taskpoint.backends._dask_plugin import PreemptionPlugin

        try:
            client.register_plugin(PreemptionPlugin())
        except Exception as exc:
            raise TaskpointError(
                f"cannot install taskpoint's preemption plugin on the Dask workers "
                f"({type(exc).__name__}: {exc}); is taskpoint installed on them? "
                "(DaskBackend(preemption=False) runs without it: a SIGTERM to a worker then "
                "loses its attempts)"
            ) from exc
        self._plugin_installed = True

    def _install_marker(self, client: Any) -> bool:
        """Register `RerunMarker` on the scheduler; False (workers then claim each attempt
        with a round trip) when the scheduler cannot load it."""
        from taskpoint.backends._dask_fence import RerunMarker

        try:
            client.register_plugin(RerunMarker())
        except Exception as exc:
            log.warning(
                "taskpoint could not install its rerun marker on the Dask scheduler (%s: %s; "
                "is taskpoint installed next to the scheduler?): each attempt will claim itself "
                "with a round trip to the scheduler instead, which costs about a millisecond "
                "or more per attempt",
                type(exc).__name__,
                exc,
            )
            return False
        return True

    def submit(self, job: AttemptJob) -> DaskHandle | DoneHandle:
        from taskpoint.backends import shipping

        info = job.info
        payload = shipping.pack(job.task, job.arguments)
        # Unique even when an attempt number is submitted again (a resumed execution on a
        # cluster where the previous driver's attempt still runs).
        key = (
            f"taskpoint-{info.execution_id}-{node_dir(info.node)}-{info.attempt}-"
            f"{uuid.uuid4().hex[:8]}"
        )
        # A rank group's N processes count against the worker's resource, when one is named.
        resources = {self.resource: job.task.nproc} if self.resource else None
        ticket = self._dispatcher().submit(
            key, payload, info, job.guard.grace, resources=resources, guard=job.guard
        )
        return DaskHandle(ticket, job)

    def _dispatcher(self) -> Dispatcher:
        client = self.client
        with self._lock:
            if self._dispatch is None:
                from taskpoint.backends._dask_fence import FENCED
                from taskpoint.backends._dask_worker import run_attempt

                fence = {FENCED: True} if self._fenced else None
                self._dispatch = Dispatcher(client, run_attempt, annotations=fence)
            return self._dispatch

    def close(self) -> None:
        with self._lock:
            client, cluster = self._client, self._cluster
            self._client = self._cluster = None
            dispatch, self._dispatch = self._dispatch, None
        if dispatch is not None:
            dispatch.close()
        if client is not None and self._owns_client:
            client.close()
        if cluster is not None:
            cluster.close()

    def __enter__(self) -> DaskBackend:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class DaskHandle:
    def __init__(self, ticket: Ticket, job: AttemptJob) -> None:
        self.ticket = ticket
        self.info = job.info
        self.guard = job.guard
        self.cancelled = False

    def result(self) -> Outcome:
        ticket = self.ticket
        try:
            while not ticket.ready:
                ticket.wake.wait(_WAKE)
                if ticket.ready or not self.guard.preempted:
                    continue
                if self.cancelled:  # already stopped: wait for Dask to say it is
                    ticket.wake.clear()
                    continue
                # The driver is going away: record the attempt now; the resumed execution
                # starts a later attempt, which fences this one if it still runs.
                ticket.cancel()
                return self._ended(AttemptStatus.PREEMPTED, "the driver was preempted (SIGTERM)")
        except KeyboardInterrupt as exc:
            ticket.cancel()
            return Outcome.from_error(AttemptStatus.ABORTED, exc, self.info.checkpoint_at_start)
        return self._collect()

    def cancel(self) -> None:
        self.cancelled = True
        self.ticket.cancel()

    def _collect(self) -> Outcome:
        from concurrent.futures import CancelledError

        from distributed import KilledWorker
        from distributed.comm import CommClosedError

        ticket = self.ticket
        if ticket.fetched:  # fetched with others by the dispatcher
            ticket.future.release()
            return ticket.value  # type: ignore[no-any-return]
        if ticket.future is None:  # never sent: cancelled first, or the send failed
            if ticket.send_error is not None:
                exc = ticket.send_error
                return self._lost(f"could not submit it ({type(exc).__name__}: {exc})")
            return self._ended(AttemptStatus.ABORTED, "it was stopped: its execution ended")
        try:
            return ticket.future.result()  # type: ignore[no-any-return]
        except CancelledError:
            if self.cancelled:
                return self._ended(AttemptStatus.ABORTED, "it was stopped: its execution ended")
            return self._lost("Dask cancelled it (the scheduler or the connection was lost)")
        except (KilledWorker, CommClosedError, ConnectionError) as exc:
            return self._lost(f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # run_attempt itself failed (e.g. taskpoint not on the worker)
            return Outcome.from_error(
                AttemptStatus.FAILED,
                TaskpointError(
                    f"{self.info.node} attempt {self.info.attempt} could not run on the Dask "
                    f"worker: {type(exc).__name__}: {exc} (is taskpoint installed there?)"
                ),
            )
        finally:
            ticket.future.release()

    def _lost(self, why: str) -> Outcome:
        info = self.info
        return Outcome.from_error(
            AttemptStatus.LOST,
            AttemptLost(f"{info.node} attempt {info.attempt} lost its Dask worker: {why}"),
        )

    def _ended(self, status: str, why: str) -> Outcome:
        info = self.info
        error = TaskpointError(f"{info.node} attempt {info.attempt} on Dask: {why}")
        return Outcome.from_error(status, error)
