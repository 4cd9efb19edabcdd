"""Where versions live: one small interface, two implementations.

`LocalStore` talks to the OS directly so it can fsync payload files and directories and create the
manifest exclusively with ``link()``. `FsspecStore` covers every other fsspec URL (``memory://``,
``s3://`` ...) and creates the manifest with ``mode="create"`` (``If-None-Match: *`` on S3).

Layout under a scope root::

    v/<id>/...payload...        immutable once written
    v/<id>.manifest.json        written last and exclusively: its existence = committed
    v/.<id>.manifest.*.tmp      a local manifest being written (swept if left behind)
    v/<id>.writer               object stores: the id's reservation, created exclusively
    v/<id>.retired.<ms>         object stores: retired at <ms> (Unix ms); payload kept for a grace

Two writers never share a payload prefix: on local disk ``mkdir`` reserves an id, on an object
store an exclusive ``<id>.writer`` object does. Readers and writers of a local version hold a
shared ``flock`` on its payload directory, and its payload is deleted only under an exclusive one,
so no process deletes what another still reads or writes. An object store has no locks: retention
marks a version retired and deletes its payload only after a grace period, long enough for any
reader that listed it to finish.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import time
import uuid
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

from taskpoint.checkpoint.localio import (
    MAPPED_COPY_MIN,
    StreamReader,
    copy_mapped,
    copy_verified,
    write_all,
    write_large,
)
from taskpoint.checkpoint.manifest import MAX_MANIFEST_BYTES as MANIFEST_READ_LIMIT
from taskpoint.checkpoint.manifest import FileEntry
from taskpoint.checkpoint.payload import Source
from taskpoint.checkpoint.safeopen import NotARegularFile, open_in_store, read_bounded
from taskpoint.checkpoint.version import parse_version_id

if TYPE_CHECKING:
    from collections.abc import Iterator
    from concurrent.futures import ThreadPoolExecutor

CHUNK = 8 << 20  # big chunks: few syscalls, and the checksum releases the GIL per chunk
MANIFEST_SUFFIX = ".manifest.json"
WRITER_SUFFIX = ".writer"
RETIRED_MARK = ".retired."
_helper_pools: dict[str, tuple[int, ThreadPoolExecutor]] = {}


def _helper_thread(name: str) -> ThreadPoolExecutor:
    """One named helper thread per process (a pool inherited through fork has no live thread)."""
    pid, pool = _helper_pools.get(name, (None, None))
    if pool is None or pid != os.getpid():
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(1, thread_name_prefix=f"taskpoint-{name}")
        _helper_pools[name] = (os.getpid(), pool)
    return pool


def _crc_executor() -> ThreadPoolExecutor:
    """The checksum thread: checksums run beside the reads and writes they verify."""
    return _helper_thread("crc")


class ChecksumMismatch(OSError):
    """A payload file's bytes do not match the manifest."""


def crc_of(data: memoryview | bytes, value: int = 0) -> int:
    return _crc32c()(data, value=value, gil_release_mode=1)


def _crc32c() -> Any:
    """The checksum function, imported on first use (the module costs ~15 ms at import)."""
    global _crc_fn
    if _crc_fn is None:
        import crc32c

        _crc_fn = crc32c.crc32c
    return _crc_fn


_crc_fn: Any = None


@dataclass
class Listing:
    """One look at ``v/``: committed ids (newest first), payload prefixes, stray temp files, and
    (object stores) reservation and retirement markers by id."""

    committed: list[str] = field(default_factory=list)
    payloads: set[str] = field(default_factory=set)
    temps: list[str] = field(default_factory=list)
    markers: dict[str, list[str]] = field(default_factory=dict)  # id -> marker names
    retired: dict[str, int] = field(default_factory=dict)  # id -> retired at (Unix ms)

    def known_ids(self) -> set[str]:
        """Every id in use in any way: the next reservation starts after all of them."""
        return {*self.committed, *self.payloads, *self.markers}


