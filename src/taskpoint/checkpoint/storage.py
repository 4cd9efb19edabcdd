"""Where versions live: the `Store` interface, its two implementations, and what they share.

`LocalStore` (``store_local.py``) talks to the OS directly so it can fsync payload files and
directories and create the manifest exclusively with ``link()``. `FsspecStore`
(``store_fsspec.py``) covers every other fsspec URL (``memory://``, ``s3://`` ...) and creates the
manifest with ``mode="create"`` (``If-None-Match: *`` on S3).

Layout under a scope root::

    v/<id>/...payload...        immutable once written
    v/<id>.manifest.json        written last and exclusively: its existence = committed
    v/<id>                      local: an inline version's manifest being written (a file)
    v/.<id>.manifest.*.tmp      a local manifest being written (swept if left behind)
    v/<id>.writer               object stores: the id's reservation, created exclusively
    v/<id>.retired.<ms>         object stores: retired at <ms> (Unix ms); payload kept for a grace

Two writers never share a payload prefix: on local disk ``mkdir`` reserves an id, on an object
store an exclusive ``<id>.writer`` object does. An *inline* version (a small ``write()``, its
bytes inside the manifest) has no payload: on local disk its manifest is written to the file
``v/<id>``, created exclusively (so it and a ``mkdir`` reservation exclude each other), then
linked to its manifest name; on an object store it is the conditional manifest PUT alone. Either
way an id taken meanwhile makes the writer try the next one. Readers and writers of a local
version hold a shared ``flock`` on its payload directory, and its payload is deleted only under an
exclusive one, so no process deletes what another still reads or writes. An object store has no
locks: retention marks a version retired and deletes its payload only after a grace period, long
enough for any reader that listed it to finish.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from taskpoint.checkpoint.localio import Readable, StreamReader, copy_verified
from taskpoint.checkpoint.manifest import FileEntry, Manifest
from taskpoint.checkpoint.payload import Source
from taskpoint.checkpoint.version import parse_version_id

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

CHUNK = 8 << 20  # big chunks: few syscalls, and the checksum releases the GIL per chunk
MANIFEST_SUFFIX = ".manifest.json"
WRITER_SUFFIX = ".writer"
RETIRED_MARK = ".retired."
_helper_pools: dict[str, tuple[int, ThreadPoolExecutor]] = {}


def helper_thread(name: str) -> ThreadPoolExecutor:
    """One named helper thread per process (a pool inherited through fork has no live thread)."""
    pid, pool = _helper_pools.get(name, (None, None))
    if pool is None or pid != os.getpid():
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(1, thread_name_prefix=f"taskpoint-{name}")
        _helper_pools[name] = (os.getpid(), pool)
    return pool


def crc_executor() -> ThreadPoolExecutor:
    """The checksum thread: checksums run beside the reads and writes they verify."""
    return helper_thread("crc")


class ChecksumMismatch(OSError):
    """A payload file's bytes do not match the manifest."""


# Checksums of this many bytes or more let other threads run meanwhile (~10 us of work at
# ~20 GB/s). Below it the GIL is kept: handing it over when another thread wants it costs the
# caller far more than the checksum (it waits until that thread lets go of it again).
_RELEASE_GIL_FROM = 256 * 1024


def crc_of(data: memoryview | bytes, value: int = 0) -> int:
    size = data.nbytes if isinstance(data, memoryview) else len(data)
    release = 1 if size >= _RELEASE_GIL_FROM else 0
    return _crc32c()(data, value=value, gil_release_mode=release)


def _crc32c() -> Any:
    """The checksum function, imported on first use (the module costs ~15 ms at import)."""
    global _crc_fn
    if _crc_fn is None:
        import crc32c

        _crc_fn = crc32c.crc32c
    return _crc_fn


_crc_fn: Any = None


@dataclass
class Listing:
    """One look at ``v/``: committed ids (newest first), payload prefixes, stray temp files, and
    (object stores) reservation and retirement markers by id."""

    committed: list[str] = field(default_factory=list)
    payloads: set[str] = field(default_factory=set)
    temps: list[str] = field(default_factory=list)
    markers: dict[str, list[str]] = field(default_factory=dict)  # id -> marker names
    retired: dict[str, int] = field(default_factory=dict)  # id -> retired at (Unix ms)

    def known_ids(self) -> set[str]:
        """Every id in use in any way: the next reservation starts after all of them."""
        return {*self.committed, *self.payloads, *self.markers}


def classify(names: list[str]) -> Listing:
    listing = Listing()
    committed: list[tuple[tuple[int, int], str]] = []  # each id parsed once, sorted by it
    for name in names:
        if name.startswith(".") and name.endswith(".tmp"):
            listing.temps.append(name)
        elif name.endswith(MANIFEST_SUFFIX):
            vid = name[: -len(MANIFEST_SUFFIX)]
            parsed = parse_version_id(vid)
            if parsed is not None:
                committed.append((parsed, vid))
        elif parse_version_id(name) is not None:
            listing.payloads.add(name)
        else:
            _classify_marker(listing, name)
    committed.sort(reverse=True)
    listing.committed = [vid for _, vid in committed]
    return listing


