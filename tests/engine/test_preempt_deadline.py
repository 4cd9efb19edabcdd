"""The preemption deadline: ``current_context().preempt_deadline`` and the last checkpoint
planned against it, on a store throttled to a known speed (``throttled://``, see
tests/support/throttled_fs.py) with a short grace period.

Each task measures the store first (a small write, then a large one, blocking), so the engine's
estimates are its own; the writes that matter are then made as a real SIGTERM arrives, sent to
this process (inline) or to the attempt's child (``isolation="process"``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from pathlib import Path

import pytest

import taskpoint
from support import throttled_fs
from support.polling import wait_for_file, wait_until
from taskpoint import Checkpoint, current_context, task
from taskpoint.engine import blobs, configure

MiB = 1 << 20
RATE = 8 * MiB  # bytes per second the store takes
MEASURE = 8 * MiB  # the large blocking write each task measures the store with (~1 s)
HUGE = 48 * MiB  # an async write that cannot finish in the grace period (~6 s)


@pytest.fixture
def slow_storage(tmp_path: Path):
    throttled_fs.register()
    throttled_fs.ThrottledFS.bytes_per_s = RATE
    try:
        yield throttled_fs.url(tmp_path / "blobs")
    finally:
        throttled_fs.ThrottledFS.bytes_per_s = None


def state(step: int, size: int = 1024) -> bytes:
    head = f"step {step} ".encode()
    return (head * (size // len(head) + 1))[:size]


def measure(cp: Checkpoint) -> None:
    """Steps 1 and 2: what a commit costs on this store, fixed part and per byte."""
    cp.write(state(1), step=1)
    cp.write(state(2, MEASURE), step=2)


def sigterm_when(marker: Path) -> dict[str, float]:
    """SIGTERM to this process once ``marker`` exists; the returned dict gets its time."""
    sent: dict[str, float] = {}

    def send() -> None:
        with contextlib.suppress(AssertionError):  # sent anyway: the test's asserts tell
            wait_until(marker.exists, 60, str(marker))
        sent["at"] = time.monotonic()
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=send, daemon=True).start()
    return sent


def sigterm_child_when(marker: Path) -> None:
    """SIGTERM to the pid an attempt's child writes into ``marker``."""

    def send() -> None:
        try:
            pid = int(wait_for_file(marker, 60).strip())
        except AssertionError:
            return  # no attempt announced itself: the test's asserts tell
        os.kill(pid, signal.SIGTERM)

    threading.Thread(target=send, daemon=True).start()


def scope_of(execution) -> str:
    node = execution.nodes[0]
    return blobs.checkpoint_url(execution.storage, execution.id, node.key)


def unfinished(url: str) -> list[str]:
    """Payload prefixes under ``v/`` neither committed nor retired: writes under way, or cut."""
    vdir = Path(throttled_fs.local_path(url)) / "v"
    names = {p.name for p in vdir.iterdir()}
    return [
        n
        for n in names
        if (vdir / n).is_dir()
        and f"{n}.manifest.json" not in names
        and not any(m.startswith(f"{n}.retired.") for m in names)
    ]


def wait_no_write_under_way(url: str) -> None:
    """At full speed again, wait until no payload prefix is left unfinished (an abandoned
    write finishes, or is cancelled and deletes what it wrote)."""
    throttled_fs.ThrottledFS.bytes_per_s = None
    wait_until(lambda: not unfinished(url), 60, f"the writes under {url} to end")


def steps(url: str) -> list[int | None]:
    with Checkpoint.open(url, readonly=True) as cp:
        return [v.step for v in cp.versions()]


# -- preempt_deadline ------------------------------------------------------------------------


