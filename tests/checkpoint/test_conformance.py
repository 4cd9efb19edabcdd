"""One behaviour suite for the checkpoint API, run against local disk, memory:// and S3 (moto).

Every test here takes the ``backend`` fixture and so runs three times; what a backend cannot do
is said where it is skipped.
"""

from __future__ import annotations

import array
import dataclasses
import errno
import io
import os
import re
import shutil
import threading
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from taskpoint import Checkpoint, CheckpointError, CheckpointVersion

MiB = 1 << 20
WRITES = ("write_source", "commit_inline")  # the store methods that write a version


def _tree(root: Path) -> dict[str, Any]:
    """A comparable picture of a directory: files -> bytes, links -> ('link', target), dirs."""
    out: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath, name)
            rel = full.relative_to(root).as_posix()
            if full.is_symlink():
                out[rel] = ("link", os.readlink(full))
            elif full.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = full.read_bytes()
    return out


def _make_tree(root: Path) -> None:
    (root / "a" / "b" / "c").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "top.bin").write_bytes(bytes(range(256)) * 10)
    (root / "a" / "one.txt").write_bytes(b"one")
    (root / "a" / "b" / "c" / "deep.txt").write_bytes(b"deep" * 1000)
    (root / "a" / "zero").write_bytes(b"")
    (root / "link-to-deep").symlink_to("a/b/c/deep.txt")
    (root / "a" / "b" / "up").symlink_to("../one.txt")  # relative, still inside the tree
    (root / "dirlink").symlink_to("a/b")


def _result(value: CheckpointVersion | Future[CheckpointVersion | None]) -> CheckpointVersion:
    if isinstance(value, Future):
        version = value.result(timeout=60)
        assert version is not None
        return version
    assert isinstance(value, CheckpointVersion)
    return value


# ----------------------------------------------------------------------------- empty scope


def test_empty_scope_has_nothing(backend, tmp_path):
    cp = backend.open()
    assert cp.read() is None
    assert cp.prev_exists() is False
    assert cp.latest() is None
    assert cp.versions() == []
    assert cp.restore(tmp_path / "out") is None
    assert cp.restore() is None


def test_prev_exists_really_looks(backend):
    reader = backend.open(attempt=2)
    writer = backend.open()
    assert reader.prev_exists() is False
    writer.write(b"first")
    # the same reader instance, asked again, must see the other instance's commit
    assert reader.prev_exists() is True
    assert reader.read() == b"first"
    writer.write(b"second")
    assert reader.read() == b"second"


# ----------------------------------------------------------------------------- bytes


def _payloads() -> list[Any]:
    base = bytes(range(256)) * 64
    return [
        pytest.param(lambda: b"hello world", id="bytes"),
        pytest.param(lambda: b"", id="empty"),
        pytest.param(lambda: bytearray(base), id="bytearray"),
        pytest.param(lambda: memoryview(base), id="memoryview"),
        pytest.param(lambda: memoryview(bytearray(base))[7:-9], id="memoryview-slice"),
        pytest.param(lambda: memoryview(base)[::3], id="memoryview-strided"),
        pytest.param(lambda: memoryview(array.array("i", range(1000))), id="memoryview-int32"),
        pytest.param(lambda: os.urandom(9 * MiB + 17), id="9MiB"),
    ]


@pytest.mark.parametrize("blocking", [True, False], ids=["sync", "async"])
@pytest.mark.parametrize("make", _payloads())
def test_write_read_roundtrip(backend, make, blocking, tmp_path):
    data = make()
    expected = bytes(data) if not isinstance(data, memoryview) else data.tobytes()
    cp = backend.open()
    version = _result(cp.write(data, step=5, blocking=blocking))
    assert (version.kind, version.size, version.files, version.step) == (
        "bytes",
        len(expected),
        1,
        5,
    )
    got = cp.read()
    assert type(got) is bytes
    assert got == expected
    # a second instance reads it from storage, and restore() gives one file named "data"
    other = backend.open(attempt=2)
    assert other.read() == expected
    out = other.restore(tmp_path / "out")
    assert out == tmp_path / "out"
    assert _tree(out) == {"data": expected}


# ----------------------------------------------------------------------------- files, dirs, streams


