"""The engine's storage timeout on a stalled S3 upload (issue 20, item 2).

The fault proxy (faults_proxy.py) stands between s3fs and the moto server, armed to *stall*
every connection that carries more than 256 KiB: listings, manifests and a small inline version
pass, a 1 MiB payload upload freezes half-way. s3fs's own read timeout never starts on such a
request, so without a storage timeout the attempt would hang forever. With
``Engine(storage_timeout=...)`` (the CLI's ``--storage-timeout``) or ``@task(storage_timeout=)``
the write fails with `CheckpointTimeoutError` at that deadline, the attempt is recorded ``lost``
and retried under the system budget, and the retry (the proxy healed when the first attempt
ended) resumes from the version committed before the stall and succeeds.
"""

from __future__ import annotations

import json
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import pytest
from faults_proxy import FaultyProxy, proxied_options
from faults_stats import record

from taskpoint import Checkpoint, current_context, task
from taskpoint.engine.config import Engine
from taskpoint.engine.events import AttemptInfo, Listener

pytestmark = pytest.mark.slow

pytest.importorskip("s3fs")

TIMEOUT = 3.0  # the storage timeout under test
BIG = 1 << 20  # well past the proxy's 256 KiB threshold: its upload stalls
SMALL = 1024  # an inline version: one small manifest PUT, which passes the proxy


