"""Rank groups: each attempt of a ``@task(nproc=N)`` runs as N processes on this machine, and the
N of them are one attempt.

Each rank starts exactly as a single-process attempt's child does (``process.ProcessHandle``:
forked, from the fork server or spawned; leading its own process group; heartbeats on its
result pipe; SIGTERM forwarded by the driver), with its rank in its ``AttemptInfo`` and, once in
the child, torchrun's environment (``_rank_child.enter_rank``): ``RANK``, ``LOCAL_RANK``,
``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``, ``GROUP_RANK``, ``ROLE_RANK``, ``ROLE_WORLD_SIZE``,
``MASTER_ADDR`` (127.0.0.1) and ``MASTER_PORT``, a port free when the attempt starts (each
attempt gets its own, so a rank of an ended attempt never joins the next one's rendezvous).
``dist.init_process_group()`` therefore works unchanged, and ``current_context()`` has the same
execution, node, attempt and checkpoint scope in every rank, with ``rank`` and ``world_size``.

The driver watches the N result pipes and N exit handles together and decides how the group
ended (when ranks end differently: preempted > lost > recoverable > failed):

- every rank returned: succeeded; the output is rank 0's value;
- a rank died without reporting (SIGKILL, OOM kill, segfault) or froze (no heartbeat for the
  task's ``heartbeat_timeout``): lost, decided at once; the other ranks (blocked in a collective
  with the dead one, as a rule) are killed;
- a rank raised ``RecoverableError`` (or a ``retry_on`` type): recoverable, decided at once;
- a rank failed: failed, after ``SETTLE`` seconds in which the cause may still show (the rank
  that died or raised a ``RecoverableError``, whose peers then fail in their collectives);
- a rank was preempted: SIGTERM reaches every rank (the driver forwards its own to each; a rank
  that got one tells the driver at once, ``_rank_child.RankGuard``, which sends it on to the
  others), every rank saves and stops, and the group is waited for within the grace period:
  preempted, whatever the ranks' collectives raise meanwhile (a failure after SIGTERM counts as
  preempted, as in a single process).

Teardown is bounded, so a hang never blocks the next attempt: a rank that reported gets
``EXIT_WAIT`` seconds to exit by itself (it flushes its output), then every rank's process group
is killed; a rank that has not returned ``PEER_FINISH_WAIT`` seconds after another rank returned
(hung, as in gloo's teardown in ``destroy_process_group()`` while a DDP model still exists) is
killed and the attempt is lost: the next one resumes from the latest committed checkpoint.

The driver is the process backend's attempt thread, or a Dask worker's (``_dask_ranks.py``: the
same `RankGroupHandle` with the worker's guard, its ranks started as fresh interpreters).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import wait
from typing import Any

from taskpoint.backends._beats import BEAT
from taskpoint.backends._rank_child import PREEMPTED_NOTICE, free_port, rank_info
from taskpoint.backends.process import (
    _ABORT_WAIT,
    _GRACE_MARGIN,
    ProcessHandle,
    _describe_death,
    _end_group,
    _exit_handle,
    _frozen,
)
from taskpoint.engine.attempt import AttemptJob, DoneHandle, Outcome
from taskpoint.engine.preempt import send_signal
from taskpoint.errors import AttemptLost, Preempted, TaskpointError
from taskpoint.records.status import AttemptStatus

log = logging.getLogger("taskpoint")

EXIT_WAIT = 5.0  # seconds a rank that reported gets to exit before its process group is killed
PEER_FINISH_WAIT = 60.0  # seconds the other ranks get to return once one rank returned
SETTLE = 1.0  # seconds a failure waits for a better-known cause to report from another rank
_PRECEDENCE = (
    AttemptStatus.PREEMPTED,
    AttemptStatus.LOST,
    AttemptStatus.RECOVERABLE,
    AttemptStatus.FAILED,
    AttemptStatus.ABORTED,
)


def refused(job: AttemptJob, why: str) -> DoneHandle:
    """The failed outcome of a rank group a backend cannot run (a configuration error: not
    retried)."""
    error = TaskpointError(
        f"task {job.task.name!r} has nproc={job.task.nproc}, but {why}; run it with the "
        'process backend (isolation="process", `taskpoint run --backend process`) or the Dask '
        "backend, which start the ranks on one machine"
    )
    return DoneHandle(Outcome.from_error(AttemptStatus.FAILED, error, job.info.checkpoint_at_start))


class _Rank:
    """The driver's view of one rank: its child, and how it ended."""

    def __init__(self, rank: int, handle: ProcessHandle) -> None:
        self.rank = rank
        self.handle = handle
        self.pid: int = handle.child.pid
        self.exited: Any = _exit_handle(handle.child)
        self.report: Outcome | None = None
        self.reported_at = 0.0
        self.gone = False  # ended without reporting, by itself (a death)
        self.preempted_at: float | None = None  # when it said it was preempted
        self.ended = False  # ended by the engine (its peers' attempt was over)

    @property
    def running(self) -> bool:
        return self.report is None and not self.gone and not self.ended

    @property
    def status(self) -> str | None:
        return None if self.report is None else self.report.status

    def read(self, ready: list[Any]) -> None:
        """Take what the rank sent (beats, its outcome) and notice its exit."""
        receiver = self.handle.receiver
        while self.report is None and receiver.poll():
            try:
                message = receiver.recv()
            except (EOFError, OSError):  # closed without an outcome: it is ending
                self.gone = True
                return
            except Exception as exc:  # its outcome cannot be unpickled here
                message = Outcome.from_error(
                    AttemptStatus.FAILED,
                    TaskpointError(f"cannot load the result of rank {self.rank}: {exc}"),
                )
            if isinstance(message, str) and message in (BEAT, PREEMPTED_NOTICE):
                self.handle.beats.beat()
                if message == PREEMPTED_NOTICE and self.preempted_at is None:
                    self.preempted_at = time.monotonic()
                continue
            self.report, self.reported_at = message, time.monotonic()
        if self.report is None and self.exited in ready:
            self.gone = True  # it exited: whatever it sent was read above

    def kill(self) -> None:
        """End a rank still running: the process itself (it may not lead its group yet) and
        what it started."""
        self.ended = True
        send_signal(self.pid, signal.SIGKILL)
        _end_group(self.pid)


