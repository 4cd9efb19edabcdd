"""Multi-rank versions: several processes write one version, committed once (DESIGN.md).

A training job of N ranks (torchrun, SLURM, the engine's ``nproc=N``) writes one version per save,
not N. The ranks share one attempt number and one scope; each rank opens it (`Checkpoint.open`
with the same ``attempt``) and they coordinate through a `RankGroup`: a collective channel that is
*not* the one training uses (with torch: a gloo group of its own), so a save never waits behind,
or reorders, the training's own collectives.

Writing one version (`RankedWriter`):

1. ``begin``: rank 0 reserves the next id of the attempt exactly as a single writer does (``mkdir``
   on local disk, an exclusive ``<id>.writer`` object on an object store) and broadcasts it. Every
   rank then holds the prefix (`Store.holding`) until the commit, so no sweep deletes it meanwhile.
2. ``write_file``: each rank writes its own files under ``v/<id>/`` (names that never collide
   across ranks are the caller's: e.g. ``dcp/r00001.bin``), fsynced, each with size and CRC-32C.
3. ``commit``: each rank's file list (or its error) is gathered to rank 0. Only when every rank
   reports its files durable does rank 0 write its own last files (``finish``), seal the prefix
   and create the one manifest, exclusively, listing every rank's files; the outcome (the
   manifest, or why not) is broadcast, so every rank returns the same version or raises.

A rank that dies before the commit leaves rank 0 waiting in the gather until the group's timeout
(the launcher normally ends the group first): nothing was committed, the prefix is garbage of
that attempt, and the next attempt's sweep deletes it, as for a single writer killed mid-write.

Reading (`agreed_load`): rank 0 picks the newest committed version with a readable manifest and
broadcasts its id; every rank checks the manifest itself, then loads; the ranks then agree on the
outcome. If any rank found the version damaged, every rank falls back to the next older one
together, so all ranks always resume from the same version id.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from taskpoint.checkpoint.failures import CheckpointWarning, describe, is_damage, storage_errors
from taskpoint.checkpoint.manifest import FileEntry, Manifest, check_relative_path, parse_manifest
from taskpoint.checkpoint.payload import Source
from taskpoint.checkpoint.storage import CHUNK, ChecksumMismatch
from taskpoint.checkpoint.version import CheckpointVersion, parse_version_id
from taskpoint.errors import CheckpointCorruptError, CheckpointError

if TYPE_CHECKING:
    from taskpoint.checkpoint.core import Checkpoint

T = TypeVar("T")


class RankGroup(Protocol):
    """The collectives a multi-rank version needs, over a channel reserved for checkpoints.

    Objects exchanged are small and plain (lists, dicts, strings, numbers, dataclasses of
    them): file lists, version ids, outcomes, never tensor data."""

    rank: int
    size: int

    def gather(self, obj: Any) -> list[Any] | None:  # to rank 0; None on other ranks
        ...

    def broadcast(self, obj: Any) -> Any:  # rank 0's object, on every rank
        ...


class SoloGroup:
    """A group of one process (a single-process load of a multi-rank version)."""

    rank = 0
    size = 1

    def gather(self, obj: Any) -> list[Any] | None:
        return [obj]

    def broadcast(self, obj: Any) -> Any:
        return obj


@dataclass
class RankReport:
    """What one rank sends to rank 0 at a commit: its files, or why it has none."""

    rank: int
    files: list[FileEntry] = field(default_factory=list)
    extra: Any = None  # caller data for rank 0's ``finish`` (e.g. where each item lies)
    error: str | None = None


@dataclass
class Begun:
    """A version id all ranks agreed on, and this rank's hold on its prefix."""

    vid: str
    seq: int
    hold: contextlib.ExitStack
    started: float = field(default_factory=time.monotonic)


