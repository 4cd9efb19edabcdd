"""An engine run on S3 whose second attempt restores from the first one's local copy.

The first attempt saves a directory version and asks for a retry; the retry, on the same machine
(the same process, or another child process), restores it. The S3 server is behind a logging
proxy: once the retry started, not one payload object may be fetched, and the tree must be the
one saved. With ``local_copy=False`` the same run fetches the payload from the store.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest

from support.http_log import HttpLog
from taskpoint import RecoverableError, current_context, task
from taskpoint.engine.config import Engine
from taskpoint.engine.events import AttemptInfo, Listener

pytest.importorskip("s3fs")

PAYLOAD = r"/v/\d{4,}-\d{6,}/"
FILES = {"model.bin": 600_000, "optim/state.bin": 250_000, "meta.txt": 12}


@pytest.fixture(autouse=True)
def tp_home(tp_home: Path) -> Path:
    return tp_home


def _content(name: str, size: int) -> bytes:
    head = hashlib.sha256(name.encode()).digest()
    return (head * (size // len(head) + 1))[:size]


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for dirpath, _dirs, files in sorted(os.walk(root)):
        for name in sorted(files):
            path = Path(dirpath, name)
            h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def _expected() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        return _digest(_write_tree(Path(tmp)))


def _write_tree(root: Path) -> Path:
    for name, size in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(_content(name, size))
    return root


def _train() -> dict[str, Any]:
    ctx = current_context()
    cp = ctx.checkpoint
    restored = cp.restore()
    if restored is None:
        with tempfile.TemporaryDirectory() as tmp:
            cp.save(_write_tree(Path(tmp)), step=1)
        raise RecoverableError("the first attempt fails after its checkpoint")
    try:
        return {
            "attempt": ctx.attempt,
            "digest": _digest(restored),
            "hits": getattr(cp._store, "hits", 0),
        }
    finally:
        shutil.rmtree(restored)


@task(retries=1)
def train_inline() -> dict[str, Any]:
    return _train()


@task(retries=1, isolation="process")
def train_process() -> dict[str, Any]:
    return _train()


class ClearOnRetry(Listener):
    """Clears the request log as the second attempt starts: what follows is the retry's."""

    def __init__(self, log: HttpLog) -> None:
        self.log = log

    def attempt_started(self, info: AttemptInfo) -> None:
        if info.attempt == 2:
            self.log.clear()


@pytest.mark.parametrize("target", [train_inline, train_process], ids=["inline", "process"])
@pytest.mark.parametrize("copies", [True, False], ids=["local-copy", "off"])
def test_the_retry_restores_from_the_local_copy(s3_server, tmp_path, target, copies):
    with HttpLog(s3_server.endpoint_url) as log:
        engine = Engine(
            storage=f"s3://{s3_server.bucket}/local-copy-engine-{uuid.uuid4().hex[:8]}",
            storage_options={
                "client_kwargs": {"endpoint_url": log.endpoint_url, "region_name": "us-east-1"},
                "key": "testing",
                "secret": "testing",
            },
            local_copy=str(tmp_path / "copies") if copies else False,
            listener=ClearOnRetry(log),
        )
        execution = engine.run(target)
        fetched = log.gets(PAYLOAD)

    assert execution.status == "succeeded", execution.error
    first, second = execution.nodes[0].attempts
    assert first.status == "recoverable" and first.checkpoint_at_end is not None
    assert second.checkpoint_at_start == first.checkpoint_at_end
    result = execution.result
    assert result["attempt"] == 2 and result["digest"] == _expected()
    if copies:
        assert fetched == [], f"the retry fetched payload objects: {fetched}"
        assert result["hits"] == len(FILES)
    else:
        assert len(fetched) >= len(FILES)
        assert result["hits"] == 0