class RankGroupHandle:
    """N started ranks of one attempt: ``result()`` waits for the group and says how it ended."""

    def __init__(
        self, job: AttemptJob, start: Callable[[AttemptJob], ProcessHandle] = ProcessHandle
    ) -> None:
        """Start the N ranks, each with ``start(its job)``: the process backend's child, or
        (``_dask_ranks``) a fresh interpreter that a Dask worker may start."""
        self.info = job.info
        self.guard = job.guard
        self.size = job.task.nproc
        self.cancelled = False
        self.ended = threading.Event()
        self.lost: str | None = None  # why the engine ended the group as lost (frozen, hung)
        self.preempted_at: float | None = None  # a rank said it was preempted (SIGTERM sent on)
        port = free_port()
        self.ranks: list[_Rank] = []
        try:
            for rank in range(self.size):
                info = rank_info(job.info, rank, self.size, port)
                one = AttemptJob(job.task, job.arguments, info, job.guard, job.listener)
                self.ranks.append(_Rank(rank, start(one)))
        except BaseException:  # the ranks started so far must not wait for the others forever
            for started in self.ranks:
                started.kill()
            self._teardown()
            raise

    def result(self) -> Outcome:
        try:
            try:
                self._watch()
            except KeyboardInterrupt as exc:
                self._stop_all()
                aborted = Outcome.from_error(
                    AttemptStatus.ABORTED, exc, self.info.checkpoint_at_start
                )
                aborted.pid = self.ranks[0].pid
                return aborted
        finally:
            self._teardown()
            self.ended.set()
        return self._outcome()

    def cancel(self) -> None:
        """Stop every rank: SIGTERM (they commit and stop), SIGKILL a while later. Called from
        another thread than ``result()``'s: it only sends signals."""
        self.cancelled = True
        if self.ended.is_set():
            return
        for rank in self.ranks:
            send_signal(rank.pid, signal.SIGTERM)
        timer = threading.Timer(_ABORT_WAIT, self._kill_if_running)
        timer.daemon = True
        timer.start()

    def _kill_if_running(self) -> None:
        if not self.ended.is_set():
            for rank in self.ranks:
                send_signal(rank.pid, signal.SIGKILL)

    # -- watching --------------------------------------------------------------------------------

    def _watch(self) -> None:
        """Until every rank reported or is gone: read them, and end those still running as soon
        as the group's ending is known (or past the time they had to follow)."""
        while True:
            running = [rank for rank in self.ranks if rank.running]
            if not running:
                return
            until = self._until(running)
            now = time.monotonic()
            if until is not None and now >= until:
                self._end(running)
                return
            handles = [r.handle.receiver for r in running] + [r.exited for r in running]
            # Wake up now and then: a SIGTERM handled meanwhile does not interrupt this wait.
            pause = 0.5 if until is None else min(0.5, until - now)
            ready = wait(handles, pause)
            for rank in running:
                rank.read(ready)
                if rank.gone:  # said here, not in `_until`: the group may end in this wake-up
                    log.warning(
                        "taskpoint: rank %d (pid %s) of %s attempt %d ended without reporting; "
                        "the attempt is lost and its other ranks are ended",
                        rank.rank, rank.pid, self.info.node, self.info.attempt,
                    )  # fmt: skip

    def _until(self, running: list[_Rank]) -> float | None:
        """When the ranks still running are to be ended (``None``: not yet known)."""
        now = time.monotonic()
        reports = [r for r in self.ranks if r.report is not None]
        if any(r.gone for r in self.ranks):
            return now  # its peers cannot go on without it
        for rank in running:
            if rank.handle.beats.frozen():
                silent = rank.handle.beats.silent_for()
                log.warning(
                    "taskpoint: rank %d (pid %s) of %s attempt %d sent no heartbeat for %.0f s; "
                    "ending the group",
                    rank.rank, rank.pid, self.info.node, self.info.attempt, silent,
                )  # fmt: skip
                self.lost = f"rank {rank.rank} of {self.size}: {_frozen(silent, rank.handle.beats)}"
                return now
        statuses = {r.status for r in reports}
        if self.guard.preempted or self._preempted_since() is not None:
            return self._preemption_deadline(running)
        if AttemptStatus.RECOVERABLE in statuses:
            return now
        failed = [r.reported_at for r in reports if r.status != AttemptStatus.SUCCEEDED]
        if failed:
            return min(failed) + SETTLE
        if not reports:
            return None
        until = min(r.reported_at for r in reports) + PEER_FINISH_WAIT
        if now >= until:
            self.lost = (
                f"rank {running[0].rank} of {self.size} had not returned {PEER_FINISH_WAIT:g} s "
                "after another rank returned (hung, as in a process group's teardown); it was "
                "killed, and the attempt resumes from its latest committed checkpoint"
            )
        return until

    def _preempted_since(self) -> float | None:
        """When a rank first said it was preempted (a notice, or its outcome)."""
        times = [r.preempted_at for r in self.ranks if r.preempted_at is not None]
        times += [r.reported_at for r in self.ranks if r.status == AttemptStatus.PREEMPTED]
        return min(times, default=None)

    def _preemption_deadline(self, running: list[_Rank]) -> float:
        """A preempted group: every rank saves and stops by the grace period's end."""
        if self.guard.preempted and self.guard.deadline is not None:
            return self.guard.deadline + _GRACE_MARGIN  # the driver's own SIGTERM reached all
        since = self._preempted_since()
        assert since is not None
        if self.preempted_at is None:  # a SIGTERM that reached some ranks only: send it on
            self.preempted_at = since
            for rank in running:
                if rank.preempted_at is None:
                    send_signal(rank.pid, signal.SIGTERM)
        return self.preempted_at + self.guard.grace + _GRACE_MARGIN

    def _end(self, running: list[_Rank]) -> None:
        for rank in running:
            log.info(
                "taskpoint: ending rank %d (pid %s) of %s attempt %d: the group's attempt is over",
                rank.rank, rank.pid, self.info.node, self.info.attempt,
            )  # fmt: skip
            rank.kill()

    def _stop_all(self) -> None:
        """Ctrl-C: SIGTERM every rank, SIGKILL those still running a while later."""
        running = [rank for rank in self.ranks if rank.running]
        for rank in running:
            send_signal(rank.pid, signal.SIGTERM)
        waiting = [rank.exited for rank in running]
        limit = time.monotonic() + _ABORT_WAIT
        while waiting and time.monotonic() < limit:
            ready = wait(waiting, max(0.0, limit - time.monotonic()))
            waiting = [handle for handle in waiting if handle not in ready]
        for rank in running:
            rank.kill()

    def _teardown(self) -> None:
        """Bounded: ranks that reported get ``EXIT_WAIT`` to exit by themselves, then every
        rank's process group is killed and every rank reaped."""
        waiting = [rank.exited for rank in self.ranks if rank.report is not None]
        limit = time.monotonic() + EXIT_WAIT
        while waiting and time.monotonic() < limit:
            ready = wait(waiting, max(0.0, limit - time.monotonic()))
            waiting = [handle for handle in waiting if handle not in ready]
        for rank in self.ranks:
            if rank.exited in waiting:
                log.warning(
                    "taskpoint: rank %d (pid %s) of %s attempt %d did not exit within %g s after "
                    "it reported; killing it",
                    rank.rank, rank.pid, self.info.node, self.info.attempt, EXIT_WAIT,
                )  # fmt: skip
                send_signal(rank.pid, signal.SIGKILL)
            self.guard.children.discard(rank.pid)
            rank.handle.receiver.close()
            _end_group(rank.pid)
        for rank in self.ranks:
            rank.handle.child.join()
            rank.handle.ended.set()
            if rank.exited != rank.handle.child.sentinel:
                os.close(rank.exited)
        log.info(
            "taskpoint: %s attempt %d: all %d ranks ended",
            self.info.node,
            self.info.attempt,
            self.size,
        )

    # -- the group's outcome ---------------------------------------------------------------------

    def _outcome(self) -> Outcome:
        reports = [r for r in self.ranks if r.report is not None]
        done = len(reports) == self.size and self.lost is None
        if done and all(r.status == AttemptStatus.SUCCEEDED for r in reports):
            outcome = self.ranks[0].report
            assert outcome is not None
        else:
            outcome = self._failure(reports)
            if self.cancelled:
                stopped = TaskpointError(
                    f"{self.info.node} attempt {self.info.attempt} was stopped: its execution ended"
                )
                outcome = Outcome.from_error(AttemptStatus.ABORTED, stopped)
        ends = [r.report.checkpoint_at_end for r in reports if r.report is not None]
        outcome.checkpoint_at_end = _newest(ends, self.info.checkpoint_at_start)
        first = self.ranks[0].report  # rank 0 measures the attempt (goodput ledger)
        if first is not None and first.ledger is not None:
            outcome.ledger = first.ledger
        outcome.pid = self.ranks[0].pid
        return outcome

    def _failure(self, reports: list[_Rank]) -> Outcome:
        """How a group that did not succeed ended, by precedence."""
        preempted = self.guard.preempted or self._preempted_since() is not None
        if not preempted:
            dead = [r for r in self.ranks if r.gone]
            if dead:
                how = _describe_death(dead[0].handle.child.exitcode, dead[0].handle.info)
                return _lost(
                    f"rank {dead[0].rank} of {self.size}: {how}; the other ranks were ended"
                )
            if self.lost is not None:
                return _lost(self.lost)
        by_time = sorted(reports, key=lambda r: r.reported_at)
        for status in _PRECEDENCE:
            for rank in by_time:
                report = rank.report
                if report is not None and report.status == status:
                    report.error_message = f"rank {rank.rank}: {report.error_message or ''}"
                    return report
            if status == AttemptStatus.PREEMPTED and preempted:  # no rank could say so itself
                return Outcome.from_error(
                    AttemptStatus.PREEMPTED,
                    Preempted(
                        f"{self.info.node} attempt {self.info.attempt} was preempted; its ranks "
                        "were ended at the grace period's end without reporting"
                    ),
                )
        return _lost(self.lost or "the group's ranks ended without an outcome")


def _lost(why: str) -> Outcome:
    return Outcome.from_error(AttemptStatus.LOST, AttemptLost(why))


def _newest(versions: list[Any], start: Any) -> Any:
    """The newest version any rank saw committed at its end (each rank reads the scope)."""
    known = [v for v in versions if v is not None]
    return max(known, key=lambda v: v.order) if known else start