def classify(names: list[str]) -> Listing:
    listing = Listing()
    for name in names:
        if name.startswith(".") and name.endswith(".tmp"):
            listing.temps.append(name)
        elif name.endswith(MANIFEST_SUFFIX):
            vid = name[: -len(MANIFEST_SUFFIX)]
            if parse_version_id(vid) is not None:
                listing.committed.append(vid)
        elif parse_version_id(name) is not None:
            listing.payloads.add(name)
        else:
            _classify_marker(listing, name)
    listing.committed.sort(key=parse_version_id, reverse=True)  # type: ignore[arg-type]
    return listing


def _classify_marker(listing: Listing, name: str) -> None:
    vid, dot, rest = name.partition(".")
    if not dot or parse_version_id(vid) is None:
        return  # a foreign name: ignored
    if "." + rest == WRITER_SUFFIX:
        listing.markers.setdefault(vid, []).append(name)
    elif ("." + rest).startswith(RETIRED_MARK) and rest[len(RETIRED_MARK) - 1 :].isdigit():
        listing.markers.setdefault(vid, []).append(name)
        listing.retired[vid] = int(rest[len(RETIRED_MARK) - 1 :])


def iter_source_chunks(src: Source, buffer: bytearray) -> Any:
    """Yield memoryviews over a source's bytes, in big chunks (the buffer is reused)."""
    if src.data is not None:
        for start in range(0, len(src.data), 64 << 20):
            yield src.data[start : start + (64 << 20)]
        return
    handle: BinaryIO = open(src.file, "rb") if src.file is not None else src.stream  # type: ignore[assignment]  # noqa: SIM115
    view = memoryview(buffer)
    try:
        while True:
            n = handle.readinto(view) if hasattr(handle, "readinto") else _read_into(handle, view)
            if not n:
                return
            yield view[:n]
    finally:
        if src.file is not None:
            handle.close()


def _read_into(handle: BinaryIO, view: memoryview) -> int:
    chunk = handle.read(len(view))
    view[: len(chunk)] = chunk
    return len(chunk)


