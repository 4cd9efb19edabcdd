"""`Checkpoint`: a versioned, atomic checkpoint scope on any fsspec URL.

The commit protocol (DESIGN.md): each version's payload goes under its own immutable prefix
``v/<attempt:04d>-<seq:06d>/``; the manifest ``v/<id>.manifest.json`` is created last and
exclusively, so its existence means "committed". Latest = highest committed ``(attempt, seq)``.
Readers verify checksums and fall back to the previous intact version with a warning.

Readers in other processes (DESIGN.md, "Retention and readers across processes"): a reader holds
the version it reads (a shared lock on local disk; on an object store retention keeps a retired
payload for ``retire_grace`` seconds), and one whose version was retired under it anyway rescans
and reads the newer one. It never returns ``None`` while a listing shows a committed version.
"""

from __future__ import annotations

import atexit
import errno
import io
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar, Union

from taskpoint.checkpoint.localio import StreamReader
from taskpoint.checkpoint.manifest import (
    FileEntry,
    Manifest,
    ManifestError,
    check_metadata_shape,
    parse_manifest,
)
from taskpoint.checkpoint.payload import Payload, bytes_payload, path_payload, stream_payload
from taskpoint.checkpoint.safeopen import NotARegularFile
from taskpoint.checkpoint.staging import new_staging_dir, sweep_staging
from taskpoint.checkpoint.storage import (
    CHUNK,
    ChecksumMismatch,
    FsspecStore,
    Listing,
    LocalStore,
    classify,
    verify_reader,
)
from taskpoint.checkpoint.version import CheckpointVersion, format_version_id, parse_version_id
from taskpoint.checkpoint.writer import AsyncWriter
from taskpoint.errors import CheckpointCorruptError, CheckpointError, TaskpointError

log = logging.getLogger("taskpoint.checkpoint")
T = TypeVar("T")
Store = Union[LocalStore, FsspecStore]  # noqa: UP007 - runtime alias

# How long a retired version's payload stays on an object store (which has no locks) for readers
# that listed it before it was retired. Local disk needs none: readers hold a lock.
DEFAULT_RETIRE_GRACE = 60.0
# How long a reader keeps rescanning while the versions it picks are retired under it.
READ_PATIENCE = 120.0
_open_scopes: weakref.WeakSet[Checkpoint] = weakref.WeakSet()


class CheckpointWarning(UserWarning):
    """A committed version could not be used; an older one was used instead."""


class _Job:
    def __init__(self, payload: Payload, step: int | None, metadata: dict[str, Any]) -> None:
        self.payload, self.step, self.metadata = payload, step, metadata


