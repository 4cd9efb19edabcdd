"""Rank groups on Dask (issue 19): an attempt of ``@task(nproc=2)`` runs as two rank processes that
the one worker which took it starts on its machine, with torchrun's environment, and ends as on
the process backend: rank 0's value; ``lost`` when a rank is killed (the retry resumes from the
committed checkpoint); ``preempted`` when the worker gets SIGTERM (every rank saves)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from dask_rank_tasks import counting, describing, preempting

import taskpoint
from support.polling import wait_for_file
from taskpoint._process import process_alive
from taskpoint.engine import configure

if importlib.util.find_spec("torch") is None:  # the ranks import it; this process need not
    pytest.skip("needs torch", allow_module_level=True)
pytestmark = pytest.mark.slow

GRACE = 20.0


def seen(out: Path, name: str, timeout: float = 60) -> dict[str, Any]:
    return json.loads(wait_for_file(out / name, timeout))


def when_ready(
    out: Path, act: Callable[[dict[str, Any], dict[str, Any]], None]
) -> threading.Thread:
    """Once both ranks announced ``ready-r<rank>``, ``act(rank 0's, rank 1's)``."""

    def run() -> None:
        try:
            act(seen(out, "ready-r0"), seen(out, "ready-r1"))
        except AssertionError:
            return  # nobody announced itself: the test's own asserts tell

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_both_ranks_run_on_one_worker_with_torchruns_environment(cluster, markers):
    workers = set(cluster.run(os.getpid).values())
    execution = taskpoint.run(describing, out=str(markers))

    assert execution.status == "succeeded", execution.error
    zero, one = seen(markers, "rank0"), seen(markers, "rank1")
    # Started by the same Dask worker, as processes of their own.
    assert zero["ppid"] == one["ppid"] and zero["ppid"] in workers
    assert len({zero["pid"], one["pid"], *workers}) == 4
    for rank, what in enumerate((zero, one)):
        assert (what["rank"], what["world_size"]) == (rank, 2)
        assert what["env"]["RANK"] == what["env"]["LOCAL_RANK"] == str(rank)
        assert what["env"]["WORLD_SIZE"] == "2"
    assert zero["env"]["MASTER_PORT"] == one["env"]["MASTER_PORT"]
    assert int(zero["env"]["MASTER_PORT"]) > 0
    # rank 0's value is the output (the all-reduce of 1 + 2 went through the rendezvous)
    assert execution.result == {"rank": 0, "total": 3.0, "pid": zero["pid"]}
    assert execution.nodes[0].attempts[0].pid == zero["pid"]


def test_a_killed_rank_loses_the_attempt_and_the_group_resumes_from_the_checkpoint(
    cluster, on_s3, markers
):
    killer = when_ready(markers, lambda _, one: os.kill(one["pid"], signal.SIGKILL))
    execution = taskpoint.run(counting, out=str(markers), total=5)
    killer.join(5)

    assert execution.status == "succeeded", execution.error
    first, second = execution.nodes[0].attempts
    assert first.status == "lost", first.error
    assert "rank 1 of 2" in first.error and "SIGKILL" in first.error
    assert first.budget == "system_retries"
    assert first.checkpoint_at_end == second.checkpoint_at_start == "0001-000003"
    assert {k: execution.result[k] for k in ("rank", "start", "attempt")} == {
        "rank": 0,
        "start": 3,
        "attempt": 2,
    }
    zero = seen(markers, "ready-r0")
    # Rank 0 was waiting for rank 1 in a collective: the worker ended it, and lived on.
    assert not process_alive(zero["pid"])
    assert zero["ppid"] in set(cluster.run(os.getpid).values())


def test_sigterm_of_the_worker_preempts_every_rank_and_the_group_resumes(cluster, on_s3, markers):
    configure(grace=GRACE)
    sent: dict[str, Any] = {}

    def preempt_worker(zero: dict[str, Any], one: dict[str, Any]) -> None:
        sent["worker"], sent["at"] = zero["ppid"], time.time()
        os.kill(zero["ppid"], signal.SIGTERM)

    signaller = when_ready(markers, preempt_worker)
    execution = taskpoint.run(preempting, out=str(markers), total=6)
    signaller.join(5)

    assert execution.status == "succeeded", execution.error
    first, second = execution.nodes[0].attempts
    assert first.status == "preempted", first.error
    assert first.budget == "system_retries"
    assert first.ended - sent["at"] < GRACE  # recorded within the grace period
    # Each rank was told (the worker's guard sent SIGTERM on to both) and they saved together.
    for rank in (0, 1):
        assert seen(markers, f"preempted-a1-r{rank}", 5)["ppid"] == sent["worker"]
    assert first.checkpoint_at_end == second.checkpoint_at_start == "0001-000004"
    result = execution.result
    assert (result["rank"], result["start"], result["attempt"]) == (0, 4, 2)
    assert result["ppid"] != sent["worker"]  # the next attempt ran on another worker
    # The preempted worker passed the SIGTERM on once the driver had the outcome: it exited.
    try:
        _, alive = psutil.wait_procs([psutil.Process(sent["worker"])], timeout=30)
    except psutil.NoSuchProcess:
        alive = []
    assert alive == [], "the preempted worker did not exit"
