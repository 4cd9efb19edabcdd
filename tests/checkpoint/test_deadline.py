"""Writing against a deadline (``Checkpoint.deadline``, ``Checkpoint.flush``), without the
engine, on a store throttled to a known speed (``throttled://``, tests/support/throttled_fs.py).

Each test first commits a small and a large version, blocking, so the scope's estimates come
from its own measurements, as they do in a task.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from support import throttled_fs
from support.polling import wait_until
from taskpoint import Checkpoint
from taskpoint.checkpoint import SaveSkipped
from taskpoint.checkpoint.deadline import estimate_s
from taskpoint.checkpoint.stats import ScopeStats
from taskpoint.checkpoint.version import CheckpointVersion

MiB = 1 << 20
RATE = 8 * MiB
MEASURE = 8 * MiB  # ~1 s at RATE


@pytest.fixture
def slow(tmp_path: Path) -> Iterator[Checkpoint]:
    throttled_fs.register()
    throttled_fs.ThrottledFS.bytes_per_s = RATE
    cp = Checkpoint.open(throttled_fs.url(tmp_path / "scope"))
    try:
        yield cp
    finally:
        throttled_fs.ThrottledFS.bytes_per_s = None
        cp.close(timeout=60)


def data(step: int, size: int = 1024) -> bytes:
    return (f"step {step} ".encode() * (size // 6 + 1))[:size]


def measured(cp: Checkpoint) -> None:
    cp.write(data(1), step=1)
    cp.write(data(2, MEASURE), step=2)


def steps(cp: Checkpoint) -> list[int | None]:
    return [v.step for v in cp.versions()]


def unfinished(cp: Checkpoint) -> list[str]:
    vdir = Path(throttled_fs.local_path(cp.url)) / "v"
    names = {p.name for p in vdir.iterdir()}
    return [n for n in names if (vdir / n).is_dir() and f"{n}.manifest.json" not in names]


def test_estimates_come_from_the_scopes_own_commits():
    stats = ScopeStats()
    assert estimate_s(stats, 100) is None  # nothing to go on yet

    def version(size: int) -> CheckpointVersion:
        return CheckpointVersion("0001-000001", 1, 1, None, {}, "bytes", size, 1, datetime.now(UTC))

    stats.note_commit(version(1000), 0.01)  # a fixed cost of at most 10 ms
    stats.note_commit(version(10_000_000), 1.01)  # and 1 s per 10 MB on top
    assert estimate_s(stats, 1000) == pytest.approx(0.0101, abs=1e-3)
    assert estimate_s(stats, 20_000_000) == pytest.approx(2.01, rel=0.01)
    assert estimate_s(stats, None) is None  # a stream: its size is unknown


def test_flush_without_a_deadline_waits_for_everything(slow):
    measured(slow)
    throttled_fs.under_way(lambda: slow.write(data(3, MEASURE), step=3, blocking=False))
    slow.write(data(4), step=4, blocking=False)
    report = slow.flush()
    assert report.saved is None and not report.skipped and report.abandoned is None
    assert steps(slow)[-2:] == [3, 4]


def test_the_newest_state_goes_first_when_the_write_in_flight_cannot_finish(slow, caplog):
    caplog.set_level(logging.WARNING)
    measured(slow)
    huge = throttled_fs.under_way(lambda: slow.write(data(3, 6 * MEASURE), step=3, blocking=False))
    small = slow.write(data(4), step=4, blocking=False)
    began = time.monotonic()
    report = slow.flush(began + 1.0)

    assert time.monotonic() - began < 1.0  # did not wait for the huge write
    assert report.saved is not None and report.saved.step == 4
    assert small.result(timeout=0) == report.saved
    assert report.abandoned == "step 3 (48.0 MiB)"
    assert "committed step 4" in report.summary() and "gave up step 3" in report.summary()
    assert "step 3 (48.0 MiB) in flight would not be committed in time" in caplog.text
    assert slow.latest() == report.saved
    slow.wait(timeout=0)  # nobody waits for the abandoned write any more

    throttled_fs.ThrottledFS.bytes_per_s = None  # let it run out: it is cancelled
    assert huge.result(timeout=60) is None
    wait_until(lambda: not unfinished(slow), 30, "the cancelled write to clean up")
    assert steps(slow) == [1, 2, 4]
    slow.write(data(5), step=5)  # the scope goes on, after the version saved
    assert steps(slow)[-1] == 5 and slow.latest().id > report.saved.id


def test_both_are_committed_in_call_order_when_they_fit(slow):
    measured(slow)
    throttled_fs.under_way(lambda: slow.write(data(3, MEASURE), step=3, blocking=False))
    slow.write(data(4), step=4, blocking=False)  # ~1 s for the one in flight, then this
    report = slow.flush(time.monotonic() + 10.0)
    assert report.saved is not None and report.saved.step == 4
    assert report.abandoned is None and not report.skipped
    assert steps(slow) == [3, 4]  # retention keeps two


def test_a_blocking_write_that_would_not_fit_is_not_started(slow):
    measured(slow)
    slow.deadline = time.monotonic() + 1.0
    began = time.monotonic()
    with pytest.raises(SaveSkipped) as info:
        slow.write(data(3, 3 * MEASURE), step=3)  # ~3 s
    assert time.monotonic() - began < 0.5
    assert "step 3 (24.0 MiB)" in str(info.value) and "step 2 (version" in str(info.value)
    assert unfinished(slow) == [] and steps(slow) == [1, 2]
    slow.write(data(4), step=4)  # a small one still fits
    assert steps(slow)[-1] == 4


def test_an_async_write_with_a_deadline_is_planned_at_once(slow, caplog):
    caplog.set_level(logging.WARNING)
    measured(slow)
    slow.deadline = time.monotonic() + 1.0
    too_big = slow.write(data(3, 3 * MEASURE), step=3, blocking=False)
    assert too_big.done() and too_big.result() is None
    assert "not saving step 3 (24.0 MiB)" in caplog.text
    assert "step 2 (version" in caplog.text
    fits = slow.write(data(4), step=4, blocking=False)
    assert fits.done() and fits.result().step == 4
    assert unfinished(slow) == [] and steps(slow) == [2, 4]


def test_without_a_measurement_a_write_is_assumed_to_fit(tmp_path):
    with Checkpoint.open(tmp_path / "scope") as cp:
        cp.deadline = time.monotonic() + 5.0
        assert cp.write(b"first", step=1).step == 1
        cp.deadline = time.monotonic() - 1.0  # past: nothing fits any more
        with pytest.raises(SaveSkipped):
            cp.write(b"late", step=2)
        assert cp.read() == b"first"
