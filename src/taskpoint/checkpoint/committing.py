"""Writing one version: take an id, write it, commit it (DESIGN.md, the commit protocol).

`VersionWriter` is the commit side of a `Checkpoint` scope (which serialises calls to it). A
version comes in two layouts:

- **payload**: its files under the prefix ``v/<id>/``, reserved exclusively first (``mkdir`` on
  local disk, a conditional PUT of ``<id>.writer`` on an object store), written, made durable
  (`Store.seal`), and committed by creating ``v/<id>.manifest.json`` exclusively;
- **inline**: a ``write()`` of at most ``INLINE_MAX`` bytes, whose bytes go inside the manifest
  itself (format 2, base64). Its commit is the manifest alone (`Store.commit_inline`): on local
  disk one file and two syncs instead of a directory, two files and five syncs; on an object store
  one conditional PUT. The commit is also its reservation, so an id taken meanwhile (by another
  writer of the same attempt) simply moves it to the next id.

The two exclude each other only at the manifest: an inline writer may commit
an id another writer of the same attempt reserved for a payload. That writer then finds the id
taken at its own commit and writes the version again under the next id (once more at most,
twice in all, and only if its sources can be read again: a stream cannot).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

from taskpoint.checkpoint.failures import describe, storage_errors
from taskpoint.checkpoint.manifest import FileEntry, Manifest
from taskpoint.checkpoint.payload import BYTES_NAME, Payload
from taskpoint.checkpoint.retention import Retention
from taskpoint.checkpoint.storage import CHUNK, Listing, Store, crc_of
from taskpoint.checkpoint.version import CheckpointVersion, format_version_id, parse_version_id
from taskpoint.errors import CheckpointError

_REWRITES = 3  # tries of a payload version whose reserved id an inline writer committed


class VersionWriter:
    """Writes versions of one scope under one attempt number, in call order."""

    def __init__(
        self,
        store: Store,
        url: str,
        attempt: int,
        retention: Retention,
        scan: Callable[[], Listing],
    ) -> None:
        self._store = store
        self.url = url
        self.attempt = attempt
        self._retention = retention
        self._scan = scan
        self.next_seq: int | None = None  # the next sequence number to try (after a scan)
        self._buffer: bytearray | None = None

    def write(
        self,
        payload: Payload,
        step: int | None,
        metadata: dict[str, Any],
        cancelled: Callable[[], bool] = lambda: False,
    ) -> CheckpointVersion | None:
        """Commit ``payload`` as a new version; the caller discards the payload afterwards.

        ``None`` when ``cancelled()`` turned true before the commit (checked before each file
        and right before the manifest, see ``deadline.py``): nothing is committed then, and
        what was written of the payload is deleted."""
        if cancelled():
            return None
        inline = payload.inline_data()
        if inline is not None:
            return self._write_inline(inline, step, metadata)
        for tries in itertools.count(1):
            with storage_errors(self.url, "write a checkpoint version"):
                vid, seq = self._reserve_id()
            try:
                return self._write_payload(vid, seq, payload, step, metadata, cancelled)
            except _Cancelled:
                return None
            except _IdTaken:
                rereadable = all(src.stream is None for src in payload.sources)
                if tries >= _REWRITES or not rereadable:
                    raise CheckpointError(
                        f"could not commit checkpoint version {vid} at {self.url}: another "
                        "writer with the same attempt number committed that id first"
                    ) from None
        raise AssertionError("unreachable")

    def _write_inline(
        self, data: memoryview, step: int | None, metadata: dict[str, Any]
    ) -> CheckpointVersion:
        """A small version as its manifest alone; an id taken meanwhile: the next one."""
        entry = FileEntry(BYTES_NAME, len(data), crc_of(data))
        while True:
            seq = self._take_seq()
            vid = format_version_id(self.attempt, seq)
            manifest = Manifest(vid, self.attempt, seq, "bytes", step, metadata, files=[entry])
            manifest.inline = data
            try:
                with storage_errors(self.url, f"write checkpoint version {vid}"):
                    if self._store.commit_inline(vid, manifest.dumps()):
                        return manifest.to_version()
            except BaseException:
                # A store without atomic writes may hold a partial manifest (a full disk): it
                # would pass for a committed version. (An id taken is no error: not ours.)
                _quietly(lambda: self._store.delete_manifest(vid))  # noqa: B023
                raise

    def _write_payload(
        self,
        vid: str,
        seq: int,
        payload: Payload,
        step: int | None,
        metadata: dict[str, Any],
        cancelled: Callable[[], bool],
    ) -> CheckpointVersion:
        store = self._store
        manifest = Manifest(vid, self.attempt, seq, payload.kind, step, metadata)
        if self._buffer is None:
            self._buffer = bytearray(CHUNK)
        committing = False
        try:
            with storage_errors(self.url, f"write checkpoint version {vid}"):
                try:
                    with store.holding(vid):  # no sweep in any process deletes it meanwhile
                        for rel in payload.dirs:
                            store.make_dir(vid, rel)
                        for src in payload.sources:
                            if cancelled():
                                raise _Cancelled()
                            manifest.files.append(store.write_source(vid, src, self._buffer))
                        for rel, target in payload.links.items():
                            store.make_link(vid, rel, target)
                        manifest.dirs, manifest.links = payload.dirs, payload.links
                        store.seal(vid)
                        if cancelled():
                            raise _Cancelled()
                        committing = True
                        try:
                            store.commit(vid, manifest.dumps())
                        except FileExistsError:  # an inline writer took the id: rewrite
                            raise _IdTaken() from None
                except FileNotFoundError as exc:  # not a missing version: one being written
                    raise CheckpointError(
                        f"could not write checkpoint version {vid} at {self.url}: "
                        f"{describe(exc)} (removed while being written, e.g. swept by a later "
                        "attempt because this one was superseded)"
                    ) from exc
        except BaseException as exc:
            taken = isinstance(exc, _IdTaken | FileExistsError) or isinstance(
                exc.__cause__, FileExistsError
            )
            if committing and not taken:
                # A store without atomic writes may hold a partial manifest (a full disk): it
                # would pass for a committed version. Not when another writer's won the race.
                _quietly(lambda: store.delete_manifest(vid))
            # Our own reserved prefix (never another writer's): free the space now.
            _quietly(lambda: store.delete_payload(vid, [f"{vid}.writer"]))
            raise
        return manifest.to_version()

    def _take_seq(self) -> int:
        if self.next_seq is None:
            self.next_seq = 1 + max(
                (seq for attempt, seq in _ids(self._scan()) if attempt == self.attempt), default=0
            )
        seq, self.next_seq = self.next_seq, self.next_seq + 1
        return seq

    def _reserve_id(self) -> tuple[str, int]:
        while True:
            seq = self._take_seq()
            vid = format_version_id(self.attempt, seq)
            if self._store.reserve(vid):
                self._retention.reserved.add(vid)
                return vid, seq


class _Cancelled(BaseException):
    """The write was cancelled before its commit (a BaseException, like `_IdTaken`)."""


class _IdTaken(BaseException):
    """The id reserved for a version was committed by another writer before this one could
    (a BaseException: it passes `storage_errors` untouched to the retry in `write`)."""


def _ids(listing: Listing) -> Iterator[tuple[int, int]]:
    for vid in listing.known_ids():
        parsed = parse_version_id(vid)
        if parsed is not None:
            yield parsed


def _quietly(action: Callable[[], object]) -> None:
    try:
        action()
    except Exception:
        pass
