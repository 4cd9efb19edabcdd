"""`FsspecStore`: a checkpoint scope on any fsspec filesystem (``memory://``, ``s3://`` ...).

The manifest is created with ``mode="create"`` (``If-None-Match: *`` on S3), and an id is reserved
by an exclusive ``<id>.writer`` object, so two writers never share a payload prefix. An inline
version (its bytes in the manifest) is that one conditional PUT and nothing else. An object store
has no locks: retention marks a version ``<id>.retired.<ms>`` and its payload is deleted only after
a grace period. Reads never fetch more than the manifest states.

Large files move as many requests in flight, as boto3's TransferManager moves them: on an
asynchronous store (s3fs, gcsfs, adlfs) a file is sent as a multipart upload whose parts go
concurrently (on S3 by `s3_upload`: `PART` bytes each, `PARTS_AT_ONCE` in flight; elsewhere by
the filesystem's ``put_file``) while its checksum is computed on a helper thread, and read back
with ranged GETs of `RANGE` bytes, `RANGES_AT_ONCE` at a time, each bounded by the manifest's
size, written in order and checksummed as they arrive. Sequential part by part, a 1 GiB version
took twice as long as ``upload_file`` / ``download_file`` of the same file on the same server.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import wait
from contextlib import contextmanager, nullcontext
from typing import Any, BinaryIO

from taskpoint.checkpoint import s3_upload
from taskpoint.checkpoint.localio import StreamReader, write_all
from taskpoint.checkpoint.manifest import MAX_MANIFEST_BYTES, FileEntry
from taskpoint.checkpoint.payload import Source
from taskpoint.checkpoint.storage import (
    MANIFEST_SUFFIX,
    RETIRED_MARK,
    WRITER_SUFFIX,
    ChecksumMismatch,
    Listing,
    classify,
    copy_verified_to,
    crc_of,
    helper_thread,
    iter_source_chunks,
    verify,
)

RANGE = 8 << 20  # bytes per ranged GET of a large payload file (TransferManager's part size)
RANGES_AT_ONCE = 16  # ranged GETs in flight: 128 MiB of buffers at most
# A multipart upload to S3 (`s3_upload`): parts of PART bytes, PARTS_AT_ONCE in flight, as
# boto3's ``upload_file`` sends them.
PART = 8 << 20
PARTS_AT_ONCE = 8


def url_to_fs(url: str, storage_options: dict[str, Any]) -> tuple[Any, str]:
    """fsspec's filesystem for ``url``; a missing protocol package names what to install."""
    from fsspec.core import url_to_fs as fsspec_url_to_fs

    from taskpoint.errors import CheckpointError

    try:
        return fsspec_url_to_fs(url, **storage_options)
    except ImportError as exc:
        protocol = url.split("://", 1)[0]
        hint = "pip install 'taskpoint[s3]'" if protocol in ("s3", "s3a") else str(exc)
        raise CheckpointError(
            f"cannot open {url!r}: support for {protocol}:// is missing ({hint})"
        ) from exc


