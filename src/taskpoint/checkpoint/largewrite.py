"""Large local writes, two ways: buffered with explicit flushing, or O_DIRECT.

Buffered (`write_buffered`): the payload goes through the page cache in pieces. Writeback of
each piece starts as soon as it is written (``sync_file_range``) and, a few pieces behind, a
helper thread waits for it and drops its pages (``posix_fadvise(DONTNEED)``). The disk writes
while the next pieces are copied, instead of after the last one (a plain write + fsync copies
everything, then flushes everything: the two costs add up), and a 1 GiB checkpoint never fills
the page cache, evicting what the machine is working on.

Direct (`write_direct`): whole blocks go out with O_DIRECT, so the kernel DMAs from memory and
allocates no page cache. A source whose address is page aligned is written as it is, in large
pieces one after the other; any other (a ``bytes`` object never is) is copied into aligned
bounce buffers, the copy of piece N+1 overlapping the writes of the pieces before it on helper
threads. The tail that is not a whole block is the caller's to write buffered.

Which one is faster depends on the disk, the filesystem and the machine: ``diskprobe`` measures
it. Neither makes the file durable (no metadata, no device cache flush): the caller's fsync does.
Copies and waits run in C with the GIL released, so other Python threads keep running.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import mmap
import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from typing import Any

ALIGN = 4096  # O_DIRECT wants buffer address, length and file offset aligned to the block size
BUFFERED_PIECE = 8 << 20  # written, then its writeback started
FLUSH_LAG = 2  # pieces written but not yet on disk: bounds the page cache a write fills
DIRECT_PIECE = 64 << 20  # one O_DIRECT write straight from the caller's (aligned) memory
BOUNCE_PIECE = 8 << 20  # one O_DIRECT write through a bounce buffer
BOUNCES = 4  # bounce buffers: one being filled, the others' writes in flight
_IO_THREADS = 4
# sync_file_range flags (linux/fs.h)
_WAIT_BEFORE, _WRITE, _WAIT_AFTER = 1, 2, 4
_UNSUPPORTED = (errno.ENOSYS, errno.EINVAL, errno.ESPIPE, errno.EOPNOTSUPP, errno.EPERM)

_sync_file_range: Any = None  # the libc function; False where there is none
_pool: tuple[int, ThreadPoolExecutor] | None = None
_bounce_lock = threading.Lock()
_bounce_sets: list[list[tuple[memoryview, int]]] = []


# ---------------------------------------------------------------------------------- buffered
def write_buffered(fd: int, view: memoryview, offset: int = 0) -> None:
    """Write ``view`` at ``offset`` through the page cache, flushing behind the writes."""
    if len(view) <= BUFFERED_PIECE or not _can_sync_range():
        pwrite_all(fd, view, offset)
        return
    with Pending(FLUSH_LAG) as flushes:
        for pos in range(0, len(view), BUFFERED_PIECE):
            piece = view[pos : pos + BUFFERED_PIECE]
            pwrite_all(fd, piece, offset + pos)
            _sync_range(fd, offset + pos, len(piece), _WRITE)  # start writeback, do not wait
            flushes.submit(_settle, fd, offset + pos, len(piece))


def _settle(fd: int, offset: int, length: int) -> None:
    """Wait until the range is on disk, then drop its pages from the page cache."""
    _sync_range(fd, offset, length, _WAIT_BEFORE | _WRITE | _WAIT_AFTER)
    try:
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)
    except (AttributeError, OSError):
        pass  # only advice: the pages stay cached


def _can_sync_range() -> bool:
    global _sync_file_range
    if _sync_file_range is None:
        _sync_file_range = False
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
            function = libc.sync_file_range
        except (AttributeError, OSError, TypeError):
            return False
        function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
        function.restype = ctypes.c_int
        _sync_file_range = function
    return _sync_file_range is not False


def _sync_range(fd: int, offset: int, length: int, flags: int) -> None:
    global _sync_file_range
    function = _sync_file_range
    if not function or function(fd, offset, length, flags) == 0:
        return
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        _sync_file_range = False  # e.g. a sandbox that forbids it: plain writes + fsync
        return
    raise OSError(code, f"sync_file_range: {os.strerror(code)}")


# ---------------------------------------------------------------------------------- direct
def write_direct(fd: int, view: memoryview) -> int:
    """Write the leading whole blocks of ``view`` at offset 0 of ``fd`` with O_DIRECT; return
    how many bytes went out: 0 when the filesystem refuses O_DIRECT (nothing written then)."""
    whole = len(view) - len(view) % ALIGN
    flags = _enable_direct(fd) if whole else None
    if flags is None:
        return 0
    try:
        return _direct_pieces(fd, view[:whole])
    finally:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETFL, flags)


def _enable_direct(fd: int) -> int | None:
    """Set O_DIRECT on ``fd``; return its previous flags, or None where it is refused."""
    if not hasattr(os, "O_DIRECT"):
        return None
    import fcntl

    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_DIRECT)
    except OSError:
        return None
    return flags


def _direct_pieces(fd: int, view: memoryview) -> int:
    source = buffer_address(view)
    if source is not None and source % ALIGN == 0:
        # Straight from the caller's memory, one large write after the other, as a plain
        # O_DIRECT writer would: handing them to threads bought nothing measurable.
        for pos in range(0, len(view), DIRECT_PIECE):
            try:
                pwrite_all(fd, view[pos : pos + DIRECT_PIECE], pos)
            except OSError as exc:
                if exc.errno != errno.EINVAL or pos:
                    raise
                return 0  # the device wants another alignment: the caller writes all of it
        return len(view)
    bounces = _take_bounces()
    try:
        first = min(len(view), BOUNCE_PIECE)
        try:  # the first piece alone: a refusal must come before anything else is in flight
            pwrite_all(fd, _bounced(view, 0, first, source, bounces, 0), 0)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            return 0
        with Pending(BOUNCES - 1) as writes:
            for index, pos in enumerate(range(first, len(view), BOUNCE_PIECE), 1):
                size = min(BOUNCE_PIECE, len(view) - pos)
                piece = _bounced(view, pos, size, source, bounces, index)
                writes.submit(pwrite_all, fd, piece, pos)
    finally:
        _give_back(bounces)
    return len(view)


def _bounced(
    view: memoryview,
    pos: int,
    size: int,
    source: int | None,
    bounces: list[tuple[memoryview, int]],
    index: int,
) -> memoryview:
    """``view[pos:pos+size]`` copied into bounce buffer ``index`` (the write that used that
    buffer before has finished: `Pending` keeps at most BOUNCES-1 in flight)."""
    bounce, address = bounces[index % len(bounces)]
    if source is not None and address:
        ctypes.memmove(address, source + pos, size)  # releases the GIL
    else:
        bounce[:size] = view[pos : pos + size]
    return bounce[:size]


def _take_bounces() -> list[tuple[memoryview, int]]:
    with _bounce_lock:
        while _bounce_sets:
            kept = _bounce_sets.pop()
            if len(kept) == BOUNCES and all(len(view) == BOUNCE_PIECE for view, _ in kept):
                return kept
    buffers = []
    for _ in range(BOUNCES):
        # Private: a forked child writing at the same time as its parent must not share them.
        view = memoryview(mmap.mmap(-1, BOUNCE_PIECE, flags=mmap.MAP_PRIVATE))
        buffers.append((view, buffer_address(view) or 0))
    return buffers


def _give_back(bounces: list[tuple[memoryview, int]]) -> None:
    """Keep one set for the next write (its pages are already faulted in); free the others."""
    with _bounce_lock:
        if not _bounce_sets:
            _bounce_sets.append(bounces)


class _PyBuffer(ctypes.Structure):
    _fields_ = [
        ("buf", ctypes.c_void_p),
        ("obj", ctypes.c_void_p),
        ("len", ctypes.c_ssize_t),
        ("itemsize", ctypes.c_ssize_t),
        ("readonly", ctypes.c_int),
        ("ndim", ctypes.c_int),
        ("format", ctypes.c_char_p),
        ("shape", ctypes.c_void_p),
        ("strides", ctypes.c_void_p),
        ("suboffsets", ctypes.c_void_p),
        ("internal", ctypes.c_void_p),
    ]


_buffer_api: tuple[Any, Any] | None = None


def buffer_address(view: memoryview) -> int | None:
    """The address of the first byte of ``view`` (read-only buffers too), or None where the
    interpreter does not tell (not CPython). Valid while ``view`` is alive."""
    global _buffer_api
    try:
        if _buffer_api is None:
            api = ctypes.PyDLL(None)
            get, release = api["PyObject_GetBuffer"], api["PyBuffer_Release"]
            get.argtypes = [ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int]
            get.restype = ctypes.c_int
            release.argtypes = [ctypes.POINTER(_PyBuffer)]
            release.restype = None
            _buffer_api = (get, release)
        get, release = _buffer_api
        buffer = _PyBuffer()
        get(view, ctypes.byref(buffer), 0)  # PyBUF_SIMPLE: a C-contiguous view of bytes
    except (AttributeError, OSError, TypeError, ValueError, BufferError):
        return None
    try:
        address: int | None = buffer.buf
        return address
    finally:
        release(ctypes.byref(buffer))


# ---------------------------------------------------------------------------------- shared
def pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    """Write all of ``view`` at ``offset`` (``os.pwrite`` may write less)."""
    while view:
        written = os.pwrite(fd, view[: 1 << 30], offset)
        view, offset = view[written:], offset + written


def io_pool() -> ThreadPoolExecutor:
    """The helper threads of large writes, per process (a pool inherited through fork has no
    live threads)."""
    global _pool
    if _pool is None or _pool[0] != os.getpid():
        _pool = (os.getpid(), ThreadPoolExecutor(_IO_THREADS, thread_name_prefix="taskpoint-io"))
    return _pool[1]


class Pending:
    """Calls handed to ``executor`` (default: `io_pool`), at most ``limit`` unfinished at once
    (``submit`` waits for the oldest, raising its error). Leaving the block waits for all of
    them, so none still uses a descriptor or buffer the caller is about to close or reuse, and
    raises the first error unless an error is already on its way out."""

    def __init__(self, limit: int, executor: ThreadPoolExecutor | None = None) -> None:
        self._executor = executor or io_pool()
        self._limit = limit
        self._pending: deque[Future[None]] = deque()

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        if len(self._pending) >= self._limit:
            self._pending.popleft().result()
        self._pending.append(self._executor.submit(fn, *args))

    def __enter__(self) -> Pending:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        wait_all(self._pending)
        if exc_type is None:
            for future in self._pending:
                future.result()


def _after_fork_in_child() -> None:
    global _bounce_lock
    _bounce_lock = threading.Lock()  # a parent thread may have held it at the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