def _classify_marker(listing: Listing, name: str) -> None:
    vid, dot, rest = name.partition(".")
    if not dot or parse_version_id(vid) is None:
        return  # a foreign name: ignored
    if "." + rest == WRITER_SUFFIX:
        listing.markers.setdefault(vid, []).append(name)
    elif ("." + rest).startswith(RETIRED_MARK) and rest[len(RETIRED_MARK) - 1 :].isdigit():
        listing.markers.setdefault(vid, []).append(name)
        listing.retired[vid] = int(rest[len(RETIRED_MARK) - 1 :])


def iter_source_chunks(src: Source, buffer: bytearray) -> Any:
    """Yield memoryviews over a source's bytes, in big chunks (the buffer is reused)."""
    if src.data is not None:
        for start in range(0, len(src.data), 64 << 20):
            yield src.data[start : start + (64 << 20)]
        return
    handle: BinaryIO = open(src.file, "rb") if src.file is not None else src.stream  # type: ignore[assignment]  # noqa: SIM115
    view = memoryview(buffer)
    try:
        while True:
            n = handle.readinto(view) if hasattr(handle, "readinto") else _read_into(handle, view)
            if not n:
                return
            yield view[:n]
    finally:
        if src.file is not None:
            handle.close()


def _read_into(handle: BinaryIO, view: memoryview) -> int:
    chunk = handle.read(len(view))
    view[: len(chunk)] = chunk
    return len(chunk)


class Store(Protocol):
    """What a checkpoint scope needs from where its versions live (see the layout above).

    Ids are version ids; ``rel`` paths are validated relative POSIX paths inside a version.
    Nothing outside ``checkpoint/`` reaches past this interface.
    """

    is_local: bool
    root: str

    @property
    def staging_root(self) -> str | None: ...  # where async snapshots are staged (local only)

    def ensure(self) -> None: ...  # create (local) or check (object store) the scope
    def scan(self) -> Listing: ...
    def reserve(self, vid: str) -> bool: ...  # exclusively; False if another writer has it
    def holding(self, vid: str) -> AbstractContextManager[None]: ...  # while reading/writing
    def write_source(self, vid: str, src: Source, buffer: bytearray) -> FileEntry: ...
    def make_dir(self, vid: str, rel: str) -> None: ...
    def make_link(self, vid: str, rel: str, target: str) -> None: ...
    def seal(self, vid: str) -> None: ...  # make the payload durable
    def commit(self, vid: str, manifest: bytes) -> None: ...  # exclusive: FileExistsError
    def commit_inline(self, vid: str, manifest: bytes) -> bool: ...  # False: the id is taken
    def read_manifest(self, vid: str) -> bytes: ...
    def has_manifest(self, vid: str) -> bool: ...
    def read_file(self, vid: str, entry: FileEntry) -> bytes: ...
    def open_reader(self, vid: str, entry: FileEntry) -> AbstractContextManager[StreamReader]: ...
    def open_file(self, vid: str, entry: FileEntry) -> AbstractContextManager[Any]: ...
    def copy_out(self, vid: str, entry: FileEntry, dest: str) -> None: ...
    # Uncommit; returns a leftover name for `delete_temp` to delete later (off the writer's
    # path), or None.
    def retire(self, vid: str, grace: bool = False) -> str | None: ...
    def delete_manifest(self, vid: str) -> None: ...
    def delete_payload(self, vid: str, markers: list[str] | None = None) -> bool: ...
    def delete_temp(self, name: str) -> None: ...


def make_store(url: str, storage_options: dict[str, Any], timeout: float | None = None) -> Store:
    """The store for ``url``: local paths (and fsspec's local filesystem) get `LocalStore`,
    every other fsspec URL `FsspecStore`. Creates nothing (see `Store.ensure`)."""
    from taskpoint.checkpoint.store_fsspec import FsspecStore, url_to_fs
    from taskpoint.checkpoint.store_local import LocalStore

    if "://" not in url or url.startswith("file://"):
        if storage_options:
            raise ValueError(f"storage_options are not used for a local path ({url!r})")
        return LocalStore(url.removeprefix("file://"))
    fs, root = url_to_fs(url, storage_options)
    if type(fs).__name__ == "LocalFileSystem":
        return LocalStore(root)
    return FsspecStore(fs, root, timeout)


def copy_verified_to(handle: Readable, dest: str, entry: FileEntry) -> None:
    # copy_verified reads at most entry.size + 1 bytes: enough to tell a longer file.
    verify(entry, *copy_verified(handle, dest, crc_of, helper_thread("copy"), entry.size))


def verify_reader(reader: StreamReader, entry: FileEntry) -> None:
    """Read the rest of ``reader`` and check size and checksum against the manifest."""
    verify(entry, *reader.digest())


def check_size(handle: Any, entry: FileEntry) -> None:
    """Fail before reading a local payload file whose size is not the manifest's."""
    size = os.fstat(handle.fileno()).st_size
    if size != entry.size:
        raise ChecksumMismatch(f"{entry.path}: size {size}, manifest says {entry.size}")


def inline_payload(manifest: Manifest) -> bytes:
    """The bytes of an inline version, checked against its manifest entry like a file's."""
    data, entry = manifest.inline, manifest.files[0]
    assert data is not None
    verify(entry, len(data), crc_of(data))
    return bytes(data)


def verify(entry: FileEntry, size: int, crc: int) -> None:
    if size != entry.size:
        raise ChecksumMismatch(f"{entry.path}: size {size}, manifest says {entry.size}")
    if crc != entry.crc32c:
        raise ChecksumMismatch(f"{entry.path}: checksum mismatch (file corrupted)")
