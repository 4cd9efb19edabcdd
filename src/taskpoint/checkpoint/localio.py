"""Fast local I/O for large payloads: writes the measured faster way, verified streaming reads.

Writes: `write_large` writes a large payload either buffered, with writeback started behind the
writes and the written pages dropped, or with O_DIRECT (``largewrite``), whichever the probe of
``diskprobe`` (and, for writes of hundreds of MiB, its trials) measured faster on the
filesystem at hand; the caller's fsync makes it durable.

Reads: `StreamReader` reads a payload file sequentially straight into the caller's buffers (no
intermediate copy) while the checksum of each piece is computed on the checksum thread, so a
restore reads the disk once and verifies it at the same time.

Copies: `copy_verified` restores a payload file into a new file with the read and the write
overlapped: the calling thread reads and checksums piece N+1 while a writer thread writes piece N.
Done one after the other, the write of each piece stalls the source's readahead, and a 1 GiB
restore took several times a plain read. A large local file goes through `copy_mapped` instead:
the checksum reads the source through a read-only mapping and the kernel copies page cache to
page cache (``copy_file_range``), so no byte passes through a user buffer; on this project's
test machine that brought a cold 1 GiB restore from 3-5x a raw read to about 1x.
"""

from __future__ import annotations

import errno
import itertools
import os
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Protocol

from taskpoint.checkpoint import diskprobe
from taskpoint.checkpoint.diskprobe import is_trial, note_trial, write_mode
from taskpoint.checkpoint.largewrite import Pending, write_buffered, write_direct

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

DIRECT_MIN = 4 << 20  # below this a buffered write is as fast
_READ_PIECE = 16 << 20  # checksummed while the next piece is read
_COPY_PIECE = 16 << 20  # written while the next piece is read
_COPY_DEPTH = 4  # pieces in flight: enough to keep both the read and the write busy
MAPPED_COPY_MIN = 64 << 20  # below this a copy through one buffer is as fast
_copy_file_range = hasattr(os, "copy_file_range")


class Readable(Protocol):
    """A binary file object that reads into a caller's buffer (raw or buffered files)."""

    def readinto(self, buffer: Any, /) -> int | None: ...


# ---------------------------------------------------------------------------------- writing
def write_large(fd: int, data: memoryview, *, probe_dir: str | None = None) -> None:
    """Write ``data`` at the start of the empty file ``fd``, the faster way for its filesystem
    (`diskprobe.write_mode`; a first large write may probe in ``probe_dir``, default: the
    file's directory). Direct mode writes the whole blocks with O_DIRECT and the tail buffered;
    a filesystem that refuses O_DIRECT gets all of it buffered. The file position ends at the
    end of ``data``."""
    view = data.cast("B") if data.format != "B" else data
    done = 0
    direct = len(view) >= DIRECT_MIN and write_mode(fd, view, probe_dir) == "direct"
    trial = is_trial(fd, view)
    started = diskprobe.trial_clock() if trial else 0.0
    if direct:
        done = write_direct(fd, view)
    write_buffered(fd, view[done:], done)
    os.lseek(fd, len(view), os.SEEK_SET)
    if trial:  # timed with its fsync (the caller's then finds nothing left to flush)
        os.fsync(fd)
        mode = "direct" if done else "buffered"
        note_trial(fd, view, mode, diskprobe.trial_clock() - started)


def write_all(fd: int, data: memoryview) -> None:
    """Write all of ``data`` at the file's position (``os.write`` may write less)."""
    view = data.cast("B") if data.format != "B" else data
    while view:
        written = os.write(fd, view[: 1 << 30])
        view = view[written:]