class Checkpoint:
    """A checkpoint scope. Create it with `Checkpoint.open`."""

    def __init__(
        self, store: Store, url: str, attempt: int, keep: int, retire_grace: float = 0.0
    ) -> None:
        self._store = store
        self.url = url
        self.attempt = attempt
        self.keep = keep
        self.retire_grace = retire_grace
        self._reserved: set[str] = set()  # ids this scope object reserved (its own writes)
        self._commit_lock = threading.Lock()
        self._next_seq: int | None = None
        self._buffer: bytearray | None = None
        self._staging: str | None = None
        self._swept = False
        self._writer = AsyncWriter(self._commit, _discard_job, name=f"taskpoint-writer:{url}")

    # ----------------------------------------------------------------- opening and closing
    @classmethod
    def open(
        cls,
        url: str | os.PathLike[str],
        *,
        attempt: int = 1,
        keep: int = 2,
        storage_options: dict[str, Any] | None = None,
        timeout: float | None = None,
        retire_grace: float | None = None,
    ) -> Checkpoint:
        """Open (creating if needed) the checkpoint scope at ``url``.

        ``attempt`` is the writer's attempt number (1-based): its versions sort after those of
        lower attempts. ``keep`` is how many committed versions retention keeps (>= 1).
        ``retire_grace`` (object stores only; default 60 s) is how long the payload of a version
        retention retired stays for readers in other processes that listed it before; on local
        disk readers hold a lock instead and payloads go at once.
        ``timeout`` bounds each request to a remote (async fsspec, e.g. ``s3://``) store, its
        retries included, in seconds: past it the write or read fails with `CheckpointError`.
        Without it only the filesystem's own timeouts apply, and s3fs's do not cover an upload
        whose connection stalls. (Streams and restores through file objects are not bounded.)
        """
        if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
            raise ValueError(f"attempt must be an integer >= 1, got {attempt!r}")
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError(f"keep must be an integer >= 1 (versions to retain), got {keep!r}")
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
        ):
            raise ValueError(f"timeout must be a number of seconds > 0 or None, got {timeout!r}")
        if retire_grace is not None and (
            isinstance(retire_grace, bool)
            or not isinstance(retire_grace, int | float)
            or not 0 <= retire_grace < float("inf")
        ):
            raise ValueError(f"retire_grace must be seconds >= 0 or None, got {retire_grace!r}")
        if not isinstance(url, str | os.PathLike):
            raise TypeError(f"Checkpoint.open() takes a path or URL, not {type(url).__name__}")
        url = os.fspath(url)
        with _storage_errors(url, "open the checkpoint scope"):
            store = _make_store(url, storage_options or {}, timeout)
            store.ensure()
        grace = 0.0 if store.is_local else DEFAULT_RETIRE_GRACE
        scope = cls(store, url, attempt, keep, grace if retire_grace is None else retire_grace)
        _open_scopes.add(scope)
        return scope

    def close(self, timeout: float | None = None) -> None:
        """Wait for pending async writes (re-raising a writer error), then release resources."""
        try:
            self._writer.close(timeout)
        finally:
            if self._staging is not None:
                shutil.rmtree(self._staging, ignore_errors=True)
                self._staging = None

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Checkpoint({self.url!r}, attempt={self.attempt}, keep={self.keep})"

    # ----------------------------------------------------------------- looking
    def prev_exists(self) -> bool:
        """True if a committed version exists (this lists the storage every time)."""
        return bool(self._scan().committed)

    def latest(self) -> CheckpointVersion | None:
        """The newest committed version whose manifest is readable, or ``None``."""
        return next(self._iter_manifests(self._scan().committed), None)

    def versions(self) -> list[CheckpointVersion]:
        """Every committed version with a readable manifest, oldest first."""
        ids = list(reversed(self._scan().committed))
        return list(self._iter_manifests(ids))

    def _iter_manifests(self, ids: list[str]) -> Iterator[CheckpointVersion]:
        for vid in ids:
            with _storage_errors(self.url, f"read manifest {vid}"):
                try:
                    version = parse_manifest(self._store.read_manifest(vid), vid).to_version()
                except FileNotFoundError:
                    continue  # retired since the listing: skip it
                except Exception as exc:
                    if not _is_damage(exc):
                        raise
                    self._warn(vid, f"manifest unusable: {_describe(exc)}")
                    continue
            yield version

    # ----------------------------------------------------------------- reading
    def read(self) -> bytes | None:
        """Bytes of the latest committed version (written from bytes, a stream or one file).

        ``None`` if nothing was committed. A directory version raises `CheckpointError`: use
        `restore()`. A corrupt latest version is skipped with a warning for the previous one.
        """

        def use(manifest: Manifest) -> bytes:
            if manifest.kind == "dir":
                raise CheckpointError(
                    f"checkpoint version {manifest.id} at {self.url} is a directory; "
                    "call restore() to materialise it instead of read()"
                )
            return self._store.read_file(manifest.id, manifest.files[0])

        return self._use_latest(use)

    def read_with(self, fill: Callable[[StreamReader], T]) -> T | None:
        """Stream the latest committed version (bytes, a stream or one file) through ``fill``.

        ``fill(reader)`` reads with ``reader.readinto(buffer)`` (straight into the caller's
        buffers, no intermediate copy) and ``reader.read(n)``; ``reader.size`` is the version's
        size. The checksum is computed on a second thread while it reads, and what ``fill``
        leaves unread is read and checked after it returns: its result is returned only if the
        version is intact. Buffers it filled must stay unchanged until then. A damaged version
        is skipped with a warning and ``fill`` runs again on the previous committed one, so it
        must overwrite whatever it filled. An error ``fill`` raises is re-raised as it is when
        the bytes were intact (else the version counts as damaged). ``None`` if nothing was
        committed; a directory version raises `CheckpointError` as `read()` does.
        """

        def use(manifest: Manifest) -> T:
            if manifest.kind == "dir":
                raise CheckpointError(
                    f"checkpoint version {manifest.id} at {self.url} is a directory; "
                    "call restore() to materialise it instead of read_with()"
                )
            entry = manifest.files[0]
            with self._store.open_reader(manifest.id, entry) as reader:
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
            return self._use_latest(use)
        except _FillError as wrapped:
            raise wrapped.error from wrapped.error.__cause__

    def restore(
        self, path: str | os.PathLike[str] | None = None, *, version: str | None = None
    ) -> Path | None:
        """Materialise the latest committed version (or ``version``) into ``path``.

        ``path`` is created if missing and must be empty if it exists; without it a fresh temp
        directory is used. A file keeps its name, a directory its tree, bytes become ``data``.
        Returns the directory, or ``None`` if nothing was committed.
        """
        target = self._restore_target(path)
        try:
            restored = self._use_latest(lambda m: self._restore_into(m, target), only=version)
        except BaseException:
            if path is None:
                shutil.rmtree(target, ignore_errors=True)
            raise
        if restored is None and path is None:
            shutil.rmtree(target, ignore_errors=True)
        return restored

    def _restore_target(self, path: str | os.PathLike[str] | None) -> Path:
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

    def _use_latest(self, use: Callable[[Manifest], T], only: str | None = None) -> T | None:
        """Apply ``use`` to the newest intact committed version; fall back on damage.

        ``None`` only when a listing shows no committed version at all. A version retired by
        another process while this one read it makes it rescan (a newer one exists, or retention
        would not have retired it) until ``READ_PATIENCE`` runs out, then `CheckpointError`.
        """
        problems: list[str] = []
        damaged: set[str] = set()
        deadline = time.monotonic() + READ_PATIENCE
        rescans = 0
        while True:
            listing = self._scan()
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
                outcome = self._try_version(vid, use, problems)
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

    def _try_version(self, vid: str, use: Callable[[Manifest], T], problems: list[str]) -> Any:
        """``use`` the version, or say why not: `_VANISHED` (retired since the listing) or
        `_UNUSABLE` (damaged: warned). Errors of the storage itself are raised."""
        with _storage_errors(self.url, f"read checkpoint version {vid}"):
            try:
                with self._store.holding(vid):
                    raw = self._store.read_manifest(vid)
                    try:
                        manifest = parse_manifest(raw, vid)
                    except Exception as exc:  # any failure to parse untrusted bytes is damage
                        return self._unusable(vid, f"manifest: {_describe(exc)}", problems)
                    return use(manifest)
            except Exception as exc:
                if not _is_damage(exc):
                    raise
                if vid not in self._scan().committed:
                    return _VANISHED  # retention removed it while we read: not damage
                return self._unusable(vid, _describe(exc), problems)

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

    # ----------------------------------------------------------------- writing
    def write(
        self,
        data: bytes | bytearray | memoryview,
        *,
        step: int | None = None,
        metadata: dict[str, Any] | None = None,
        blocking: bool = True,
        copy: bool = True,
    ) -> CheckpointVersion | Future[CheckpointVersion | None]:
        """Commit ``data`` as a new version.

        Blocking returns the committed `CheckpointVersion`. ``blocking=False`` copies the data
        (unless it is immutable ``bytes``) and returns a future resolving to the version, or to
        ``None`` if a newer async write superseded it before it started.

        ``copy=False`` skips that copy for an async write: the caller hands the buffer over and
        must not change it until the returned future is done (integrations that keep their own
        staging buffers use this to avoid a second copy of large state).
        """
        step, metadata = _check_step_metadata(step, metadata)
        payload = bytes_payload(data, snapshot=not blocking and copy)
        return self._submit(payload, step, metadata, blocking)

    def save(
        self,
        src: str | os.PathLike[str] | IO[bytes],
        *,
        step: int | None = None,
        metadata: dict[str, Any] | None = None,
        blocking: bool = True,
    ) -> CheckpointVersion | Future[CheckpointVersion | None]:
        """Commit a file (keeps its name), a directory (its whole tree) or a binary stream."""
        step, metadata = _check_step_metadata(step, metadata)
        _check_save_source(src)
        # An async save copies its source into staging first: a full disk fails it here.
        with _storage_errors(self.url, "snapshot the checkpoint source"):
            staging = None if blocking else self._staging_root()
            if isinstance(src, str | os.PathLike):
                payload = path_payload(src, staging_root=staging)
            else:
                payload = stream_payload(src, staging_root=staging)  # type: ignore[arg-type]
        return self._submit(payload, step, metadata, blocking)

    def wait(self, timeout: float | None = None) -> None:
        """Block until every async write is committed; re-raise a writer error."""
        self._writer.wait(timeout)

    def _submit(
        self, payload: Payload, step: int | None, metadata: dict[str, Any], blocking: bool
    ) -> Any:
        job = _Job(payload, step, metadata)
        if not blocking:
            return self._writer.submit(job)
        try:
            # Earlier async writes commit first, so versions stay in call order.
            self._writer.wait(chores=False)
        except BaseException:
            payload.discard()
            raise
        return self._commit(job)

    def _commit(self, job: _Job) -> CheckpointVersion:
        with self._commit_lock:
            try:
                if not self._swept:
                    # A writer killed between its commit and its retention left one version too
                    # many: trim first, or each such kill would add one more for good.
                    self._retain()
                with _storage_errors(self.url, "write a checkpoint version"):
                    vid, seq = self._reserve_id()
                version = self._write_version(vid, seq, job)
            finally:
                job.payload.discard()
            self._retain()
            return version

    def _write_version(self, vid: str, seq: int, job: _Job) -> CheckpointVersion:
        store, payload = self._store, job.payload
        manifest = Manifest(vid, self.attempt, seq, payload.kind, job.step, job.metadata)
        if self._buffer is None:
            self._buffer = bytearray(CHUNK)
        committing = False
        try:
            with _storage_errors(self.url, f"write checkpoint version {vid}"):
                try:
                    with store.holding(vid):  # no sweep in any process deletes it meanwhile
                        for rel in payload.dirs:
                            store.make_dir(vid, rel)
                        for src in payload.sources:
                            manifest.files.append(store.write_source(vid, src, self._buffer))
                        for rel, target in payload.links.items():
                            store.make_link(vid, rel, target)
                        manifest.dirs, manifest.links = payload.dirs, payload.links
                        store.seal(vid)
                        committing = True
                        store.commit(vid, manifest.dumps())
                except FileNotFoundError as exc:  # not a missing version: one being written
                    raise CheckpointError(
                        f"could not write checkpoint version {vid} at {self.url}: "
                        f"{_describe(exc)} (removed while being written, e.g. swept by a later "
                        "attempt because this one was superseded)"
                    ) from exc
        except BaseException as exc:
            if committing and not isinstance(exc.__cause__ or exc, FileExistsError):
                # A store without atomic writes may hold a partial manifest (a full disk): it
                # would pass for a committed version. Not when another writer's won the race.
                _quietly(lambda: store.delete_manifest(vid))
            # Our own reserved prefix (never another writer's): free the space now.
            _quietly(lambda: store.delete_payload(vid, [f"{vid}.writer"]))
            raise
        return manifest.to_version()

    def _reserve_id(self) -> tuple[str, int]:
        if self._next_seq is None:
            self._next_seq = 1 + max(
                (seq for attempt, seq in _ids(self._scan()) if attempt == self.attempt), default=0
            )
        while True:
            seq, self._next_seq = self._next_seq, self._next_seq + 1
            vid = format_version_id(self.attempt, seq)
            if self._store.reserve(vid):
                self._reserved.add(vid)
                return vid, seq

    # ----------------------------------------------------------------- retention and sweeping
    def _retain(self) -> None:
        """Keep the newest ``keep`` committed versions; sweep leftovers of dead writes."""
        try:
            listing = self._scan()
            retired = listing.committed[self.keep :]
            for vid in retired:
                # Uncommit now: new readers skip it at once.
                self._store.retire(vid, grace=self.retire_grace > 0)
            doomed = self._doomed(listing, retired)
            if doomed:
                # Deleting a big payload takes a while (~0.15 s per GiB on ext4): not on the
                # caller's path. Payloads without a manifest are ignored by readers meanwhile.
                markers = listing.markers
                self._writer.defer(lambda: self._delete_payloads(doomed, markers))
            for name in listing.temps:
                if self._is_dead(name[1:].split(".", 1)[0]):
                    self._store.delete_temp(name)
            if not self._swept:
                self._swept = True
                sweep_staging(self._store.staging_root, self.attempt)
        except Exception as exc:
            log.warning("checkpoint retention at %s failed: %s", self.url, exc)

    def _doomed(self, listing: Listing, retired: list[str]) -> list[str]:
        """Payloads to delete: retired ones (local: now, under a lock; object stores: once
        their grace has passed) and the uncommitted leftovers of dead writes."""
        committed = set(listing.committed)
        now_ms = time.time() * 1000
        doomed = []
        for vid in sorted(listing.known_ids() - committed):
            if vid in listing.retired:
                if now_ms - listing.retired[vid] >= self.retire_grace * 1000:
                    doomed.append(vid)
            elif self._is_dead(vid):
                doomed.append(vid)
        if self.retire_grace == 0:  # always so on local disk
            doomed += [v for v in retired if v not in doomed]
        return doomed

    def _delete_payloads(self, ids: list[str], markers: dict[str, list[str]]) -> None:
        for vid in ids:
            self._store.delete_payload(vid, markers.get(vid, []))

    def _is_dead(self, vid: str) -> bool:
        """An uncommitted prefix is garbage if an earlier attempt left it, or we did.

        On local disk an own-attempt prefix below our sequence is ours or a crashed writer's
        (a live writer holds its prefix's lock, which the delete respects); an object store has
        no locks, so there only the ids this scope object reserved count as ours.
        """
        parsed = parse_version_id(vid)
        if parsed is None:
            return False
        attempt, seq = parsed
        if attempt < self.attempt:
            return True
        if attempt > self.attempt or self._next_seq is None:
            return False
        if self._store.is_local:
            return seq < self._next_seq - 1
        return vid in self._reserved and seq < self._next_seq - 1

    def _staging_root(self) -> str:
        """Where async snapshots are copied: beside the store when local (a rename commits)."""
        if self._staging is None:
            self._staging = new_staging_dir(self._store.staging_root, self.attempt)
        return self._staging

    def _scan(self) -> Listing:
        with _storage_errors(self.url, "list checkpoint versions"):
            return self._store.scan()


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


