"""What an attempt printed, read for the web view a bounded piece at a time.

The engine keeps each attempt's stdout and stderr at ``log_url(node_url, n)`` (engine/logs.py),
in the store beside its checkpoints; the store is untrusted (DESIGN.md, trust boundaries). On
local disk the file is opened below the storage root one component at a time without following
any link, without blocking, and only if it is a regular file (`checkpoint.safeopen`): a link to
another file, a FIFO or a device is refused, never read. On an object store a byte range is
fetched with the storage options the other blob reads use. Either way one read returns at most
`MAX_CHUNK` bytes, from ``offset`` or the last ``tail`` bytes, and the log's size when it was
read, so a page appends what follows as the attempt prints it. An attempt that printed nothing
has no file: its log is empty. Nothing is ever created or written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from taskpoint.checkpoint.safeopen import NotARegularFile, open_in_store

MAX_CHUNK = 1 << 20  # bytes of one response


class LogUnreadable(Exception):
    """The log exists but cannot be read as a plain file (answered with 502)."""


@dataclass(frozen=True)
class LogChunk:
    """``data`` starts at byte ``start`` of a log that was ``size`` bytes long when read."""

    data: bytes
    start: int
    size: int


def _window(size: int, offset: int, tail: int | None) -> tuple[int, int]:
    """The byte range ``[start, end)`` to send from a log of ``size`` bytes."""
    start = max(0, size - min(tail, MAX_CHUNK)) if tail is not None else min(offset, size)
    return start, min(size, start + MAX_CHUNK)


def _local(url: str) -> str | None:
    if url.startswith("file://"):
        return url[len("file://") :]
    return None if "://" in url else url


class AttemptLogSource:
    """The log of one attempt: ``url`` (from `log_url`) below the storage root ``storage``."""

    def __init__(self, storage: str, url: str, options: dict[str, Any] | None = None) -> None:
        self.storage, self.url, self.options = storage, url, dict(options or {})

    def read(self, offset: int = 0, tail: int | None = None) -> LogChunk:
        """At most `MAX_CHUNK` bytes from ``offset``, or the last ``tail`` bytes."""
        root = _local(self.storage)
        if root is not None:
            return self._read_local(root, offset, tail)
        return self._read_remote(offset, tail)

    def _relative_parts(self) -> list[str]:
        prefix = self.storage.rstrip("/") + "/"
        parts = self.url[len(prefix) :].split("/") if self.url.startswith(prefix) else []
        if not parts or any(p in ("", ".", "..") for p in parts):
            raise LogUnreadable(f"the log {self.url} is not below the storage {self.storage}")
        return parts

    def _read_local(self, root: str, offset: int, tail: int | None) -> LogChunk:
        parts = self._relative_parts()
        try:
            handle = open_in_store(root, parts)
        except FileNotFoundError:
            return LogChunk(b"", 0, 0)  # the attempt printed nothing (or has not yet)
        except NotARegularFile as exc:
            raise LogUnreadable(f"the log is not a regular file: {exc}") from None
        except OSError as exc:
            raise LogUnreadable(f"cannot open the log: {type(exc).__name__}: {exc}") from None
        with handle:
            size = os.fstat(handle.fileno()).st_size
            start, end = _window(size, offset, tail)
            pieces, at = [], start
            while at < end:
                piece = os.pread(handle.fileno(), end - at, at)
                if not piece:
                    break  # truncated since the fstat
                pieces.append(piece)
                at += len(piece)
        return LogChunk(b"".join(pieces), start, size)

    def _read_remote(self, offset: int, tail: int | None) -> LogChunk:
        from taskpoint.checkpoint.store_fsspec import url_to_fs

        fs, path = url_to_fs(self.url, self.options)
        if type(fs).__name__ == "LocalFileSystem":  # e.g. local:// : read it as a local file
            _, root = url_to_fs(self.storage, self.options)
            return AttemptLogSource(root, path).read(offset, tail)
        try:
            fs.invalidate_cache(path)
            size = int(fs.size(path) or 0)
            start, end = _window(size, offset, tail)
            data = fs.cat_file(path, start=start, end=end) if end > start else b""
        except FileNotFoundError:
            return LogChunk(b"", 0, 0)
        except Exception as exc:
            raise LogUnreadable(f"cannot read the log: {type(exc).__name__}: {exc}") from None
        return LogChunk(bytes(data[: end - start]), start, size)