@pytest.mark.parametrize("blocking", [True, False], ids=["sync", "async"])
def test_save_file_keeps_its_name(backend, blocking, tmp_path):
    src = tmp_path / "model.ckpt"
    content = os.urandom(100_000)
    src.write_bytes(content)
    cp = backend.open()
    version = _result(cp.save(src, step=1, blocking=blocking))
    assert (version.kind, version.size, version.files) == ("file", len(content), 1)
    assert src.read_bytes() == content  # the source is left alone
    assert cp.read() == content
    out = cp.restore(tmp_path / "restored")
    assert _tree(out) == {"model.ckpt": content}


@pytest.mark.parametrize("blocking", [True, False], ids=["sync", "async"])
def test_save_directory_tree(backend, blocking, tmp_path):
    src = tmp_path / "state"
    src.mkdir()
    _make_tree(src)
    expected = _tree(src)
    cp = backend.open()
    version = _result(cp.save(src, metadata={"epoch": 3}, blocking=blocking))
    regular = {k: v for k, v in expected.items() if isinstance(v, bytes)}
    assert version.kind == "dir"
    assert version.files == len(regular)
    assert version.size == sum(len(v) for v in regular.values())
    assert version.metadata == {"epoch": 3}

    out = backend.open(attempt=2).restore(tmp_path / "restored")
    assert _tree(out) == expected
    # the inner links work after restore
    assert (out / "link-to-deep").read_bytes() == b"deep" * 1000
    assert (out / "a" / "b" / "up").read_bytes() == b"one"
    assert (out / "dirlink" / "c" / "deep.txt").read_bytes() == b"deep" * 1000
    assert (out / "empty").is_dir() and not any((out / "empty").iterdir())


def test_save_empty_directory(backend, tmp_path):
    src = tmp_path / "nothing"
    src.mkdir()
    cp = backend.open()
    version = cp.save(src)
    assert (version.kind, version.files, version.size) == ("dir", 0, 0)
    out = cp.restore(tmp_path / "out")
    assert out.is_dir() and _tree(out) == {}


@pytest.mark.parametrize("size", [0, 1000, 9 * MiB + 1], ids=["empty", "small", "9MiB"])
@pytest.mark.parametrize("blocking", [True, False], ids=["sync", "async"])
def test_save_stream_becomes_data(backend, blocking, size, tmp_path):
    content = os.urandom(size)
    cp = backend.open()
    stream = io.BufferedReader(io.BytesIO(content))
    version = _result(cp.save(stream, blocking=blocking))
    assert (version.kind, version.size, version.files) == ("bytes", size, 1)
    assert cp.read() == content
    assert _tree(cp.restore(tmp_path / "out")) == {"data": content}


def test_save_rejects_non_path_non_stream(backend):
    cp = backend.open()
    with pytest.raises(TypeError, match="write"):
        cp.save(b"bytes belong to write()")  # type: ignore[arg-type]


def test_read_of_directory_version_says_restore(backend, tmp_path):
    src = tmp_path / "d"
    src.mkdir()
    (src / "f").write_bytes(b"x")
    cp = backend.open()
    cp.save(src)
    with pytest.raises(CheckpointError, match=r"restore\(\)"):
        cp.read()


# ----------------------------------------------------------------------------- restore targets


def test_restore_into_non_empty_directory_raises(backend, tmp_path):
    cp = backend.open()
    cp.write(b"payload")
    target = tmp_path / "busy"
    target.mkdir()
    (target / "keep-me").write_bytes(b"mine")
    with pytest.raises(CheckpointError, match="busy"):
        cp.restore(target)
    assert _tree(target) == {"keep-me": b"mine"}  # untouched

    a_file = tmp_path / "a-file"
    a_file.write_bytes(b"f")
    with pytest.raises(CheckpointError):
        cp.restore(a_file)
    assert a_file.read_bytes() == b"f"


def test_restore_into_missing_or_empty_directory(backend, tmp_path):
    cp = backend.open()
    cp.write(b"payload")
    nested = tmp_path / "x" / "y" / "z"
    assert cp.restore(nested) == nested
    assert _tree(nested) == {"data": b"payload"}
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cp.restore(str(empty)) == empty
    assert _tree(empty) == {"data": b"payload"}


