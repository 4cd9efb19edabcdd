"""Open files in a store that other people can write to, without trusting what is there.

A store's content is untrusted (DESIGN.md, trust boundaries): a payload file or a manifest may have
been replaced by a symlink to any file the reader can read (``/etc/shadow``, ``/dev/zero``), by a
FIFO that blocks ``open()`` and ``read()`` forever, or by a file longer than its manifest says.
`open_in_store` walks from a trusted directory one component at a time with ``O_NOFOLLOW`` (so no
component, the last included, may be a link), opens the last one without blocking, and checks with
``fstat`` *after* the open that it is a regular file: what was checked is what is read.
"""

from __future__ import annotations

import errno
import io
import os
import stat
from typing import BinaryIO

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class NotARegularFile(OSError):
    """A store entry that should be a regular file is a link, a FIFO, a device or a directory."""


def open_in_store(base: str, parts: list[str]) -> io.FileIO:
    """Open ``base/parts[0]/.../parts[-1]`` for reading; every part must be a real entry.

    ``base`` is trusted (the scope's ``v/`` directory, reached however its path says); below it a
    symlink anywhere, or a last entry that is not a regular file, raises `NotARegularFile`
    (a missing one raises `FileNotFoundError`). The returned file is unbuffered and blocking.
    """
    rel = "/".join(parts)
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    for part in parts[:-1]:
        fd = _step(fd, part, _DIR_FLAGS, rel)  # closes the parent's fd, also when it fails
    fd = _step(fd, parts[-1], _FILE_FLAGS, rel)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotARegularFile(f"{rel} is not a regular file")
        os.set_blocking(fd, True)
        return io.FileIO(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _step(dir_fd: int, name: str, flags: int, rel: str) -> int:
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", rel) from None
    except OSError as exc:
        # ELOOP: a symlink (O_NOFOLLOW); ENOTDIR: a file where a directory should be.
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise NotARegularFile(f"{rel}: {name!r} is a link or not a directory") from exc
        raise
    finally:
        os.close(dir_fd)


def read_bounded(handle: BinaryIO, limit: int) -> bytes:
    """Read the whole file, refusing one longer than ``limit`` bytes (never reads past it).

    The buffer grows with what is actually read (a regular file's size from ``fstat`` sizes it
    up front): ``read(limit + 1)`` would allocate the whole limit for every small manifest.
    """
    try:
        expected = os.fstat(handle.fileno()).st_size
    except (AttributeError, OSError, ValueError):
        expected = 0
    pieces, total = [], 0
    while total <= limit:
        piece = handle.read(min(limit + 1 - total, max(expected + 1 - total, _PIECE)))
        if not piece:
            break
        pieces.append(piece)
        total += len(piece)
    if total > limit:
        raise NotARegularFile(f"file is longer than {limit} bytes")
    return b"".join(pieces) if len(pieces) != 1 else pieces[0]


_PIECE = 64 << 10
