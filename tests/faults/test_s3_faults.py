"""Fault 4: S3 storage that drops or stalls connections in the middle of an upload.

A TCP proxy (faults_proxy.py) sits between s3fs and the moto server on 127.0.0.1; once armed it
resets, or freezes, every connection that carries more than 256 KiB of request, so small
requests (listings, manifests) pass and a checkpoint's payload upload dies half-way.

- drop: the write fails with `CheckpointError` after s3fs's and botocore's bounded retries, in
  less time than the configured timeouts allow;
- stall: s3fs's read timeout never starts (the request body is never fully sent), so only the
  scope's ``timeout=`` ends the request: the write fails with `CheckpointError` at that
  deadline instead of hanging;
- either way the previous version stays committed and readable, nothing is left behind, and
  writes succeed again once the proxy heals; through the engine, a resume continues from it.
"""

from __future__ import annotations

import time
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import fsspec
import pytest
from faults_proxy import proxied_options
from faults_stats import record

import taskpoint
from taskpoint import Checkpoint, CheckpointError, current_context, task
from taskpoint.checkpoint.version import parse_version_id

pytestmark = pytest.mark.slow  # kills processes, starts a JVM or a browser

pytest.importorskip("s3fs")

CONNECT_TIMEOUT = 2.0
READ_TIMEOUT = 2.0
MAX_ATTEMPTS = 2  # botocore's attempts per request (s3fs retries each failed call 5 times)
S3FS_RETRIES = 5
SCOPE_TIMEOUT = 3.0
PAYLOAD = 1 << 20  # well past the proxy's 256 KiB threshold


def _bound() -> float:
    """The longest a failing request may take with this configuration (plus a slow machine)."""
    backoff = sum(min(1.7**i * 0.1, 15) for i in range(S3FS_RETRIES))
    per_attempt = CONNECT_TIMEOUT + READ_TIMEOUT
    return S3FS_RETRIES * MAX_ATTEMPTS * per_attempt + backoff + 10


def _options(endpoint: str) -> dict[str, Any]:
    return proxied_options(
        endpoint,
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
    )


