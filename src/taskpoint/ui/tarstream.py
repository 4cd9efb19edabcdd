"""Stream one checkpoint version as a tar archive, file by file, in bounded memory, sending only
bytes that were verified against the manifest.

A store is untrusted (DESIGN.md, trust boundaries): a payload file may have been replaced by a link
to any file the server's user can read, by a FIFO, or by a file longer or shorter than its
manifest says, with the manifest's size set to match. So nothing of a file is sent before it has
been verified, and each file goes through two passes over **one open handle**:

1. **Verify.** Read the file in chunks, never more than the manifest's size plus one byte (a file
   longer than stated is refused, so an under-claimed size leaks nothing), and check its size and
   CRC-32C against the manifest. Remember the running CRC at the end of every chunk.
2. **Send.** Seek back to the start and read it again, chunk by chunk; a chunk is handed to the
   archive only once the running CRC up to its end equals the one remembered in pass 1. A file
   changed in between (rewritten in place, or an object replaced between two requests) is caught
   at the first chunk that differs, *before* that chunk is sent.

Why this and not a spool (a private copy made while verifying, then sent): it holds for a 10 GiB
version without needing 10 GiB of temporary space (``/tmp`` is often RAM-backed) or a second
write of every byte, and it is as strong as the manifest's own checksum: a chunk that passes has
the CRC of the verified bytes at the same place. On local disk the handle is opened below the
scope's ``v/`` directory without following any link and must be a regular file (`open_in_store`),
so what was verified and what is sent come from the same file. Memory: one chunk (1 MiB) plus one
remembered CRC per chunk (8 bytes per MiB).

If the first file fails verification nothing at all has been sent, and the server answers with
an error; a later file that fails raises `CorruptPayload` mid-archive, and the server then ends
the connection without the final chunk, which every HTTP client reports as an incomplete download.
"""

from __future__ import annotations

import io
import tarfile
from array import array
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, BinaryIO, Protocol

from taskpoint.checkpoint.manifest import FileEntry, Manifest
from taskpoint.checkpoint.storage import crc_of

CHUNK = 1 << 20


class CorruptPayload(OSError):
    """A payload file in the store does not match its manifest (size, checksum, or kind)."""


class _Writable(Protocol):
    def write(self, data: bytes) -> object: ...


Opener = Callable[[str, FileEntry], AbstractContextManager[BinaryIO]]


