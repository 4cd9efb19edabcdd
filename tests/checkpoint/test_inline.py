"""Inline versions: a ``write()`` of at most ``INLINE_MAX`` bytes is committed as its manifest
alone (the bytes base64-encoded inside it), with no payload prefix: on local disk one file and two
syncs instead of five; on an object store one conditional PUT.

Everything that reads versions handles both layouts, and versions written before inline ones
existed (a payload file, manifest format 1) stay readable. Damage to the inline bytes is damage
to the version. An inline commit and a payload reservation of the same id exclude each other,
and a killed inline writer's leftover is ignored by readers and swept.
"""

from __future__ import annotations

import base64
import errno
import fcntl
import io
import json
import os
import tarfile
import threading
import warnings
from typing import Any

import crc32c
import pytest

from taskpoint import Checkpoint
from taskpoint.checkpoint import CheckpointWarning
from taskpoint.checkpoint.manifest import parse_manifest
from taskpoint.checkpoint.payload import INLINE_MAX
from taskpoint.checkpoint.writer import LAZY_CHORES
from taskpoint.errors import CheckpointError

MANIFEST = ".manifest.json"


def _doc(backend, vid: str) -> dict[str, Any]:
    return json.loads(backend.cat(vid + MANIFEST))


def test_a_small_write_is_its_manifest_alone(backend, tmp_path):
    cp = backend.open(keep=5)
    version = cp.write(b"0123456789abcdef", step=3, metadata={"epoch": 1})
    assert backend.entries() == {version.id + MANIFEST}
    doc = _doc(backend, version.id)
    assert doc["taskpoint_manifest"] == 2
    assert base64.b64decode(doc["inline"]) == b"0123456789abcdef"
    assert doc["files"] == [
        {"path": "data", "size": 16, "crc32c": crc32c.crc32c(b"0123456789abcdef")}
    ]
    # every way of reading it
    other = backend.open(attempt=2)
    assert other.latest() == version
    assert (version.kind, version.size, version.files, version.step) == ("bytes", 16, 1, 3)
    assert other.read() == b"0123456789abcdef"
    assert other.read_with(lambda r: r.read(r.size)) == b"0123456789abcdef"
    out = other.restore(tmp_path / "out")
    assert [p.name for p in out.iterdir()] == ["data"]
    assert (out / "data").read_bytes() == b"0123456789abcdef"


@pytest.mark.parametrize("blocking", [True, False], ids=["sync", "async"])
def test_the_limit_is_inline_max_bytes(backend, blocking):
    cp = backend.open(keep=5)
    at, over = os.urandom(INLINE_MAX), os.urandom(INLINE_MAX + 1)
    inline, payload = (
        cp.write(data) if blocking else cp.write(data, blocking=False).result(30)
        for data in (at, over)
    )
    entries = backend.entries()
    assert inline.id not in entries and payload.id in entries
    assert cp.restore(version=inline.id).joinpath("data").read_bytes() == at
    assert cp.read() == over
    assert backend.cat(payload.id, "data") == over


def test_an_empty_write_is_inline(backend):
    cp = backend.open()
    version = cp.write(b"")
    assert backend.entries() == {version.id + MANIFEST}
    assert cp.read() == b""


@pytest.mark.parametrize("anonymous", [True, False], ids=["no-temp-name", "named-temp"])
def test_local_inline_commit_is_one_file_and_two_syncs(
    local_backend, monkeypatch, tmp_path, anonymous
):
    """Counted per commit, retention included: 2 fsyncs inline, 5 for a payload. The manifest
    is made without a name where the filesystem can (``O_TMPFILE``), else as a temp file."""
    cp = local_backend.open()
    cp._store._small.anonymous = anonymous
    cp.write(b"first")  # the first commit also sweeps leftovers: not counted
    synced: list[tuple[int, int]] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        info = os.fstat(fd)
        synced.append((info.st_dev, info.st_ino))
        real_fsync(fd)

    def identity(path: str) -> tuple[int, int]:
        info = os.stat(path)
        return (info.st_dev, info.st_ino)

    monkeypatch.setattr(os, "fsync", fsync)
    version = cp.write(b"0123456789abcdef")
    cp.wait()  # the delete of the version retention retired (on the writer thread)
    vdir = local_backend.vpath()
    # the manifest's own file (linked to its name first) and v/, at the same time
    assert sorted(synced) == sorted(
        [identity(os.path.join(vdir, version.id + MANIFEST)), identity(vdir)]
    )
    assert sorted(os.listdir(vdir)) == [f"0001-00000{n}{MANIFEST}" for n in (1, 2)]
    synced.clear()
    big = cp.write(os.urandom(INLINE_MAX + 1))
    assert len(synced) == 5, synced  # data, its dir, v/, manifest temp, v/
    assert synced[0] == identity(os.path.join(vdir, big.id, "data"))


