"""`LocalStore`: a checkpoint scope on a local filesystem.

Payload files are fsynced, then their directories, then ``v/``; the manifest is written to a temp
file and ``link()``ed into place, which fails if it exists (an exclusive commit). ``mkdir`` reserves
an id. An inline version (its bytes in the manifest) is one file and two syncs: its manifest is
created whole under its name, exclusively (`smallfile`), and ``v/`` is fsynced. Readers and
writers hold a shared ``flock`` on a version's payload directory and a payload is deleted only
under an exclusive one, so no process deletes what another reads or writes. Every file is opened
below ``v/`` without following links (`safeopen`), and never read past its stated size.

A version of many files (a directory of 100,000 small files) is not fsynced file by file: each
fsync is a journal commit of its own, and they cost ten times what ``cp -r`` and one ``sync``
of the same tree cost. The first `SYNC_EACH` files of a version are fsynced as they are written;
after that they are written without, and the seal makes them durable with one ``syncfs(2)`` of
the filesystem before the directories are fsynced (where ``syncfs`` is missing, each such file
is fsynced at the seal).
"""

from __future__ import annotations

import errno
import fcntl
import io
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from taskpoint.checkpoint.localio import (
    MAPPED_COPY_MIN,
    StreamReader,
    copy_mapped,
    write_all,
    write_large,
)
from taskpoint.checkpoint.manifest import MAX_MANIFEST_BYTES, FileEntry
from taskpoint.checkpoint.payload import Source
from taskpoint.checkpoint.safeopen import NotARegularFile, open_in_store, read_bounded
from taskpoint.checkpoint.smallfile import SmallFileCreator
from taskpoint.checkpoint.storage import (
    CHUNK,
    MANIFEST_SUFFIX,
    Listing,
    check_size,
    classify,
    copy_verified_to,
    crc_executor,
    crc_of,
    helper_thread,
    iter_source_chunks,
    verify,
)

SYNC_EACH = 64  # files of a version fsynced one by one; the rest by one syncfs at its seal


