"""Reading versions: pick the newest intact one, verify it, fall back past damage.

`VersionReader` is the read side of a `Checkpoint` scope: ``read``, ``read_with``, ``restore``,
``latest`` and ``versions`` go through it. It holds each version it uses (`Store.holding`), treats
any failure to parse, verify or materialise a version as damage to that version (warn, use the
previous one), and rescans when retention in another process retires the version under it: it
never returns ``None`` while a listing shows a committed version. Restore writes only inside its
target and empties the target again if a version turns out damaged half-way.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, TypeVar

from taskpoint.checkpoint.failures import CheckpointWarning, describe, is_damage, storage_errors
from taskpoint.checkpoint.localio import StreamReader
from taskpoint.checkpoint.manifest import FileEntry, Manifest, ManifestError, parse_manifest
from taskpoint.checkpoint.storage import (
    ChecksumMismatch,
    Listing,
    Store,
    crc_of,
    inline_payload,
    verify_reader,
)
from taskpoint.checkpoint.version import CheckpointVersion
from taskpoint.errors import CheckpointCorruptError, CheckpointError

log = logging.getLogger("taskpoint.checkpoint")
T = TypeVar("T")
# How long a reader keeps rescanning while the versions it picks are retired under it.
READ_PATIENCE = 120.0


class VersionReader:
    """The read side of one scope."""

    def __init__(self, store: Store, url: str) -> None:
        self._store = store
        self.url = url

    def scan(self) -> Listing:
        with storage_errors(self.url, "list checkpoint versions"):
            return self._store.scan()

    def latest(self) -> CheckpointVersion | None:
        return next(self.iter_manifests(self.scan().committed), None)

    def versions(self) -> list[CheckpointVersion]:
        return list(self.iter_manifests(list(reversed(self.scan().committed))))

    def iter_manifests(self, ids: list[str]) -> Iterator[CheckpointVersion]:
        for vid in ids:
            with storage_errors(self.url, f"read manifest {vid}"):
                try:
                    version = parse_manifest(self._store.read_manifest(vid), vid).to_version()
                except FileNotFoundError:
                    continue  # retired since the listing: skip it
                except Exception as exc:
                    if not is_damage(exc):
                        raise
                    self._warn(vid, f"manifest unusable: {describe(exc)}")
                    continue
            yield version

    def read(self, used: list[CheckpointVersion] | None = None) -> bytes | None:
        """See `Checkpoint.read`; ``used`` (see `use_latest`)."""

        def use(manifest: Manifest) -> bytes:
            if manifest.kind == "dir":
                raise CheckpointError(
                    f"checkpoint version {manifest.id} at {self.url} is a directory; "
                    "call restore() to materialise it instead of read()"
                )
            if manifest.inline is not None:
                return inline_payload(manifest)
            return self._store.read_file(manifest.id, manifest.files[0])

        return self.use_latest(use, used=used)

    def read_with(
        self, fill: Callable[[StreamReader], T], used: list[CheckpointVersion] | None = None
    ) -> T | None:
        """See `Checkpoint.read_with`; ``used`` (see `use_latest`)."""

        def use(manifest: Manifest) -> T:
            if manifest.kind == "dir":
                raise CheckpointError(
                    f"checkpoint version {manifest.id} at {self.url} is a directory; "
                    "call restore() to materialise it instead of read_with()"
                )
            entry = manifest.files[0]
            with self._open_reader(manifest, entry) as reader:
                try:
                    result = fill(reader)
                except Exception as exc:
                    if exc is reader.failed:
                        raise  # the storage's own error
                    if not _intact(reader, entry):
                        raise ChecksumMismatch(f"{entry.path}: checksum mismatch") from exc
                    raise _FillError(exc) from exc
                verify_reader(reader, entry)
            return result

        try:
            return self.use_latest(use, used=used)
        except _FillError as wrapped:
            raise wrapped.error from wrapped.error.__cause__

    def _open_reader(
        self, manifest: Manifest, entry: FileEntry
    ) -> AbstractContextManager[StreamReader]:
        if manifest.inline is None:
            return self._store.open_reader(manifest.id, entry)
        # Checked as it is read, like a file (the manifest's own bytes may be damaged).
        return nullcontext(StreamReader(io.BytesIO(manifest.inline), entry.size, crc_of, None))

    def restore(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        version: str | None = None,
        used: list[CheckpointVersion] | None = None,
    ) -> Path | None:
        """See `Checkpoint.restore`; ``used`` (see `use_latest`)."""
        target = self._restore_target(path)
        try:
            restored = self.use_latest(
                lambda m: self._restore_into(m, target), only=version, used=used
            )
        except BaseException:
            if path is None:
                shutil.rmtree(target, ignore_errors=True)
            raise
        if restored is None and path is None:
            shutil.rmtree(target, ignore_errors=True)
        return restored

    @staticmethod
    def _restore_target(path: str | os.PathLike[str] | None) -> Path:
        if path is None:
            return Path(tempfile.mkdtemp(prefix="taskpoint-restore-"))
        target = Path(path)
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise CheckpointError(
                f"cannot restore into {str(target)!r}: it exists and is not an empty directory; "
                "pass a new or empty directory"
            )
        target.mkdir(parents=True, exist_ok=True)
        return target

    def _restore_into(self, manifest: Manifest, target: Path) -> Path:
        root = os.path.realpath(target)
        try:
            for rel in manifest.dirs:
                os.makedirs(_inside(root, rel), exist_ok=True)
            for entry in manifest.files:
                dest = _inside(root, entry.path)
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                if manifest.inline is not None:
                    with open(dest, "xb") as out:
                        out.write(inline_payload(manifest))
                else:
                    self._store.copy_out(manifest.id, entry, dest)
            for rel, link_target in manifest.links.items():
                dest = _inside(root, rel)
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                os.symlink(link_target, dest)
            _check_links_inside(root, manifest)
        except BaseException:
            _empty_dir(target)  # a half-restored tree must not be mistaken for a good one
            raise
        return target

    def use_latest(
        self,
        use: Callable[[Manifest], T],
        only: str | None = None,
        used: list[CheckpointVersion] | None = None,
    ) -> T | None:
        """Apply ``use`` to the newest intact committed version; fall back on damage.

        The version ``use`` succeeded on is appended to ``used`` when given (what the resume
        guard and the ledger record as loaded).

        ``None`` only when a listing shows no committed version at all. A version retired by
        another process while this one read it makes it rescan (a newer one exists, or retention
        would not have retired it) until ``READ_PATIENCE`` runs out, then `CheckpointError`.
        """
        problems: list[str] = []
        damaged: set[str] = set()
        deadline = time.monotonic() + READ_PATIENCE
        rescans = 0
        while True:
            listing = self.scan()
            if only is not None and only not in listing.committed:
                raise CheckpointError(
                    f"no committed checkpoint version {only!r} at {self.url}; "
                    f"committed: {', '.join(reversed(listing.committed)) or 'none'}"
                )
            ids = [only] if only is not None else listing.committed
            vanished = False
            for vid in ids:
                if vid in damaged:
                    continue
                outcome = self._try_version(vid, use, problems, used)
                if outcome is _VANISHED:
                    vanished = True
                    break
                if outcome is _UNUSABLE:
                    damaged.add(vid)
                    continue
                return outcome  # type: ignore[no-any-return]
            if not vanished:
                break
            rescans += 1
            if time.monotonic() > deadline:
                raise CheckpointError(
                    f"could not read a checkpoint at {self.url}: the versions it picked were "
                    f"retired while it read them, {rescans} times in {READ_PATIENCE:.0f} s "
                    "(another writer of this scope commits and retires faster than this reader "
                    "reads); raise that writer's keep=, or its retire_grace= on an object store"
                )
        if problems:
            raise CheckpointCorruptError(
                f"no intact committed checkpoint at {self.url}: " + "; ".join(problems), problems
            )
        return None

    def _try_version(
        self,
        vid: str,
        use: Callable[[Manifest], T],
        problems: list[str],
        used: list[CheckpointVersion] | None = None,
    ) -> Any:
        """``use`` the version, or say why not: `_VANISHED` (retired since the listing) or
        `_UNUSABLE` (damaged: warned). Errors of the storage itself are raised."""

        def use_and_note(manifest: Manifest) -> T:
            result = use(manifest)
            if used is not None:
                used.append(manifest.to_version())
            return result

        with storage_errors(self.url, f"read checkpoint version {vid}"):
            try:
                raw = self._store.read_manifest(vid)
                try:
                    manifest = parse_manifest(raw, vid)
                except Exception as exc:  # any failure to parse untrusted bytes is damage
                    return self._unusable(vid, f"manifest: {describe(exc)}", problems)
                if manifest.inline is not None:
                    return use_and_note(manifest)  # all of it is in hand: nothing to hold
                # A committed manifest never changes: read before the hold, it still describes
                # the payload held (retired and deleted meanwhile, the hold fails: rescan).
                with self._store.holding(vid):
                    return use_and_note(manifest)
            except Exception as exc:
                if not is_damage(exc):
                    raise
                if vid not in self.scan().committed:
                    return _VANISHED  # retention removed it while we read: not damage
                return self._unusable(vid, describe(exc), problems)

    def _unusable(self, vid: str, why: str, problems: list[str]) -> object:
        problems.append(f"version {vid}: {why}")
        self._warn(vid, why)
        return _UNUSABLE

    def _warn(self, vid: str, why: str) -> None:
        message = (
            f"checkpoint version {vid} at {self.url} is unusable ({why}); "
            "trying the previous committed version"
        )
        log.warning(message)
        warnings.warn(message, CheckpointWarning, stacklevel=4)


_VANISHED = object()
_UNUSABLE = object()


class _FillError(BaseException):
    """Carries an error of a `read_with` callback past the storage-error translation."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def _intact(reader: StreamReader, entry: FileEntry) -> bool:
    try:
        verify_reader(reader, entry)
    except (ChecksumMismatch, OSError):
        return False
    return True


def _inside(root: str, rel: str) -> str:
    """Join a validated relative path to ``root`` and refuse anything that escapes it."""
    dest = os.path.join(root, *rel.split("/"))
    parent = os.path.realpath(os.path.dirname(dest))
    if os.path.commonpath([parent, root]) != root:
        raise ManifestError(f"refusing to restore {rel!r}: it would be written outside {root}")
    return dest


def _check_links_inside(root: str, manifest: Manifest) -> None:
    """Ask the OS where each restored link leads: parsing checks links one at a time, but a
    chain can still climb out (``l2 -> d/l1/..`` with ``d/l1 -> ..`` resolves above ``root``)."""
    for rel in manifest.links:
        resolved = os.path.realpath(os.path.join(root, *rel.split("/")))
        if os.path.commonpath([resolved, root]) != root:
            raise ManifestError(f"symlink {rel!r} leads outside the checkpoint through other links")


def _empty_dir(path: Path) -> None:
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