def test_restore_without_path_makes_a_fresh_temp_dir(backend):
    cp = backend.open()
    cp.write(b"payload")
    first, second = cp.restore(), cp.restore()
    try:
        assert isinstance(first, Path) and isinstance(second, Path)
        assert first != second
        assert _tree(first) == _tree(second) == {"data": b"payload"}
    finally:
        shutil.rmtree(first, ignore_errors=True)
        shutil.rmtree(second, ignore_errors=True)


def test_restore_a_named_version(backend, tmp_path):
    cp = backend.open(keep=3)
    first = cp.write(b"one")
    cp.write(b"two")
    assert _tree(cp.restore(tmp_path / "a", version=first.id)) == {"data": b"one"}
    with pytest.raises(CheckpointError, match="0009-000009"):
        cp.restore(tmp_path / "b", version="0009-000009")


# ----------------------------------------------------------------------------- versions


def test_versions_latest_and_their_fields(backend, tmp_path):
    cp = backend.open(keep=10)
    before = datetime.now(UTC) - timedelta(seconds=1)
    v1 = cp.write(b"a", step=1, metadata={"loss": 0.5, "tags": ["x"]})
    v2 = cp.write(b"bb", step=None)
    src = tmp_path / "d"
    (src / "sub").mkdir(parents=True)
    (src / "f1").write_bytes(b"123")
    (src / "sub" / "f2").write_bytes(b"45")
    v3 = cp.save(src, step=17)
    after = datetime.now(UTC) + timedelta(seconds=1)

    assert [v.id for v in (v1, v2, v3)] == ["0001-000001", "0001-000002", "0001-000003"]
    listed = backend.open(attempt=2).versions()  # from storage, not from this process's memory
    assert [v.id for v in listed] == [v1.id, v2.id, v3.id]
    assert listed == [v1, v2, v3]
    for version in listed:
        assert re.fullmatch(r"\d{4}-\d{6}", version.id)
        assert version.id == f"{version.attempt:04d}-{version.seq:06d}"
        assert version.attempt == 1
        assert version.created.tzinfo is not None
        assert version.created.utcoffset() == timedelta(0)
        assert before <= version.created <= after
    assert [v.seq for v in listed] == [1, 2, 3]
    assert [v.step for v in listed] == [1, None, 17]
    assert listed[0].metadata == {"loss": 0.5, "tags": ["x"]}
    assert listed[1].metadata == {}
    assert [(v.kind, v.size, v.files) for v in listed] == [
        ("bytes", 1, 1),
        ("bytes", 2, 1),
        ("dir", 5, 2),
    ]
    assert cp.latest() == v3
    with pytest.raises(dataclasses.FrozenInstanceError):
        v3.step = 1  # type: ignore[misc]


def test_latest_is_highest_attempt_then_seq(backend):
    first = backend.open(attempt=1, keep=10)
    first.write(b"a1")
    first.write(b"a2")
    # attempt 2 ran and committed nothing; attempt 3 starts from attempt 1's latest
    backend.open(attempt=2, keep=10)
    third = backend.open(attempt=3, keep=10)
    assert third.prev_exists()
    assert third.read() == b"a2"
    assert third.latest().id == "0001-000002"
    v = third.write(b"a3")
    assert (v.id, v.attempt, v.seq) == ("0003-000001", 3, 1)
    # a zombie attempt 1 that wakes up writes under its own number: it never shadows attempt 3
    zombie = first.write(b"zombie")
    assert zombie.id == "0001-000003"
    assert third.read() == b"a3"
    assert backend.open(attempt=4).read() == b"a3"
    assert [x.id for x in third.versions()] == [
        "0001-000001",
        "0001-000002",
        "0001-000003",
        "0003-000001",
    ]


def test_attempt_numbers_sort_numerically(backend):
    backend.open(attempt=10).write(b"ten")
    backend.open(attempt=9).write(b"nine")
    cp = backend.open(attempt=11)
    assert cp.read() == b"ten"
    assert [v.attempt for v in cp.versions()] == [9, 10]


def test_new_instance_of_same_attempt_continues_the_sequence(backend):
    backend.open(attempt=2).write(b"x")
    v = backend.open(attempt=2).write(b"y")
    assert v.id == "0002-000002"


# ----------------------------------------------------------------------------- retention


