"""Worker loss on a real Dask cluster with checkpoints on S3: a killed worker's attempt is lost
and resumed elsewhere from its latest checkpoint; a frozen worker is removed and its zombie's
late writes change nothing; a mapped fan-out re-runs only the interrupted item, whether the
scheduler marks the tasks it sends again (``_dask_fence``) or every attempt reads its claim."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest
from dask_support import count_claim_reads, stop_process
from dask_tasks import counting, fan_out, freezing, holding

import taskpoint
from support.polling import wait_for_file
from taskpoint.backends.dask import DaskBackend
from taskpoint.checkpoint import Checkpoint
from taskpoint.engine import blobs


def in_background(fn, *args) -> threading.Thread:
    thread = threading.Thread(target=fn, args=args, daemon=True)
    thread.start()
    return thread


def kill_victim(markers: Path) -> None:
    os.kill(int(wait_for_file(markers / "victim", 120)), signal.SIGKILL)


def versions(execution, key: str, storage_options: dict) -> list:
    url = blobs.checkpoint_url(execution.storage, execution.id, key)
    cp = Checkpoint.open(url, storage_options=storage_options)
    try:
        return cp.versions()
    finally:
        cp.close()


def test_sigkill_of_the_worker_resumes_from_the_checkpoint_elsewhere(cluster, on_s3, markers):
    workers_before = set(cluster.run(os.getpid).values())
    killer = in_background(kill_victim, markers)

    execution = taskpoint.run(counting, total=6, markers=str(markers))
    killer.join(10)

    assert execution.status == "succeeded", execution.error
    victim = int((markers / "victim").read_text())
    assert victim in workers_before  # the task really ran in a worker process
    first, second = execution.nodes[0].attempts
    assert first.status == "lost" and "Dask" in first.error
    assert second.status == "succeeded"
    assert second.checkpoint_at_start == "0001-000003"  # step 3, written by attempt 1
    assert execution.result["start"] == 3
    assert execution.result["attempt"] == 2
    assert execution.result["pid"] != victim  # another (or a restarted) worker


def test_a_frozen_worker_is_lost_and_its_zombie_writes_change_nothing(
    bare_cluster, on_s3, s3_server, markers
):
    def freeze_then_wake() -> None:
        pid = int(wait_for_file(markers / "frozen", 120))
        os.kill(pid, signal.SIGSTOP)
        try:
            # The scheduler removes the silent worker (TTL), Dask's re-run of the attempt is
            # fenced, and the engine's attempt 2 starts on the other worker and writes once.
            wait_for_file(markers / "successor", 120)
            (markers / "release").write_text("go")
        finally:
            os.kill(pid, signal.SIGCONT)

    controller = in_background(freeze_then_wake)
    execution = taskpoint.run(freezing, total=6, markers=str(markers))
    controller.join(10)

    assert execution.status == "succeeded", execution.error
    zombie = int((markers / "frozen").read_text())
    first, second = execution.nodes[0].attempts
    assert first.status == "lost"
    assert second.status == "succeeded"
    assert second.checkpoint_at_start == "0001-000003"
    result = execution.result
    assert result["pid"] != zombie  # retried elsewhere
    assert (result["start"], result["attempt"], result["final"]) == (3, 2, "6")

    all_versions = versions(execution, "frozen_count#1", s3_server.storage_options)
    latest = max(all_versions, key=lambda v: v.order)
    assert (latest.attempt, latest.step) == (2, 6)
    assert (markers / "zombie-wrote").exists(), "the zombie never woke up to write"
    late = [v for v in all_versions if v.step is not None and v.step >= 100]
    assert all(v.attempt == 1 for v in late)  # under its own, lower attempt number
    stop_process(zombie)


@pytest.mark.parametrize("fence", ["marker", "round trip"])
def test_map_on_two_workers_reruns_only_the_interrupted_item(
    fence, cluster, on_s3, markers, monkeypatch
):
    if fence == "round trip":  # as on a scheduler that cannot load taskpoint's marker
        monkeypatch.setattr(DaskBackend, "_install_marker", lambda self, client: False)
        taskpoint.configure(backend=DaskBackend(client=cluster))
    reads = count_claim_reads(cluster, monkeypatch)
    killer = in_background(kill_victim, markers)
    execution = taskpoint.run(fan_out, n=8, victim=5, markers=str(markers))
    killer.join(10)

    assert execution.status == "succeeded", execution.error
    assert [r["x"] for r in execution.result] == list(range(8))  # input order
    nodes = {n.key: n for n in execution.nodes}
    assert sorted(nodes) == sorted(f"item#{x + 1}" for x in range(8))
    for x in range(8):
        runs = (markers / f"runs-{x}").read_text().split("\n")[:-1]
        node = nodes[f"item#{x + 1}"]  # keyed in input order
        if x == 5:
            assert runs == ["1 0", "2 2"]  # again, from its own step-2 checkpoint
            assert [a.status for a in node.attempts] == ["lost", "succeeded"]
            assert node.attempts[1].checkpoint_at_start == "0001-000002"
        else:
            assert runs == ["1 0"], f"item {x} ran again"
            assert [a.status for a in node.attempts] == ["succeeded"]
    if fence == "marker":
        # Only what Dask sent again read its claim: the victim's re-run (found claimed, so
        # lost), and an item that was waiting on the victim's worker (found free, so run).
        assert 1 <= len(reads) <= 2, reads
    else:  # 9 attempts, and Dask's re-run of the victim's first
        assert len(reads) >= 10, reads


def test_sigterm_to_the_driver_preempts_and_resume_continues(cluster, on_s3, markers):
    def preempt_driver() -> None:
        wait_for_file(markers / "held", 120)
        os.kill(os.getpid(), signal.SIGTERM)  # this test process is the driver

    signaller = in_background(preempt_driver)
    execution = taskpoint.run(holding, total=5, markers=str(markers))
    signaller.join(10)
    assert execution.status == "preempted", execution.error
    assert [a.status for a in execution.nodes[0].attempts] == ["preempted"]

    # The abandoned attempt still runs on its worker: let it finish (its result goes nowhere).
    (markers / "release").write_text("go")
    wait_for_file(markers / "first-done", 120)
    resumed = taskpoint.resume(execution.id)
    assert resumed.status == "succeeded", resumed.error
    first, second = resumed.nodes[0].attempts
    assert (first.status, second.status) == ("preempted", "succeeded")
    # Attempt 2 starts from what attempt 1 committed last (step 5), not from zero.
    assert second.checkpoint_at_start == "0001-000005"
    assert resumed.result == {"start": 5, "attempt": 2}