def _content(step: int, size: int = PAYLOAD) -> bytes:
    head = f"<{step:06d}>".encode()
    return (head * (size // len(head) + 1))[:size]


def _direct(s3_server, url: str) -> Checkpoint:
    """The same scope seen without the proxy, as another machine would see it."""
    return Checkpoint.open(url, attempt=99, storage_options=s3_server.storage_options)


def _check_committed(s3_server, url: str, steps: list[int]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cp = _direct(s3_server, url)
        assert [v.step for v in cp.versions()] == steps
        assert cp.read() == _content(steps[-1])
        cp.close()
    prefix = url.removeprefix("s3://") + "/v"
    entries = {p.rstrip("/").rsplit("/", 1)[-1] for p in s3_server.filesystem.ls(prefix)}
    committed = {e.removesuffix(".manifest.json") for e in entries if e.endswith(".json")}
    leftovers = sorted(e for e in entries if parse_version_id(e) and e not in committed)
    assert leftovers == [], f"the failed upload left {leftovers}"
    record("commits_checked", len(steps))


@pytest.mark.parametrize("source", ["bytes", "file"])
def test_dropped_upload_fails_after_bounded_retries_and_heals(s3_server, proxy, source, tmp_path):
    url = s3_server.url()
    cp = Checkpoint.open(url, storage_options=_options(proxy.endpoint_url))
    cp.write(_content(1), step=1)  # before the fault
    proxy.arm("drop")
    path = tmp_path / "state.bin"
    path.write_bytes(_content(2))
    started = time.monotonic()
    with pytest.raises(CheckpointError) as failure:
        cp.write(_content(2), step=2) if source == "bytes" else cp.save(path, step=2)
    took = time.monotonic() - started
    record("s3_faults", proxy.stats.dropped)
    assert proxy.stats.dropped >= 1, "the proxy never dropped an upload"
    assert took < _bound(), f"took {took:.1f} s, more than the configured timeouts allow"
    text = str(failure.value)
    assert url in text and "0001-000002" in text, text  # names the scope and the version

    # still broken for uploads: small reads pass and see the previous version
    assert cp.read() == _content(1)
    _check_committed(s3_server, url, [1])

    proxy.heal()
    cp.write(_content(3), step=3)
    assert cp.read() == _content(3)
    _check_committed(s3_server, url, [1, 3])
    cp.close()


@pytest.mark.parametrize(
    ("source", "blocking"), [("bytes", True), ("bytes", False), ("file", True)],
    ids=["bytes-sync", "bytes-async", "file-sync"],
)  # fmt: skip
def test_stalled_upload_is_abandoned_at_the_scope_timeout_and_heals(
    s3_server, proxy, source, blocking, tmp_path
):
    url = s3_server.url()
    options = _options(proxy.endpoint_url)
    cp = Checkpoint.open(url, storage_options=options, timeout=SCOPE_TIMEOUT)
    cp.write(_content(1), step=1)
    proxy.arm("stall")
    started = time.monotonic()
    if blocking:
        path = tmp_path / "state.bin"
        path.write_bytes(_content(2))
        with pytest.raises(CheckpointError, match="timed out") as failure:
            cp.write(_content(2), step=2) if source == "bytes" else cp.save(path, step=2)
    else:
        future = cp.write(_content(2), step=2, blocking=False)
        error = future.exception(timeout=_bound())
        assert isinstance(error, CheckpointError) and "timed out" in str(error)
        with pytest.raises(
            CheckpointError, match="earlier async checkpoint write failed"
        ) as failure:
            cp.write(b"x")
    took = time.monotonic() - started
    record("s3_faults", proxy.stats.stalled)
    assert proxy.stats.stalled >= 1, "the proxy never stalled an upload"
    assert took >= SCOPE_TIMEOUT * 0.9, f"failed after {took:.1f} s: not a stall"
    # the stalled request, then the cleanup: each bounded by the timeout
    assert took < 3 * SCOPE_TIMEOUT + 10, f"took {took:.1f} s despite timeout={SCOPE_TIMEOUT}"
    assert url in str(failure.value)
    assert cp.read() == _content(1)

    proxy.heal()
    cp.wait(timeout=_bound())
    cp.write(_content(3), step=3)
    _check_committed(s3_server, url, [1, 3])
    cp.close()


# -- through the engine -------------------------------------------------------------------------

ARM: dict[str, Any] = {}


@task(keep_checkpoints_on_success="all")  # the test counts the versions it kept
def upload(steps: int) -> int:
    cp = current_context().checkpoint
    prev = cp.read()
    start = int(prev[1:7]) if prev else 0
    for step in range(start + 1, steps + 1):
        if step == ARM.get("at"):
            ARM.pop("at")
            ARM["proxy"].arm("drop")  # this write's upload is dropped half-way
        cp.write(_content(step), step=step)
    return start


@pytest.fixture
def s3_through_proxy(s3_server, proxy, monkeypatch) -> Iterator[str]:
    """Engine storage on S3 through the proxy (fsspec's config: the engine passes none)."""
    import s3fs

    conf = dict(_options(proxy.endpoint_url))
    monkeypatch.setitem(fsspec.config.conf, "s3", conf)
    s3fs.S3FileSystem.clear_instance_cache()
    storage = f"s3://{s3_server.bucket}/engine-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("TASKPOINT_STORAGE", storage)
    try:
        yield storage
    finally:
        s3fs.S3FileSystem.clear_instance_cache()


def test_engine_records_the_failed_upload_and_resumes_from_the_previous_version(
    s3_through_proxy, proxy, s3_server
):
    ARM.update(at=3, proxy=proxy)
    first = taskpoint.run(upload, steps=5)
    assert first.status == "failed"
    (attempt,) = first.nodes[0].attempts
    assert attempt.status == "failed"
    assert attempt.error.startswith("CheckpointError:"), attempt.error
    assert "0001-000003" in attempt.error
    record("s3_faults", proxy.stats.dropped)

    proxy.heal()
    resumed = taskpoint.resume(first.id)
    assert resumed.status == "succeeded", resumed.error
    assert resumed.result == 2  # started after the last committed version, step 2
    url = f"{s3_through_proxy}/{first.id}/nodes/upload-1/checkpoints"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cp = _direct(s3_server, url)
        assert [v.step for v in cp.versions()] == [4, 5]
        assert cp.read() == _content(5)
        cp.close()
    record("executions")