def _read_full(handle: BinaryIO, n: int) -> bytes:
    """Up to ``n`` bytes: fewer only at the end of the file."""
    data = handle.read(n)
    if data is None or len(data) == n or not data:
        return data or b""
    parts = [data]
    got = len(data)
    while got < n:
        more = handle.read(n - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def verify_file(handle: BinaryIO, entry: FileEntry) -> array:
    """Pass 1: check the file against its manifest entry, reading at most ``size + 1`` bytes;
    return the running CRC-32C at the end of each chunk (pass 2 checks against it)."""
    marks = array("L")
    crc, done = 0, 0
    while done < entry.size:
        data = _read_full(handle, min(CHUNK, entry.size - done))
        if not data:
            raise CorruptPayload(
                f"payload file {entry.path!r} is shorter than its manifest says "
                f"({done} bytes, manifest: {entry.size})"
            )
        crc = crc_of(data, crc)
        done += len(data)
        marks.append(crc)
    if _read_full(handle, 1):
        raise CorruptPayload(
            f"payload file {entry.path!r} is longer than its manifest says ({entry.size} bytes)"
        )
    if crc != entry.crc32c:
        raise CorruptPayload(f"payload file {entry.path!r} does not match its manifest checksum")
    return marks


class _VerifiedReader:
    """Pass 2: the file again from the start, released chunk by chunk once each chunk's running
    CRC equals the one pass 1 verified; never more than the manifest's size."""

    def __init__(self, handle: BinaryIO, entry: FileEntry, marks: array) -> None:
        self.handle, self.entry, self.marks = handle, entry, marks
        self.index, self.crc, self.done = 0, 0, 0
        self.buffer, self.offset = b"", 0

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            n = self.entry.size - self.done + len(self.buffer) - self.offset
        parts: list[bytes] = []
        want = n
        while want > 0:
            if self.offset >= len(self.buffer) and not self._next_chunk():
                break
            part = self.buffer[self.offset : self.offset + want]
            self.offset += len(part)
            want -= len(part)
            parts.append(part)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _next_chunk(self) -> bool:
        size = min(CHUNK, self.entry.size - self.done)
        if size <= 0:
            return False
        data = _read_full(self.handle, size)
        crc = crc_of(data, self.crc)
        if len(data) != size or crc != self.marks[self.index]:
            raise CorruptPayload(
                f"payload file {self.entry.path!r} changed after it was verified "
                f"(at byte {self.done}); the download is aborted"
            )
        self.crc, self.done, self.index = crc, self.done + size, self.index + 1
        self.buffer, self.offset = data, 0
        return True


class VersionTar:
    """One version as a tar stream; members sit under ``<id>/``.

    ``open_file(version_id, entry)`` opens a payload file (a context manager over a seekable
    binary handle). `write` calls ``started()`` just before the archive's first byte goes out:
    after the first file was verified, so a damaged single-file version sends nothing at all.
    """

    def __init__(self, manifest: Manifest, open_file: Opener) -> None:
        self.manifest = manifest
        self.open_file = open_file
        self.mtime = int(manifest.created.timestamp())  # fails here, before anything is sent

    def write(self, out: _Writable, started: Callable[[], None] = lambda: None) -> None:
        root = self.manifest.id
        files = self.manifest.files
        with self._verified(files[0] if files else None) as first:
            started()
            with tarfile.open(  # type: ignore[call-overload]  # stub lacks copybufsize
                fileobj=out,  # type: ignore[arg-type]
                mode="w|",
                bufsize=64 * 1024,
                format=tarfile.PAX_FORMAT,
                copybufsize=CHUNK,
            ) as tar:
                tar.addfile(self._info(root, tarfile.DIRTYPE, 0o755))
                for rel in self.manifest.dirs:
                    tar.addfile(self._info(f"{root}/{rel}", tarfile.DIRTYPE, 0o755))
                if first is not None:
                    self._add(tar, *first)
                for entry in files[1:]:
                    with self._verified(entry) as later:
                        self._add(tar, *later)
                for rel, target in self.manifest.links.items():
                    info = self._info(f"{root}/{rel}", tarfile.SYMTYPE, 0o777)
                    info.linkname = target  # relative and checked to stay inside the version
                    tar.addfile(info)

    @contextmanager
    def _verified(self, entry: FileEntry | None) -> Iterator[Any]:
        """Open ``entry``, verify it (pass 1), rewind: ``(entry, reader)`` for pass 2."""
        if entry is None:
            yield None
            return
        inline = self.manifest.inline  # a small version's bytes, inside its manifest
        opened = nullcontext(io.BytesIO(inline)) if inline is not None else None
        with opened or self.open_file(self.manifest.id, entry) as handle:
            marks = verify_file(handle, entry)
            handle.seek(0)
            yield entry, _VerifiedReader(handle, entry, marks)

    def _add(self, tar: tarfile.TarFile, entry: FileEntry, reader: _VerifiedReader) -> None:
        info = self._info(f"{self.manifest.id}/{entry.path}", tarfile.REGTYPE, 0o644)
        info.size = entry.size
        tar.addfile(info, reader)  # type: ignore[arg-type]

    def _info(self, name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.mtime = kind, mode, self.mtime
        return info


def archive_name(execution_id: str, node_dir: str, version_id: str) -> str:
    """The download's file name: ``<execution>-<node>-<version>.tar``."""
    return f"{execution_id}-{node_dir}-{version_id}.tar"
