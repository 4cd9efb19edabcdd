"""`taskpoint run FILE NAME --backend dask` and `taskpoint resume --backend dask` as real
processes: the file's functions and classes reach the workers, checkpoints live on S3, and a
driver killed with SIGKILL is resumed without re-running its succeeded nodes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from dask_support import descendants, stop_process

from support.fixtures import cli_command, run_cli, tp_env
from support.polling import running, wait_for_file, wait_gone

TIMEOUT = 240  # seconds for one CLI command that starts a local cluster


@pytest.fixture
def flow(workflow_copy) -> Path:
    """The test's own copy of workflows/dask_flow.py (its markers are written next to it)."""
    return workflow_copy("dask_flow.py")


def s3_options(s3_server) -> list[str]:
    return [
        "--storage-option=key=testing",
        "--storage-option=secret=testing",
        f"--storage-option=client_kwargs.endpoint_url={s3_server.endpoint_url}",
    ]


def test_run_ships_the_file_to_the_workers_and_checkpoints_on_s3(flow, s3_server, tp_home):
    storage = s3_server.url()
    args = ["run", str(flow), "pipeline", "--steps", "4", "--backend", "dask", "--workers", "2"]
    options = [*s3_options(s3_server), "--json"]
    done = run_cli(*args, "--storage", storage, *options, home=tp_home, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    execution = json.loads(done.stdout)
    start, attempt, worker_pid, prepared_by = execution["result"]
    assert (start, attempt) == (0, 1)
    assert worker_pid != os.getpid() and prepared_by != os.getpid()
    count = next(n for n in execution["nodes"] if n["key"] == "count#1")
    assert [c["step"] for c in count["checkpoints"]] == [3, 4]  # keep=2 on S3
    assert s3_server.filesystem.ls(f"{storage.removeprefix('s3://')}/{execution['id']}")


def test_resume_after_the_driver_was_killed_reruns_no_succeeded_node(flow, s3_server, tp_home):
    (flow.parent / "stall").write_text("yes")
    endpoint = {"TASKPOINT_S3_ENDPOINT_URL": s3_server.endpoint_url}
    args = ["run", str(flow), "pipeline", "--steps", "6", "--backend", "dask", "--workers", "2"]
    driver = subprocess.Popen(
        cli_command(*args, "--storage", s3_server.url(), "--json"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=tp_env(tp_home, **endpoint),
    )
    try:
        wait_for_file(flow.parent / "ready", 120)
        cluster = descendants(driver.pid)  # the local cluster's worker processes
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        stop_process(driver.pid)
    # The local cluster's workers stop with their driver (Dask watches the parent).
    assert cluster
    try:
        wait_gone(cluster, 60)
    finally:
        for pid in filter(running, cluster):
            stop_process(pid)
    (flow.parent / "stall").unlink()

    execution_id = _only_execution(tp_home)
    args = ["resume", execution_id, "--backend", "dask", "--workers", "2", "--json"]
    resumed = run_cli(*args, home=tp_home, env=endpoint, timeout=TIMEOUT)
    assert resumed.returncode == 0, resumed.stderr
    execution = json.loads(resumed.stdout)
    assert execution["status"] == "succeeded"
    start, attempt, _, _ = execution["result"]
    assert (start, attempt) == (3, 2)  # from the checkpoint the killed run committed
    assert (flow.parent / "prepare_runs").read_text() == "x"  # prepare did not run again
    nodes = {n["key"]: n for n in execution["nodes"]}
    assert [a["status"] for a in nodes["prepare#1"]["attempts"]] == ["succeeded"]
    assert [a["status"] for a in nodes["count#1"]["attempts"]] == ["lost", "succeeded"]


def _only_execution(home: Path) -> str:
    listed = run_cli("list", "--json", home=home)
    assert listed.returncode == 0, listed.stderr
    [execution] = json.loads(listed.stdout)
    return execution["id"]