class LocalStore:
    """A scope on a local filesystem, written with fsync and an exclusive ``link()`` commit."""

    is_local = True

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.vdir = os.path.join(self.root, "v")
        self.staging_root = os.path.join(self.root, ".staging")

    def ensure(self) -> None:
        os.makedirs(self.vdir, exist_ok=True)
        if not os.access(self.vdir, os.W_OK | os.X_OK):
            raise PermissionError(f"no write permission on {self.vdir}")

    def scan(self) -> Listing:
        try:
            return classify(os.listdir(self.vdir))
        except FileNotFoundError:
            return Listing()

    def reserve(self, vid: str) -> bool:
        try:
            os.mkdir(os.path.join(self.vdir, vid))
        except FileExistsError:
            return False
        return True

    def write_source(self, vid: str, src: Source, buffer: bytearray) -> FileEntry:
        dest = self._path(vid, src.path)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if src.owned and src.file is not None:
            # A staged copy on the same filesystem: move it in, checksum it from the page cache.
            os.rename(src.file, dest)
            return self._seal_moved(dest, src.path, buffer)
        if src.data is not None and len(src.data) > CHUNK:
            return self._write_view(dest, src.path, src.data)
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        size, crc = 0, 0
        try:
            for chunk in iter_source_chunks(src, buffer):
                crc = crc_of(chunk, crc)
                write_all(fd, chunk)
                size += len(chunk)
            os.fsync(fd)
        finally:
            os.close(fd)
        return FileEntry(src.path, size, crc)

    def _write_view(self, dest: str, rel: str, data: memoryview) -> FileEntry:
        # The checksum runs on a second thread while this one writes: both release the GIL.
        crc_future = _crc_executor().submit(crc_of, data)
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            write_large(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        return FileEntry(rel, len(data), crc_future.result())

    def _seal_moved(self, dest: str, rel: str, buffer: bytearray) -> FileEntry:
        size, crc = 0, 0
        fd = os.open(dest, os.O_RDWR)
        try:
            view = memoryview(buffer)
            while n := os.readv(fd, [view]):
                crc = crc_of(view[:n], crc)
                size += n
            os.fsync(fd)
        finally:
            os.close(fd)
        return FileEntry(rel, size, crc)

    def make_dir(self, vid: str, rel: str) -> None:
        os.makedirs(self._path(vid, rel), exist_ok=True)

    def make_link(self, vid: str, rel: str, target: str) -> None:
        dest = self._path(vid, rel)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        os.symlink(target, dest)

    def seal(self, vid: str) -> None:
        """fsync every directory of the version, then ``v/`` itself, before the manifest."""
        top = os.path.join(self.vdir, vid)
        for dirpath, _dirs, _files in os.walk(top):
            _fsync_dir(dirpath)
        _fsync_dir(self.vdir)

    def commit(self, vid: str, manifest: bytes) -> None:
        """Write the manifest to a temp file, fsync, then ``link()`` it: fails if it exists."""
        tmp = os.path.join(self.vdir, f".{vid}.manifest.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            try:
                write_all(fd, memoryview(manifest))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.link(tmp, os.path.join(self.vdir, vid + MANIFEST_SUFFIX))
        finally:
            _unlink_quiet(tmp)  # also when the write failed (a full disk): no partial temp left
        _fsync_dir(self.vdir)

    def read_manifest(self, vid: str) -> bytes:
        with open_in_store(self.vdir, [vid + MANIFEST_SUFFIX]) as handle:
            return read_bounded(handle, MANIFEST_READ_LIMIT)

    def has_manifest(self, vid: str) -> bool:
        return os.path.lexists(os.path.join(self.vdir, vid + MANIFEST_SUFFIX))

    def read_file(self, vid: str, entry: FileEntry) -> bytes:
        with self._open_payload(vid, entry) as handle:
            _check_size(handle, entry)
            data = read_bounded(handle, entry.size) if entry.size else handle.read(1)
        _verify(entry, len(data), crc_of(data))
        return data

    @contextmanager
    def open_reader(self, vid: str, entry: FileEntry) -> Iterator[StreamReader]:
        """A `StreamReader` over a payload file; a wrong size fails before anything is read."""
        with self._open_payload(vid, entry) as handle:
            _check_size(handle, entry)
            reader = StreamReader(handle, entry.size, crc_of, _crc_executor())
            try:
                yield reader
            finally:
                reader.settle()  # no checksum may still read the caller's buffers

    def copy_out(self, vid: str, entry: FileEntry, dest: str) -> None:
        with self._open_payload(vid, entry) as handle:
            _check_size(handle, entry)  # before mapping: the mapping must not outrun the file
            if entry.size < MAPPED_COPY_MIN:
                _copy_verified(handle, dest, entry)
                return
            crc = copy_mapped(handle.fileno(), dest, entry.size, crc_of, _helper_thread("copy"))
            _verify(entry, entry.size, crc)

    def _open_payload(self, vid: str, entry: FileEntry) -> BinaryIO:
        """Open a payload file as a regular file reached through no link, without blocking."""
        return open_in_store(self.vdir, [vid, *entry.path.split("/")])

    @contextmanager
    def holding(self, vid: str) -> Iterator[None]:
        """Hold a shared lock on the version's payload directory while reading or writing it:
        no process deletes a payload while another holds it (`delete_payload` locks it
        exclusively). A directory that is gone, or locked for deletion, reads as missing."""
        try:
            fd = os.open(os.path.join(self.vdir, vid), _DIR_LOCK_FLAGS)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise NotARegularFile(f"payload {vid} is a link or not a directory") from exc
            raise
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                raise FileNotFoundError(errno.ENOENT, f"payload {vid} is being deleted") from None
            yield
        finally:
            os.close(fd)  # releases the lock

    def retire(self, vid: str, grace: bool = False) -> None:
        """Uncommit: new readers skip it at once; its payload goes when nobody holds it."""
        self.delete_manifest(vid)

    def delete_manifest(self, vid: str) -> None:
        _unlink_quiet(os.path.join(self.vdir, vid + MANIFEST_SUFFIX))

    def delete_payload(self, vid: str, markers: list[str] | None = None) -> bool:
        """Delete an uncommitted payload unless a reader or writer holds it (False then)."""
        path = os.path.join(self.vdir, vid)
        try:
            fd = os.open(path, _DIR_LOCK_FLAGS)
        except FileNotFoundError:
            return True
        except OSError:
            _unlink_quiet(path)  # not a directory (planted): just the entry itself
            return True
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # someone reads or writes it: a later sweep takes it
            if self.has_manifest(vid):
                return False  # committed after the caller listed it: never delete that
            shutil.rmtree(path, ignore_errors=True)
        finally:
            os.close(fd)
        return True

    def delete_temp(self, name: str) -> None:
        _unlink_quiet(os.path.join(self.vdir, name))

    def _path(self, vid: str, rel: str) -> str:
        return os.path.join(self.vdir, vid, *rel.split("/"))


_DIR_LOCK_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


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
        if self.timeout is not None and src.file is not None:
            self._call("put_file", src.file, dest)  # one call, so under one deadline
            for chunk in iter_source_chunks(src, buffer):
                crc = crc_of(chunk, crc)
                size += len(chunk)
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

    def read_manifest(self, vid: str) -> bytes:
        return self._cat_bounded(f"{self.vdir}/{vid}{MANIFEST_SUFFIX}", MANIFEST_READ_LIMIT)

    def has_manifest(self, vid: str) -> bool:
        return bool(self._call("exists", f"{self.vdir}/{vid}{MANIFEST_SUFFIX}"))

    def read_file(self, vid: str, entry: FileEntry) -> bytes:
        data = self._cat_bounded(self._path(vid, entry.path), entry.size)
        _verify(entry, len(data), crc_of(data))
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
        with self.fs.open(self._path(vid, entry.path), "rb") as handle:
            _copy_verified(handle, dest, entry)

    def retire(self, vid: str, grace: bool = True) -> None:
        """Mark the version retired (now), then uncommit it. Readers that listed it may still
        be reading: its payload is deleted only once the grace period has passed (without a
        grace the caller deletes it at once, and no mark is needed)."""
        if grace:
            stamp = int(time.time() * 1000)
            self._call("pipe_file", f"{self.vdir}/{vid}{RETIRED_MARK}{stamp}", b"")
        self.delete_manifest(vid)

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

    def _path(self, vid: str, rel: str) -> str:
        return f"{self.vdir}/{vid}/{rel}"


def _body(data: memoryview) -> bytes | bytearray:
    """What fsspec backends accept as a body: botocore (s3fs) rejects a memoryview."""
    if isinstance(data.obj, bytes | bytearray) and data.nbytes == len(data.obj):
        return data.obj  # the whole buffer: no copy
    return data.tobytes()


def _copy_verified(handle: BinaryIO, dest: str, entry: FileEntry) -> None:
    # copy_verified reads at most entry.size + 1 bytes: enough to tell a longer file.
    _verify(entry, *copy_verified(handle, dest, crc_of, _helper_thread("copy"), entry.size))


def verify_reader(reader: StreamReader, entry: FileEntry) -> None:
    """Read the rest of ``reader`` and check size and checksum against the manifest."""
    _verify(entry, *reader.digest())


def _check_size(handle: BinaryIO, entry: FileEntry) -> None:
    """Fail before reading a local payload file whose size is not the manifest's."""
    size = os.fstat(handle.fileno()).st_size
    if size != entry.size:
        raise ChecksumMismatch(f"{entry.path}: size {size}, manifest says {entry.size}")


def _verify(entry: FileEntry, size: int, crc: int) -> None:
    if size != entry.size:
        raise ChecksumMismatch(f"{entry.path}: size {size}, manifest says {entry.size}")
    if crc != entry.crc32c:
        raise ChecksumMismatch(f"{entry.path}: checksum mismatch (file corrupted)")


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