@pytest.mark.parametrize("anonymous", [True, False], ids=["no-temp-name", "named-temp"])
def test_the_directory_sync_overlaps_the_files(local_backend, monkeypatch, anonymous):
    """The file's fsync does not return before the directory's has started (from the helper
    thread): one journal commit and one flush of the disk's cache serve both."""
    cp = local_backend.open()
    cp._store._small.anonymous = anonymous
    cp.write(b"first")
    vdir_identity = (os.stat(local_backend.vpath()).st_dev, os.stat(local_backend.vpath()).st_ino)
    dir_sync_started = threading.Event()
    overlapped: list[bool] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        info = os.fstat(fd)
        if (info.st_dev, info.st_ino) == vdir_identity:
            dir_sync_started.set()
        else:
            overlapped.append(dir_sync_started.wait(timeout=10))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    cp.write(b"0123456789abcdef")
    assert overlapped == [True]


def test_a_failed_directory_sync_fails_the_commit_and_leaves_no_version(local_backend, monkeypatch):
    cp = local_backend.open()
    first = cp.write(b"first")
    vdir = local_backend.vpath()
    vdir_identity = (os.stat(vdir).st_dev, os.stat(vdir).st_ino)
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        info = os.fstat(fd)
        if (info.st_dev, info.st_ino) == vdir_identity:
            raise OSError(errno.EIO, "injected I/O error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(CheckpointError, match="I/O error"):
        cp.write(b"second")
    monkeypatch.undo()
    assert cp.latest().id == first.id
    assert cp.read() == b"first"
    assert cp.write(b"third").id != first.id  # the helper thread still serves the next commit
    assert cp.read() == b"third"


def test_without_anonymous_files_the_named_temp_path_is_taken(local_backend, monkeypatch):
    """A filesystem that cannot make a file without a name (``O_TMPFILE`` fails with
    EOPNOTSUPP) gets the named temp file, and the store remembers it."""
    cp = local_backend.open()
    real_open = os.open
    tried: list[int] = []

    def open_(path, flags, *args, **kwargs):
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            tried.append(flags)
            raise OSError(errno.EOPNOTSUPP, "not supported here")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_)
    first = cp.write(b"one")
    second = cp.write(b"two")
    assert len(tried) == 1 and not cp._store._small.anonymous
    assert cp.read() == b"two" and [v.id for v in cp.versions()] == [first.id, second.id]
    cp.wait()
    assert sorted(os.listdir(local_backend.vpath())) == [first.id + MANIFEST, second.id + MANIFEST]


def test_a_version_in_the_old_layout_is_still_read(backend, tmp_path):
    """Versions written before inline manifests (format 1, the bytes in ``<id>/data``)."""
    old = b"written by an earlier taskpoint"
    doc = backend.plant_version("0001-000001", {"data": old}, kind="bytes", step=7)
    assert doc["taskpoint_manifest"] == 1 and "inline" not in doc
    cp = backend.open(attempt=2, keep=2, retire_grace=0)
    assert cp.read() == old
    assert cp.read_with(lambda r: r.read(r.size)) == old
    assert (cp.restore(tmp_path / "r") / "data").read_bytes() == old
    [version] = cp.versions()
    assert (version.id, version.step, version.size) == ("0001-000001", 7, len(old))
    new = cp.write(b"new")  # an inline version beside an old one
    assert cp.read() == b"new"
    assert (cp.restore(tmp_path / "o", version="0001-000001") / "data").read_bytes() == old
    cp.write(b"newer")
    cp.write(b"newest")  # retention retires the old version, payload and all
    cp.wait()
    assert [v.id for v in cp.versions()] == [f"0002-00000{n}" for n in (2, 3)]
    assert "0001-000001" not in backend.entries()
    assert new.id == "0002-000001"


def _edit_inline(backend, vid: str, change: Any) -> None:
    doc = _doc(backend, vid)
    change(doc)
    backend.pipe(json.dumps(doc).encode(), vid + MANIFEST)