class LocalStore:
    """A scope on a local filesystem, written with fsync and an exclusive ``link()`` commit."""

    is_local = True

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.vdir = os.path.join(self.root, "v")
        self.staging_root = os.path.join(self.root, ".staging")
        self._unsynced: dict[str, list[str]] = {}  # version -> files written without fsync
        self._written: dict[str, int] = {}  # version -> files written so far
        self._small = SmallFileCreator(self.vdir)

    def ensure(self) -> None:
        if not os.path.isdir(self.vdir):
            _make_durable_dirs(self.vdir)
        if not os.access(self.vdir, os.W_OK | os.X_OK):
            raise PermissionError(f"no write permission on {self.vdir}")

    def scan(self) -> Listing:
        try:
            return classify(os.listdir(self.vdir))
        except FileNotFoundError:
            return Listing()

    def reserve(self, vid: str) -> bool:
        path = os.path.join(self.vdir, vid)
        try:
            os.mkdir(path)
        except FileExistsError:
            return False
        if self.has_manifest(vid):  # an inline version of this id, its reservation gone
            _rmdir_quiet(path)
            return False
        return True

    def write_source(self, vid: str, src: Source, buffer: bytearray) -> FileEntry:
        dest = self._path(vid, src.path)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if src.owned and src.file is not None:
            # A staged copy on the same filesystem: move it in, checksum it from the page cache.
            os.rename(src.file, dest)
            return self._seal_moved(vid, dest, src.path, buffer)
        if src.data is not None and len(src.data) > CHUNK:
            return self._write_view(dest, src.path, src.data)
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        size, crc = 0, 0
        try:
            for chunk in iter_source_chunks(src, buffer):
                crc = crc_of(chunk, crc)
                write_all(fd, chunk)
                size += len(chunk)
            self._sync_or_defer(vid, fd, dest)
        finally:
            os.close(fd)
        return FileEntry(src.path, size, crc)

    def _sync_or_defer(self, vid: str, fd: int, path: str) -> None:
        """fsync the version's first `SYNC_EACH` files now; leave the others to the seal."""
        written = self._written[vid] = self._written.get(vid, 0) + 1
        if written <= SYNC_EACH:
            os.fsync(fd)
        else:
            self._unsynced.setdefault(vid, []).append(path)

    def _write_view(self, dest: str, rel: str, data: memoryview) -> FileEntry:
        # The checksum runs on a second thread while this one writes: both release the GIL.
        crc_future = crc_executor().submit(crc_of, data)
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            write_large(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        return FileEntry(rel, len(data), crc_future.result())

    def _seal_moved(self, vid: str, dest: str, rel: str, buffer: bytearray) -> FileEntry:
        size, crc = 0, 0
        fd = os.open(dest, os.O_RDWR)
        try:
            view = memoryview(buffer)
            while n := os.readv(fd, [view]):
                crc = crc_of(view[:n], crc)
                size += n
            self._sync_or_defer(vid, fd, dest)
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
        """Make the files written without fsync durable (one syncfs), then fsync every
        directory of the version, then ``v/`` itself, before the manifest."""
        self._written.pop(vid, None)
        unsynced = self._unsynced.pop(vid, [])
        if unsynced:
            _sync_files(self.vdir, unsynced)
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

    def commit_inline(self, vid: str, manifest: bytes) -> bool:
        """Commit a version that is only its manifest: one file and one directory sync
        (`SmallFileCreator`). False, with nothing left behind, if the id is taken: an inline
        version of it was committed already, or (where a named temp file is used) another
        writer holds it. A payload writer of the same id finds the manifest taken at its
        commit and writes its version again under a new id, as on an object store."""
        return self._small.create_whole(vid + MANIFEST_SUFFIX, manifest, temp_name=vid)

    def read_manifest(self, vid: str) -> bytes:
        with open_in_store(self.vdir, [vid + MANIFEST_SUFFIX]) as handle:
            return read_bounded(handle, MAX_MANIFEST_BYTES)

    def has_manifest(self, vid: str) -> bool:
        return os.path.lexists(os.path.join(self.vdir, vid + MANIFEST_SUFFIX))

    def read_file(self, vid: str, entry: FileEntry) -> bytes:
        with self._open_payload(vid, entry) as handle:
            check_size(handle, entry)
            data = read_bounded(handle, entry.size) if entry.size else handle.read(1)
        verify(entry, len(data), crc_of(data))
        return data

    @contextmanager
    def open_reader(self, vid: str, entry: FileEntry) -> Iterator[StreamReader]:
        """A `StreamReader` over a payload file; a wrong size fails before anything is read."""
        with self._open_payload(vid, entry) as handle:
            check_size(handle, entry)
            reader = StreamReader(handle, entry.size, crc_of, crc_executor())
            try:
                yield reader
            finally:
                reader.settle()  # no checksum may still read the caller's buffers

    def copy_out(self, vid: str, entry: FileEntry, dest: str) -> None:
        with self._open_payload(vid, entry) as handle:
            check_size(handle, entry)  # before mapping: the mapping must not outrun the file
            if entry.size < MAPPED_COPY_MIN:
                copy_verified_to(handle, dest, entry)
                return
            crc = copy_mapped(handle.fileno(), dest, entry.size, crc_of, helper_thread("copy"))
            verify(entry, entry.size, crc)

    def open_file(self, vid: str, entry: FileEntry) -> io.FileIO:
        """A payload file, opened as `_open_payload` does (the caller verifies what it reads)."""
        return self._open_payload(vid, entry)

    def _open_payload(self, vid: str, entry: FileEntry) -> io.FileIO:
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

    def retire(self, vid: str, grace: bool = False) -> str | None:
        """Uncommit: new readers skip it at once; its payload goes when nobody holds it.

        The manifest is renamed to a temp name rather than deleted: a rename is a fifth of what
        freeing the file costs on ext4, and this runs on the writer's path. The caller deletes
        the name returned (`delete_temp`) later, off that path; a sweep takes it after a crash.
        """
        leftover = f".{vid}{_RETIRED_TEMP}"
        try:
            os.rename(
                os.path.join(self.vdir, vid + MANIFEST_SUFFIX), os.path.join(self.vdir, leftover)
            )
        except FileNotFoundError:
            return None  # retired by another process meanwhile
        return leftover

    def delete_manifest(self, vid: str) -> None:
        _unlink_quiet(os.path.join(self.vdir, vid + MANIFEST_SUFFIX))

    def delete_payload(self, vid: str, markers: list[str] | None = None) -> bool:
        """Delete an uncommitted payload unless a reader or writer holds it (False then)."""
        self._written.pop(vid, None)  # a failed write's bookkeeping
        self._unsynced.pop(vid, None)
        path = os.path.join(self.vdir, vid)
        try:
            fd = os.open(path, _DIR_LOCK_FLAGS)
        except FileNotFoundError:
            return True
        except OSError:
            return _delete_entry(path)  # not a directory: an inline temp, or planted
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
        """Delete a leftover manifest temp file ``.<id>.manifest.*.tmp``, unless the writer of
        ``<id>`` is still committing it (it holds its payload directory's lock until then)."""
        try:
            fd = os.open(os.path.join(self.vdir, name[1:].split(".", 1)[0]), _DIR_LOCK_FLAGS)
        except OSError:
            fd = None  # no payload directory: no writer of that id is alive
        try:
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return
            _unlink_quiet(os.path.join(self.vdir, name))
        finally:
            if fd is not None:
                os.close(fd)

    def _path(self, vid: str, rel: str) -> str:
        return os.path.join(self.vdir, vid, *rel.split("/"))


_RETIRED_TEMP = ".retired.tmp"  # a retired manifest's name until it is deleted (a temp name)
_DIR_LOCK_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _delete_entry(path: str) -> bool:
    """Delete a non-directory entry in ``v/``: an inline version's manifest temp left by a killed
    writer (unless a live one still holds it: False), or anything else planted there."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    except OSError:
        _unlink_quiet(path)  # a link or an unreadable entry: just the name
        return True
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a writer is committing it
        _unlink_quiet(path)
    finally:
        os.close(fd)
    return True


def _make_durable_dirs(path: str) -> None:
    """Create ``path`` and its missing parents, and fsync the parent of each one created, so a
    new scope's directories survive a power cut (once per scope: later commits skip this)."""
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for created in reversed(missing):
        try:
            os.mkdir(created)
        except FileExistsError:
            if not os.path.isdir(created):
                raise
    # All created first: the first fsync commits every new entry, the others find them done.
    for created in reversed(missing):
        _fsync_dir(os.path.dirname(created))


def _sync_files(directory: str, paths: list[str]) -> None:
    """Make ``paths`` durable: one syncfs of the filesystem holding ``directory`` (it flushes
    every dirty page and inode there, theirs among them), else an fsync of each."""
    syncfs = _syncfs()
    if syncfs is not None:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    for path in paths:  # no syncfs here, or it failed: the slow, sure way
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


_SYNCFS: list[Any] = []


def _syncfs() -> Any:
    """libc's ``syncfs(int fd)``, or None where there is none (loaded once, at first use)."""
    if not _SYNCFS:
        try:
            import ctypes

            fn: Any = ctypes.CDLL(None, use_errno=True).syncfs
            fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
        except (OSError, AttributeError):
            fn = None
        _SYNCFS.append(fn)
    return _SYNCFS[0]


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rmdir_quiet(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