def _kept(backend, ids: list[str], *, inline: bool = False) -> set[str]:
    """What a scope holding exactly ``ids`` stores: payload and manifest, and on an object
    store the exclusive reservation of each id; an inline version is its manifest alone."""
    if inline:
        return {vid + ".manifest.json" for vid in ids}
    extra = [".writer"] if backend.name != "local" else []
    return {vid + suffix for vid in ids for suffix in ["", ".manifest.json", *extra]}


def test_retention_keeps_two_by_default(backend):
    # no grace: retired payloads go at once on every store (local disk never needs one)
    cp = backend.open(retire_grace=0)
    assert cp.keep == 2
    for i in range(5):
        cp.write(f"v{i}".encode())
    assert [v.id for v in cp.versions()] == ["0001-000004", "0001-000005"]
    # the older versions are gone from storage, manifest and payload both (payloads are
    # deleted on the writer thread: wait() waits for that housekeeping too)
    cp.wait()
    assert backend.entries() == _kept(backend, ["0001-000004", "0001-000005"], inline=True)
    assert cp.read() == b"v4"


@pytest.mark.usefixtures("payload_files")
@pytest.mark.parametrize("keep", [1, 3])
def test_retention_keeps_n(backend, keep):
    cp = backend.open(keep=keep, retire_grace=0)
    for i in range(keep + 3):
        cp.write(f"v{i}".encode())
    versions = cp.versions()
    assert [v.seq for v in versions] == list(range(4, keep + 4))
    cp.wait()
    assert backend.entries() == _kept(backend, [v.id for v in versions])


@pytest.mark.usefixtures("payload_files")
def test_object_store_keeps_retired_payloads_for_the_grace_period(backend):
    if backend.name == "local":
        pytest.skip("local disk protects readers with a lock: retired payloads go at once")
    cp = backend.open(keep=1)
    assert cp.retire_grace == 60
    cp.write(b"old")
    cp.write(b"new")
    cp.wait()
    entries = backend.entries()
    # uncommitted (no manifest) at once, payload still there for readers that listed it
    assert "0001-000001.manifest.json" not in entries and "0001-000001" in entries
    assert any(e.startswith("0001-000001.retired.") for e in entries)
    assert [v.id for v in cp.versions()] == ["0001-000002"]
    # a scope whose grace has passed (0 here) sweeps it, markers and all, on its next write
    later = backend.open(attempt=2, keep=1, retire_grace=0)
    later.write(b"newest")
    later.wait()
    assert backend.entries() == _kept(backend, ["0002-000001"])


@pytest.mark.parametrize("grace", [-1, float("nan"), float("inf"), "1", True])
def test_retire_grace_must_be_seconds(backend, grace):
    with pytest.raises(ValueError, match="retire_grace"):
        backend.open(retire_grace=grace)


@pytest.mark.parametrize("keep", [0, -1, 1.5, True, None])
def test_keep_must_be_a_positive_integer(backend, keep):
    with pytest.raises(ValueError, match="keep"):
        Checkpoint.open(backend.url, keep=keep, storage_options=backend.storage_options)


@pytest.mark.parametrize("attempt", [0, -3, "1"])
def test_attempt_must_be_a_positive_integer(backend, attempt):
    with pytest.raises(ValueError, match="attempt"):
        Checkpoint.open(backend.url, attempt=attempt, storage_options=backend.storage_options)


@pytest.mark.usefixtures("payload_files")
def test_retention_never_deletes_the_version_being_read(backend, hold):
    writer = backend.open(keep=1)
    writer.write(b"being read")
    reader = backend.open(attempt=1, keep=1)
    gate = hold(reader, "read_file")
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(data=reader.read()))
    thread.start()
    assert gate.entered.wait(30)
    # while the reader is between "chose version 1" and "read its file", newer commits arrive
    writer.write(b"newer")
    writer.write(b"newest")
    gate.release()
    thread.join(30)
    assert result["data"] == b"being read"
    writer.write(b"after")  # once nobody reads it, retention may take it
    assert [v.id for v in writer.versions()] == ["0001-000004"]


