"""The work-over-time series on hand-made attempts: levels, pruned commits, open attempts."""

from __future__ import annotations

from datetime import UTC, datetime

from taskpoint.checkpoint import CheckpointVersion
from taskpoint.engine.execution import Attempt
from taskpoint.ui.work import work_series


def attempt(n, status, started, ended, at_start, at_end):
    return Attempt(n, status, None, started, ended, 1, at_start, at_end)


def version(attempt_n, seq, t, step=None):
    return CheckpointVersion(
        id=f"{attempt_n:04d}-{seq:06d}",
        attempt=attempt_n,
        seq=seq,
        step=step,
        metadata={},
        kind="bytes",
        size=3,
        files=1,
        created=datetime.fromtimestamp(t, UTC),
    )


def ends(series):
    return [(p["attempt"], p["level"]) for p in series["points"] if p["kind"] == "end"]


def test_commit_levels_follow_the_resume_chain_and_mark_pruned_stretches():
    attempts = [
        attempt(1, "recoverable", 0.0, 10.0, None, "0001-000004"),
        attempt(2, "succeeded", 11.0, 20.0, "0001-000004", "0002-000003"),
    ]
    versions = [version(2, 2, 15.0), version(2, 3, 18.0)]
    series = work_series(attempts, versions, now=30.0)
    assert series["unit"] == "commits"
    assert ends(series) == [(1, 4), (2, 7)]
    commits = [p for p in series["points"] if p["kind"] == "commit"]
    assert [(p["level"], p["pruned_before"]) for p in commits] == [(6, 1), (7, 0)]
    (failure,) = series["failures"]
    assert failure["uncommitted_s"] is None  # attempt 1's last commit was pruned: a bound only
    assert failure["uncommitted_max_s"] == 10.0
    assert failure["resumed_level"] == 4 and failure["lost_level"] == 0
    assert failure["resumed_at"] == 11.0


def test_steps_are_used_when_every_version_has_one():
    attempts = [
        attempt(1, "lost", 0.0, 10.0, None, "0001-000002"),
        attempt(2, "succeeded", 12.0, 20.0, "0001-000002", "0002-000001"),
    ]
    versions = [version(1, 1, 2.0, 100), version(1, 2, 4.0, 200), version(2, 1, 15.0, 300)]
    series = work_series(attempts, versions, now=30.0)
    assert series["unit"] == "step"
    assert ends(series) == [(1, 200), (2, 300)]
    (failure,) = series["failures"]
    assert failure["uncommitted_s"] == 6.0  # lost 10.0 - 4.0: its last commit is retained


def test_a_retry_that_resumed_an_older_version_lost_committed_work():
    attempts = [
        attempt(1, "recoverable", 0.0, 10.0, None, "0001-000003"),
        attempt(2, "succeeded", 11.0, 20.0, "0001-000001", "0002-000001"),
    ]
    series = work_series(attempts, [], now=30.0)
    (failure,) = series["failures"]
    assert failure["level"] == 3 and failure["resumed_level"] == 1 and failure["lost_level"] == 2


def test_an_attempt_that_committed_nothing_lost_its_whole_run():
    attempts = [
        attempt(1, "recoverable", 0.0, 5.0, None, "0001-000002"),
        attempt(2, "preempted", 6.0, 9.0, "0001-000002", "0001-000002"),
        attempt(3, "succeeded", 10.0, 20.0, "0001-000002", "0003-000001"),
    ]
    series = work_series(attempts, [version(3, 1, 19.0)], now=30.0)
    assert series["failures"][1]["uncommitted_s"] == 3.0
    assert ends(series) == [(1, 2), (2, 2), (3, 3)]


def test_running_and_unrecorded_ends_keep_the_last_known_level():
    attempts = [
        attempt(1, "lost", 0.0, 10.0, None, None),  # its driver died: end never recorded
        attempt(2, "running", 11.0, None, "0001-000002", None),
    ]
    versions = [version(1, 2, 5.0), version(2, 1, 13.0)]
    series = work_series(attempts, versions, now=16.0)
    assert ends(series) == [(1, 2), (2, 3)]  # never a drop to 0
    running_end = series["points"][-1]
    assert running_end["t"] == 16.0 and running_end["status"] == "running"
    (failure,) = series["failures"]
    assert failure["uncommitted_s"] is None and failure["uncommitted_max_s"] == 5.0


def test_no_checkpoint_ever():
    attempts = [attempt(1, "failed", 0.0, 2.0, None, None)]
    series = work_series(attempts, [], now=3.0)
    assert ends(series) == [(1, 0)]
    assert series["failures"][0]["uncommitted_s"] == 2.0


def test_an_attempt_that_names_its_own_start_version_has_no_level():
    attempts = [attempt(2, "succeeded", 0.0, 1.0, "0002-000001", "0002-000002")]
    series = work_series(attempts, [], now=3.0)
    assert ends(series) == [(2, None)]