class RankedWriter:
    """Writes multi-rank versions of one scope; every method is called by every rank."""

    def __init__(self, checkpoint: Checkpoint, group: RankGroup) -> None:
        self.checkpoint = checkpoint
        self.group = group
        self._buffer = bytearray(CHUNK)

    @property
    def is_leader(self) -> bool:
        return self.group.rank == 0

    def before_write(self, step: int | None) -> float:
        """The scope's hooks before a save (on every rank: each may refuse it)."""
        return self.checkpoint._before_write(step)

    def after_write(self, result: Any, blocking: bool, started: float) -> Any:
        """The scope's hooks after a save: the engine's raise `Preempted` after the commit that
        follows a SIGTERM, on every rank alike (they all saw the signal and saved together)."""
        return self.checkpoint._after_write(result, blocking, started)

    def add_drain(self, drain: Callable[[float | None], None]) -> None:
        """Make the scope's ``wait()`` and ``close()`` also wait for this writer's own pending
        saves (the engine waits on the scope before it ends an attempt)."""
        self.checkpoint._drains.append(drain)

    def begin(self) -> Begun:
        """Agree on a new version id (rank 0 reserves it) and hold its prefix on every rank."""
        cp = self.checkpoint
        if cp.readonly:
            raise CheckpointError(f"checkpoint scope {cp.url} was opened read-only; cannot save")
        outcome: tuple[str, int] | str
        if self.is_leader:
            try:
                with cp._commit_lock:
                    if not cp._retention.swept:
                        cp._retain()  # a killed group's prefixes of earlier attempts go first
                    with storage_errors(cp.url, "reserve a checkpoint version"):
                        outcome = cp._versions._reserve_id()
            except Exception as exc:
                outcome = describe(exc)
            agreed = self.group.broadcast(outcome)
        else:
            agreed = self.group.broadcast(None)
        if isinstance(agreed, str):
            raise CheckpointError(
                f"could not start a multi-rank checkpoint version at {cp.url}: rank 0: {agreed}"
            )
        vid, seq = agreed
        hold = contextlib.ExitStack()
        try:
            with storage_errors(cp.url, f"hold checkpoint version {vid}"):
                hold.enter_context(cp._store.holding(vid))
        except BaseException:
            hold.close()
            raise
        return Begun(vid, seq, hold)

    def write_file(self, begun: Begun, rel: str, data: memoryview | str) -> FileEntry:
        """Write one file of this rank (bytes in memory, or a local file's path), durable."""
        check_relative_path(rel)
        cp = self.checkpoint
        src = Source(rel, data=data) if isinstance(data, memoryview) else Source(rel, file=data)
        with storage_errors(cp.url, f"write checkpoint version {begun.vid}"):
            entry = cp._store.write_source(begun.vid, src, self._buffer)
        return entry

    def commit(
        self,
        begun: Begun,
        report: RankReport,
        *,
        step: int | None,
        metadata: dict[str, Any],
        finish: Callable[[Begun, list[RankReport]], list[FileEntry]] | None = None,
    ) -> CheckpointVersion:
        """Commit the version once every rank's files are durable; the same result everywhere.

        ``report`` is this rank's files (or its error: then nothing is committed, and every rank
        raises). ``finish`` runs on rank 0 after the gather and writes the files only it can
        (an index of what every rank wrote); it returns their entries."""
        try:
            reports = self.group.gather(report)
            if self.is_leader:
                assert reports is not None
                outcome = self._commit_as_leader(begun, reports, step, metadata, finish)
                agreed = self.group.broadcast(outcome)
            else:
                agreed = self.group.broadcast(None)
        finally:
            begun.hold.close()
        cp = self.checkpoint
        if isinstance(agreed, str):
            raise CheckpointError(
                f"multi-rank checkpoint version {begun.vid} at {cp.url} was not committed: {agreed}"
            )
        version = parse_manifest(agreed, begun.vid).to_version()
        cp.stats.note_commit(version, time.monotonic() - begun.started)
        return version

    def _commit_as_leader(
        self,
        begun: Begun,
        reports: list[RankReport],
        step: int | None,
        metadata: dict[str, Any],
        finish: Callable[[Begun, list[RankReport]], list[FileEntry]] | None,
    ) -> bytes | str:
        """Rank 0: the manifest's bytes once committed, else why not (a message for all)."""
        failed = [f"rank {r.rank}: {r.error}" for r in reports if r.error is not None]
        if failed:
            return "; ".join(failed)
        cp = self.checkpoint
        attempt, seq = parse_version_id(begun.vid) or (cp.attempt, begun.seq)
        manifest = Manifest(begun.vid, attempt, seq, "dir", step, metadata)
        for r in sorted(reports, key=lambda r: r.rank):
            manifest.files.extend(r.files)
        try:
            with cp._commit_lock:
                if finish is not None:
                    manifest.files.extend(finish(begun, reports))
                raw = manifest.dumps()
                parse_manifest(raw, begun.vid)  # two ranks naming one file: refused, not committed
                with storage_errors(cp.url, f"commit checkpoint version {begun.vid}"):
                    cp._store.seal(begun.vid)
                    try:
                        cp._store.commit(begun.vid, raw)
                    except FileExistsError:
                        raise  # another writer's manifest: never delete it
                    except BaseException:
                        # A store without atomic writes may hold a partial manifest (a full
                        # disk): it would pass for a committed version.
                        with contextlib.suppress(Exception):
                            cp._store.delete_manifest(begun.vid)
                        raise
                cp._retain()
        except Exception as exc:
            return describe(exc)
        return raw