def test_sweeps_leftovers_of_earlier_attempts_only(backend):
    old = backend.open(attempt=1, keep=5)
    old.write(b"committed by attempt 1")
    # garbage an attempt-1 crash could leave: an uncommitted payload and a manifest temp file
    backend.pipe(b"torn", "0001-000007", "data")
    backend.pipe(b"{", ".0001-000008.manifest.123.abcd1234.tmp")
    # and an attempt-3 write in progress (a successor): it must not be touched
    backend.pipe(b"in progress", "0003-000001", "data")
    cp = backend.open(attempt=2, keep=5)
    cp.write(b"attempt 2")
    cp.wait()
    entries = backend.entries()
    assert "0001-000007" not in entries
    assert ".0001-000008.manifest.123.abcd1234.tmp" not in entries
    assert "0003-000001" in entries
    assert {"0001-000001.manifest.json", "0002-000001.manifest.json"} <= entries
    assert cp.read() == b"attempt 2"


# ----------------------------------------------------------------------------- async


def test_async_write_snapshots_a_bytearray_before_returning(backend, hold):
    cp = backend.open()
    gate = hold(cp)  # the writer cannot start before the source is changed
    buf = bytearray(b"A" * 100_000)
    view_src = bytearray(b"B" * 1000)
    f1 = cp.write(buf, blocking=False)
    buf[:] = b"X" * 100_000
    buf.extend(b"more")
    gate.release()
    assert f1.result(30).size == 100_000
    assert cp.read() == b"A" * 100_000

    f2 = cp.write(memoryview(view_src)[10:20], blocking=False)
    view_src[:] = b"Z" * 1000
    assert f2.result(30) is not None
    assert cp.read() == b"B" * 10


def test_async_save_snapshots_a_directory_before_returning(backend, hold, tmp_path):
    src = tmp_path / "state"
    src.mkdir()
    _make_tree(src)
    expected = _tree(src)
    cp = backend.open()
    gate = hold(cp)
    future = cp.save(src, blocking=False)
    # edit in place (same inode), replace, add and delete while the write is pending
    with open(src / "top.bin", "r+b") as handle:
        handle.write(b"EDITED")
    (src / "a" / "one.txt").unlink()
    (src / "a" / "one.txt").write_bytes(b"replaced")
    (src / "new.txt").write_bytes(b"new")
    shutil.rmtree(src / "a" / "b" / "c")
    gate.release()
    assert future.result(30).files == len([v for v in expected.values() if isinstance(v, bytes)])
    assert _tree(cp.restore(tmp_path / "out")) == expected


def test_async_save_snapshots_a_file_and_a_stream(backend, hold, tmp_path):
    src = tmp_path / "weights.bin"
    src.write_bytes(b"original" * 1000)
    cp = backend.open(keep=5)
    gate = hold(cp)
    f_file = cp.save(src, blocking=False)
    with open(src, "r+b") as handle:  # in place: a hard-linked snapshot would see this
        handle.write(b"CHANGED!")
    gate.release()
    assert f_file.result(30).kind == "file"
    assert cp.read() == b"original" * 1000

    stream = io.BytesIO(b"streamed" * 100)
    f_stream = cp.save(stream, blocking=False)
    stream.close()  # the caller may close its stream as soon as save() returns
    assert f_stream.result(30).kind == "bytes"
    assert cp.read() == b"streamed" * 100


def test_latest_wins_queued_writes_are_superseded(backend, hold):
    cp = backend.open(keep=10)
    gate = hold(cp)
    first = cp.write(b"first" * 100_000, blocking=False)
    assert gate.entered.wait(30)  # the first write is now in flight
    middle = [cp.write(f"middle {i}".encode(), blocking=False) for i in range(3)]
    last = cp.write(b"last", blocking=False)
    # superseded futures resolve at once, before the in-flight write ends
    assert [f.result(5) for f in middle] == [None, None, None]
    assert not first.done()
    gate.release()
    v_first, v_last = first.result(30), last.result(30)
    assert v_first is not None and v_last is not None
    assert v_first.order < v_last.order
    assert [v.id for v in cp.versions()] == [v_first.id, v_last.id]
    assert cp.read() == b"last"