def _content(step: int, size: int) -> bytes:
    head = f"<{step:06d}>".encode()
    return (head * (size // len(head) + 1))[:size]


def _sizes(step: int) -> int:
    return SMALL if step == 1 else BIG  # step 1 commits, step 2 stalls


def _steps(steps: int) -> dict[str, Any]:
    ctx = current_context()
    cp = ctx.checkpoint
    prev = cp.read()
    start = int(prev[1:7]) if prev else 0
    for step in range(start + 1, steps + 1):
        cp.write(_content(step, _sizes(step)), step=step)
    return {"start": start, "attempt": ctx.attempt}


@task(system_retries=2, keep=3, keep_checkpoints_on_success="all")
def inline_upload(steps: int) -> dict[str, Any]:
    return _steps(steps)


@task(system_retries=2, keep=3, keep_checkpoints_on_success="all", isolation="process")
def process_upload(steps: int) -> dict[str, Any]:
    return _steps(steps)


@task(system_retries=2, keep=3, keep_checkpoints_on_success="all", storage_timeout=TIMEOUT)
def own_timeout_upload(steps: int) -> dict[str, Any]:
    return _steps(steps)


class HealAfterFirst(Listener):
    """Heals the proxy as soon as the first attempt ended (the driver's own thread, before the
    retry is planned), and notes when attempts start and end."""

    def __init__(self, proxy: FaultyProxy) -> None:
        self.proxy = proxy
        self.started: dict[int, float] = {}
        self.ended: dict[int, tuple[str, str | None, str | None, float]] = {}

    def attempt_started(self, info: AttemptInfo) -> None:
        self.started[info.attempt] = time.monotonic()

    def attempt_ended(
        self, info: AttemptInfo, status: str, error: str | None, checkpoint_at_end: Any
    ) -> None:
        self.ended[info.attempt] = (status, error, info.retry_budget, time.monotonic())
        if info.attempt == 1:
            self.proxy.heal()


def _options(endpoint: str) -> dict[str, Any]:
    return proxied_options(endpoint, connect_timeout=2, read_timeout=2)


@pytest.mark.parametrize(
    ("target", "engine_timeout"),
    [(inline_upload, TIMEOUT), (process_upload, TIMEOUT), (own_timeout_upload, None)],
    ids=["inline-engine-timeout", "process-engine-timeout", "task-option"],
)
def test_a_stalled_upload_fails_at_the_storage_timeout_and_the_retry_resumes(
    s3_server, proxy, target, engine_timeout
):
    storage = f"s3://{s3_server.bucket}/engine-{uuid.uuid4().hex[:8]}"
    heal = HealAfterFirst(proxy)
    engine = Engine(
        storage=storage,
        storage_options=_options(proxy.endpoint_url),
        storage_timeout=engine_timeout,
        listener=heal,
    )
    proxy.arm("stall")  # from the start: only the 1 MiB payload of step 2 is big enough

    execution = engine.run(target, steps=3)

    assert execution.status == "succeeded", execution.error
    assert proxy.stats.stalled >= 1, "the proxy never stalled an upload"
    record("s3_faults", proxy.stats.stalled)
    first, second = execution.nodes[0].attempts
    # The stalled write failed at the timeout, as a storage failure: lost, on the system budget.
    assert first.status == "lost", first.error
    assert first.error.startswith("CheckpointTimeoutError:"), first.error
    assert "timed out" in first.error and "0001-000002" in first.error, first.error
    assert first.checkpoint_at_end == "0001-000001"
    assert first.budget == "system_retries"
    status, _, budget, ended = heal.ended[1]
    assert (status, budget) == ("lost", "system_retries")
    took = ended - heal.started[1]
    assert took >= TIMEOUT * 0.9, f"ended after {took:.1f} s: not a stall"
    # the stalled request, then the cleanup of its payload: each bounded by the timeout
    assert took < 3 * TIMEOUT + 10, f"took {took:.1f} s despite a {TIMEOUT} s storage timeout"
    # The retry resumed from the version committed before the stall.
    assert second.status == "succeeded"
    assert second.checkpoint_at_start == "0001-000001"
    assert execution.result == {"start": 1, "attempt": 2}

    url = f"{storage}/{execution.id}/nodes/{first_node_dir(execution)}/checkpoints"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cp = Checkpoint.open(url, attempt=99, storage_options=s3_server.storage_options)
        try:
            assert [v.step for v in cp.versions()] == [1, 2, 3]
            assert [v.attempt for v in cp.versions()] == [1, 2, 2]
            assert cp.read() == _content(3, BIG)
        finally:
            cp.close()
    record("executions")


def first_node_dir(execution: Any) -> str:
    from taskpoint.engine.blobs import node_dir

    return node_dir(execution.nodes[0].key)


def test_the_cli_passes_storage_timeout_to_the_attempts(s3_server, proxy, tmp_path, capsys):
    """``taskpoint run --storage-timeout``: the stalled attempt ends at the timeout (lost; the
    task allows no system retry, so the run stops); ``resume`` after the store healed
    continues from the version committed before the stall."""
    from taskpoint.cli.app import run_cli

    flow = Path(__file__).parent / "workflows" / "stallflow.py"
    storage = f"s3://{s3_server.bucket}/cli-{uuid.uuid4().hex[:8]}"
    options = [
        "--storage-option", f"client_kwargs.endpoint_url={proxy.endpoint_url}",
        "--storage-option", "client_kwargs.region_name=us-east-1",
        "--storage-option", "skip_instance_cache=true",
        "--storage-timeout", str(TIMEOUT),
    ]  # fmt: skip
    proxy.arm("stall")
    started = time.monotonic()
    code = run_cli(["run", str(flow), "stalling", "--steps", "3", "--storage", storage,
                    *options, "--json"])  # fmt: skip
    took = time.monotonic() - started
    out = json.loads(capsys.readouterr().out)
    assert code != 0 and out["status"] == "failed", out
    (attempt,) = out["nodes"][0]["attempts"]
    assert attempt["status"] == "lost"
    assert attempt["error"].startswith("CheckpointTimeoutError:"), attempt["error"]
    assert attempt["checkpoint_at_end"] == "0001-000001"
    assert TIMEOUT * 0.9 <= took < 3 * TIMEOUT + 15, f"took {took:.1f} s"

    proxy.heal()
    # The resume uploads 2 MiB through the proxy: on a loaded machine that may take longer than
    # the stall's 3 s, which it does not test; it gets a timeout that only a stall would hit.
    options[-1] = str(60 * TIMEOUT)
    code = run_cli(["resume", out["id"], *options, "--json"])
    resumed = json.loads(capsys.readouterr().out)
    assert code == 0, [(a["status"], a["error"]) for n in resumed["nodes"] for a in n["attempts"]]
    assert resumed["status"] == "succeeded" and resumed["result"] == 1
    record("executions")


def test_storage_timeout_settings_resolve_in_order_and_are_checked(tmp_path, monkeypatch):
    from taskpoint.engine.project import ProjectConfigError, find_project_config
    from taskpoint.errors import TaskpointError

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TASKPOINT_STORAGE_TIMEOUT", raising=False)
    assert Engine().resolved_storage_timeout() is None
    (tmp_path / "taskpoint.toml").write_text("storage-timeout = 45\n")
    assert find_project_config().storage_timeout == 45.0
    assert Engine().resolved_storage_timeout() == 45.0
    monkeypatch.setenv("TASKPOINT_STORAGE_TIMEOUT", "20")
    assert Engine().resolved_storage_timeout() == 20.0
    assert Engine(storage_timeout=5).resolved_storage_timeout() == 5.0

    monkeypatch.setenv("TASKPOINT_STORAGE_TIMEOUT", "soon")
    with pytest.raises(TaskpointError, match="TASKPOINT_STORAGE_TIMEOUT must be"):
        Engine().resolved_storage_timeout()
    monkeypatch.delenv("TASKPOINT_STORAGE_TIMEOUT")
    (tmp_path / "taskpoint.toml").write_text('storage-timeout = "1m"\n')
    with pytest.raises(ProjectConfigError, match="storage-timeout must be a finite number"):
        find_project_config()
    for bad in (0, -1, float("inf"), True, "3"):
        with pytest.raises(ValueError, match="storage_timeout must be"):
            Engine(storage_timeout=bad)
        with pytest.raises(ValueError, match="storage_timeout must be"):
            task(storage_timeout=bad)(_steps)
