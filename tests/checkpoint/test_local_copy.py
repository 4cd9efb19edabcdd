"""The local copy of a remote scope's latest version (issue 20, item 4; checkpoint/localcopy.py).

Every test talks to the S3 server (moto) through a logging HTTP proxy (support/http_log.py), so
"restored from the local copy" is proven by the requests the reader made: the store's listing
and manifest were read, and not one payload object was fetched. A damaged copy (a flipped byte,
a truncated or missing file, a link, a record of another manifest) must be ignored, deleted,
and the exact bytes come from the store; a reader with another directory (another machine)
reads the store; the copies stay under their byte limit; and the store alone says which version
is the latest.
"""

from __future__ import annotations

import glob
import io
import json
import logging
import os
import uuid
import warnings
from pathlib import Path
from typing import Any

import pytest

from support.http_log import HttpLog
from taskpoint import Checkpoint
from taskpoint.checkpoint import CheckpointWarning, localcopy
from taskpoint.checkpoint.store_localcopy import LocalCopyStore

pytest.importorskip("s3fs")

PAYLOAD = r"/v/\d{4,}-\d{6,}/"  # an object under a version's payload prefix (not a manifest)
MANIFEST = r"/v/\d{4,}-\d{6,}\.manifest\.json$"


def _bytes(size: int, seed: int = 0) -> bytes:
    block = os.urandom(4096) if seed == 0 else bytes((seed + i) % 251 for i in range(4096))
    return (block * (size // len(block) + 1))[:size]


@pytest.fixture
def log(s3_server: Any) -> Any:
    with HttpLog(s3_server.endpoint_url) as proxy:
        yield proxy


@pytest.fixture
def scope(s3_server: Any, log: Any, tmp_path: Path) -> Any:
    return Scope(s3_server.url(f"local-copy-{uuid.uuid4().hex}"), log, tmp_path / "copies")


class Scope:
    """One S3 scope seen through the logging proxy, with a local copy directory."""

    def __init__(self, url: str, log: HttpLog, copies: Path) -> None:
        self.url, self.log, self.copies = url, log, copies
        self.options = {
            "client_kwargs": {"endpoint_url": log.endpoint_url, "region_name": "us-east-1"},
            "key": "testing",
            "secret": "testing",
        }

    def open(self, attempt: int = 1, copies: Path | bool | None = None, **kw: Any) -> Checkpoint:
        where = self.copies if copies is None else copies
        return Checkpoint.open(
            self.url, attempt=attempt, storage_options=self.options, local_copy=where, **kw
        )

    def entry_files(self, vid: str) -> list[str]:
        """The payload files of the local copy of ``vid`` of this scope."""
        key = localcopy.scope_key(self.url, self.options)
        found = glob.glob(str(self.copies / key / vid / "v" / vid / "**"), recursive=True)
        return sorted(f for f in found if os.path.isfile(f))

    def entries(self) -> list[str]:
        """The versions with a copy, in every scope of the copy directory."""
        return sorted(os.path.basename(p) for p in glob.glob(str(self.copies / "[!.]*" / "*")))


def _tree(root: Path) -> dict[str, Any]:
    """Every file's bytes, every link's target and every empty directory under ``root``."""
    found: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            if os.path.islink(full):
                found[rel] = ("link", os.readlink(full))
            elif os.path.isfile(full):
                found[rel] = Path(full).read_bytes()
            elif not os.listdir(full):
                found[rel] = "empty dir"
    return found


def _make_tree(root: Path) -> Path:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "model.bin").write_bytes(_bytes(300_000))
    (root / "sub" / "optim.bin").write_bytes(_bytes(70_000))
    (root / "sub" / "deeper" / "tiny.txt").write_bytes(b"step 7\n")
    (root / "sub" / "zero").write_bytes(b"")
    os.symlink("model.bin", root / "latest")
    return root


def _save(cp: Checkpoint, kind: str, tmp_path: Path) -> Any:
    """Commit one version of ``kind``; return what a load of it must give back."""
    data = _bytes(200_000)
    if kind in ("bytes", "bytes-async"):
        cp.write(data, step=1, blocking=kind == "bytes")
        cp.wait()
        return data
    if kind == "stream":
        cp.save(io.BytesIO(data), step=1)
        return data
    if kind in ("file", "file-async"):
        path = tmp_path / "weights.bin"
        path.write_bytes(data)
        cp.save(path, step=1, blocking=kind == "file")
        cp.wait()
        return data
    tree = _make_tree(tmp_path / f"tree-{uuid.uuid4().hex[:6]}")
    cp.save(tree, step=1, blocking=kind == "dir")
    cp.wait()
    return _tree(tree)


def _load(cp: Checkpoint, kind: str, out: Path, how: str = "restore") -> Any:
    if kind.startswith("dir"):
        return _tree(cp.restore(out))
    if how == "read":
        return cp.read()
    if how == "read_with":
        return cp.read_with(lambda reader: reader.read(reader.size))
    restored = cp.restore(out)
    assert restored is not None
    (only,) = [p for p in restored.iterdir()]
    return only.read_bytes()


KINDS = ["bytes", "bytes-async", "stream", "file", "file-async", "dir", "dir-async"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_retry_on_the_writing_machine_fetches_no_payload_from_the_store(scope, kind, tmp_path):
    with scope.open(attempt=1) as first:
        expected = _save(first, kind, tmp_path)
        vid = first.latest().id
    assert scope.entry_files(vid), "the writer made no local copy"

    scope.log.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error", CheckpointWarning)
        with scope.open(attempt=2) as retry:
            assert _load(retry, kind, tmp_path / "out") == expected
            hits = retry._store.hits  # type: ignore[attr-defined]
    assert scope.log.gets(MANIFEST), "the store's manifest was not read"
    assert scope.log.gets(PAYLOAD) == [], "payload bytes were fetched from the store"
    assert hits >= 1


@pytest.mark.parametrize("how", ["read", "read_with", "restore"])
def test_every_way_of_loading_uses_the_local_copy(scope, how, tmp_path):
    with scope.open(attempt=1) as first:
        expected = _save(first, "bytes", tmp_path)
    scope.log.clear()
    with scope.open(attempt=2) as retry:
        assert _load(retry, "bytes", tmp_path / "out", how) == expected
    assert scope.log.gets(PAYLOAD) == []


def _flip(path: str) -> None:
    data = bytearray(Path(path).read_bytes())
    data[len(data) // 2] ^= 0x01
    Path(path).write_bytes(bytes(data))


def _damage(scope: Scope, vid: str, how: str, tmp_path: Path) -> None:
    target = max(scope.entry_files(vid), key=os.path.getsize)
    if how == "flip":
        _flip(target)
    elif how == "truncate":
        with open(target, "r+b") as handle:
            handle.truncate(os.path.getsize(target) - 1)
    elif how == "missing":
        os.unlink(target)
    elif how == "link":  # the same bytes, but through a link: never followed
        outside = tmp_path / "outside.bin"
        outside.write_bytes(Path(target).read_bytes())
        os.unlink(target)
        os.symlink(outside, target)
    elif how == "record":  # the record of another manifest (another writer of this id)
        (record,) = glob.glob(str(scope.copies / "*" / vid / localcopy.ENTRY))
        doc = json.loads(Path(record).read_text())
        doc["manifest"] = "0" * 64
        Path(record).write_text(json.dumps(doc))
    elif how == "no-record":
        (record,) = glob.glob(str(scope.copies / "*" / vid / localcopy.ENTRY))
        os.unlink(record)


@pytest.mark.parametrize("how", ["flip", "truncate", "missing", "link", "record", "no-record"])
@pytest.mark.parametrize("kind", ["bytes", "dir"])
def test_a_damaged_local_copy_is_deleted_and_the_store_gives_the_bytes(
    scope, kind, how, tmp_path, caplog
):
    with scope.open(attempt=1) as first:
        _save(first, kind, tmp_path)  # an older version: a fallback to it would be wrong
        expected = _save(first, kind, tmp_path)
        vid = first.latest().id
    _damage(scope, vid, how, tmp_path)

    scope.log.clear()
    with (
        caplog.at_level(logging.WARNING, logger="taskpoint.checkpoint"),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("error", CheckpointWarning)  # the store's version is intact
        with scope.open(attempt=2) as retry:
            assert _load(retry, kind, tmp_path / "out") == expected
            assert retry.stats.loaded is not None and retry.stats.loaded.id == vid
    assert scope.log.gets(PAYLOAD), "the damaged copy was used instead of the store"
    assert not glob.glob(str(scope.copies / "*" / vid)), "the damaged copy was kept"
    assert "local copy of checkpoint version" in caplog.text

    # The next retry reads the store again (and, with the copy gone, still gets it right).
    with scope.open(attempt=3) as again:
        assert _load(again, kind, tmp_path / "out-2") == expected


def test_a_retry_elsewhere_reads_the_store(scope, tmp_path):
    with scope.open(attempt=1) as first:
        expected = _save(first, "dir", tmp_path)
    scope.log.clear()
    elsewhere = tmp_path / "another-machine"
    with scope.open(attempt=2, copies=elsewhere) as retry:
        assert _load(retry, "dir", tmp_path / "out") == expected
    assert scope.log.gets(PAYLOAD), "no payload fetched: the other machine's copy was used"
    assert not elsewhere.exists() or not any(elsewhere.iterdir()), "a reader made a copy"
    scope.log.clear()
    with scope.open(attempt=3, copies=False) as off:
        assert _load(off, "dir", tmp_path / "out-off") == expected
    assert scope.log.gets(PAYLOAD)


def test_the_store_alone_says_which_version_is_latest(scope, tmp_path):
    """A newer version committed elsewhere wins over the copy here; a version no longer in the
    store is never served from its copy."""
    with scope.open(attempt=1) as here:
        old = _save(here, "bytes", tmp_path)
    with scope.open(attempt=2, copies=tmp_path / "another-machine") as there:
        there.write(new := _bytes(150_000, seed=3))
    with scope.open(attempt=3) as retry:
        assert retry.read() == new
    assert old != new

    with scope.open(attempt=4) as writer:
        writer.write(_bytes(120_000, seed=5))
        vid = writer.latest().id
    assert scope.entry_files(vid)
    fs = Checkpoint.open(scope.url, storage_options=scope.options, local_copy=False)
    fs._store.fs.rm(fs._store.root, recursive=True)  # type: ignore[attr-defined]
    fs._store.fs.invalidate_cache()  # type: ignore[attr-defined]
    fs.close()
    with scope.open(attempt=5, readonly=True) as reader:
        assert reader.read() is None, "a version gone from the store was read from the copy"


def test_one_version_per_scope_is_kept(scope):
    with scope.open() as cp:
        cp.write(_bytes(100_000))
        first = cp.latest().id
        cp.write(_bytes(100_000, seed=7))
        second = cp.latest().id
    assert scope.entries() == [second]
    with scope.open(attempt=2) as cp:
        cp.write(_bytes(100_000, seed=9))
        third = cp.latest().id
    assert scope.entries() == [third]
    assert not scope.entry_files(first) and not scope.entry_files(second)


def test_the_limit_evicts_the_least_recently_used_copies(s3_server, log, tmp_path):
    limit = 700_000
    a, b, c = (
        Scope(s3_server.url(f"bound-{name}-{uuid.uuid4().hex[:8]}"), log, tmp_path / "copies")
        for name in "abc"
    )
    written = {}
    for name, where in (("a", a), ("b", b)):
        with where.open(local_copy_limit=limit) as cp:
            cp.write(_bytes(300_000, seed=ord(name)))
            written[name] = cp.latest().id
    assert len(a.entries()) == 2  # 600,000 bytes: both fit
    with a.open(attempt=2, local_copy_limit=limit) as cp:
        assert cp.read() == _bytes(300_000, seed=ord("a"))  # a's copy: used last
    with c.open(local_copy_limit=limit) as cp:
        cp.write(_bytes(300_000, seed=ord("c")))  # 900,000 bytes: the least recently used goes
    assert not b.entry_files(written["b"]), "b's copy (least recently used) was kept"
    assert a.entry_files(written["a"]), "a's copy (read last) was evicted"
    assert len(a.entries()) == 2

    with b.open(attempt=2, local_copy_limit=limit) as cp:
        log.clear()
        assert cp.read() == _bytes(300_000, seed=ord("b"))  # evicted: the store serves it
        assert log.gets(PAYLOAD)
        cp.write(_bytes(limit + 1, seed=17))  # larger than the limit: no copy at all
        too_big = cp.latest().id
    assert not b.entry_files(too_big)
    assert len(a.entries()) == 2


def test_an_inline_version_drops_the_older_copy(scope, tmp_path):
    with scope.open() as cp:
        _save(cp, "bytes", tmp_path)
        assert scope.entries()
        cp.write(b"small: inside the manifest")
        assert scope.entries() == []
        assert cp.read() == b"small: inside the manifest"


def test_copies_killed_writers_left_half_made_are_swept(scope, tmp_path):
    pending = scope.copies / localcopy.PENDING
    dead = pending / f"{localcopy._HOST}-{_dead_pid()}-0123456789ab"
    (dead / "v" / "0001-000001").mkdir(parents=True)
    (dead / "v" / "0001-000001" / "data").write_bytes(b"half")
    alive = pending / f"{localcopy._HOST}-{os.getpid()}-ba9876543210"
    alive.mkdir()
    with scope.open() as cp:
        _save(cp, "bytes", tmp_path)
    assert not dead.exists() and alive.exists()
    assert os.listdir(pending) == [alive.name]  # the commit's own pending copy was installed


def _dead_pid() -> int:
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_local_copy_that_cannot_be_made_never_fails_a_write(scope, tmp_path, caplog):
    blocked = tmp_path / "not-a-directory"
    blocked.write_bytes(b"a file where the copies would go")
    with (
        caplog.at_level(logging.WARNING, logger="taskpoint.checkpoint"),
        scope.open(copies=blocked / "copies") as cp,
    ):
        expected = _save(cp, "dir", tmp_path)
        assert _load(cp, "dir", tmp_path / "out") == expected
    assert "no local copies" in caplog.text


def test_a_cancelled_or_failed_write_leaves_no_copy(scope, tmp_path, monkeypatch):
    with scope.open() as cp:
        _save(cp, "bytes", tmp_path)
        kept = scope.entries()
        inner = cp._store._inner  # type: ignore[attr-defined]

        def refuse(vid: str, manifest: bytes) -> None:
            raise FileExistsError(vid)  # another writer committed the id first

        monkeypatch.setattr(inner, "commit", refuse)
        with pytest.raises(Exception, match="could not commit"):
            cp.write(_bytes(100_000, seed=19))
    assert scope.entries() == kept
    assert os.listdir(scope.copies / localcopy.PENDING) == []


def test_a_reader_without_a_copy_creates_nothing(scope, tmp_path):
    with scope.open(copies=False) as cp:
        _save(cp, "bytes", tmp_path)
    with scope.open(attempt=2, readonly=True) as reader:
        assert reader.read() is not None
    assert not scope.copies.exists()


def test_local_stores_and_memory_get_no_copy(tmp_path):
    with Checkpoint.open(tmp_path / "scope", local_copy=tmp_path / "c") as cp:
        assert not isinstance(cp._store, LocalCopyStore)
    with Checkpoint.open(f"memory://{uuid.uuid4().hex}", local_copy=tmp_path / "c") as cp:
        assert not isinstance(cp._store, LocalCopyStore)


def test_settings_resolve_in_order_and_are_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv(localcopy.ENV, raising=False)
    default = str(tmp_path / "xdg" / "taskpoint" / "versions")
    assert localcopy.directory_for(None) == default
    assert localcopy.directory_for(True) == default
    assert localcopy.directory_for(False) is None
    assert localcopy.directory_for("off") is None
    assert localcopy.directory_for(tmp_path / "here") == str(tmp_path / "here")
    monkeypatch.setenv(localcopy.ENV, "OFF")
    assert localcopy.directory_for(None) is None
    assert localcopy.directory_for(tmp_path / "here") == str(tmp_path / "here")  # explicit wins
    monkeypatch.setenv(localcopy.ENV, str(tmp_path / "env"))
    assert localcopy.directory_for(None) == str(tmp_path / "env")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert localcopy.directory_for(True).endswith(os.path.join(".cache", "taskpoint", "versions"))
    with pytest.raises(TypeError, match="local_copy must be"):
        localcopy.directory_for(3)  # type: ignore[arg-type]

    monkeypatch.delenv(localcopy.LIMIT_ENV, raising=False)
    assert localcopy.limit_for(None) == 2 << 30
    for text, size in [("1048576", 1 << 20), ("512M", 512 << 20), ("2GiB", 2 << 30), ("3k", 3072)]:
        monkeypatch.setenv(localcopy.LIMIT_ENV, text)
        assert localcopy.limit_for(None) == size
    assert localcopy.limit_for(1000) == 1000
    for bad_env in ["lots", "0", "-5", "1.5G"]:
        monkeypatch.setenv(localcopy.LIMIT_ENV, bad_env)
        with pytest.raises(Exception, match=localcopy.LIMIT_ENV):
            localcopy.limit_for(None)
    for bad in [0, -1, 1.5, True]:
        with pytest.raises(ValueError, match="local_copy_limit"):
            Checkpoint.open(tmp_path / "s", local_copy_limit=bad)  # type: ignore[arg-type]


def test_the_engine_setting_resolves_field_then_environment_then_project(tmp_path, monkeypatch):
    from taskpoint.engine.config import Engine

    project = tmp_path / "project"
    project.mkdir()
    (project / "taskpoint.toml").write_text('local-copy = "copies"\n')
    monkeypatch.chdir(project)
    monkeypatch.delenv(localcopy.ENV, raising=False)
    assert Engine().resolved_local_copy() == str(project / "copies")
    monkeypatch.setenv(localcopy.ENV, "off")
    assert Engine().resolved_local_copy() == "off"
    assert Engine(local_copy=False).resolved_local_copy() is False
    assert Engine(local_copy=tmp_path / "x").resolved_local_copy() == str(tmp_path / "x")
    (project / "taskpoint.toml").write_text("local-copy = false\n")
    monkeypatch.delenv(localcopy.ENV)
    assert Engine().resolved_local_copy() is False
    (project / "taskpoint.toml").write_text("local-copy = 5\n")
    with pytest.raises(Exception, match="local-copy must be"):
        Engine().resolved_local_copy()
    with pytest.raises(TypeError, match="local_copy must be"):
        Engine(local_copy=5)  # type: ignore[arg-type]