def test_sync_write_after_async_ones_keeps_call_order(backend, hold):
    cp = backend.open(keep=10)
    gate = hold(cp)
    f1 = cp.write(b"async 1", blocking=False)
    assert gate.entered.wait(30)
    f2 = cp.write(b"async 2", blocking=False)
    threading.Timer(0.2, gate.release).start()
    v3 = cp.write(b"sync 3")  # waits for both async writes, then commits after them
    assert f1.done() and f2.done()
    v1, v2 = f1.result(), f2.result()
    assert v1.order < v2.order < v3.order
    assert cp.read() == b"sync 3"
    assert [v.id for v in cp.versions()] == [v1.id, v2.id, v3.id]


def test_wait_blocks_until_committed_and_honours_timeout(backend, hold):
    cp = backend.open()
    gate = hold(cp)
    future = cp.write(b"slow", blocking=False)
    with pytest.raises(TimeoutError):
        cp.wait(timeout=0.2)
    assert not future.done()
    threading.Timer(0.2, gate.release).start()
    cp.wait()
    assert future.done()
    assert backend.open(attempt=2).read() == b"slow"


def test_close_waits_for_pending_writes(backend, hold):
    with backend.open() as cp:
        gate = hold(cp)
        future = cp.write(b"pending at close", blocking=False)
        threading.Timer(0.2, gate.release).start()
    assert future.done() and future.result() is not None
    assert backend.open(attempt=2).read() == b"pending at close"


# ----------------------------------------------------------------------------- errors


def _plant_next_manifest(backend, cp: Checkpoint) -> str:
    """Take the id of the next commit of ``cp``: its manifest name is already taken."""
    done = cp.write(b"ok")
    vid = f"{done.attempt:04d}-{done.seq + 1:06d}"
    backend.pipe(b"planted by someone else", vid + ".manifest.json")
    return vid


def _fail_next_write(cp: Checkpoint) -> str:
    """Make every later write of ``cp`` fail in the store (an I/O error); return the next id."""
    done = cp.write(b"ok")

    def failing(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.EIO, "injected I/O error")

    for name in WRITES:
        setattr(cp._store, name, failing)
    return f"{done.attempt:04d}-{done.seq + 1:06d}"


@pytest.mark.usefixtures("payload_files")
def test_manifest_commit_is_exclusive(backend):
    cp = backend.open()
    vid = _plant_next_manifest(backend, cp)
    # an id whose manifest exists is never written over: the version takes the next one
    assert cp.write(b"would overwrite").seq == int(vid.split("-")[1]) + 1
    assert backend.cat(vid + ".manifest.json") == b"planted by someone else"
    # and directly at the store level: a second commit of the same id is refused
    cp._store.commit("0001-000099", b'{"first": 1}')
    with pytest.raises(FileExistsError):
        cp._store.commit("0001-000099", b'{"second": 2}')
    assert backend.cat("0001-000099.manifest.json") == b'{"first": 1}'


def test_inline_write_over_a_taken_id_commits_the_next_one(backend):
    """An inline version's commit is its reservation: an id taken by someone else's manifest
    is left as it is, and the version goes to the next id."""
    cp = backend.open(keep=5)
    vid = _plant_next_manifest(backend, cp)
    version = cp.write(b"small")
    assert version.seq == int(vid.split("-")[1]) + 1
    assert backend.cat(vid + ".manifest.json") == b"planted by someone else"
    assert cp.read() == b"small"


def test_s3_manifest_put_uses_if_none_match(s3_backend, s3_server):
    """The server itself refuses a second conditional PUT of a manifest key."""
    import botocore.exceptions

    cp = s3_backend.open()
    version = cp.write(b"x")
    key = f"{s3_backend.root.split('/', 1)[1]}/v/{version.id}.manifest.json"
    client = s3_server.client()
    with pytest.raises(botocore.exceptions.ClientError) as info:
        client.put_object(Bucket=s3_server.bucket, Key=key, Body=b"evil", IfNoneMatch="*")
    assert info.value.response["Error"]["Code"] == "PreconditionFailed"
    assert cp.latest() == version


@pytest.mark.parametrize("size", [16, 1 << 17], ids=["inline", "payload"])
def test_async_writer_error_is_reraised_by_wait(backend, size):
    cp = backend.open()
    vid = _fail_next_write(cp)
    future = cp.write(b"f" * size, blocking=False)
    with pytest.raises(CheckpointError, match=vid):
        future.result(30)
    with pytest.raises(CheckpointError, match=re.escape(backend.url)):
        cp.wait()