def _flip_a_byte(doc: dict[str, Any]) -> None:
    data = bytearray(base64.b64decode(doc["inline"]))
    data[len(data) // 2] ^= 0xFF
    doc["inline"] = base64.b64encode(data).decode()


def _shorter(doc: dict[str, Any]) -> None:
    doc["inline"] = base64.b64encode(base64.b64decode(doc["inline"])[:-1]).decode()


def _not_base64(doc: dict[str, Any]) -> None:
    doc["inline"] = "!!" + doc["inline"][2:]


def _missing(doc: dict[str, Any]) -> None:
    del doc["inline"]


def _as_a_number(doc: dict[str, Any]) -> None:
    doc["inline"] = 12


def _size_too(doc: dict[str, Any]) -> None:  # shorter, with a size to match: the CRC still fails
    _shorter(doc)
    doc["files"][0]["size"] -= 1


def _claims_a_file(doc: dict[str, Any]) -> None:
    doc["kind"] = "file"


DAMAGE = [_flip_a_byte, _shorter, _not_base64, _missing, _as_a_number, _size_too, _claims_a_file]


@pytest.mark.parametrize("damage", DAMAGE, ids=lambda f: f.__name__.strip("_"))
def test_damaged_inline_bytes_fall_back_to_the_previous_version(backend, damage, tmp_path):
    cp = backend.open(keep=5)
    cp.write(b"good old version")
    bad = cp.write(b"newer version, then damaged")
    _edit_inline(backend, bad.id, damage)
    reader = backend.open(attempt=2)
    for read in (
        reader.read,
        lambda: reader.read_with(lambda r: r.read(r.size)),
        lambda: (reader.restore(tmp_path / damage.__name__) / "data").read_bytes(),
    ):
        with pytest.warns(CheckpointWarning, match=bad.id):
            assert read() == b"good old version"


def test_the_download_of_an_inline_version_sends_its_verified_bytes(backend):
    from taskpoint.ui.tarstream import VersionTar

    cp = backend.open()
    version = cp.write(b"inline bytes")
    manifest = parse_manifest(backend.cat(version.id + MANIFEST), version.id)

    def no_files(*args: Any) -> Any:
        raise AssertionError("an inline version has no payload file to open")

    out = io.BytesIO()
    VersionTar(manifest, no_files).write(out)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        assert tar.getnames() == [version.id, f"{version.id}/data"]
        assert tar.extractfile(f"{version.id}/data").read() == b"inline bytes"  # type: ignore[union-attr]

    _edit_inline(backend, version.id, _flip_a_byte)
    damaged = parse_manifest(backend.cat(version.id + MANIFEST), version.id)
    sent = io.BytesIO()
    with pytest.raises(OSError, match="checksum"):
        VersionTar(damaged, no_files).write(sent)
    assert sent.getvalue() == b""  # nothing unverified goes out


@pytest.mark.parametrize("anonymous", [True, False], ids=["no-temp-name", "named-temp"])
def test_an_inline_commit_and_a_payload_reservation_exclude_each_other(local_backend, anonymous):
    """At the manifest: an inline commit may take an id reserved for a payload (that writer then
    writes again under a new id); a reservation fails on an id committed inline."""
    cp = local_backend.open()
    store = cp._store
    store._small.anonymous = anonymous
    manifest = b'{"not": "parsed by the store"}'
    assert store.reserve("0001-000010")
    # Without a temp name nothing stands in the way; a named temp file is the prefix's name.
    assert store.commit_inline("0001-000010", manifest) is anonymous
    assert store.commit_inline("0001-000011", manifest)
    assert not store.reserve("0001-000011")  # committed inline: no prefix, still taken
    assert not store.commit_inline("0001-000011", manifest)
    assert local_backend.cat("0001-000011" + MANIFEST) == manifest
    assert "0001-000011" not in local_backend.entries()


@pytest.mark.parametrize("inline_first", [True, False], ids=["inline-first", "payload-first"])
def test_same_attempt_writers_of_both_kinds_keep_each_others_versions(backend, hold, inline_first):
    """Two scope objects of one attempt: a small writer commits the very id the other reserved
    for a large payload while that one is still writing it (the small one's commit is its
    manifest alone, so the large one's commit then finds the id taken and writes it again under
    the next id)."""
    small = backend.open(keep=10)
    small.write(b"small 1")  # its id counter is now past what it listed
    large = backend.open(keep=10)
    big = os.urandom(INLINE_MAX + 1)
    gate = hold(large, "write_source")
    done: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: done.update(large=large.write(big)))
    thread.start()
    assert gate.entered.wait(30)  # the large one has reserved its id and is writing
    if not inline_first:
        gate.release()
        thread.join(30)
    second = small.write(b"small 2")
    gate.release()
    thread.join(30)
    assert "large" in done, "the large write failed"
    reader = backend.open(attempt=2, keep=10)
    by_id = {v.id: v for v in reader.versions()}
    assert len(by_id) == 3 and {second.id, done["large"].id} <= set(by_id)
    assert (reader.restore(version=second.id) / "data").read_bytes() == b"small 2"
    assert (reader.restore(version=done["large"].id) / "data").read_bytes() == big