def test_preempt_deadline_is_none_until_sigterm_then_its_time_plus_the_grace(tmp_path):
    configure(grace=5.0)
    marker, seen = tmp_path / "ready", {}

    @task(retries=0)
    def watch() -> None:
        ctx = current_context()
        seen["before"] = ctx.preempt_deadline
        marker.write_text("ready")
        wait_until(lambda: ctx.preempted, 30, "SIGTERM")
        seen["after"], seen["noticed"] = ctx.preempt_deadline, time.monotonic()
        ctx.checkpoint.write(b"x", step=1)  # commits, then stops the attempt

    sent = sigterm_when(marker)
    execution = taskpoint.run(watch)

    assert execution.status == "preempted"
    assert seen["before"] is None
    # Set by the handler, which ran between the kill and the task noticing it.
    assert sent["at"] + 5.0 <= seen["after"] <= seen["noticed"] + 5.0
    assert "committed step 1" in execution.nodes[0].attempts[0].error


def test_on_preempt_can_bring_the_deadline_forward_and_the_attempt_stops_by_then(tmp_path):
    configure(grace=60.0)
    marker, seen = tmp_path / "ready", {}

    @task(retries=0)
    def stubborn() -> None:
        ctx = current_context()

        def notice() -> None:  # the cloud said: 0.5 s, not the 60 s of the grace period
            ctx.preempt_deadline = time.monotonic() + 0.5
            seen["set"] = ctx.preempt_deadline

        ctx.on_preempt(notice)
        marker.write_text("ready")
        time.sleep(120)  # writes no checkpoint: the alarm must stop it

    sent = sigterm_when(marker)
    execution = taskpoint.run(stubborn)
    ended = time.monotonic()

    assert execution.status == "preempted"
    assert "before the deadline" in execution.nodes[0].attempts[0].error
    assert sent["at"] < seen["set"] <= sent["at"] + 30
    assert ended - sent["at"] < 30  # stopped at the new deadline, far before the grace period


def test_a_deadline_later_than_the_grace_lets_a_late_write_commit(tmp_path):
    configure(grace=0.3)
    marker = tmp_path / "ready"

    @task(retries=0)
    def late() -> None:
        ctx = current_context()
        ctx.on_preempt(lambda: setattr(ctx, "preempt_deadline", time.monotonic() + 30))
        marker.write_text("ready")
        wait_until(lambda: ctx.preempted, 30, "SIGTERM")
        time.sleep(1.0)  # past the 0.3 s grace period, well before the deadline set
        ctx.checkpoint.write(b"late", step=7)

    sigterm_when(marker)
    execution = taskpoint.run(late)

    assert execution.status == "preempted"
    error = execution.nodes[0].attempts[0].error
    assert "committed step 7" in error  # stopped by its write, not by the alarm
    with Checkpoint.open(scope_of(execution), readonly=True) as cp:
        assert cp.read() == b"late"


def test_setting_the_deadline_before_any_sigterm_is_a_preemption_notice(tmp_path):
    calls: list[str] = []

    @task(retries=0)
    def noticed() -> None:
        ctx = current_context()
        ctx.on_preempt(lambda: calls.append("on_preempt"))
        ctx.checkpoint.write(b"1", step=1)
        assert not ctx.preempted
        ctx.preempt_deadline = time.monotonic() + 20  # e.g. read from the cloud's metadata
        assert ctx.preempted and calls == ["on_preempt"]
        ctx.checkpoint.write(b"2", step=2)  # commits, then stops the attempt
        calls.append("not stopped")

    execution = taskpoint.run(noticed)
    assert execution.status == "preempted"
    assert calls == ["on_preempt"]
    assert "committed step 2" in execution.nodes[0].attempts[0].error


def test_preempt_deadline_rejects_what_is_not_a_time():
    from taskpoint.context import TaskContext

    ctx = TaskContext("e", "n#1", "n", 1, lambda c: None)
    with pytest.raises(TypeError):
        ctx.preempt_deadline = "soon"  # type: ignore[assignment]
    with pytest.raises(ValueError):
        ctx.preempt_deadline = float("nan")
    assert ctx.preempt_deadline is None and not ctx.preempted


