"""``throttled://``: a local filesystem (fsspec) that writes at a set speed, like a slow store.

Every byte written through it sleeps ``1 / ThrottledFS.bytes_per_s`` seconds (in pieces of
`PIECE` bytes, so a write is slow all along, as an upload is), and each file opened for writing
costs ``ThrottledFS.call_s`` more; reads run at full speed. ``bytes_per_s = None`` is full
speed, and a write under way speeds up as soon as it is set so (a test lets an abandoned
write finish that way). Because it is not fsspec's ``LocalFileSystem`` class, taskpoint drives
it through its generic fsspec store, the path remote stores take. A forked attempt process
inherits the settings.
"""

from __future__ import annotations

import os
import time
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from support.polling import wait_until

PROTOCOL = "throttled"
PIECE = 256 << 10


class ThrottledFS(LocalFileSystem):
    protocol = (PROTOCOL,)
    bytes_per_s: float | None = None
    call_s: float = 0.0
    written = 0  # bytes written so far, by this process: a test sees a write get under way

    def __init__(self, auto_mkdir: bool = True, **kwargs: Any) -> None:
        super().__init__(auto_mkdir=auto_mkdir, **kwargs)  # like an object store: no mkdir

    def _open(self, path: str, mode: str = "rb", block_size: Any = None, **kwargs: Any) -> Any:
        handle = super()._open(path, mode, block_size=block_size, **kwargs)
        if any(c in mode for c in "wxa"):
            if ThrottledFS.call_s:
                time.sleep(ThrottledFS.call_s)
            return _Slow(handle)
        return handle


class _Slow:
    """A writable file that writes at ``ThrottledFS.bytes_per_s``."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        for start in range(0, len(view), PIECE):
            piece = view[start : start + PIECE]
            rate = ThrottledFS.bytes_per_s
            if rate:
                time.sleep(len(piece) / rate)
            self._handle.write(piece)
            ThrottledFS.written += len(piece)
        return len(view)

    def __enter__(self) -> _Slow:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


def register() -> None:
    """Make ``throttled://`` URLs work in this process (and in the attempts it forks)."""
    fsspec.register_implementation(PROTOCOL, ThrottledFS, clobber=True)


def under_way(write: Any) -> Any:
    """Make the async ``write()`` call (a thunk) and return its future once the writer is
    writing its bytes, that is once it is in flight, no longer queued."""
    before = ThrottledFS.written
    future = write()
    wait_until(lambda: ThrottledFS.written > before or future.done(), 60, "a write under way")
    return future


def url(path: str | os.PathLike[str]) -> str:
    return f"{PROTOCOL}://{os.path.abspath(path)}"


def local_path(url_: str) -> str:
    """Where the files of a ``throttled://`` URL are."""
    assert url_.startswith(f"{PROTOCOL}://"), url_
    return url_[len(PROTOCOL) + 3 :]