def _ids(listing: Listing) -> Iterator[tuple[int, int]]:
    for vid in listing.known_ids():
        parsed = parse_version_id(vid)
        if parsed is not None:
            yield parsed


def _make_store(url: str, storage_options: dict[str, Any], timeout: float | None = None) -> Store:
    if "://" not in url or url.startswith("file://"):
        if storage_options:
            raise ValueError(f"storage_options are not used for a local path ({url!r})")
        return LocalStore(url.removeprefix("file://"))
    try:
        from fsspec.core import url_to_fs
    except ImportError as exc:  # pragma: no cover - fsspec is a core dependency
        raise CheckpointError("fsspec is missing: pip install fsspec") from exc
    try:
        fs, root = url_to_fs(url, **storage_options)
    except ImportError as exc:
        protocol = url.split("://", 1)[0]
        hint = "pip install 'taskpoint[s3]'" if protocol in ("s3", "s3a") else str(exc)
        raise CheckpointError(
            f"cannot open {url!r}: support for {protocol}:// is missing ({hint})"
        ) from exc
    if type(fs).__name__ == "LocalFileSystem":
        return LocalStore(root)
    return FsspecStore(fs, root, timeout)


@contextmanager
def _storage_errors(url: str, action: str) -> Iterator[None]:
    """Turn storage failures (OSError, botocore, aiohttp, ...) into `CheckpointError`."""
    try:
        yield
    except (TaskpointError, ManifestError, ChecksumMismatch):
        raise
    except FileNotFoundError:
        raise
    except TimeoutError as exc:  # a request past its deadline (``timeout=``), or the fs's own
        detail = str(exc) or type(exc).__name__
        raise CheckpointError(f"could not {action} at {url}: timed out ({detail})") from exc
    except Exception as exc:
        raise CheckpointError(f"could not {action} at {url}: {_describe(exc)}") from exc


