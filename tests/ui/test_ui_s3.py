"""The web view serves an execution whose storage is on S3 (moto over HTTP): the server is built
from an ``Engine`` that carries the storage options (``--storage-option``) or finds the endpoint
in ``TASKPOINT_S3_ENDPOINT_URL``, as `taskpoint ui` builds it."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from ui_support import base_url, get, serving

from taskpoint import current_context, task, workflow
from taskpoint.engine import Engine
from taskpoint.ui import logview


@task(keep=10, keep_checkpoints_on_success="all")
def counter(steps: int) -> int:
    cp = current_context().checkpoint
    for i in range(steps):
        cp.write(f"count {i + 1}".encode(), step=i + 1)
        print(f"committed count {i + 1}")
    return steps


@workflow
def counting(steps: int) -> int:
    return counter(steps=steps)


@pytest.mark.parametrize("how", ["storage_options", "endpoint_env"])
def test_an_execution_stored_on_s3_is_listed_and_downloaded(
    tp_home: Path, s3_server, monkeypatch: pytest.MonkeyPatch, how: str
):
    if how == "storage_options":
        options = s3_server.storage_options
    else:  # the endpoint from the environment, credentials from the AWS variables (moto's)
        monkeypatch.setenv("TASKPOINT_S3_ENDPOINT_URL", s3_server.endpoint_url)
        options = None
    engine = Engine(home=str(tp_home), storage=s3_server.url(), storage_options=options)
    execution = engine.run(counting, steps=3)
    assert execution.status == "succeeded", execution.error
    assert execution.storage.startswith("s3://")

    # The recorded storage is used; the engine only brings how to open it.
    with serving(tp_home, storage_options=options) as server:
        base = f"{base_url(server)}/api/executions/{execution.id}"
        listed = get(f"{base}/checkpoints").json()
        (node,) = listed["nodes"]
        ids = [c["id"] for c in node["checkpoints"]]
        assert ids == ["0001-000001", "0001-000002", "0001-000003"]
        assert node.get("damaged_checkpoints", []) == []
        response = get(f"{base}/nodes/counter%231/checkpoints/0001-000003.tar")
        assert response.status == 200, response.body
        with tarfile.open(fileobj=io.BytesIO(response.body)) as tar:
            assert tar.extractfile("0001-000003/data").read() == b"count 3"


def test_without_the_options_the_s3_store_cannot_be_read(tp_home: Path, s3_server):
    """The options really travel through the engine: a server built without them (and no
    endpoint in the environment) cannot list the versions, and says so instead of failing."""
    engine = Engine(storage=s3_server.url(), storage_options=s3_server.storage_options)
    execution = engine.run(counting, steps=1)
    assert execution.status == "succeeded", execution.error
    with serving(tp_home) as server:
        listed = get(f"{base_url(server)}/api/executions/{execution.id}/checkpoints").json()
        (node,) = listed["nodes"]
        assert node["checkpoints"] == []
        assert node["damaged_checkpoints"] and node["damaged_checkpoints"][0]["id"] is None


def test_an_attempts_log_on_s3_is_read_in_bounded_ranges(
    tp_home: Path, s3_server, monkeypatch: pytest.MonkeyPatch
):
    options = s3_server.storage_options
    engine = Engine(home=str(tp_home), storage=s3_server.url(), storage_options=options)
    execution = engine.run(counting, steps=30)
    assert execution.status == "succeeded", execution.error
    whole = "".join(f"committed count {i + 1}\n" for i in range(30)).encode()
    with serving(tp_home, storage_options=options) as server:
        url = f"{base_url(server)}/api/executions/{execution.id}/nodes/counter%231/attempts/1/log"
        response = get(url)
        assert response.status == 200, response.body
        assert response.body == whole and response.headers["X-Log-Size"] == str(len(whole))
        assert get(f"{url}?tail=19").body == whole[-19:]
        monkeypatch.setattr(logview, "MAX_CHUNK", 64)  # byte ranges, not the whole object
        pieces, offset = [], 0
        while piece := get(f"{url}?offset={offset}").body:
            assert len(piece) <= 64
            pieces.append(piece)
            offset += len(piece)
        assert b"".join(pieces) == whole and len(pieces) == -(-len(whole) // 64)
        missing = url.replace("/attempts/1/", "/attempts/2/")
        assert get(missing).status == 404
