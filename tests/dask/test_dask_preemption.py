"""Preemption on Dask (issue 20, item 3): a SIGTERM to the worker process running an attempt
(what a spot node's shutdown or a Kubernetes eviction sends) is turned by taskpoint's
`PreemptionPlugin` into the attempt's preemption: it commits at its next checkpoint write and is
recorded ``preempted`` within the grace period, the worker stays up until the driver has that
outcome and then exits (its nanny starts a fresh one), and the next attempt resumes from the
checkpoint on the other worker."""

from __future__ import annotations

import os
import signal
import threading
import time

import psutil
from dask_tasks import preempting

import taskpoint
from support.polling import wait_for_file
from taskpoint.backends._dask_plugin import PLUGIN_NAME
from taskpoint.engine import configure

GRACE = 20.0


def test_sigterm_of_the_worker_preempts_the_attempt_and_it_resumes_elsewhere(
    cluster, on_s3, markers
):
    configure(grace=GRACE)
    workers_before = set(cluster.run(os.getpid).values())
    sent: dict[str, float] = {}

    def preempt_victim() -> None:
        pid = int(wait_for_file(markers / "victim", 120))
        sent["at"] = time.time()
        os.kill(pid, signal.SIGTERM)

    killer = threading.Thread(target=preempt_victim, daemon=True)
    killer.start()
    execution = taskpoint.run(preempting, total=6, markers=str(markers))
    killer.join(10)

    assert execution.status == "succeeded", execution.error
    victim = int((markers / "victim").read_text())
    assert victim in workers_before  # the attempt really ran in a worker process
    # its on_preempt callback ran in the victim worker
    assert int((markers / "on-preempt-1").read_text()) == victim
    first, second = execution.nodes[0].attempts
    assert first.status == "preempted", first.error
    assert first.pid == victim
    assert first.checkpoint_at_end == "0001-000004"  # step 4 was committed after SIGTERM
    assert first.budget == "system_retries"
    assert first.ended - sent["at"] < GRACE  # recorded within the grace period
    assert second.status == "succeeded"
    assert second.checkpoint_at_start == "0001-000004"
    assert execution.result["start"] == 4 and execution.result["attempt"] == 2
    assert execution.result["pid"] != victim  # on the other worker
    assert not (markers / "on-preempt-2").exists()
    # The preempted worker passed the SIGTERM on once the driver had the outcome: it exited.
    try:
        _, alive = psutil.wait_procs([psutil.Process(victim)], timeout=30)
    except psutil.NoSuchProcess:
        alive = []
    assert alive == [], "the preempted worker did not exit"


def test_the_backend_installs_the_plugin_on_every_worker(cluster):
    from taskpoint.backends.dask import DaskBackend, PreemptionPlugin

    DaskBackend(client=cluster).start()  # registering again is harmless (idempotent)
    plugins = cluster.run(lambda dask_worker: sorted(dask_worker.plugins))
    assert len(plugins) == 2
    assert all(PLUGIN_NAME in names for names in plugins.values()), plugins
    handlers = cluster.run(lambda: signal.getsignal(signal.SIGTERM).__qualname__)
    assert set(handlers.values()) == {"PreemptionPlugin._on_sigterm"}, handlers
    assert PreemptionPlugin.name == PLUGIN_NAME


def test_a_worker_closed_under_an_attempt_preempts_it(cluster, on_s3, markers):
    """The way a `dask worker` under SIGTERM, a scale-down or `retire_workers` stops a worker:
    `Worker.close()`. It cancels the attempt's report, so the outcome the preempted attempt
    published reaches the driver through Dask's re-run of its key on the other worker."""
    configure(grace=GRACE)

    def close_victim() -> None:
        pid = int(wait_for_file(markers / "victim", 120))
        (address,) = [a for a, p in cluster.run(os.getpid).items() if p == pid]

        def close(dask_worker) -> None:  # nanny=False: the nanny then starts a fresh worker
            dask_worker.loop.add_callback(dask_worker.close, nanny=False, reason="evicted")

        cluster.run(close, workers=[address])

    closer = threading.Thread(target=close_victim, daemon=True)
    closer.start()
    execution = taskpoint.run(preempting, total=6, markers=str(markers))
    closer.join(10)

    assert execution.status == "succeeded", execution.error
    victim = int((markers / "victim").read_text())
    first, second = execution.nodes[0].attempts
    assert first.status == "preempted", first.error
    assert first.pid == victim
    assert first.checkpoint_at_end == "0001-000004"
    assert second.checkpoint_at_start == "0001-000004"
    assert execution.result["start"] == 4 and execution.result["pid"] != victim