# I/O errors of the machine or the connection, not of a version's content: raised, never taken
# for damage (falling back to an older version on a full disk would lose work for nothing).
_ENVIRONMENT_ERRNOS = {
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EIO,
    errno.ENOMEM,
    errno.EROFS,
    errno.EMFILE,
    errno.ENFILE,
    errno.EACCES,
    errno.EPERM,
}


def _is_damage(exc: BaseException) -> bool:
    """Is ``exc``, raised while reading or materialising a version, damage to that version?

    Bad content shows as checksum/size mismatches, a non-regular or missing file, a manifest
    that describes an impossible tree (a name that is both a file and a directory, a path too
    long to create) or values that break the code that uses them. Connection failures, time-outs
    and a full or read-only disk are not: they are raised as storage errors.
    """
    if isinstance(exc, ChecksumMismatch | NotARegularFile | ManifestError | FileNotFoundError):
        return True
    if isinstance(exc, TimeoutError | ConnectionError | MemoryError | TaskpointError):
        return False
    if isinstance(exc, OSError):
        return exc.errno is not None and exc.errno not in _ENVIRONMENT_ERRNOS
    return isinstance(
        exc, ValueError | TypeError | KeyError | IndexError | RecursionError | OverflowError
    )


def _describe(exc: BaseException) -> str:
    text = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {text}"