# -- the last checkpoint, planned against the deadline -----------------------------------------


def newest_over_huge(marker: Path, isolation: str):
    """Steps 1-2 measure the store; step 3 (huge, async) is in flight and step 4 queued behind
    it when SIGTERM comes; then the task writes step 5, small and async."""

    @task(isolation=isolation, retries=0, system_retries=1)
    def train() -> int | None:
        ctx = current_context()
        cp = ctx.checkpoint
        if ctx.attempt > 1:  # the retry after the preemption: where does it resume?
            cp.read()
            latest = cp.latest()
            return None if latest is None else latest.step
        measure(cp)
        throttled_fs.under_way(lambda: cp.write(state(3, HUGE), step=3, blocking=False))
        cp.write(state(4), step=4, blocking=False)
        marker.write_text(str(os.getpid()))
        wait_until(lambda: ctx.preempted, 60, "SIGTERM")
        cp.write(state(5), step=5, blocking=False)  # planned, committed, then Preempted
        return -1  # not reached

    return train


def test_a_write_that_cannot_finish_gives_way_to_the_newest_state(tmp_path, slow_storage, caplog):
    configure(grace=1.0, storage=slow_storage)
    marker = tmp_path / "ready"
    caplog.set_level(logging.WARNING)
    sent = sigterm_when(marker)
    execution = taskpoint.run(newest_over_huge(marker, "inline"))
    ended = time.monotonic()

    assert execution.status == "preempted"
    (attempt,) = execution.nodes[0].attempts
    assert attempt.status == "preempted"
    # Stopped by its own write, planned, not by the alarm; and long before the huge write
    # (~6 s) could have ended.
    assert "committed step 5" in attempt.error, attempt.error
    assert ended - sent["at"] < 4.0
    url = scope_of(execution)
    with Checkpoint.open(url, readonly=True) as cp:
        latest = cp.latest()
        assert latest is not None and latest.step == 5 and cp.read() == state(5)
        assert attempt.checkpoint_at_end == latest.id
    logged = caplog.text
    assert "gave up step 3 (48.0 MiB) in flight" in logged
    assert "preempted: committed step 5" in logged
    # The huge write, let run at full speed, never commits after the newer state.
    wait_no_write_under_way(url)
    assert 3 not in steps(url)
    assert steps(url)[-1] == 5


def test_process_attempt_saves_the_newest_state_and_its_retry_resumes_there(tmp_path, slow_storage):
    configure(grace=1.0, storage=slow_storage)
    marker = tmp_path / "pid"
    sigterm_child_when(marker)
    execution = taskpoint.run(newest_over_huge(marker, "process"))

    assert execution.status == "succeeded", execution.error
    assert execution.result == 5  # the retry resumed from the state written after SIGTERM
    first, second = execution.nodes[0].attempts
    assert first.status == "preempted"
    assert "committed step 5" in first.error, first.error
    assert second.checkpoint_at_start == first.checkpoint_at_end
    # The child's huge write died with it (the driver waited for its end): never committed.
    assert 3 not in steps(scope_of(execution))


def test_a_write_that_would_not_fit_is_skipped_not_cut(tmp_path, slow_storage, caplog):
    configure(grace=1.0, storage=slow_storage)
    marker = tmp_path / "ready"
    caplog.set_level(logging.WARNING)

    @task(retries=0)
    def train() -> None:
        ctx = current_context()
        cp = ctx.checkpoint
        measure(cp)
        marker.write_text("ready")
        wait_until(lambda: ctx.preempted, 60, "SIGTERM")
        cp.write(state(3, 3 * MEASURE), step=3, blocking=False)  # ~3 s: does not fit in 1 s

    sent = sigterm_when(marker)
    execution = taskpoint.run(train)
    ended = time.monotonic()

    assert execution.status == "preempted"
    (attempt,) = execution.nodes[0].attempts
    assert "not saved in time" in attempt.error and "step 2" in attempt.error, attempt.error
    assert ended - sent["at"] < 1.0 + 2.0  # it did not wait for the deadline
    assert "not saving step 3 (24.0 MiB)" in caplog.text
    assert "step 2 (version" in caplog.text  # the step that stays the latest
    url = scope_of(execution)
    assert unfinished(url) == []  # nothing of step 3: it was never started
    assert steps(url) == [1, 2]