def agreed_load(
    checkpoint: Checkpoint,
    group: RankGroup,
    use: Callable[[Manifest], T],
) -> tuple[T, CheckpointVersion] | None:
    """Load the newest version every rank can use, the same one on every rank.

    ``use`` (called on every rank, under a hold on the version) loads this rank's part of it;
    it may run collectives of its own on ``group`` as long as every rank reaches them (they all
    call it with the same manifest). Damage seen by any rank makes all fall back to the next
    older version together; any other error is raised on every rank. ``None`` when nothing was
    committed (on every rank)."""
    cp = checkpoint
    started = time.monotonic()
    damaged: list[str] = []
    problems: list[str] = []
    while True:
        picked = _try(lambda: _pick(cp, damaged)) if group.rank == 0 else None
        vid = group.broadcast(picked)
        if isinstance(vid, _Failure):  # rank 0 could not list the versions: none can load
            raise CheckpointError(f"could not list checkpoint versions at {cp.url}: {vid}")
        if vid is None:
            if problems:
                raise CheckpointCorruptError(
                    f"no intact committed checkpoint at {cp.url}: " + "; ".join(problems), problems
                )
            for hook in list(cp._hooks):
                hook.after_load(cp, None)
            return None
        verdict, status, found = _load_one(cp, group, vid, use)
        if found is not None:
            result, version = found
            cp.stats.note_load(version, time.monotonic() - started)
            for hook in list(cp._hooks):
                hook.after_load(cp, version)
            return result, version
        assert verdict is not None
        if not verdict.damage:
            if status is not None and status.error is not None:
                raise status.error  # this rank's own error, as it was
            raise CheckpointError(f"could not load checkpoint version {vid} at {cp.url}: {verdict}")
        damaged.append(vid)
        problems.append(f"version {vid}: {verdict.message}")
        message = (
            f"checkpoint version {vid} at {cp.url} is unusable ({verdict.message}); all ranks "
            "try the previous committed version"
        )
        warnings.warn(message, CheckpointWarning, stacklevel=2)


def _load_one(
    cp: Checkpoint, group: RankGroup, vid: str, use: Callable[[Manifest], T]
) -> tuple[_Failure | None, _Failure | None, tuple[T, CheckpointVersion] | None]:
    """Every rank reads the manifest of ``vid``, they agree, then load and agree again:
    ``(verdict, this rank's failure, (result, version) when every rank succeeded)``."""
    with contextlib.ExitStack() as hold:
        opened = _try(lambda: _open(cp, vid, hold))
        status = opened if isinstance(opened, _Failure) else None
        verdict = _agree(group, status)  # all ranks read the manifest before any loads
        if verdict is not None:
            return verdict, status, None
        manifest: Manifest = opened
        loaded = _try(lambda: use(manifest))
        status = loaded if isinstance(loaded, _Failure) else None
        verdict = _agree(group, status)
        if verdict is not None:
            return verdict, status, None
        return None, None, (loaded, manifest.to_version())


