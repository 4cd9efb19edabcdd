"""`taskpoint ui` as a real process serves an execution stored on S3 (moto over HTTP) when the
endpoint comes from ``--storage-option`` or from ``TASKPOINT_S3_ENDPOINT_URL``."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from ui_support import get

from support.fixtures import cli_command, tp_env
from taskpoint import current_context, task, workflow
from taskpoint.engine import Engine


@task(keep=5, keep_checkpoints_on_success="all")
def tally(steps: int) -> int:
    cp = current_context().checkpoint
    for i in range(steps):
        cp.write(f"tally {i + 1}".encode(), step=i + 1)
    return steps


@workflow
def tallying(steps: int) -> int:
    return tally(steps=steps)


def _served_url(proc: subprocess.Popen) -> str:
    """The URL the server printed; raises with its output if it exits first."""
    lines: list[str] = []
    for line in proc.stdout:  # blocks on the server's own output, no polling
        lines.append(line)
        match = re.search(r"serving on (http://\S+)", line)
        if match:
            return match.group(1).rstrip("/")
    raise AssertionError("taskpoint ui exited before serving:\n" + "".join(lines))


@pytest.mark.parametrize("how", ["--storage-option", "TASKPOINT_S3_ENDPOINT_URL"])
def test_cli_ui_lists_and_downloads_an_s3_execution(tmp_path: Path, s3_server, how: str):
    home = tmp_path / "home"
    engine = Engine(
        home=str(home), storage=s3_server.url(), storage_options=s3_server.storage_options
    )
    execution = engine.run(tallying, steps=2)
    assert execution.status == "succeeded", execution.error

    env = tp_env()
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    env.update(AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
    args = ["ui", "--home", home, "--port", "0"]
    if how == "--storage-option":
        args += ["--storage-option", f"client_kwargs.endpoint_url={s3_server.endpoint_url}"]
    else:
        env["TASKPOINT_S3_ENDPOINT_URL"] = s3_server.endpoint_url
    proc = subprocess.Popen(
        cli_command(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    try:
        base = f"{_served_url(proc)}/api/executions/{execution.id}"
        listed = get(f"{base}/checkpoints").json()
        (node,) = listed["nodes"]
        assert [c["id"] for c in node["checkpoints"]] == ["0001-000001", "0001-000002"]
        response = get(f"{base}/nodes/tally%231/checkpoints/0001-000002.tar")
        assert response.status == 200, response.body
        assert b"tally 2" in response.body
    finally:
        proc.terminate()
        proc.wait(30)


def test_cli_ui_without_the_endpoint_reports_the_store_unreadable(tmp_path: Path, s3_server):
    """Control: the same server without the endpoint cannot list the versions (so the test
    above really depends on the option reaching the store)."""
    home = tmp_path / "home"
    engine = Engine(
        home=str(home), storage=s3_server.url(), storage_options=s3_server.storage_options
    )
    execution = engine.run(tallying, steps=1)
    env = tp_env()
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    env.update(AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
    # Nothing listens here: connections are refused at once instead of reaching a cloud.
    args = ["ui", "--home", home, "--port", "0"]
    args += ["--storage-option", "client_kwargs.endpoint_url=http://127.0.0.1:9"]
    proc = subprocess.Popen(
        cli_command(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    try:
        base = f"{_served_url(proc)}/api/executions/{execution.id}"
        (node,) = get(f"{base}/checkpoints").json()["nodes"]
        assert node["checkpoints"] == []
        assert node["damaged_checkpoints"]
    finally:
        proc.terminate()
        proc.wait(30)