class FsspecStore:
    """A scope on any fsspec filesystem; the manifest is created with ``mode="create"``."""

    is_local = False

    def __init__(self, fs: Any, root: str, timeout: float | None = None) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        self.vdir = f"{self.root}/v"
        self.staging_root: str | None = None  # snapshots are staged in a local temp dir
        # A deadline per request, the filesystem's own retries included (fsspec's
        # ``sync(timeout=)`` cancels it): s3fs's read timeout starts only once a request body
        # is sent, so an upload whose connection stalls would otherwise wait forever.
        self.timeout = timeout if getattr(fs, "async_impl", False) else None
        # An asynchronous filesystem sends a file's parts and reads its ranges concurrently.
        self.concurrent = bool(getattr(fs, "async_impl", False))
        self._parts_upload = s3_upload.can_upload(fs)

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self.timeout is not None:
            kwargs["timeout"] = self.timeout
        return getattr(self.fs, method)(*args, **kwargs)

    def ensure(self) -> None:
        if hasattr(self.fs, "split_path"):  # an object store (s3fs, gcsfs, adlfs)
            # Never create a bucket as a side effect: a typo would silently start a new one.
            bucket = self.root.split("/", 1)[0]
            try:
                # A listing reaches the server: connection and permission errors surface here.
                self._call("ls", self.vdir, detail=False)
            except FileNotFoundError:
                # Only now ask exists(): s3fs's bucket probe swallows every error, so asked
                # first it would report an unreachable endpoint as a missing bucket.
                if not self._call("exists", bucket):
                    raise NotADirectoryError(
                        f"bucket {bucket!r} does not exist (create it first)"
                    ) from None
            return
        self.fs.makedirs(self.vdir, exist_ok=True)

    def scan(self) -> Listing:
        self.fs.invalidate_cache(self.vdir)
        try:
            paths = self._call("ls", self.vdir, detail=False)
        except FileNotFoundError:
            return Listing()
        return classify([p.rstrip("/").rsplit("/", 1)[-1] for p in paths])

    def reserve(self, vid: str) -> bool:
        """Object stores have no exclusive mkdir: an exclusive ``<id>.writer`` object (a
        conditional PUT on S3) gives the id, and so its payload prefix, to one writer only."""
        try:
            self._call("pipe_file", f"{self.vdir}/{vid}{WRITER_SUFFIX}", b"", mode="create")
        except FileExistsError:
            return False
        return True

    def holding(self, vid: str) -> Any:
        return nullcontext()  # no locks: retention keeps retired payloads for a grace period

    def write_source(self, vid: str, src: Source, buffer: bytearray) -> FileEntry:
        dest = self._path(vid, src.path)
        if src.data is not None:
            self._call("pipe_file", dest, _body(src.data))
            return FileEntry(src.path, len(src.data), crc_of(src.data))
        size, crc = 0, 0
        if (self.concurrent or self.timeout is not None) and src.file is not None:
            if self._parts_upload and os.path.getsize(src.file) > 2 * PART:
                # S3, several parts: each part's checksum is computed as it is read, and the
                # file's is combined from them (``s3_upload``).
                size, crc = s3_upload.upload_file(
                    self.fs, src.file, dest, PART, PARTS_AT_ONCE, self.timeout
                )
                return FileEntry(src.path, size, crc)
            # One call (so under one deadline) that sends the parts concurrently; the checksum
            # is read from the file meanwhile, on a helper thread (both release the GIL).
            checksum = helper_thread("upload-crc").submit(_file_crc, src, buffer)
            try:
                self._call("put_file", src.file, dest)  # S3's larger files: `s3_upload`
            except BaseException:
                wait([checksum])  # it fills the writer's buffer: done before that is reused
                raise
            size, crc = checksum.result()
            return FileEntry(src.path, size, crc)
        with self.fs.open(dest, "wb") as out:
            for chunk in iter_source_chunks(src, buffer):
                crc = crc_of(chunk, crc)
                out.write(chunk)
                size += len(chunk)
        return FileEntry(src.path, size, crc)

    def make_dir(self, vid: str, rel: str) -> None:
        pass  # recorded in the manifest; object stores have no empty directories

    def make_link(self, vid: str, rel: str, target: str) -> None:
        pass  # recorded in the manifest only

    def seal(self, vid: str) -> None:
        pass  # an object PUT is durable once it returns

    def commit(self, vid: str, manifest: bytes) -> None:
        self._call("pipe_file", f"{self.vdir}/{vid}{MANIFEST_SUFFIX}", manifest, mode="create")

    def commit_inline(self, vid: str, manifest: bytes) -> bool:
        """A version that is only its manifest: the conditional PUT alone, no reservation
        (``FileExistsError``, the id taken, makes the caller try the next one)."""
        try:
            self.commit(vid, manifest)
        except FileExistsError:
            return False
        return True

    def read_manifest(self, vid: str) -> bytes:
        return self._cat_bounded(f"{self.vdir}/{vid}{MANIFEST_SUFFIX}", MAX_MANIFEST_BYTES)

    def has_manifest(self, vid: str) -> bool:
        return bool(self._call("exists", f"{self.vdir}/{vid}{MANIFEST_SUFFIX}"))

    def read_file(self, vid: str, entry: FileEntry) -> bytes:
        data = self._cat_bounded(self._path(vid, entry.path), entry.size)
        verify(entry, len(data), crc_of(data))
        return data

    def _cat_bounded(self, path: str, limit: int) -> bytes:
        """The object's bytes, refusing one larger than ``limit``: a planted huge object is
        never fetched whole. (A ranged GET of an empty object fails on S3: ask its size first.)
        """
        size = self._call("info", path)["size"]
        if size > limit:
            raise ChecksumMismatch(
                f"{path.rsplit('/', 1)[-1]}: size {size}, expected at most {limit}"
            )
        return self._call("cat_file", path, start=0, end=size) if size else b""

    @contextmanager
    def open_reader(self, vid: str, entry: FileEntry) -> Iterator[StreamReader]:
        """A `StreamReader` over the payload, fetched whole first (so ``timeout`` bounds it)."""
        import io

        data = self.read_file(vid, entry)
        yield StreamReader(io.BytesIO(data), entry.size, crc_of, None)

    def copy_out(self, vid: str, entry: FileEntry, dest: str) -> None:
        if self.concurrent and entry.size > RANGE:
            self._copy_ranges(self._path(vid, entry.path), entry, dest)
            return
        with self.fs.open(self._path(vid, entry.path), "rb") as handle:
            copy_verified_to(handle, dest, entry)

    def _copy_ranges(self, path: str, entry: FileEntry, dest: str) -> None:
        """A large payload file by ranged GETs, many in flight; never more than the manifest's
        size is asked for, and the file is checked against it as the ranges arrive."""
        size = self._call("info", path)["size"]
        if size != entry.size:
            raise ChecksumMismatch(f"{entry.path}: size {size}, manifest says {entry.size}")
        starts = list(range(0, size, RANGE))
        crc = 0
        with open(dest, "xb", buffering=0) as out:
            for first in range(0, len(starts), RANGES_AT_ONCE):
                batch = starts[first : first + RANGES_AT_ONCE]
                ends = [min(start + RANGE, size) for start in batch]
                pieces = self._call(
                    "cat_ranges", [path] * len(batch), batch, ends, on_error="raise"
                )
                for piece, start, end in zip(pieces, batch, ends, strict=True):
                    if len(piece) != end - start:
                        raise ChecksumMismatch(f"{entry.path}: short read at byte {start}")
                    crc = crc_of(piece, crc)
                    write_all(out.fileno(), memoryview(piece))
        verify(entry, size, crc)

    def retire(self, vid: str, grace: bool = True) -> str | None:
        """Mark the version retired (now), then uncommit it. Readers that listed it may still
        be reading: its payload is deleted only once the grace period has passed (without a
        grace the caller deletes it at once, and no mark is needed)."""
        if grace:
            stamp = int(time.time() * 1000)
            self._call("pipe_file", f"{self.vdir}/{vid}{RETIRED_MARK}{stamp}", b"")
        self.delete_manifest(vid)
        return None  # nothing left to delete but the payload

    def delete_manifest(self, vid: str) -> None:
        self.delete_temp(f"{vid}{MANIFEST_SUFFIX}")

    def delete_payload(self, vid: str, markers: list[str] | None = None) -> bool:
        """Delete an uncommitted payload, then its markers (a crash between leaves markers
        only, which the next sweep deletes)."""
        if self.has_manifest(vid):
            return False  # committed after the caller listed it: never delete that
        try:
            self._call("rm", f"{self.vdir}/{vid}", recursive=True)
        except FileNotFoundError:
            pass
        for name in markers or []:
            self.delete_temp(name)
        return True

    def delete_temp(self, name: str) -> None:
        try:
            self._call("rm_file", f"{self.vdir}/{name}")
        except FileNotFoundError:
            pass

    def open_file(self, vid: str, entry: FileEntry) -> BinaryIO:
        """A file object over one payload file (the caller verifies what it reads)."""
        return self.fs.open(self._path(vid, entry.path), "rb")

    def _path(self, vid: str, rel: str) -> str:
        return f"{self.vdir}/{vid}/{rel}"


def _file_crc(src: Source, buffer: bytearray) -> tuple[int, int]:
    size, crc = 0, 0
    for chunk in iter_source_chunks(src, buffer):
        crc = crc_of(chunk, crc)
        size += len(chunk)
    return size, crc


def _body(data: memoryview) -> bytes | bytearray:
    """What fsspec backends accept as a body: botocore (s3fs) rejects a memoryview."""
    if isinstance(data.obj, bytes | bytearray) and data.nbytes == len(data.obj):
        return data.obj  # the whole buffer: no copy
    return data.tobytes()