def _check_step_metadata(
    step: int | None, metadata: dict[str, Any] | None
) -> tuple[int | None, dict[str, Any]]:
    if step is not None and (isinstance(step, bool) or not isinstance(step, int)):
        raise TypeError(f"step must be an int or None, got {type(step).__name__}")
    metadata = dict(metadata or {})
    try:
        text = json.dumps(metadata)
    except (TypeError, ValueError, RecursionError) as exc:
        raise TypeError(f"checkpoint metadata must be JSON-serialisable: {exc}") from None
    try:  # what readers would refuse must not be committed
        check_metadata_shape(text.encode())
    except ManifestError as exc:
        raise ValueError(f"checkpoint metadata is too large or too deep: {exc}") from None
    return step, metadata


def _inside(root: str, rel: str) -> str:
    """Join a validated relative path to ``root`` and refuse anything that escapes it."""
    dest = os.path.join(root, *rel.split("/"))
    parent = os.path.realpath(os.path.dirname(dest))
    if os.path.commonpath([parent, root]) != root:
        raise ManifestError(f"refusing to restore {rel!r}: it would be written outside {root}")
    return dest


def _check_save_source(src: object) -> None:
    """A path, or a stream that reads bytes; anything else fails here, not in the writer."""
    if isinstance(src, str | os.PathLike):
        return
    accepted = "a file or directory path (str or os.PathLike) or a binary stream opened 'rb'"
    if isinstance(src, bytes | bytearray | memoryview):
        raise TypeError(
            f"Checkpoint.save() takes {accepted}, not {type(src).__name__}; use write() for bytes"
        )
    read = getattr(src, "read", None)
    if isinstance(src, type) or not callable(read):
        raise TypeError(f"Checkpoint.save() takes {accepted}, not {_kind_of(src)}")
    if isinstance(src, io.TextIOBase) or "b" not in getattr(src, "mode", "b"):
        raise TypeError(
            f"Checkpoint.save() takes {accepted}, not a text stream ({_kind_of(src)}); "
            "open the file with 'rb', or encode the text and use write()"
        )


def _kind_of(value: object) -> str:
    return f"the class {value.__name__}" if isinstance(value, type) else type(value).__name__


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


def _discard_job(job: _Job) -> None:
    job.payload.discard()


def _quietly(action: Callable[[], object]) -> None:
    try:
        action()
    except Exception:
        pass


def _after_fork_in_child() -> None:
    """Locks held by the parent's threads stay held in a forked child, and the parent's staging
    dir is the parent's: the child makes its own (else its close() would delete the parent's)."""
    for scope in list(_open_scopes):
        scope._commit_lock = threading.Lock()
        scope._staging = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


@atexit.register
def _flush_at_exit() -> None:
    """An interpreter that exits normally still commits its pending async writes."""
    for scope in list(_open_scopes):
        try:
            scope.close()
        except Exception as exc:
            log.error("pending checkpoint write to %s failed at exit: %s", scope.url, exc)


__all__ = ["Checkpoint", "CheckpointWarning", "classify"]