@pytest.mark.parametrize("next_blocking", [True, False], ids=["sync-next", "async-next"])
def test_async_writer_error_is_reraised_by_next_write(backend, next_blocking):
    cp = backend.open()
    _fail_next_write(cp)
    future = cp.write(b"fails", blocking=False)
    assert future.exception(30) is not None
    with pytest.raises(CheckpointError, match="earlier async checkpoint write failed"):
        cp.write(b"next", blocking=next_blocking)


def test_writer_error_when_local_scope_is_replaced_by_a_file(local_backend):
    cp = local_backend.open()
    cp.write(b"ok")
    shutil.rmtree(local_backend.vpath())
    Path(local_backend.vpath()).write_bytes(b"not a directory")
    future = cp.write(b"fails", blocking=False)
    with pytest.raises(CheckpointError, match=re.escape(local_backend.url)):
        cp.wait()
    assert isinstance(future.exception(5), CheckpointError)
    with pytest.raises(CheckpointError):
        cp.write(b"sync fails too")


@pytest.mark.parametrize("blocking", [True, False], ids=["sync", "async"])
def test_write_str_says_encode(backend, blocking):
    cp = backend.open()
    with pytest.raises(TypeError, match="encode"):
        cp.write("text", blocking=blocking)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        cp.write(12345, blocking=blocking)  # type: ignore[arg-type]
    assert cp.latest() is None


def test_step_and_metadata_are_checked(backend):
    cp = backend.open()
    with pytest.raises(TypeError, match="step"):
        cp.write(b"x", step="3")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="JSON"):
        cp.write(b"x", metadata={"f": object()})
    assert cp.latest() is None


@pytest.mark.parametrize("blocking", [True, False], ids=["sync", "async"])
def test_save_missing_source_names_it(backend, blocking, tmp_path):
    cp = backend.open()
    missing = tmp_path / "no-such-thing"
    with pytest.raises(FileNotFoundError, match="no-such-thing"):
        cp.save(missing, blocking=blocking)
    assert cp.latest() is None


def test_async_write_with_copy_false_hands_the_buffer_over(backend):
    cp = backend.open()
    buf = bytearray(b"handed over" * 1000)
    future = cp.write(buf, blocking=False, copy=False)
    assert future.result(30).size == len(buf)  # the caller waits before touching buf again
    buf[:] = b"x" * len(buf)
    assert cp.read() == b"handed over" * 1000


@pytest.mark.parametrize("blocking", [True, False], ids=["sync", "async"])
def test_save_non_seekable_stream_from_a_pipe(backend, blocking):
    content = os.urandom(3 * MiB + 5)
    read_fd, write_fd = os.pipe()

    def feed() -> None:
        with open(write_fd, "wb") as pipe:
            pipe.write(content)

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        with open(read_fd, "rb") as stream:
            version = _result(backend.open().save(stream, blocking=blocking))
    finally:
        feeder.join(30)
    assert version.size == len(content)
    assert backend.open(attempt=2).read() == content


def test_save_stream_with_only_read(backend):
    class ReadOnly:
        def __init__(self, data: bytes) -> None:
            self._io = io.BytesIO(data)

        def read(self, n: int = -1) -> bytes:
            return self._io.read(min(n, 4096) if n and n > 0 else n)  # short reads

    content = os.urandom(100_000)
    cp = backend.open()
    cp.save(ReadOnly(content))  # type: ignore[arg-type]
    assert cp.read() == content


# ----------------------------------------------------------------------------- read-only


def test_readonly_scope_creates_nothing_and_refuses_writes(backend, tmp_path):
    if backend.name == "local":
        missing = tmp_path / "never-written"
        ro = Checkpoint.open(missing, readonly=True)
        assert ro.latest() is None and ro.read() is None and ro.versions() == []
        assert not missing.exists()  # not even the scope's directory
    backend.open().write(b"committed")
    reader = backend.open(readonly=True)
    assert reader.read() == b"committed"
    with pytest.raises(CheckpointError, match="read-only"):
        reader.write(b"nope")
    with pytest.raises(CheckpointError, match="read-only"):
        reader.save(tmp_path)  # an empty directory is a valid source
    assert [v.id for v in reader.versions()] == ["0001-000001"]
