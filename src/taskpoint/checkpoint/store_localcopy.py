"""`LocalCopyStore`: a remote store whose latest version also has a verified local copy.

It wraps the scope's `FsspecStore` behind the same `Store` interface, so the commit protocol and
the readers are unchanged (``localcopy.py`` says what the copy is and what bounds it):

- **writing**: while a payload file is uploaded, the same bytes go to a pending local copy (the
  caller's buffer, its file or the staged snapshot, on a helper thread so the two overlap; a
  stream is copied as the upload reads it). The copy is installed only after the store's
  commit succeeded, and given up when the commit does not happen (cancelled, id taken, error).
  Making the copy never fails a write: any error just leaves the version without one.
- **reading**: the listing and the manifests always come from the store. When the store's
  manifest of a version is read and a local copy of that version exists, the copy's record must
  name that manifest's SHA-256; then each payload file is read from the copy and verified
  against the manifest's size and CRC-32C. Any failure deletes the copy and that file, and
  every later one, comes from the store; each file restored is checked either way, so a
  restore that switched is as exact as one from the store alone.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, BinaryIO, cast

from taskpoint.checkpoint.failures import describe, is_damage
from taskpoint.checkpoint.localcopy import (
    LocalCopies,
    LocalCopySetting,
    Pending,
    directory_for,
    limit_for,
    scope_key,
)
from taskpoint.checkpoint.localio import StreamReader, write_all
from taskpoint.checkpoint.manifest import FileEntry
from taskpoint.checkpoint.payload import Source
from taskpoint.checkpoint.storage import Listing, Store, crc_of, helper_thread
from taskpoint.checkpoint.store_local import LocalStore

log = logging.getLogger("taskpoint.checkpoint")


def local_copy_for(
    url: str, storage_options: dict[str, Any], local_copy: LocalCopySetting, limit: int | None
) -> Callable[[Store], Store]:
    """Check the settings (see ``localcopy.py``) now; the result wraps the scope's store with a
    local copy of its latest version where the store is remote and the settings want one."""
    root = directory_for(local_copy)
    if limit is not None:
        limit_for(limit)  # a bad argument fails whatever the store

    def wrap(store: Store) -> Store:
        if root is None or store.is_local or "memory" in _protocols(store):
            return store  # local disk is its own copy; memory:// is faster than any disk
        key = scope_key(url, storage_options)
        return LocalCopyStore(store, LocalCopies(root, key, url.rstrip("/"), limit_for(limit)))

    return wrap


def _protocols(store: Store) -> tuple[str, ...]:
    protocol = getattr(getattr(store, "fs", None), "protocol", ())
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


class LocalCopyStore:
    """A remote `Store` plus the local copy of its latest version (see the module's text)."""

    is_local = False

    def __init__(self, inner: Store, copies: LocalCopies) -> None:
        self._inner = inner
        self.copies = copies
        self.root = inner.root
        self.hits = 0  # payload files this object read from the local copy (for diagnostics)
        self._pending: dict[str, Pending] = {}
        self._usable: dict[str, LocalStore] = {}  # ids whose copy matched the store's manifest
        self._touched: set[str] = set()
        self._lock = threading.Lock()
        self._broken = False  # the root cannot be written: stop trying for this scope object

    def __getattr__(self, name: str) -> Any:
        if name == "_inner":  # not set yet (a copy being built): no endless lookup
            raise AttributeError(name)
        return getattr(self._inner, name)  # what a store has beyond the protocol (fs, vdir...)

    @property
    def staging_root(self) -> str | None:
        return self._inner.staging_root

    # ------------------------------------------------------------------ as the store does
    def ensure(self) -> None:
        self._inner.ensure()

    def scan(self) -> Listing:
        return self._inner.scan()  # the store alone says what is committed and latest

    def reserve(self, vid: str) -> bool:
        """Reserve as the store does; an id this scope object reserved gets a pending copy
        (only those: the files another process writes under an id it did not reserve, a rank
        of a multi-rank version, are never copied here)."""
        if not self._inner.reserve(vid):
            return False
        self._begin(vid)
        return True

    def holding(self, vid: str) -> Any:
        return self._inner.holding(vid)

    def make_dir(self, vid: str, rel: str) -> None:
        self._inner.make_dir(vid, rel)

    def make_link(self, vid: str, rel: str, target: str) -> None:
        self._inner.make_link(vid, rel, target)

    def seal(self, vid: str) -> None:
        self._inner.seal(vid)

    def has_manifest(self, vid: str) -> bool:
        return self._inner.has_manifest(vid)

    def open_file(self, vid: str, entry: FileEntry) -> Any:
        return self._inner.open_file(vid, entry)

    def delete_temp(self, name: str) -> None:
        self._inner.delete_temp(name)

    # ------------------------------------------------------------------ writing
    def write_source(self, vid: str, src: Source, buffer: bytearray) -> FileEntry:
        pending = self._pending.get(vid)
        if pending is None or pending.failed:
            return self._inner.write_source(vid, src, buffer)
        if src.data is None and src.file is None and src.stream is not None:
            tee = _Tee(src.stream, pending, src.path)
            try:
                teed = replace(src, stream=cast(BinaryIO, tee))  # it reads as the stream does
                return self._inner.write_source(vid, teed, buffer)
            finally:
                tee.close()
        copying: Future[None] = helper_thread("local-copy").submit(_copy_source, pending, src)
        try:
            return self._inner.write_source(vid, src, buffer)
        finally:
            copying.result()  # it reads the caller's buffer or file: done before we return

    def commit(self, vid: str, manifest: bytes) -> None:
        with self._lock:
            pending = self._pending.pop(vid, None)
        try:
            self._inner.commit(vid, manifest)
        except BaseException:
            if pending is not None:
                pending.give_up("the version was not committed")
            raise
        self._installed(vid, pending, manifest)

    def commit_inline(self, vid: str, manifest: bytes) -> bool:
        committed = self._inner.commit_inline(vid, manifest)
        if committed:
            self._quietly(lambda: self.copies.drop_older(vid))  # its bytes are in the manifest
        return committed

    def retire(self, vid: str, grace: bool = False) -> str | None:
        leftover = self._inner.retire(vid, grace)
        self._forget(vid)
        return leftover

    def delete_manifest(self, vid: str) -> None:
        self._inner.delete_manifest(vid)
        self._forget(vid)

    def delete_payload(self, vid: str, markers: list[str] | None = None) -> bool:
        with self._lock:
            pending = self._pending.pop(vid, None)
        if pending is not None:  # a write given up (cancelled, failed): never installed
            pending.give_up("the version was not committed")
        return self._inner.delete_payload(vid, markers)

    def _begin(self, vid: str) -> None:
        if self._broken:
            return
        try:
            pending = self.copies.begin(vid)
        except OSError as exc:
            self._broken = True
            log.warning(
                "no local copies of %s: cannot write to %s (%s)",
                self.copies.url,
                self.copies.root,
                describe(exc),
            )
            return
        if pending is not None:
            with self._lock:
                self._pending[vid] = pending

    def _installed(self, vid: str, pending: Pending | None, manifest: bytes) -> None:
        """After the commit: install the copy, or (none made) drop the older ones."""
        if pending is None or pending.failed:
            self._quietly(lambda: self.copies.drop_older(vid))
            return
        try:
            self.copies.install(pending, manifest)
        except Exception as exc:  # the version is committed: a copy that failed is just absent
            pending.give_up(describe(exc))

    def _forget(self, vid: str) -> None:
        self._usable.pop(vid, None)
        if self.copies.has(vid):
            self.copies.discard(vid)

    def _quietly(self, action: Any) -> None:
        try:
            action()
        except OSError as exc:
            log.debug("local copies of %s: %s", self.copies.url, describe(exc))

    # ------------------------------------------------------------------ reading
    def read_manifest(self, vid: str) -> bytes:
        raw = self._inner.read_manifest(vid)
        if self.copies.has(vid):
            local = self.copies.matching(vid, raw)
            if local is not None:
                self._usable[vid] = local
                return raw
        self._usable.pop(vid, None)
        return raw

    def read_file(self, vid: str, entry: FileEntry) -> bytes:
        local = self._usable.get(vid)
        if local is not None:
            try:
                data = local.read_file(vid, entry)  # size and checksum verified
            except Exception as exc:
                self._lost(vid, entry, exc)
            else:
                self._hit(vid)
                return data
        return self._inner.read_file(vid, entry)

    @contextmanager
    def open_reader(self, vid: str, entry: FileEntry) -> Iterator[StreamReader]:
        local = self._usable.get(vid)
        data = None
        if local is not None:
            try:
                data = local.read_file(vid, entry)  # verified before the caller reads any
            except Exception as exc:
                self._lost(vid, entry, exc)
            else:
                self._hit(vid)
        if data is None:
            with self._inner.open_reader(vid, entry) as reader:
                yield reader
            return
        # Whole in memory, as the remote store's own reader has it.
        yield StreamReader(io.BytesIO(data), entry.size, crc_of, None)

    def copy_out(self, vid: str, entry: FileEntry, dest: str) -> None:
        local = self._usable.get(vid)
        if local is not None:
            try:
                local.copy_out(vid, entry, dest)  # verified as it copies
            except Exception as exc:
                _unlink_quiet(dest)  # the part copied before the damage showed
                self._lost(vid, entry, exc)
            else:
                self._hit(vid)
                return
        self._inner.copy_out(vid, entry, dest)

    def _hit(self, vid: str) -> None:
        self.hits += 1
        if vid not in self._touched:
            self._touched.add(vid)
            log.debug("reading checkpoint version %s of %s from its local copy", vid, self.root)
            self.copies.touch(vid)

    def _lost(self, vid: str, entry: FileEntry, exc: Exception) -> None:
        """A file of the copy failed: the store serves the rest. A damaged copy is deleted; one
        that failed for another reason (the target's disk full, say) is kept."""
        self._usable.pop(vid, None)
        if is_damage(exc):
            log.warning(
                "local copy of checkpoint version %s of %s is damaged (%s): deleted, reading "
                "the store instead",
                vid,
                self.copies.url,
                describe(exc),
            )
            self.copies.discard(vid)


def _copy_source(pending: Pending, src: Source) -> None:
    """Copy one payload source into the pending copy; never raises (it gives the copy up)."""
    try:
        if src.data is not None:
            if pending.take(src.path, len(src.data)):
                fd = os.open(pending.path_for(src.path), _NEW_FILE, 0o600)
                try:
                    write_all(fd, src.data)
                finally:
                    os.close(fd)
        elif src.file is not None and pending.take(src.path, os.stat(src.file).st_size):
            dest = pending.path_for(src.path)
            if not (src.owned and _linked(src.file, dest)):
                shutil.copyfile(src.file, dest)  # the caller's own file may change later
    except Exception as exc:
        pending.give_up(describe(exc))


def _linked(src: str, dest: str) -> bool:
    """Share a staged snapshot (nobody writes it again) instead of copying it, where the two
    directories are on one filesystem."""
    try:
        os.link(src, dest)
    except OSError:
        return False
    return True


class _Tee:
    """A stream source that copies what the upload reads from it into the pending copy."""

    def __init__(self, stream: BinaryIO, pending: Pending, rel: str) -> None:
        self._stream = stream
        self._pending = pending
        self._rel = rel
        self._fd: int | None = None

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if hasattr(self._stream, "readinto"):
            n = self._stream.readinto(view) or 0
        else:
            chunk = self._stream.read(len(view))
            n = len(chunk)
            view[:n] = chunk
        self._keep(view[:n])
        return n

    def read(self, n: int = -1) -> bytes:
        chunk = self._stream.read(n)
        self._keep(memoryview(chunk))
        return chunk

    def _keep(self, piece: memoryview) -> None:
        pending = self._pending
        try:
            if self._fd is None and not pending.failed:
                self._fd = os.open(pending.path_for(self._rel), _NEW_FILE, 0o600)
            if self._fd is not None and pending.take(self._rel, len(piece)):
                write_all(self._fd, piece)
        except OSError as exc:
            pending.give_up(describe(exc))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