def test_two_scope_objects_of_one_attempt_interleaving_small_writes(backend):
    a, b = backend.open(keep=100), backend.open(keep=100)
    told: dict[str, bytes] = {}
    for n in range(10):
        for name, cp in (("a", a), ("b", b)):
            data = f"{name}{n}".encode()
            version = cp.write(data)
            assert version.id not in told, "two writers were told they committed one id"
            told[version.id] = data
    reader = backend.open(attempt=2, keep=100)
    assert sorted(v.id for v in reader.versions()) == sorted(told)
    for vid, data in told.items():
        assert (reader.restore(version=vid) / "data").read_bytes() == data


def test_a_killed_inline_writers_leftover_is_ignored_then_swept(local_backend):
    cp = local_backend.open(keep=5)
    cp.write(b"committed")
    # what an inline writer killed before its link() leaves: the id's temp file, maybe partial
    local_backend.pipe(b'{"taskpoint_manifest": 2, "id": "0001-0', "0001-000002")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reader = local_backend.open(attempt=1, keep=5)
        assert reader.read() == b"committed"
        assert [v.id for v in reader.versions()] == ["0001-000001"]
    # a live writer's temp (it holds a lock on it) is not swept
    live = local_backend.vpath("0002-000001")
    with open(live, "wb") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
        later = local_backend.open(attempt=3, keep=5)
        later.write(b"attempt 3")
        later.wait()
        entries = local_backend.entries()
        assert "0001-000002" not in entries  # an earlier attempt's, unlocked: gone
        assert "0002-000001" in entries
    later.write(b"attempt 3 again")  # unlocked now: a later attempt's sweep takes it
    later.wait()
    assert "0002-000001" not in local_backend.entries()
    assert later.read() == b"attempt 3 again"


def test_a_new_scope_directory_is_made_durable_once(tmp_path, monkeypatch):
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    root = tmp_path / "a" / "b"
    Checkpoint.open(root)
    # the parent of each directory created: tmp_path (for a), a (for b), b (for v)
    assert synced == [str(tmp_path), str(tmp_path / "a"), str(root)]
    synced.clear()
    Checkpoint.open(root)
    assert synced == []


def test_retired_inline_manifests_are_deleted_in_batches_off_the_write(local_backend, monkeypatch):
    """Retiring an inline version renames its manifest at once (readers skip it); the delete of
    that small file waits until `LAZY_CHORES` are queued or the next `wait()`, so a sync write
    does not wake the writer thread each time. A payload's delete is not held back."""
    cp = local_backend.open(keep=2)
    for _ in range(3):
        cp.write(b"warm-up")  # past the first commit's sweep and the first retirement
    cp.wait()
    cp._retention._unlisted = 0  # the next listing run (which deletes at once) 8 writes away
    woken: list[int] = []
    real_notify = cp._writer._cond.notify_all
    monkeypatch.setattr(cp._writer._cond, "notify_all", lambda: woken.append(1) or real_notify())

    def retired() -> list[str]:
        return sorted(n for n in local_backend.entries() if n.startswith("."))

    for n in range(1, LAZY_CHORES):
        cp.write(b"small %d" % n)
        assert len(cp.versions()) == 2
        assert len(retired()) == n  # renamed, not yet deleted
    assert woken == []
    cp.write(b"small 8")  # the LAZY_CHORES-th delete wakes the thread for all of them
    assert woken
    cp.wait()
    assert retired() == []
    cp._retention._unlisted = 0
    cp.write(b"one more")
    assert len(retired()) == 1
    cp.wait()  # a wait() runs the deletes left waiting
    assert retired() == []
    woken.clear()
    cp.write(os.urandom(INLINE_MAX + 1))
    cp.write(os.urandom(INLINE_MAX + 1))
    cp.write(b"retires the first payload version")
    assert woken  # a payload's delete is queued at once
