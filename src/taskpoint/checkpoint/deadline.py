"""Committing against a deadline: what a scope saves when it must be done by a given time.

A preempted attempt has until its deadline (the grace period, or the cloud's own notice) before
its machine goes away. Waiting for the async writer in call order can then lose everything: a
large write in flight that cannot finish holds back the small, newer state queued behind it, and
a commit cut short by the deadline is wasted work. With ``Checkpoint.deadline`` set (the engine
sets it on preemption), and in ``Checkpoint.flush(deadline)``, a scope plans instead:

- The newest pending state is the one to save: a write made while the deadline is set (planned
  at once, on the caller's thread, async or not; it supersedes a queued one), or else the queued
  async write.
- It is committed after the write in flight when both are expected to finish in time; else
  *beside* it, on the caller's thread, while the write in flight is cancelled (it stops before
  its next file or its manifest, and never commits after the newer version); else, when even
  alone it would not fit, it is not started: a warning names its step and the step that stays
  the latest, a blocking write raises `SaveSkipped` and an async one's future is ``None``.
- A write in flight with nothing newer is waited for until the deadline, or given up at once
  when even the best case has it end after the deadline; either way nothing half-written is
  ever visible (the commit protocol), and `wait()`/`close()` no longer wait for it.

Estimates come from this scope object's own commits (`ScopeStats`): the shortest commit is the
fixed cost of one, the rest of the time spent committing is spread over the bytes committed. A
commit fits when the estimate times `SAFETY`, plus `SLACK_S`, ends before the deadline. Before
its first commit a scope has nothing to go on: a write is then assumed to fit (every wait is
still bounded by the deadline, and the engine's alarm stops the attempt there). The estimates
are most accurate once the scope has committed writes of the sizes it is asked about.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from taskpoint.checkpoint.committing import VersionWriter
from taskpoint.checkpoint.payload import Payload
from taskpoint.checkpoint.stats import ScopeStats
from taskpoint.checkpoint.version import CheckpointVersion
from taskpoint.errors import CheckpointError

if TYPE_CHECKING:
    from taskpoint.checkpoint.core import Checkpoint

log = logging.getLogger("taskpoint.checkpoint")

SAFETY = 1.5  # an estimate is stretched by this much before a commit is said to fit ...
SLACK_S = 0.05  # ... and this much is left before the deadline for whoever waits on it


class SaveSkipped(CheckpointError):
    """A blocking write made with a deadline set was not started: it would not have been
    committed in time. Nothing of it was written; the latest committed version is unchanged."""


@dataclass
class FlushReport:
    """What a write against a deadline did.

    ``saved``: the version committed (``None``: none); ``skipped``: the writes not started
    because they would not have fit; ``abandoned``: the write in flight that was not waited
    for (cancelled when a newer one was saved instead); ``latest``: the newest version this
    scope object knows of once it was done (committed or loaded), as words."""

    saved: CheckpointVersion | None = None
    skipped: list[str] = field(default_factory=list)
    abandoned: str | None = None
    latest: str = "none"

    def summary(self) -> str:
        parts = []
        if self.saved is not None:
            parts.append(f"committed {describe_version(self.saved)}")
        if self.skipped:
            parts.append(f"skipped {', '.join(self.skipped)} (would not have fit)")
        if self.abandoned is not None:
            parts.append(f"gave up {self.abandoned} in flight")
        if self.saved is None and parts:
            parts.append(f"the latest stays {self.latest}")
        return "; ".join(parts) if parts else "nothing was pending"


def payload_bytes(payload: Payload) -> int | None:
    """Bytes a payload will write; ``None`` for a stream read while writing (size unknown)."""
    total = 0
    for src in payload.sources:
        if src.data is not None:
            total += src.data.nbytes
        elif src.file is not None:
            try:
                total += os.path.getsize(src.file)
            except OSError:
                return None
        else:
            return None
    return total


def estimate_s(stats: ScopeStats, nbytes: int | None) -> float | None:
    """Seconds a commit of ``nbytes`` should take on this scope object, from its own commits
    (``None``: no commit yet, or the size is unknown)."""
    if stats.commits == 0 or stats.min_commit_s is None or nbytes is None:
        return None
    fixed = stats.min_commit_s
    per_byte = max(0.0, stats.commit_s - stats.commits * fixed) / max(stats.commit_bytes, 1)
    return fixed + nbytes * per_byte


def flush_pending(cp: Checkpoint, deadline: float | None) -> FlushReport:
    """Commit the newest pending async write (and the one in flight, when both fit) by
    ``deadline``; without a deadline wait for all of them."""
    report = FlushReport()
    if deadline is None:
        cp.wait()
    else:
        queued = cp._writer.take_queued()
        if queued is None:
            _finish_in_flight(cp, deadline, report)
        else:
            job, future = queued
            _resolve(future, lambda: _save_newest(cp, job, deadline, report))
    report.latest = latest_known(cp)
    return report


def has_pending(cp: Checkpoint) -> bool:
    """Async writes are queued or in flight (one abandoned in flight does not count)."""
    return cp._writer.in_flight() is not None or cp._writer.pending()


def submit_by_deadline(cp: Checkpoint, job: Any, deadline: float, blocking: bool) -> Any:
    """A write made with a deadline set, planned at once on the caller's thread (an async one
    too: its future is done on return). It supersedes a queued async write and is committed if
    it fits; else a blocking write raises `SaveSkipped` and an async one's future is ``None``.
    """
    queued = cp._writer.take_queued()
    if queued is not None:  # older than this write: superseded by it, as by a newer async one
        cp._drop(queued[0])
        queued[1].set_result(None)
    report = FlushReport()
    if not blocking:
        future: Future[CheckpointVersion | None] = Future()
        _resolve(future, lambda: _save_newest(cp, job, deadline, report))
        return future
    version = _save_newest(cp, job, deadline, report)
    if version is None:
        raise SaveSkipped(
            f"checkpoint write of {report.skipped[0]} to {cp.url} was not started: it would not "
            f"be committed by its deadline; the latest stays {latest_known(cp)}"
        )
    return version


def describe_version(version: CheckpointVersion) -> str:
    step = "no step" if version.step is None else f"step {version.step}"
    return f"{step} (version {version.id})"


# -- the plan -----------------------------------------------------------------------------------


def _save_newest(cp: Checkpoint, job: Any, deadline: float, report: FlushReport) -> Any:
    """Commit ``job`` (the newest state) by ``deadline`` if it fits; ``None`` when skipped."""
    cost = estimate_s(cp.stats, job.size)
    flight = cp._writer.in_flight()
    if flight is not None:
        flight_job, flight_future, started = flight
        flight_cost = estimate_s(cp.stats, flight_job.size)
        if cost is not None and flight_cost is not None:
            # Both, in call order, if the one in flight should end early enough.
            wait_until = deadline - cost * SAFETY - SLACK_S
            if started + flight_cost * SAFETY <= wait_until:
                wait_futures([flight_future], max(0.0, wait_until - time.monotonic()))
        if not flight_future.done():
            if not _fits(cost, deadline):
                _skip(cp, job, cost, deadline, report)
                _finish_in_flight(cp, deadline, report)
                return None
            # The newest alone fits: it goes first, beside the older one.
            cp._writer.abandon()
            report.abandoned = _describe_job(flight_job)
            log.warning(
                "%s: %s in flight would not be committed in time with the newer %s; "
                "committing the newer one instead",
                cp.url,
                report.abandoned,
                _describe_job(job),
            )
            report.saved = _commit_beside(cp, job)
            return report.saved
    if not _fits(cost, deadline):
        _skip(cp, job, cost, deadline, report)
        return None
    # A write abandoned in flight still holds the commit lock: go beside it.
    report.saved = _commit_beside(cp, job) if cp._writer.abandoned else cp._commit(job)
    return report.saved


def _finish_in_flight(cp: Checkpoint, deadline: float, report: FlushReport) -> None:
    """Wait for the write in flight until the deadline at most; give it up at once when even
    its estimate (unstretched: it may well finish) ends after the deadline."""
    flight = cp._writer.in_flight()
    if flight is None:
        return
    job, future, started = flight
    cost = estimate_s(cp.stats, job.size)
    until = deadline - SLACK_S
    if cost is None or started + cost <= until:
        wait_futures([future], max(0.0, until - time.monotonic()))
    if future.done():
        if not future.cancelled() and future.exception() is None and report.saved is None:
            report.saved = future.result()
        return
    cp._writer.abandon()  # it runs on, in the background, and may still commit
    report.abandoned = _describe_job(job)
    log.warning(
        "%s: %s in flight could not be committed by the deadline; %s stays the latest",
        cp.url,
        report.abandoned,
        latest_known(cp),
    )


def _commit_beside(cp: Checkpoint, job: Any) -> CheckpointVersion:
    """Commit ``job`` on this thread while the writer thread still holds the scope's commit
    lock for an older write: with a writer of its own, its id taken after that write's.
    Retention is left to the next commit of the scope (the next attempt's first one)."""
    flight = cp._writer.in_flight(abandoned=True)
    if flight is not None:  # older than this one: it must never commit after it
        flight[0].cancelled = True
    versions = VersionWriter(cp._store, cp.url, cp.attempt, cp._retention, cp._reader.scan)
    versions.next_seq = cp._versions.next_seq
    started = time.monotonic()
    try:
        version = versions.write(job.payload, job.step, job.metadata)
    finally:
        job.payload.discard()
    if version is None:  # not cancellable: never happens
        raise CheckpointError(f"checkpoint write to {cp.url} was cancelled")
    cp.stats.note_commit(version, time.monotonic() - started)
    if versions.next_seq is not None:
        cp._versions.next_seq = max(cp._versions.next_seq or 0, versions.next_seq)
    return version


def _fits(cost: float | None, deadline: float) -> bool:
    return time.monotonic() + (cost or 0.0) * SAFETY + SLACK_S <= deadline


def _skip(
    cp: Checkpoint, job: Any, cost: float | None, deadline: float, report: FlushReport
) -> None:
    what = _describe_job(job)
    report.skipped.append(what)
    cp._drop(job)
    left = max(0.0, deadline - time.monotonic())
    log.warning(
        "%s: not saving %s: its commit would take about %.2f s and %.2f s are left before the "
        "deadline; %s stays the latest",
        cp.url,
        what,
        cost or 0.0,
        left,
        latest_known(cp),
    )


def _resolve(future: Future[Any], run: Any) -> None:
    """Run the plan for a job taken from the queue and settle the future its writer holds."""
    try:
        result = run()
    except BaseException as exc:
        future.set_exception(exc)
        raise
    future.set_result(result)


def _describe_job(job: Any) -> str:
    step = "a write without a step" if job.step is None else f"step {job.step}"
    return step if job.size is None else f"{step} ({job.size / (1 << 20):.1f} MiB)"


def latest_known(cp: Checkpoint) -> str:
    """The newest version this scope object committed or loaded (no listing: the store may be
    the slow part)."""
    stats = cp.stats
    versions = [v for v in (stats.last_commit, stats.loaded) if v is not None]
    if not versions:
        return "whatever was committed before (nothing from this scope object)"
    return describe_version(max(versions, key=lambda v: v.order))
