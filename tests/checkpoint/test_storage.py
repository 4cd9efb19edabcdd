"""Storage-specific behaviour: unreachable or unwritable storage, URL forms, local commit order."""

from __future__ import annotations

import os
import re
import socket
import time
from pathlib import Path

import pytest

from taskpoint import Checkpoint, CheckpointError


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _unreachable_options(port: int) -> dict:
    return {
        "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}", "region_name": "us-east-1"},
        "key": "testing",
        "secret": "testing",
        "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1},
    }


def test_unreachable_s3_endpoint_is_a_checkpoint_error_naming_url_and_cause(s3_server):
    url = f"s3://{s3_server.bucket}/unreachable"
    started = time.monotonic()
    with pytest.raises(CheckpointError) as info:
        Checkpoint.open(url, storage_options=_unreachable_options(_closed_port()))
    message = str(info.value)
    assert url in message
    # the cause is the connection, not a made-up "bucket does not exist"
    assert re.search(r"connect", message, re.IGNORECASE), message
    assert "does not exist" not in message
    assert time.monotonic() - started < 30


def test_missing_bucket_is_a_checkpoint_error_naming_it(s3_server):
    url = "s3://no-such-bucket-here/scope"
    with pytest.raises(CheckpointError, match="no-such-bucket-here") as info:
        Checkpoint.open(url, storage_options=s3_server.storage_options)
    assert url in str(info.value)
    # and it was not created as a side effect
    assert "no-such-bucket-here" not in {
        b["Name"] for b in s3_server.client().list_buckets()["Buckets"]
    }


def test_s3_storage_lost_after_open_fails_the_write_naming_url(s3_server):
    """The server goes away between open and write: the write fails loudly, not silently."""
    options = dict(s3_server.storage_options)
    options["config_kwargs"] = {"retries": {"max_attempts": 1}, "connect_timeout": 1}
    options["skip_instance_cache"] = True
    url = s3_server.url()
    cp = Checkpoint.open(url, storage_options=options)
    cp.write(b"reachable")
    # point the very same store at a closed port
    cp._store.fs = type(cp._store.fs)(
        **_unreachable_options(_closed_port()), skip_instance_cache=True
    )
    with pytest.raises(CheckpointError, match=re.escape(url)):
        cp.write(b"unreachable")
    with pytest.raises(CheckpointError, match=re.escape(url)):
        cp.read()


def test_local_path_under_a_file_is_a_checkpoint_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"x")
    url = str(blocker / "scope")
    with pytest.raises(CheckpointError, match=re.escape(url)):
        Checkpoint.open(url)


def test_local_scope_replaced_by_a_file_fails_sync_write_naming_url(tmp_path):
    url = str(tmp_path / "scope")
    cp = Checkpoint.open(url)
    cp.write(b"ok")
    (tmp_path / "scope").rename(tmp_path / "moved")
    (tmp_path / "scope").write_bytes(b"not a directory any more")
    with pytest.raises(CheckpointError, match=re.escape(url)) as info:
        cp.write(b"fails")
    assert isinstance(info.value.__cause__, OSError)


@pytest.mark.usefixtures("payload_files")
def test_file_url_and_pathlike_are_local_scopes(tmp_path):
    root = tmp_path / "scope"
    Checkpoint.open(f"file://{root}").write(b"via file://")
    assert Checkpoint.open(root).read() == b"via file://"
    assert (root / "v" / "0001-000001.manifest.json").is_file()
    assert (root / "v" / "0001-000001" / "data").read_bytes() == b"via file://"


def test_storage_options_on_a_local_path_are_refused(tmp_path):
    # a usage error; today it surfaces wrapped in CheckpointError, which still names the problem
    with pytest.raises((ValueError, CheckpointError), match="storage_options are not used"):
        Checkpoint.open(tmp_path / "scope", storage_options={"anon": True})


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to name fds")
def test_local_commit_fsyncs_payload_and_directories_before_the_manifest(tmp_path, monkeypatch):
    """DESIGN: payload files and directories are fsynced, then the manifest is linked in."""
    events: list[tuple[str, str]] = []
    real_fsync, real_link = os.fsync, os.link

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def link(src: str, dst: str, **kwargs) -> None:
        events.append(("link", str(dst)))
        real_link(src, dst, **kwargs)

    src = tmp_path / "tree"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f").write_bytes(b"f")
    (src / "g").write_bytes(b"g")
    root = tmp_path / "scope"
    cp = Checkpoint.open(root)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "link", link)
    version = cp.save(src)
    monkeypatch.undo()

    vdir = root / "v"
    manifest = str(vdir / f"{version.id}.manifest.json")
    links = [i for i, (kind, path) in enumerate(events) if kind == "link"]
    assert [events[i][1] for i in links] == [manifest], "the manifest is linked exactly once"
    before = {path for kind, path in events[: links[0]] if kind == "fsync"}
    payload = vdir / version.id
    must = {
        str(payload / "g"),
        str(payload / "sub" / "f"),
        str(payload),
        str(payload / "sub"),
        str(vdir),
    }
    assert must <= before, f"not fsynced before the manifest: {must - before}"
    # the manifest's own content was fsynced (as a temp file) before it was linked
    assert any(Path(p).name.endswith(".tmp") for p in before)
    # and v/ is fsynced again after the link, so the commit itself is durable
    assert ("fsync", str(vdir)) in events[links[0] :]
