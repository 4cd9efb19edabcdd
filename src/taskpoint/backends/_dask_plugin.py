"""`PreemptionPlugin`: a Dask worker's SIGTERM becomes its running attempts' preemption.

A spot node's shutdown or a Kubernetes eviction sends SIGTERM. Without this plugin the worker
process dies at once and its attempts are ``lost`` with the work since their last commit. With
it (``DaskBackend`` registers it on its cluster; on a cluster of your own,
``client.register_plugin(PreemptionPlugin())``):

1. The handler, in the worker's main thread, starts a thread that does the rest (the event loop
   must keep running: it reports the outcomes) and ignores further SIGTERMs meanwhile.
2. The worker stops taking tasks (status ``closing_gracefully``: the scheduler sends it none, and
   an attempt that still arrives is answered ``preempted`` without starting).
3. Each running attempt is preempted as the process backend's child would be: its context is
   marked preempted (``on_preempt`` callbacks run), its deadline is SIGTERM + the engine's
   ``grace``, and its next checkpoint write commits and raises ``Preempted``.
4. The plugin waits until each preempted attempt ended and the driver fetched its outcome (the
   worker released its key), at most until the deadline plus ``report_margin`` seconds.
5. Then the SIGTERM goes on to what the process did before (by default: exit; under a nanny, the
   nanny starts a fresh worker).

A worker closed while attempts run (a nanny told to stop, ``retire_workers``, scale-down) also
preempts them, in ``teardown``: a closing worker no longer reports results, so the plugin waits
only until they ended (their outcomes are published: ``_dask_worker``), and the nanny's own
timeout (8 s when ``dask worker`` gets SIGTERM) may end the process first.
Limits: a task that writes no checkpoint after SIGTERM runs on until the worker exits (no alarm
can interrupt a worker thread), and is then ``lost``; the platform's notice (Kubernetes'
``terminationGracePeriodSeconds``) must exceed ``grace`` plus the margin.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from typing import Any

from distributed import WorkerPlugin
from distributed.core import Status

from taskpoint.backends._dask_attempts import ATTEMPTS

log = logging.getLogger("taskpoint")

PLUGIN_NAME = "taskpoint-preemption"
REPORT_MARGIN = 5.0  # seconds past the attempts' deadline for the driver to fetch outcomes


class PreemptionPlugin(WorkerPlugin):
    """Turns a Dask worker's SIGTERM into the preemption of the taskpoint attempts it runs."""

    name = PLUGIN_NAME
    idempotent = True  # registering again (another backend on the same cluster) changes nothing

    def __init__(self, report_margin: float = REPORT_MARGIN) -> None:
        if isinstance(report_margin, bool) or not report_margin >= 0:
            raise ValueError(f"report_margin must be seconds >= 0, got {report_margin!r}")
        self.report_margin = float(report_margin)

    def setup(self, worker: Any) -> None:
        self._worker = worker
        self._previous: Any = None
        self._installed = False
        self._draining: threading.Thread | None = None
        if threading.current_thread() is not threading.main_thread():
            # Workers in threads (LocalCluster(processes=False)): signals are not theirs.
            log.info("taskpoint: %s runs outside the main thread: no SIGTERM handler", worker)
            return
        previous = signal.getsignal(signal.SIGTERM)
        if previous == signal.SIG_IGN:
            return  # the process chose to ignore SIGTERM: nothing to turn into a preemption
        signal.signal(signal.SIGTERM, self._on_sigterm)
        self._previous = signal.SIG_DFL if previous is None else previous
        self._installed = True

    async def teardown(self, worker: Any) -> None:
        if self._installed and threading.current_thread() is threading.main_thread():
            if signal.getsignal(signal.SIGTERM) == self._on_sigterm:
                signal.signal(signal.SIGTERM, self._previous)
            self._installed = False
        closing = worker.status in (Status.closing, Status.closed, Status.failed)
        if closing and ATTEMPTS.running_on(worker):  # also while a SIGTERM drains: let them end
            log.warning("taskpoint: Dask worker %s closes: preempting its attempts", worker.address)
            # A closing worker has cancelled the tasks' reports: their outcomes reach the driver
            # as published ones, through Dask's re-run of their keys elsewhere.
            await asyncio.to_thread(self._preempt_and_wait, worker, False)
        if closing:
            ATTEMPTS.forget_worker(worker)

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if finish in ("released", "forgotten"):
            ATTEMPTS.released(key)

    # -- SIGTERM ---------------------------------------------------------------------------------

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        # The main thread, between two steps of the event loop: start the drain, nothing more.
        if self._draining is not None:
            return  # already draining; it passes the signal on when done
        self._draining = threading.Thread(
            target=self._drain, name="taskpoint-preemption", daemon=True
        )
        self._draining.start()

    def _drain(self) -> None:
        worker = self._worker
        worker.loop.add_callback(self._stop_taking_tasks)
        try:
            self._preempt_and_wait(worker)
        finally:
            worker.loop.add_callback(self._pass_on)

    def _preempt_and_wait(self, worker: Any, fetched: bool = True) -> None:
        deadline = ATTEMPTS.preempt(worker)
        if not ATTEMPTS.wait_reported(worker, deadline + self.report_margin, fetched):
            left = max(0.0, deadline + self.report_margin - time.monotonic())
            log.warning(
                "taskpoint: Dask worker %s: preempted attempts did not report in time (%.1f s "
                "left); they are lost",
                worker.address,
                left,
            )

    def _stop_taking_tasks(self) -> None:
        if self._worker.status in (Status.running, Status.paused):
            self._worker.status = Status.closing_gracefully

    def _pass_on(self) -> None:
        """In the main thread: let the SIGTERM do what it did before the plugin."""
        if signal.getsignal(signal.SIGTERM) == self._on_sigterm:
            signal.signal(signal.SIGTERM, self._previous)
        self._installed = False
        os.kill(os.getpid(), signal.SIGTERM)
