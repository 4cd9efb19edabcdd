"""Stream one checkpoint version as a tar archive, file by file, in bounded memory.

`tarfile` in stream mode (``w|``) writes each member's header, then copies its bytes from the
store in chunks straight to the output; nothing holds a whole file, let alone a whole version.
Every file's size and CRC-32C are checked against the manifest while it is copied: if the bytes
in the store are corrupt, `CorruptPayload` is raised before the archive is finished, so the server
can abort the response and the client sees a failed (never a silently wrong) download.
"""

from __future__ import annotations

import tarfile
from typing import BinaryIO, Protocol

from taskpoint.checkpoint.manifest import FileEntry, Manifest
from taskpoint.checkpoint.storage import crc_of

COPY_CHUNK = 1 << 20


class CorruptPayload(OSError):
    """A payload file in the store does not match its manifest (size or checksum)."""


class _Writable(Protocol):
    def write(self, data: bytes) -> object: ...


class _Opener(Protocol):
    def __call__(self, version_id: str, entry: FileEntry) -> BinaryIO: ...


class _CheckedReader:
    """Reads a payload file for tarfile while computing its CRC-32C."""

    def __init__(self, handle: BinaryIO, entry: FileEntry) -> None:
        self.handle, self.entry = handle, entry
        self.crc, self.size = 0, 0

    def read(self, n: int = -1) -> bytes:
        data = self.handle.read(n)
        self.crc = crc_of(data, self.crc)
        self.size += len(data)
        return data

    def verify(self) -> None:
        extra = self.handle.read(1)  # a file longer than its manifest says is corrupt too
        if self.size != self.entry.size or extra or self.crc != self.entry.crc32c:
            raise CorruptPayload(
                f"payload file {self.entry.path!r} does not match its manifest "
                f"(size {self.size}{'+' if extra else ''} vs {self.entry.size}, or checksum)"
            )


def write_version_tar(manifest: Manifest, open_file: _Opener, out: _Writable) -> None:
    """Write ``manifest``'s version as a tar stream to ``out``; members sit under ``<id>/``."""
    root = manifest.id
    mtime = manifest.created.timestamp()
    with tarfile.open(
        fileobj=out,  # type: ignore[arg-type]
        mode="w|",
        bufsize=64 * 1024,
        format=tarfile.PAX_FORMAT,
        copybufsize=COPY_CHUNK,
    ) as tar:
        tar.addfile(_info(root, tarfile.DIRTYPE, 0o755, mtime))
        for rel in manifest.dirs:
            tar.addfile(_info(f"{root}/{rel}", tarfile.DIRTYPE, 0o755, mtime))
        for entry in manifest.files:
            info = _info(f"{root}/{entry.path}", tarfile.REGTYPE, 0o644, mtime)
            info.size = entry.size
            with open_file(manifest.id, entry) as handle:
                reader = _CheckedReader(handle, entry)
                try:
                    tar.addfile(info, reader)  # type: ignore[arg-type]
                except tarfile.ReadError as exc:  # pragma: no cover - older Pythons
                    raise CorruptPayload(str(exc)) from exc
                except OSError as exc:
                    if "unexpected end of data" in str(exc):  # shorter than the manifest says
                        raise CorruptPayload(f"payload file {entry.path!r} is truncated") from exc
                    raise
                reader.verify()
        for rel, target in manifest.links.items():
            info = _info(f"{root}/{rel}", tarfile.SYMTYPE, 0o777, mtime)
            info.linkname = target  # relative and checked to stay inside the version
            tar.addfile(info)


def _info(name: str, kind: bytes, mode: int, mtime: float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = kind, mode, int(mtime)
    return info


def archive_name(execution_id: str, node_dir: str, version_id: str) -> str:
    """The download's file name: ``<execution>-<node>-<version>.tar``."""
    return f"{execution_id}-{node_dir}-{version_id}.tar"
