"""A small file created whole, exclusively and durably: the commit of an inline version.

`create_whole` makes ``<directory>/<name>`` hold the given bytes if, and only if, that name did
not exist, so that no other process ever sees the name with part of the bytes, and both the
bytes and the name are durable when it returns. Two syncs are the least that takes on a POSIX
filesystem: one of the file, one of its directory.

Where the filesystem can (Linux ``O_TMPFILE``: ext4, XFS, btrfs, tmpfs) the file is made without
a name, written, and given its name with ``linkat`` (which fails if the name exists). There is
no temp name: nothing to sweep after a crash, nothing another process's sweep could take while
it is written, and two fewer directory changes than a named temp file. Elsewhere a named temp
file (``<directory>/<temp_name>``, created exclusively) is written and linked the same way.

Either way the file is linked *before* its fsync: that fsync then commits the new name with the
bytes in one journal transaction, and the directory's fsync finds little left to do (a third
less time than syncing the file first, on ext4). Little, but not nothing: on its own it still
waits for a flush of the disk's cache of its own. So the two syncs run at once
(`OverlappedSync`): the directory's, issued from a helper thread while the file's commit is in
flight, joins that commit and its flush (a tenth off the whole commit, on ext4). Both have
returned before the commit returns, in whatever order they finished: the guarantee is the same
as one after the other.

Other processes see the whole file either way (it was written before it had the name). What a
power cut before both syncs return may leave is the name with a short or empty file: readers
treat such a manifest as damaged and fall back to the version before, which no retention has
touched (it runs only after the commit returned).
"""

from __future__ import annotations

import errno
import fcntl
import os
import queue
import threading

from taskpoint.checkpoint.localio import write_all

_ANONYMOUS = getattr(os, "O_TMPFILE", 0)  # 0: this platform has none
# Errors of the open that say "no anonymous files here" (an old kernel says EISDIR, a
# filesystem without support EOPNOTSUPP). A link that fails with ENOENT where /proc is not
# mounted says the same: the file cannot be named.
_NO_ANONYMOUS = (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL)


class SmallFileCreator:
    """Creates small files whole in one directory; remembers whether anonymous files work."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.anonymous = bool(_ANONYMOUS)

    def create_whole(self, name: str, data: bytes, temp_name: str) -> bool:
        """Make ``name`` hold ``data`` durably; False (nothing left behind) if ``name`` exists,
        or if ``temp_name`` (used only where anonymous files are not available) is taken."""
        dfd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            created = self._anonymous(dfd, name, data) if self.anonymous else None
            if created is None:
                created = self._named(dfd, name, data, temp_name)
            return created
        finally:
            os.close(dfd)

    def _anonymous(self, dfd: int, name: str, data: bytes) -> bool | None:
        """Through a file without a name; None when the filesystem cannot make one."""
        try:
            fd = os.open(".", _ANONYMOUS | os.O_WRONLY | os.O_CLOEXEC, 0o644, dir_fd=dfd)
        except OSError as exc:
            if exc.errno not in _NO_ANONYMOUS:
                raise
            self.anonymous = False
            return None
        try:
            write_all(fd, memoryview(data))
            try:
                # linkat(AT_SYMLINK_FOLLOW) on /proc/self/fd/N names the open file itself.
                os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=dfd, follow_symlinks=True)
            except FileExistsError:
                return False
            except FileNotFoundError:
                if os.path.isdir("/proc/self/fd"):
                    raise  # /proc is there: the directory itself is gone
                self.anonymous = False  # no /proc mounted: the file cannot be named
                return None
            _OVERLAPPED.sync_both(fd, dfd)
            return True
        finally:
            os.close(fd)

    def _named(self, dfd: int, name: str, data: bytes, temp_name: str) -> bool:
        """Through ``temp_name``, created exclusively, linked, then unlinked. A shared
        ``flock`` on it while it is written keeps a sweep in another process off it."""
        try:
            fd = os.open(
                temp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644, dir_fd=dfd
            )
        except FileExistsError:
            return False
        owned = False  # the name ``temp_name`` is this file's, and no sweep can take it now
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # a sweep got it in the instant after its creation
            owned = _names(dfd, temp_name, fd)
            if not owned:
                return False  # swept and maybe created again by another writer: not ours
            write_all(fd, memoryview(data))
            try:
                os.link(temp_name, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            except FileExistsError:
                return False
            _OVERLAPPED.sync_both(fd, dfd)
            return True
        finally:
            if owned:
                try:
                    os.unlink(temp_name, dir_fd=dfd)  # also when the write failed (a full disk)
                except FileNotFoundError:
                    pass
            os.close(fd)


class OverlappedSync:
    """fsyncs a file and its directory at the same time: the file's on the calling thread,
    the directory's on one helper thread (started at first use, and again in a forked child).

    The helper is one per process; a second caller while it is busy syncs both itself, one
    after the other. Each call has its own reply queue, so a caller interrupted in its wait
    leaves nothing behind for the next one to mistake for its own reply."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._busy = threading.Lock()
        self._requests: queue.SimpleQueue[tuple[int, queue.SimpleQueue[OSError | None]]] = (
            queue.SimpleQueue()
        )
        self._helper: threading.Thread | None = None

    def sync_both(self, fd: int, dfd: int) -> None:
        if not self._busy.acquire(blocking=False):
            os.fsync(fd)
            os.fsync(dfd)
            return
        try:
            if self._helper is None:
                self._helper = threading.Thread(
                    target=self._serve, name="taskpoint-dirsync", daemon=True
                )
                self._helper.start()
            reply: queue.SimpleQueue[OSError | None] = queue.SimpleQueue()
            self._requests.put((dfd, reply))
            try:
                os.fsync(fd)
            finally:
                # Wait for the directory's sync even when the file's failed: ``dfd`` is
                # closed after this returns, and its number could be reused meanwhile.
                failed = reply.get()
            if failed is not None:
                raise failed
        finally:
            self._busy.release()

    def _serve(self) -> None:
        requests = self._requests
        while True:
            dfd, reply = requests.get()
            try:
                os.fsync(dfd)
            except OSError as exc:
                reply.put(exc)
            else:
                reply.put(None)


_OVERLAPPED = OverlappedSync()
if hasattr(os, "register_at_fork"):
    # A forked child has no helper thread (and maybe a lock held by a thread it lacks).
    os.register_at_fork(after_in_child=_OVERLAPPED._reset)


def _names(dfd: int, name: str, fd: int) -> bool:
    """Does ``name`` (in the directory ``dfd``) name the open file ``fd``?"""
    try:
        named = os.lstat(name, dir_fd=dfd)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (mine.st_dev, mine.st_ino)
