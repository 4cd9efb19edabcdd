"""Fault 1, exactly: a writer SIGKILLed at each point of the commit protocol, attempt after attempt.

Random kills (test_random_kills.py) rarely land in the narrow windows between the protocol's
steps; here a child process (faults_crash_point.py) kills itself at one named point of its
write, sync or async, and the next attempts die at the same point again: at each step of a
payload commit (a write over the inline limit), and at each step of an inline commit (a small
write: its manifest alone, one file and two syncs). After every death the scope must hold only
intact versions, keep every logged commit (or ``keep`` newer ones), and
never more than ``keep`` + 1 committed versions; a clean later attempt sweeps every leftover.
A busy async writer must also keep deleting retired versions while it commits.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import faults_crash_point as child
import pytest
from faults_procs import DEADLINE, log_lines
from faults_stats import record

from taskpoint import Checkpoint
from taskpoint.checkpoint.version import parse_version_id

pytestmark = pytest.mark.slow  # kills processes, starts a JVM or a browser

CHILD = Path(child.__file__)
KEEP = 2


def _run_child(url: Path, attempt: int, log: Path, point: str, kill_at: int, count: int, *extra):
    done = subprocess.run(
        [
            sys.executable,
            str(CHILD),
            str(url),
            str(attempt),
            str(KEEP),
            str(log),
            point,
            str(kill_at),
            str(count),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    return done.returncode, done.stderr


def _verify(url: Path, log: Path) -> list:
    """The scope as the next attempt sees it; return its committed versions."""
    logged = [(f[0], int(f[1])) for f in log_lines(log)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a torn or corrupt committed version warns
        cp = Checkpoint.open(url, attempt=1, keep=KEEP)
        versions = cp.versions()
        assert len(versions) <= KEEP + 1, [v.id for v in versions]
        for v in versions:
            out = url.parent / f"check-{v.id}-{time.monotonic_ns()}"
            cp.restore(out, version=v.id)
            small = v.metadata.get("small", False)
            assert (out / "data").read_bytes() == child.content(v.step, small), f"{v.id} is torn"
        ids = {v.id: v for v in versions}
        lost = [
            vid
            for vid, step in logged
            if vid not in ids and sum(v.order > parse_version_id(vid) for v in versions) < KEEP
        ]
        record("versions_lost", len(lost))
        record("commits_checked", len(versions))
        assert not lost, f"logged commits lost: {lost}"
        if logged:
            assert versions[-1].order >= max(parse_version_id(vid) for vid, _ in logged)
        cp.close()
    return versions


def _leftovers(url: Path) -> list[str]:
    names = os.listdir(url / "v")
    manifests = {n.removesuffix(".manifest.json") for n in names if n.endswith(".json")}
    staging = url / ".staging"
    return sorted(
        [n for n in names if n.removesuffix(".manifest.json") not in manifests]
        + (os.listdir(staging) if staging.exists() else [])
    )


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("point", [p for p in child.POINTS if p != "none"])
def test_sigkill_at_each_point_of_the_commit_protocol(point, mode, tmp_path):
    _kill_at_point(point, tmp_path, *(("--async",) if mode == "async" else ()))


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("point", [p for p in child.INLINE_POINTS if p != "none"])
def test_sigkill_at_each_point_of_the_inline_commit(point, mode, tmp_path):
    _kill_at_point(point, tmp_path, "--small", *(("--async",) if mode == "async" else ()))


@pytest.mark.parametrize(
    "point", [p for p in child.INLINE_POINTS + child.NAMED_POINTS if p != "none"]
)
def test_sigkill_at_each_point_of_the_inline_commit_through_a_named_temp_file(point, tmp_path):
    """Where the filesystem cannot make a file without a name (no ``O_TMPFILE``)."""
    _kill_at_point(point, tmp_path, "--small", "--named")


def _kill_at_point(point: str, tmp_path: Path, *extra: str) -> None:
    url, log = tmp_path / "scope", tmp_path / "commits.log"
    committed_once: set[str] = set()  # every version seen committed, by the log or a listing
    for attempt in (1, 2, 3):
        # attempt 1 commits three versions first (so retention has work), later ones die at once
        kill_at = 4 if attempt == 1 else 1
        code, err = _run_child(url, attempt, log, point, kill_at, 6, *extra)
        assert code == -signal.SIGKILL, f"the child was not killed at {point!r}: {code} {err}"
        record("kills")
        committed_once |= {v.id for v in _verify(url, log)}
        committed_once |= {fields[0] for fields in log_lines(log)}
        left = _leftovers(url)
        # What killed writes left: at most a payload prefix and a manifest temp file each.
        assert len([n for n in left if n not in committed_once]) <= 2 * attempt, left
        # Payloads of versions retention retired (manifest deleted at once, payload deleted on
        # the writer thread after the commit returned, so a SIGKILL may come first; a sync
        # writer's next write does not wait for it): attempt 1 retires at most two versions
        # before it dies, each later one at most one, and every attempt deletes them again.
        assert len([n for n in left if n in committed_once]) <= attempt + 1, left
    code, err = _run_child(url, 4, log, "none", 0, 3, *extra)
    assert code == 0, err
    versions = _verify(url, log)
    assert [v.step for v in versions] == [4002, 4003]
    assert _leftovers(url) == [], "a clean later attempt did not sweep what killed ones left"


def test_a_busy_async_writer_keeps_deleting_retired_versions(tmp_path):
    """Async writes faster than the writer commits them: the payloads of versions retention
    retired must still be deleted while it stays busy, not when it finally idles."""
    url = tmp_path / "scope"
    cp = Checkpoint.open(url, keep=KEEP)
    data = os.urandom(64)
    worst = 0
    deadline = time.monotonic() + 1.0
    step = 0
    while time.monotonic() < deadline:  # always a write queued behind the one in flight
        step += 1
        cp.write(data, step=step, blocking=False)
        time.sleep(0.0005)
        worst = max(worst, sum(1 for n in os.listdir(url / "v") if "." not in n))
    cp.wait()
    # keep + the one in flight + the one whose deletion is next in line
    assert worst <= KEEP + 2, f"{worst} payloads on disk with keep={KEEP}"
    cp.close()
