"""Checkpoint stores that scale (issue 20, "How the cost grows").

- A scope kept large (``keep`` in the thousands) is not listed after every write (retention.py):
  the versions are all kept, ``prune`` still applies a new ``keep`` at once, two writers of one
  scope never leave more than ``keep``, and the default ``keep=2`` retires at every write. On
  local disk a full scope is listed only every `RESCAN_EVERY` writes: a writer retires its own
  oldest version without a listing.
- A directory of many small files is made durable by one ``syncfs`` at the seal instead of an
  fsync per file (store_local.py), and by an fsync per file where there is no ``syncfs``.
- On S3, a large file goes up with ``put_file`` (concurrent multipart) and comes back by ranged
  GETs (store_fsspec.py), never asking for more than the manifest's size: an object swapped for
  a longer one is damage, and the previous version is used.
"""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path

import crc32c
import pytest

from taskpoint import Checkpoint
from taskpoint.checkpoint import store_local
from taskpoint.checkpoint.failures import CheckpointWarning
from taskpoint.checkpoint.retention import RESCAN_EVERY
from taskpoint.checkpoint.store_local import LocalStore
from taskpoint.errors import CheckpointError


def _count_scans(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    scan = LocalStore.scan

    def counted(self: LocalStore):
        calls.append(1)
        return scan(self)

    monkeypatch.setattr(LocalStore, "scan", counted)
    return calls


def test_a_large_keep_lists_the_scope_once_per_many_writes(tmp_path, monkeypatch):
    scans = _count_scans(monkeypatch)
    cp = Checkpoint.open(str(tmp_path / "scope"), keep=200)
    for i in range(100):
        cp.write(f"{i}".encode(), step=i)
    assert len(scans) < 20, f"{len(scans)} listings for 100 writes"
    assert [v.step for v in cp.versions()] == list(range(100))
    cp.prune(10)  # a new keep applies at once
    assert [v.step for v in cp.versions()] == list(range(90, 100))
    cp.write(b"next", step=100)
    assert [v.step for v in cp.versions()] == list(range(91, 101))
    cp.close()


def test_two_writers_of_one_scope_never_leave_more_than_keep(tmp_path):
    url = str(tmp_path / "scope")
    older = Checkpoint.open(url, attempt=1, keep=10)
    newer = Checkpoint.open(url, attempt=2, keep=10)
    for i in range(40):
        (older if i % 2 else newer).write(f"{i}".encode(), step=i)
        assert len(newer.versions()) <= 10
    assert newer.latest().attempt == 2
    older.close()
    newer.close()


def test_the_default_keep_retires_at_every_write(tmp_path):
    cp = Checkpoint.open(str(tmp_path / "scope"))
    for i in range(12):
        cp.write(f"{i}".encode(), step=i)
        assert [v.step for v in cp.versions()] == list(range(max(0, i - 1), i + 1))
    cp.close()


def test_a_full_scope_on_local_disk_retires_its_own_oldest_without_listing(tmp_path, monkeypatch):
    """keep=2, one writer: each write retires its own oldest version without listing ``v/``
    (another writer's versions go at the listing every `RESCAN_EVERY` writes), and the retired
    manifest, renamed at once, is deleted on the writer thread."""
    url = str(tmp_path / "scope")
    with Checkpoint.open(url, attempt=1, keep=5) as older:
        for i in range(3):
            older.write(f"old {i}".encode())
    scans = _count_scans(monkeypatch)
    cp = Checkpoint.open(url, attempt=2)
    steps = 4 * RESCAN_EVERY
    for i in range(steps):
        cp.write(f"{i}".encode(), step=i)
        cp.wait()  # the deferred deletes, before the directory is looked at
        names = sorted(os.listdir(tmp_path / "scope" / "v"))
        mine = [n for n in names if n.startswith("0002-")]
        assert mine == [f"0002-{n:06d}.manifest.json" for n in range(max(1, i), i + 2)], names
        if i > 0:  # the first write listed and retired attempt 1's versions
            assert len(names) == 2, names
    writes_listing = len(scans) - 1  # the next-id listing of the first write
    assert writes_listing <= steps // RESCAN_EVERY + 2, f"{len(scans)} listings, {steps} writes"
    assert [v.step for v in cp.versions()] == [steps - 2, steps - 1]
    cp.close()


def test_another_writers_versions_go_at_the_next_listing(tmp_path):
    url = str(tmp_path / "scope")
    cp = Checkpoint.open(url, attempt=2)
    for i in range(3):
        cp.write(f"{i}".encode(), step=i)
    with Checkpoint.open(url, attempt=1, keep=10) as zombie:
        zombie.write(b"a zombie's late version")  # older than attempt 2's: never the latest
    counts = []
    for i in range(3, 3 + RESCAN_EVERY + 1):
        cp.write(f"{i}".encode(), step=i)
        counts.append(len(cp.versions()))
    assert counts[-1] == 2 and max(counts) <= 3, counts
    assert [v.attempt for v in cp.versions()] == [2, 2]
    cp.close()


def _tree(root: Path, files: int) -> dict[str, bytes]:
    content = {}
    for i in range(files):
        rel = f"d{i % 7}/f{i}.txt"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        content[rel] = f"file {i}\n".encode() * (i % 5 + 1)
        path.write_bytes(content[rel])
    return content


def _restored(cp: Checkpoint, target: Path) -> dict[str, bytes]:
    cp.restore(target)
    return {str(p.relative_to(target)): p.read_bytes() for p in target.rglob("*") if p.is_file()}


def _spy_syncs(monkeypatch: pytest.MonkeyPatch, syncfs_works: bool | None) -> dict[str, int]:
    """Count fsyncs of payload files and syncfs calls; ``None``: no syncfs on this system."""
    counts = {"file fsyncs": 0, "syncfs": 0}
    fsync = os.fsync

    def counted_fsync(fd: int) -> None:
        # A payload file: below v/<id>/ (not a manifest, not a directory).
        path = os.readlink(f"/proc/self/fd/{fd}")
        if re.search(r"/v/\d{4}-\d{6}/", path) and os.path.isfile(path):
            counts["file fsyncs"] += 1
        fsync(fd)

    def fake_syncfs(fd: int) -> int:
        counts["syncfs"] += 1
        os.sync()
        return 0 if syncfs_works else -1

    monkeypatch.setattr(os, "fsync", counted_fsync)
    monkeypatch.setattr(
        store_local, "_syncfs", lambda: None if syncfs_works is None else fake_syncfs
    )
    return counts


def test_many_files_are_made_durable_by_one_syncfs(tmp_path, monkeypatch):
    files = store_local.SYNC_EACH + 150
    content = _tree(tmp_path / "src", files)
    counts = _spy_syncs(monkeypatch, syncfs_works=True)
    cp = Checkpoint.open(str(tmp_path / "scope"))
    cp.save(tmp_path / "src", step=1)
    assert counts == {"file fsyncs": store_local.SYNC_EACH, "syncfs": 1}
    assert _restored(cp, tmp_path / "out") == content
    cp.close()


@pytest.mark.parametrize("syncfs_works", [None, False], ids=["no syncfs", "syncfs fails"])
def test_without_syncfs_each_file_is_fsynced(tmp_path, monkeypatch, syncfs_works):
    files = store_local.SYNC_EACH + 20
    content = _tree(tmp_path / "src", files)
    counts = _spy_syncs(monkeypatch, syncfs_works=syncfs_works)
    cp = Checkpoint.open(str(tmp_path / "scope"))
    cp.save(tmp_path / "src")
    assert counts["file fsyncs"] == files  # the first ones as written, the rest at the seal
    assert _restored(cp, tmp_path / "out") == content
    cp.close()


def test_a_few_files_are_fsynced_one_by_one_and_the_real_syncfs_works(tmp_path, monkeypatch):
    _tree(tmp_path / "few", 5)
    counts = _spy_syncs(monkeypatch, syncfs_works=True)
    cp = Checkpoint.open(str(tmp_path / "scope"))
    cp.save(tmp_path / "few")
    assert counts == {"file fsyncs": 5, "syncfs": 0}
    monkeypatch.undo()  # the real syncfs(2) from here on
    many = _tree(tmp_path / "many", store_local.SYNC_EACH + 10)
    cp.save(tmp_path / "many", blocking=False)  # staged, then moved in and sealed
    cp.wait()
    assert _restored(cp, tmp_path / "out") == many
    cp.close()


# ------------------------------------------------------------------------------------ S3
@pytest.fixture
def small_ranges(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """1 MiB ranges, 3 at a time (so a few MiB take several rounds); the store calls made."""
    from taskpoint.checkpoint import store_fsspec

    monkeypatch.setattr(store_fsspec, "RANGE", 1 << 20)
    monkeypatch.setattr(store_fsspec, "RANGES_AT_ONCE", 3)
    calls: list[str] = []
    call = store_fsspec.FsspecStore._call

    def spied(self, method, *args, **kwargs):
        calls.append(method)
        return call(self, method, *args, **kwargs)

    monkeypatch.setattr(store_fsspec.FsspecStore, "_call", spied)
    return calls


def test_a_large_file_goes_up_whole_and_comes_back_by_ranges(s3_server, tmp_path, small_ranges):
    data = os.urandom(7 * (1 << 20) + 12345)
    (tmp_path / "state.bin").write_bytes(data)
    cp = Checkpoint.open(s3_server.url(), storage_options=s3_server.storage_options)
    cp.save(tmp_path / "state.bin", step=1)
    assert "put_file" in small_ranges
    out = cp.restore(tmp_path / "out")
    assert (out / "state.bin").read_bytes() == data
    assert small_ranges.count("cat_ranges") == 3  # 8 ranges, 3 at a time
    cp.close()


def test_a_payload_swapped_for_a_longer_one_is_damage(s3_server, tmp_path, small_ranges):
    url = s3_server.url()
    cp = Checkpoint.open(url, storage_options=s3_server.storage_options)
    first, second = os.urandom(3 << 20), os.urandom(3 << 20)
    for step, data in enumerate((first, second), start=1):
        (tmp_path / f"s{step}").mkdir()
        (tmp_path / f"s{step}" / "state.bin").write_bytes(data)
        cp.save(tmp_path / f"s{step}" / "state.bin", step=step)
    latest = cp.latest()
    assert latest is not None and latest.step == 2
    fs = s3_server.filesystem
    fs.pipe_file(f"{url[5:]}/v/{latest.id}/state.bin", second + os.urandom(1 << 20))
    ranges_before = small_ranges.count("cat_ranges")
    with pytest.warns(CheckpointWarning, match="size"):
        out = cp.restore(tmp_path / "out")
    assert (out / "state.bin").read_bytes() == first  # the previous version
    # Only the previous version's 3 ranges were asked for: none of the swapped object's.
    assert small_ranges.count("cat_ranges") - ranges_before == 1
    cp.close()


def test_version_ids_parse_without_a_regex_as_they_did_with_one():
    from taskpoint.checkpoint.storage import classify
    from taskpoint.checkpoint.version import parse_version_id

    assert parse_version_id("0001-000001") == (1, 1)
    assert parse_version_id("12345-1234567") == (12345, 1234567)
    for foreign in ("1-000001", "0001-00001", "0001_000001", "0001-000001-2", "0001-00000x", ""):
        assert parse_version_id(foreign) is None, foreign
    assert parse_version_id("0001-000001\n") is None  # a name with a newline is foreign
    names = ["0002-000001.manifest.json", "0001-000010.manifest.json", "10000-000001.manifest.json"]
    names += ["0001-000002", "0001-000002.writer", ".0001-000003.manifest.json.1.tmp", "notes.txt"]
    listing = classify(names)
    assert listing.committed == ["10000-000001", "0002-000001", "0001-000010"]
    assert listing.payloads == {"0001-000002"} and listing.temps == [names[5]]


@pytest.fixture
def s3_calls(monkeypatch):
    """Every S3 request s3fs makes, ``(operation, arguments)``, and the most ``upload_part``
    requests that were in flight at once."""
    import s3fs

    calls: list[tuple[str, dict]] = []
    flight = {"now": 0, "most": 0}
    real = s3fs.S3FileSystem._call_s3

    async def spied(self, method, *args, **kwargs):
        calls.append((method, kwargs))
        if method != "upload_part":
            return await real(self, method, *args, **kwargs)
        flight["now"] += 1
        flight["most"] = max(flight["most"], flight["now"])
        try:
            return await real(self, method, *args, **kwargs)
        finally:
            flight["now"] -= 1

    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", spied)
    return calls, flight


def test_a_file_of_several_parts_goes_up_as_a_stream_of_checksummed_parts(
    s3_server, tmp_path, monkeypatch, s3_calls
):
    """On S3 a file over two parts is a multipart upload of `PART`-byte parts, at most
    `PARTS_AT_ONCE` in flight, each with its CRC32C (S3 checks it on arrival; moto does not), listed
    with it in the complete request (S3 requires that once the upload declared CRC32C). s3fs's
    own batches, with no checksum declared, took twice as long as ``upload_file`` (see
    ``s3_upload.py``)."""
    from taskpoint.checkpoint import s3_upload, store_fsspec

    monkeypatch.setattr(store_fsspec, "PARTS_AT_ONCE", 2)
    calls, flight = s3_calls
    data = os.urandom(4 * store_fsspec.PART + 4321)  # five parts
    (tmp_path / "state.bin").write_bytes(data)
    cp = Checkpoint.open(s3_server.url(), storage_options=s3_server.storage_options)
    version = cp.save(tmp_path / "state.bin")
    by_op = {op: [kw for name, kw in calls if name == op] for op, _ in calls}
    assert [kw["ChecksumAlgorithm"] for kw in by_op["create_multipart_upload"]] == ["CRC32C"]
    sent = sorted(by_op["upload_part"], key=lambda kw: kw["PartNumber"])
    assert [len(kw["Body"]) for kw in sent] == [store_fsspec.PART] * 4 + [4321]
    expected = [crc32c.crc32c(kw["Body"]).to_bytes(4, "big") for kw in sent]
    assert [base64.b64decode(kw["ChecksumCRC32C"]) for kw in sent] == expected
    assert flight["most"] == 2  # the parts overlapped, and never more than allowed
    (complete,) = by_op["complete_multipart_upload"]
    listed = complete["MultipartUpload"]["Parts"]
    assert [p["PartNumber"] for p in listed] == [1, 2, 3, 4, 5]
    assert [base64.b64decode(p["ChecksumCRC32C"]) for p in listed] == expected
    key = f"{cp._store.vdir}/{version.id}/state.bin"
    etag = s3_server.filesystem.info(key)["ETag"].strip('"')
    assert etag.endswith("-5")  # a multipart object's ETag names its part count
    assert (cp.restore(tmp_path / "out") / "state.bin").read_bytes() == data
    cp.close()
    assert not s3_upload.can_upload(Checkpoint.open(f"memory://parts-{os.getpid()}")._store.fs)


def test_a_failed_part_aborts_the_upload_and_commits_nothing(s3_server, tmp_path, monkeypatch):
    import s3fs

    from taskpoint.checkpoint import store_fsspec

    real = s3fs.S3FileSystem._call_s3

    async def failing(self, method, *args, **kwargs):
        if method == "upload_part" and kwargs["PartNumber"] == 2:
            raise ConnectionResetError("injected: the connection dropped")
        return await real(self, method, *args, **kwargs)

    (tmp_path / "state.bin").write_bytes(os.urandom(3 * store_fsspec.PART))
    cp = Checkpoint.open(s3_server.url(), storage_options=s3_server.storage_options)
    first = cp.write(b"before")
    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", failing)
    with pytest.raises(CheckpointError, match="connection dropped"):
        cp.save(tmp_path / "state.bin")
    monkeypatch.undo()
    assert s3_server.client().list_multipart_uploads(Bucket=s3_server.bucket).get("Uploads") is None
    assert cp.latest().id == first.id and cp.read() == b"before"
    cp.close()


def test_a_file_too_big_for_ten_thousand_parts_gets_larger_parts():
    from taskpoint.checkpoint.s3_upload import MAX_PARTS, part_size

    assert part_size(100 << 20, 8 << 20) == 8 << 20
    big = 200 << 30  # 200 GiB: 8 MiB parts would be 25,600 of them
    size = part_size(big, 8 << 20)
    assert size % (1 << 20) == 0 and -(-big // size) <= MAX_PARTS < -(-big // (size - (1 << 20)))
