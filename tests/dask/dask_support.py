"""Helpers of the Dask tests: stopping processes and finding a driver's workers (`taskpoint` as a
real process: tests/support/fixtures.py)."""

from __future__ import annotations

import os
import signal


def stop_process(pid: int) -> None:
    """SIGCONT (it may be frozen) then SIGKILL, ignoring a process that is already gone."""
    for sig in (signal.SIGCONT, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return


def descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def count_claim_reads(client, monkeypatch) -> list:
    """The attempt claims the scheduler (a LocalCluster's, in this process) is asked to read
    (``_dask_worker._claim_on_scheduler``), as a list that grows."""
    from taskpoint.backends._dask_worker import CLAIM

    scheduler = client.cluster.scheduler
    handler = scheduler.handlers["get_metadata"]
    reads = []

    def counting_handler(*args, keys, **kwargs):
        if keys[-1] == CLAIM:
            reads.append(keys[0])
        return handler(*args, keys=keys, **kwargs)

    monkeypatch.setitem(scheduler.handlers, "get_metadata", counting_handler)
    return reads
