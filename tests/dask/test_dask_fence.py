"""Where the scheduler cannot load taskpoint's `RerunMarker` (taskpoint not installed next to
it), the backend says so once and every attempt reads its claim: the fence holds, slower.
(The marker's own cases, a killed worker's re-run and the items sent with it, are in
test_dask_recovery.py.)"""

from __future__ import annotations

import logging

import distributed
from dask_support import count_claim_reads
from dask_tasks import fan_out

import taskpoint
from taskpoint.backends._dask_fence import RerunMarker
from taskpoint.backends.dask import DaskBackend


def test_a_scheduler_without_the_marker_warns_and_reads_every_claim(
    on_s3, markers, monkeypatch, caplog
):
    async def cannot_load(self, scheduler):
        raise ModuleNotFoundError("No module named 'taskpoint'")

    monkeypatch.setattr(RerunMarker, "start", cannot_load)
    with (
        distributed.LocalCluster(
            n_workers=1, processes=True, threads_per_worker=1, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        reads = count_claim_reads(client, monkeypatch)
        taskpoint.configure(backend=DaskBackend(client=client))
        with caplog.at_level(logging.WARNING, logger="taskpoint"):
            execution = taskpoint.run(fan_out, n=3, victim=-1, markers=str(markers))

    assert execution.status == "succeeded", execution.error
    assert [r["x"] for r in execution.result] == [0, 1, 2]
    warnings = [r.getMessage() for r in caplog.records if "rerun marker" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "No module named 'taskpoint'" in warnings[0]
    assert "is taskpoint installed next to the scheduler?" in warnings[0]
    assert len(reads) == 3  # one round trip per attempt