# ---------------------------------------------------------------------------------- reading
class StreamReader:
    """Sequential reads of one payload file with its checksum computed alongside.

    ``readinto`` fills the caller's buffer directly; each piece is handed to ``executor`` (one
    thread, so pieces are checksummed in order) while the next piece is read. The caller must
    leave filled buffers unchanged until `digest` returns. An I/O error of the reader itself is
    kept in ``failed`` so callers can tell it from their own errors.
    """

    def __init__(
        self,
        handle: Readable,
        size: int,
        crc: Callable[[Any, int], int],
        executor: ThreadPoolExecutor | None,
    ) -> None:
        self.size = size
        self.failed: BaseException | None = None
        self._handle = handle
        self._crc_fn = crc
        self._executor = executor
        self._pos = 0
        self._crc = 0
        self._last: Future[None] | None = None

    @property
    def position(self) -> int:
        return self._pos

    def readinto(self, buffer: Any) -> int:
        """Fill ``buffer`` (fewer bytes only at the end of the file); return the byte count."""
        view = memoryview(buffer).cast("B")
        got = 0
        while got < len(view):
            piece = view[got : got + _READ_PIECE]
            n = self._read_piece(piece)
            if not n:
                break
            self._checksum(piece[:n])
            got += n
        return got

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes as a new ``bytes`` (for headers and gaps)."""
        buffer = bytearray(max(0, min(n, self.size - self._pos)))
        got = self.readinto(buffer)
        return bytes(buffer[:got])

    def digest(self) -> tuple[int, int]:
        """Read what is left, wait for the checksum thread; return (bytes read, crc32c)."""
        scratch = memoryview(bytearray(min(8 << 20, max(1, self.size - self._pos))))
        while True:
            n = self._read_piece(scratch)
            if not n:
                break
            self.settle()  # the scratch buffer is reused: checksum it here
            self._crc = self._crc_fn(scratch[:n], self._crc)
        self.settle()
        return self._pos, self._crc

    def settle(self) -> None:
        """Wait until every piece read so far is checksummed."""
        last, self._last = self._last, None
        if last is not None:
            last.result()

    def _read_piece(self, view: memoryview) -> int:
        # Never past one byte beyond the stated size: enough to tell a longer file, and a
        # planted endless file is not read without bound.
        view = view[: max(0, self.size + 1 - self._pos)]
        if not view:
            return 0
        try:
            n = self._handle.readinto(view) or 0
        except BaseException as exc:
            self.failed = exc
            raise
        self._pos += n
        return n

    def _checksum(self, view: memoryview) -> None:
        if self._executor is None:
            self._crc = self._crc_fn(view, self._crc)
            return

        def step() -> None:
            self._crc = self._crc_fn(view, self._crc)

        previous = self._last
        self._last = self._executor.submit(step)
        if previous is not None:
            previous.result()  # at most one piece ahead of the checksum: errors surface early


# ---------------------------------------------------------------------------------- copying
def copy_verified(
    handle: Readable,
    dest: str,
    crc: Callable[[Any, int], int],
    executor: ThreadPoolExecutor,
    size_hint: int,
) -> tuple[int, int]:
    """Copy ``handle`` to the new file ``dest`` (which must not exist); return (bytes, crc32c).

    At most ``size_hint + 1`` bytes are read: a source longer than stated shows as one byte too
    many, and an endless one is not copied until the disk fills. Files of at most one piece
    are copied in the calling thread; larger ones overlap reading
    (and checksumming) with writing on ``executor``. A read or write error stops the copy and is
    raised once every write already handed over has finished with its buffer.
    """
    pieces = min(_COPY_DEPTH, max(1, -(-size_hint // _COPY_PIECE)))
    total, value = 0, 0
    if pieces == 1:  # nothing to overlap with
        buffer = memoryview(bytearray(min(_COPY_PIECE, max(size_hint, 1 << 16))))
        with open(dest, "xb", buffering=0) as out:
            while n := handle.readinto(buffer[: max(0, size_hint + 1 - total)]):
                value = crc(buffer[:n], value)
                write_all(out.fileno(), buffer[:n])
                total += n
        return total, value
    import mmap

    # Anonymous mappings: zero pages on first touch, not a memset of every buffer.
    buffers = [memoryview(mmap.mmap(-1, _COPY_PIECE)) for _ in range(pieces)]
    # While piece N is read, the writes of the pieces-1 before it may still run: its buffer's
    # previous write has finished.
    with open(dest, "xb", buffering=0) as out, Pending(pieces - 1, executor) as writes:
        _advise_sequential(handle)
        for index in itertools.count():
            buffer = buffers[index % pieces]
            n = handle.readinto(buffer[: max(0, size_hint + 1 - total)])
            if not n:
                break
            value = crc(buffer[:n], value)
            writes.submit(_write_at, out.fileno(), buffer[:n], total)
            total += n
    return total, value


def _write_at(fd: int, view: memoryview, offset: int) -> None:
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _advise_sequential(handle: Any) -> None:
    """Ask for a larger readahead window on a local file (a remote handle has no descriptor)."""
    try:
        os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
    except (AttributeError, OSError, ValueError):
        pass  # io.UnsupportedOperation is an OSError and a ValueError


def copy_mapped(
    src: int, dest: str, size: int, crc: Callable[[Any, int], int], executor: ThreadPoolExecutor
) -> int:
    """Copy the first ``size`` bytes of the file ``src`` to the new file ``dest``; return their
    crc32c, computed on the source pages the copy reads.

    The mapping is safe because payload files are immutable: taskpoint never truncates one
    (retention unlinks, and an unlinked file stays readable through the mapping). The caller
    checks ``size`` against the file first.
    """
    import mmap

    value = 0
    with (
        open(dest, "xb", buffering=0) as out,
        mmap.mmap(src, size, access=mmap.ACCESS_READ) as mapping,
    ):
        mapping.madvise(mmap.MADV_SEQUENTIAL)
        view = memoryview(mapping)
        piece = view[:0]
        try:
            with Pending(2, executor) as writes:
                for offset in range(0, size, _COPY_PIECE):
                    piece = view[offset : offset + _COPY_PIECE]
                    value = crc(piece, value)  # faults the piece in: the copy finds it cached
                    writes.submit(_copy_range, src, out.fileno(), piece, offset)
        finally:
            del piece
            view.release()  # the mapping cannot close while a view of it exists
    return value


def _copy_range(src: int, dst: int, piece: memoryview, offset: int) -> None:
    """Copy ``piece`` (the source's bytes at ``offset``) to the same offset of ``dst``: inside the
    kernel where it can, else written from the mapping (other filesystems, other systems)."""
    global _copy_file_range
    left, position = len(piece), offset
    while left and _copy_file_range:
        try:
            copied = os.copy_file_range(src, dst, left, position, position)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                raise
            _copy_file_range = False  # e.g. a target on another filesystem: write instead
            break
        if not copied:
            raise OSError(errno.EIO, "payload file ended early during restore")
        left, position = left - copied, position + copied
    _write_at(dst, piece[len(piece) - left :], position)
