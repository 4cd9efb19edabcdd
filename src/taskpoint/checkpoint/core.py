"""`Checkpoint`: a versioned, atomic checkpoint scope on any fsspec URL.

The commit protocol (DESIGN.md): each version's payload goes under its own immutable prefix
``v/<attempt:04d>-<seq:06d>/``; the manifest ``v/<id>.manifest.json`` is created last and
exclusively, so its existence means "committed" (a small ``write()`` is an inline version: its
bytes inside the manifest, no prefix). Latest = highest committed ``(attempt, seq)``.

This module is the scope and its write side (snapshot the data, then commit in call order, sync
or through the async writer). Writing one version lives in ``committing.py``, reading in
``reading.py``, retention and sweeping in ``retention.py``, the stores behind the ``Store``
interface in ``storage.py``.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

from taskpoint.checkpoint import deadline as planned
from taskpoint.checkpoint.arguments import check_save_source, check_step_metadata
from taskpoint.checkpoint.committing import VersionWriter
from taskpoint.checkpoint.failures import CheckpointWarning, storage_errors
from taskpoint.checkpoint.hooks import CheckpointHook
from taskpoint.checkpoint.interval import Pacer
from taskpoint.checkpoint.localio import StreamReader
from taskpoint.checkpoint.payload import Payload, bytes_payload, path_payload, stream_payload
from taskpoint.checkpoint.reading import VersionReader
from taskpoint.checkpoint.retention import Retention
from taskpoint.checkpoint.staging import new_staging_dir
from taskpoint.checkpoint.stats import ScopeStats
from taskpoint.checkpoint.storage import Listing, Store, classify, make_store
from taskpoint.checkpoint.store_localcopy import local_copy_for
from taskpoint.checkpoint.version import CheckpointVersion
from taskpoint.checkpoint.writer import AsyncWriter
from taskpoint.errors import CheckpointError

if TYPE_CHECKING:
    from typing_extensions import Buffer

log = logging.getLogger("taskpoint.checkpoint")
T = TypeVar("T")

# How long a retired version's payload stays on an object store (which has no locks) for readers
# that listed it before it was retired. Local disk needs none: readers hold a lock.
DEFAULT_RETIRE_GRACE = 60.0
_open_scopes: weakref.WeakSet[Checkpoint] = weakref.WeakSet()


class _Job:
    def __init__(self, payload: Payload, step: int | None, metadata: dict[str, Any]) -> None:
        self.payload, self.step, self.metadata = payload, step, metadata
        self.size = planned.payload_bytes(payload)  # for the estimates against a deadline
        self.cancelled = False  # given up by a deadline (deadline.py): must not commit


class Checkpoint:
    """A checkpoint scope. Create it with `Checkpoint.open`.

    Examples:
        >>> import tempfile
        >>> from taskpoint import Checkpoint
        >>> with Checkpoint.open(tempfile.mkdtemp(), keep=2) as cp:
        ...     print(cp.read())                             # nothing committed yet
        ...     cp.write(b"step 1", step=1).id
        ...     future = cp.write(b"step 2", step=2, blocking=False)
        ...     cp.wait()                                    # the async write is committed
        ...     cp.read(), [v.step for v in cp.versions()]
        None
        '0001-000001'
        (b'step 2', [1, 2])
    """

    def __init__(
        self,
        store: Store,
        url: str,
        attempt: int,
        keep: int,
        retire_grace: float = 0.0,
        readonly: bool = False,
    ) -> None:
        self._store = store
        self.url = url
        self.attempt = attempt
        self.keep = keep
        self.retire_grace = retire_grace
        self.readonly = readonly
        self._reader = VersionReader(store, url)
        self._hooks: list[CheckpointHook] = []
        # Waits for saves written around the scope's own writer (multi-rank versions, ranked.py)
        self._drains: list[Callable[[float | None], None]] = []
        self.stats = ScopeStats()  # what this object loaded and what its writes cost
        self.deadline: float | None = None  # monotonic; writes are planned against it
        self.pacer = Pacer(self.stats)  # when due() says to save; the engine gives its own
        self._retention = Retention(store, url, attempt, keep, retire_grace)
        self._versions = VersionWriter(store, url, attempt, self._retention, self._reader.scan)
        self._commit_lock = threading.Lock()
        self._staging: str | None = None
        self._writer = AsyncWriter(self._commit, self._drop, name=f"taskpoint-writer:{url}")

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
        readonly: bool = False,
        local_copy: str | os.PathLike[str] | bool | None = None,
        local_copy_limit: int | None = None,
    ) -> Checkpoint:
        """Open (creating if needed) the checkpoint scope at ``url``.

        ``attempt`` is the writer's attempt number (1-based): its versions sort after those of
        lower attempts. ``keep`` is how many committed versions retention keeps (>= 1).
        ``retire_grace`` (object stores only; default 60 s) is how long the payload of a version
        retention retired stays for readers in other processes that listed it before; on local
        disk readers hold a lock instead and payloads go at once. ``readonly=True`` creates
        nothing (not even the scope's directory) and refuses writes: for viewers and tools.
        ``timeout`` bounds each request to a remote (async fsspec, e.g. ``s3://``) store, its
        retries included, in seconds: past it the write or read fails with `CheckpointError`.
        Without it only the filesystem's own timeouts apply, and s3fs's do not cover an upload
        whose connection stalls. (Streams and restores through file objects are not bounded.)
        ``local_copy`` (a directory; ``False``: none) keeps a checked copy of a remote scope's
        latest version for restores here, up to ``local_copy_limit`` bytes (``localcopy.py``).
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
        with_copy = local_copy_for(url, storage_options or {}, local_copy, local_copy_limit)
        with storage_errors(url, "open the checkpoint scope"):
            store = with_copy(make_store(url, storage_options or {}, timeout))
            if not readonly:
                store.ensure()
        grace = 0.0 if store.is_local else DEFAULT_RETIRE_GRACE
        grace = grace if retire_grace is None else retire_grace
        scope = cls(store, url, attempt, keep, grace, readonly)
        _open_scopes.add(scope)
        return scope

    def close(self, timeout: float | None = None) -> None:
        """Wait for pending async writes (re-raising a writer error), then release resources."""
        try:
            for drain in list(self._drains):
                drain(timeout)
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
        return self._reader.latest()

    def versions(self) -> list[CheckpointVersion]:
        """Every committed version with a readable manifest, oldest first."""
        return self._reader.versions()

    # ----------------------------------------------------------------- reading
    def read(self) -> bytes | None:
        """Bytes of the latest committed version (written from bytes, a stream or one file).

        ``None`` if nothing was committed. A directory version raises `CheckpointError`: use
        `restore()`. A damaged latest version is skipped with a warning for the previous one.
        """
        return self._loaded(lambda used: self._reader.read(used))

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
        return self._loaded(lambda used: self._reader.read_with(fill, used))

    def restore(
        self, path: str | os.PathLike[str] | None = None, *, version: str | None = None
    ) -> Path | None:
        """Materialise the latest committed version (or ``version``) into ``path``.

        ``path`` is created if missing and must be empty if it exists; without it a fresh temp
        directory is used. A file keeps its name, a directory its tree, bytes become ``data``.
        Returns the directory, or ``None`` if nothing was committed.
        """
        return self._loaded(lambda used: self._reader.restore(path, version=version, used=used))

    def _loaded(self, load: Callable[[list[CheckpointVersion]], T]) -> T:
        """Run a load, noting in ``stats`` (and telling the hooks) which version it used."""
        used: list[CheckpointVersion] = []
        started = time.monotonic()
        result = load(used)
        version = used[-1] if used else None
        self.stats.note_load(version, time.monotonic() - started)
        for hook in list(self._hooks):
            hook.after_load(self, version)
        return result

    # ----------------------------------------------------------------- writing
    def write(
        self,
        data: Buffer,
        *,
        step: int | None = None,
        metadata: dict[str, Any] | None = None,
        blocking: bool = True,
        copy: bool = True,
    ) -> CheckpointVersion | Future[CheckpointVersion | None]:
        """Commit ``data`` as a new version.

        ``data`` is ``bytes`` or any object with the buffer protocol (``bytearray``,
        ``memoryview``, ``array.array``, ``mmap``, a NumPy array ...); the version holds its
        bytes in C order, as ``bytes(memoryview(data))`` gives them. A contiguous buffer is
        written from where it lies; a strided one (a NumPy slice, a transposed array) is copied
        once. Small writes (up to 64 KiB) are stored inside the version's manifest: one file
        and two syncs per commit.

        Blocking returns the committed `CheckpointVersion`. ``blocking=False`` copies the data
        (unless it is immutable ``bytes``) and returns a future resolving to the version, or to
        ``None`` if a newer async write superseded it before it started.

        ``copy=False`` skips that copy for an async write: the caller hands the buffer over and
        must not change it until the returned future is done (integrations that keep their own
        staging buffers use this to avoid a second copy of large state). The buffer is let go
        (an ``mmap`` may be closed) once the future is done.
        """
        step, metadata = check_step_metadata(step, metadata)
        started = self._before_write(step)
        payload = bytes_payload(data, snapshot=not blocking and copy)
        return self._after_write(self._submit(payload, step, metadata, blocking), blocking, started)

    def save(
        self,
        src: str | os.PathLike[str] | IO[bytes],
        *,
        step: int | None = None,
        metadata: dict[str, Any] | None = None,
        blocking: bool = True,
    ) -> CheckpointVersion | Future[CheckpointVersion | None]:
        """Commit a file (keeps its name), a directory (its whole tree) or a binary stream."""
        step, metadata = check_step_metadata(step, metadata)
        check_save_source(src)
        started = self._before_write(step)
        # An async save copies its source into staging first: a full disk fails it here.
        with storage_errors(self.url, "snapshot the checkpoint source"):
            staging = None if blocking else self._staging_root()
            if isinstance(src, str | os.PathLike):
                payload = path_payload(src, staging_root=staging)
            else:
                payload = stream_payload(src, staging_root=staging)  # type: ignore[arg-type]
        return self._after_write(self._submit(payload, step, metadata, blocking), blocking, started)

    def due(self) -> bool:
        """Whether to take a checkpoint now; call it once per step of the loop (it times them).

        True once the time since the last save reaches the interval ``self.pacer`` chooses from
        what saves cost the loop and how often the task failed (``checkpoint/interval.py``), and
        at once when the running attempt is preempted. ``pacer.configure(min_interval=...,
        max_interval=...)`` bounds it."""
        self.stats.note_due()
        return self.pacer.due()

    def add_hook(self, hook: CheckpointHook) -> None:
        """Call ``hook`` after every write of this scope object (in the order added)."""
        self._hooks.append(hook)

    def remove_hook(self, hook: CheckpointHook) -> None:
        self._hooks.remove(hook)

    def _before_write(self, step: int | None) -> float:
        for hook in list(self._hooks):
            hook.before_write(self, step)
        return time.monotonic()

    def _after_write(self, result: Any, blocking: bool, started: float) -> Any:
        self.stats.note_save(time.monotonic() - started)
        for hook in list(self._hooks):
            hook.after_write(self, result, blocking)
        return result

    def wait(self, timeout: float | None = None) -> None:
        """Block until every async write is committed; re-raise a writer error."""
        for drain in list(self._drains):
            drain(timeout)
        self._writer.wait(timeout)

    def flush(self, deadline: float | None = None) -> planned.FlushReport:
        """Commit what pending async writes can by ``deadline`` (``time.monotonic()``; default
        ``self.deadline``; none: all, as `wait`), the newest first (``deadline.py``)."""
        return planned.flush_pending(self, self.deadline if deadline is None else deadline)

    def prune(self, keep: int) -> None:
        """Keep only the newest ``keep`` committed versions from now on, deleting the others
        now (after pending writes commit): for a job that finished and needs no older version
        to fall back to. Retention runs as after a write, with this ``keep``."""
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError(f"keep must be an integer >= 1 (versions to retain), got {keep!r}")
        if self.readonly:
            raise CheckpointError(f"checkpoint scope {self.url} was opened read-only; cannot prune")
        self.wait()
        self.keep = self._retention.keep = keep
        self._retain()
        self.wait()  # the deletes retention deferred to the writer thread

    def _submit(
        self, payload: Payload, step: int | None, metadata: dict[str, Any], blocking: bool
    ) -> Any:
        job = _Job(payload, step, metadata)
        if self.readonly:
            payload.discard()
            raise CheckpointError(
                f"checkpoint scope {self.url} was opened read-only; open it without "
                "readonly=True to write"
            )
        if self.deadline is not None:  # committed now, or skipped when it would not fit
            return planned.submit_by_deadline(self, job, self.deadline, blocking)
        if not blocking:
            return self._writer.submit(job)
        try:
            # Earlier async writes commit first, so versions stay in call order.
            self._writer.wait(chores=False)
        except BaseException:
            payload.discard()
            raise
        return self._commit(job)

    def _commit(self, job: _Job) -> CheckpointVersion | None:
        with self._commit_lock:
            try:
                if not self._retention.swept:
                    # A writer killed between its commit and its retention left one version too
                    # many: trim first, or each such kill would add one more for good.
                    self._retain()
                inline = job.payload.inline_data() is not None  # its manifest alone
                started = time.monotonic()
                version = self._versions.write(
                    job.payload, job.step, job.metadata, lambda: job.cancelled
                )
                if version is None:  # cancelled: nothing committed
                    return None
                self.stats.note_commit(version, time.monotonic() - started)
            finally:
                job.payload.discard()
            self._retain(version.id, inline=inline)
            return version

    def _drop(self, job: _Job) -> None:
        """A queued write superseded by a newer one: its buffers are let go at once; a staged
        copy is deleted on the writer thread, off the path of the write() that replaced it."""
        if job.payload.staging is None:
            job.payload.discard()
        else:
            self._writer.defer(job.payload.discard)

    def _staging_root(self) -> str:
        """Where async snapshots are copied: beside the store when local (a rename commits)."""
        if self._staging is None:
            self._staging = new_staging_dir(self._store.staging_root, self.attempt)
        return self._staging

    def _scan(self) -> Listing:
        return self._reader.scan()

    def _retain(self, committed: str | None = None, inline: bool = False) -> None:
        self._retention.run(self._versions.next_seq, self._writer.defer, committed, inline)


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


__all__ = ["Checkpoint", "CheckpointHook", "CheckpointWarning", "classify"]