@dataclass
class _Failure:
    message: str
    damage: bool
    error: BaseException | None = field(default=None, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        # Sent to other ranks: the message and the kind travel, the exception object stays.
        return {"message": self.message, "damage": self.damage, "error": None}

    def __str__(self) -> str:
        return self.message


def _try(action: Callable[[], Any]) -> Any:
    try:
        return action()
    except Exception as exc:
        damage = is_damage(exc) or isinstance(exc, _Unusable)
        return _Failure(describe(exc), damage, exc)


class _Unusable(CheckpointError):
    """A version this load cannot use (not a multi-rank version, or one it cannot reshard)."""


def unusable(message: str) -> CheckpointError:
    """The error a ``use`` raises for a version to skip (all ranks then try an older one)."""
    return _Unusable(message)


def _agree(group: RankGroup, status: _Failure | None) -> _Failure | None:
    """Every rank's status to rank 0, and back one verdict: None (all fine) or the worst."""
    statuses = group.gather(status)
    verdict = None
    if group.rank == 0:
        assert statuses is not None
        failures = [(r, s) for r, s in enumerate(statuses) if s is not None]
        errors = [(r, s) for r, s in failures if not s.damage]
        if failures:
            rank, worst = (errors or failures)[0]
            verdict = _Failure(f"rank {rank}: {worst.message}", worst.damage)
    return group.broadcast(verdict)  # type: ignore[no-any-return]


def _pick(cp: Checkpoint, damaged: list[str]) -> str | None:
    """Rank 0: the newest committed id not yet found damaged."""
    for vid in cp._reader.scan().committed:
        if vid not in damaged:
            return vid
    return None


def _open(cp: Checkpoint, vid: str, hold: contextlib.ExitStack) -> Manifest:
    with storage_errors(cp.url, f"read checkpoint version {vid}"):
        raw = cp._store.read_manifest(vid)
        manifest = parse_manifest(raw, vid)
        if manifest.inline is None:
            hold.enter_context(cp._store.holding(vid))
    return manifest


class VersionFiles:
    """The files of the version a ``use`` of `agreed_load` loads: whole files (checked against
    the manifest) and byte ranges (the caller checks their own checksums). Files it opened are
    closed by `close`."""

    def __init__(self, checkpoint: Checkpoint, manifest: Manifest) -> None:
        self._cp = checkpoint
        self.manifest = manifest
        self.entries = {f.path: f for f in manifest.files}
        self._handles: dict[str, Any] = {}
        self._stack = contextlib.ExitStack()

    def read_whole(self, rel: str) -> bytes:
        with storage_errors(self._cp.url, f"read checkpoint version {self.manifest.id}"):
            return self._cp._store.read_file(self.manifest.id, self._entry(rel))

    def read_range(self, rel: str, at: int, into: memoryview) -> None:
        """Fill ``into`` from ``rel`` at byte ``at`` (never past the size the manifest says)."""
        entry = self._entry(rel)
        if at < 0 or at + len(into) > entry.size:
            raise ChecksumMismatch(f"{rel}: a range lies outside the file")
        with storage_errors(self._cp.url, f"read checkpoint version {self.manifest.id}"):
            handle = self._handles.get(rel)
            if handle is None:
                handle = self._stack.enter_context(
                    self._cp._store.open_file(self.manifest.id, entry)
                )
                self._handles[rel] = handle
            handle.seek(at)
            done = 0
            while done < len(into):
                n = handle.readinto(into[done:])
                if not n:
                    raise ChecksumMismatch(f"{rel}: shorter than the manifest says")
                done += n

    def close(self) -> None:
        self._handles.clear()
        self._stack.close()

    def _entry(self, rel: str) -> FileEntry:
        entry = self.entries.get(rel)
        if entry is None:
            raise ChecksumMismatch(f"{rel}: not a file of version {self.manifest.id}")
        return entry