def test_a_blocking_write_that_would_not_fit_raises_save_skipped(tmp_path, slow_storage):
    configure(grace=1.0, storage=slow_storage)
    marker = tmp_path / "ready"
    raised: list[BaseException] = []

    @task(retries=0)
    def train() -> None:
        ctx = current_context()
        cp = ctx.checkpoint
        measure(cp)
        marker.write_text("ready")
        wait_until(lambda: ctx.preempted, 60, "SIGTERM")
        try:
            cp.write(state(3, 3 * MEASURE), step=3)
        except BaseException as exc:
            raised.append(exc)
            raise

    sigterm_when(marker)
    execution = taskpoint.run(train)

    from taskpoint.checkpoint import SaveSkipped

    assert execution.status == "preempted"
    assert [type(e) for e in raised] == [SaveSkipped]
    assert "step 3 (24.0 MiB)" in str(raised[0]) and "step 2" in str(raised[0])
    assert steps(scope_of(execution)) == [1, 2]


def last_save_then_compute(marker: Path, isolation: str, record: Path):
    """Steps 1-2 measure the store; step 3 (large, async, ~1 s) is in flight and step 4 (small,
    async) queued when SIGTERM comes; the task then computes on without writing, until the
    alarm stops it at the deadline. The grace period is long enough for both."""

    @task(isolation=isolation, retries=0, system_retries=1)
    def train() -> int | None:
        ctx = current_context()
        cp = ctx.checkpoint
        if ctx.attempt > 1:
            cp.read()
            latest = cp.latest()
            return None if latest is None else latest.step
        measure(cp)
        throttled_fs.under_way(lambda: cp.write(state(3, MEASURE), step=3, blocking=False))
        cp.write(state(4), step=4, blocking=False)
        record.write_text("4")  # the last save() call that returned
        marker.write_text(str(os.getpid()))
        time.sleep(120)
        return -1

    return train


def test_the_committed_version_is_never_older_than_the_last_save_when_the_grace_allows(
    tmp_path, slow_storage
):
    configure(grace=3.0, storage=slow_storage)
    marker, record = tmp_path / "ready", tmp_path / "last-save"
    sent = sigterm_when(marker)
    execution = taskpoint.run(last_save_then_compute(marker, "inline", record))
    ended = time.monotonic()

    assert execution.status == "preempted"
    (attempt,) = execution.nodes[0].attempts
    assert "before the deadline" in attempt.error  # the alarm stopped the computing task
    assert ended - sent["at"] < 3.0 + 5.0
    url = scope_of(execution)
    with Checkpoint.open(url, readonly=True) as cp:
        latest = cp.latest()
        assert latest is not None and latest.step >= int(record.read_text())
        assert cp.read() == state(4)
        assert attempt.checkpoint_at_end == latest.id
    wait_no_write_under_way(url)
    assert steps(url)[-2:] == [3, 4]  # both fitted: committed in call order


def test_a_process_attempt_keeps_its_last_save_when_the_grace_allows(tmp_path, slow_storage):
    configure(grace=3.0, storage=slow_storage)
    marker, record = tmp_path / "pid", tmp_path / "last-save"
    sigterm_child_when(marker)
    execution = taskpoint.run(last_save_then_compute(marker, "process", record))

    assert execution.status == "succeeded", execution.error
    first, _second = execution.nodes[0].attempts
    assert first.status == "preempted"
    assert execution.result is not None and execution.result >= int(record.read_text())
