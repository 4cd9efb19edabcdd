"""``enospc://``: a local filesystem (fsspec) whose disk "fills up" at byte N.

Used where a real small filesystem cannot be mounted (not root, no tmpfs): every byte written
through it counts against `FullDiskFS.budget`; the write that would pass it writes what still
fits and raises ``OSError(ENOSPC)``, like a real full disk. ``budget = None`` means unlimited.
Because it is not fsspec's ``LocalFileSystem`` class, taskpoint drives it through its generic
fsspec store (the path remote stores take).
"""

from __future__ import annotations

import errno
import os
import threading
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

PROTOCOL = "enospc"


class FullDiskFS(LocalFileSystem):
    protocol = (PROTOCOL,)
    budget: int | None = None
    failures = 0
    _lock = threading.Lock()

    def __init__(self, auto_mkdir: bool = True, **kwargs: Any) -> None:
        super().__init__(auto_mkdir=auto_mkdir, **kwargs)  # like an object store: no mkdir

    @classmethod
    def take(cls, n: int) -> int:
        """Reserve up to ``n`` bytes; return how many fit (all of them when unlimited)."""
        with cls._lock:
            if cls.budget is None:
                return n
            fit = min(n, cls.budget)
            cls.budget -= fit
            return fit

    def _open(self, path: str, mode: str = "rb", block_size: Any = None, **kwargs: Any) -> Any:
        handle = super()._open(path, mode, block_size=block_size, **kwargs)
        if any(c in mode for c in "wxa"):
            return _Limited(handle)
        return handle

    # Deleting files gives their space back, as on a real disk.
    def rm_file(self, path: str) -> None:
        size = _size_of(self._strip_protocol(path))
        super().rm_file(path)
        FullDiskFS.refund(size)

    def rm(self, path: Any, recursive: bool = False, maxdepth: Any = None) -> None:
        paths = [path] if isinstance(path, str) else list(path)
        size = sum(_size_of(self._strip_protocol(p)) for p in paths)
        super().rm(path, recursive=recursive, maxdepth=maxdepth)
        FullDiskFS.refund(size)

    @classmethod
    def refund(cls, n: int) -> None:
        with cls._lock:
            if cls.budget is not None:
                cls.budget += n


def _size_of(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
    return total


class _Limited:
    """A writable file whose writes stop at the disk's budget with ENOSPC."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        fit = FullDiskFS.take(len(view))
        if fit:
            self._handle.write(view[:fit])
        if fit < len(view):
            FullDiskFS.failures += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return len(view)

    def __enter__(self) -> _Limited:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


def register() -> None:
    """Make ``enospc://`` URLs work in this process (``TASKPOINT_TEST_DISK_BYTES`` sets the
    budget of a child process)."""
    fsspec.register_implementation(PROTOCOL, FullDiskFS, clobber=True)
    if os.environ.get("TASKPOINT_TEST_DISK_BYTES"):
        FullDiskFS.budget = int(os.environ["TASKPOINT_TEST_DISK_BYTES"])


def url(path: str | os.PathLike[str]) -> str:
    return f"{PROTOCOL}://{os.path.abspath(path)}"
