"""Crash safety with real processes: a writer is SIGKILLed at random moments, over and over.

The child (crash_child.py) writes checkpoints in a loop -- 1 byte to 64 MiB; bytes, files,
streams and directories; sync and async -- and logs each version id once its write returned or
its future resolved. After every kill the parent checks, as a fresh process would:

- no CheckpointWarning: no committed version is torn or corrupt;
- every committed version, `read()` and `restore()` give exactly what the child wrote for it;
- the latest committed version is at least the last logged one, and that one is still kept
  unless `keep` newer versions replaced it;
- leftovers of killed writes (uncommitted payloads, manifest temp files, staging dirs) stay
  bounded across restarts, and a clean run of a later attempt sweeps them all.
"""

from __future__ import annotations

import importlib.util
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from taskpoint import Checkpoint, CheckpointError
from taskpoint.checkpoint.version import parse_version_id
from taskpoint.checkpoint.writer import LAZY_CHORES

pytestmark = pytest.mark.slow  # kills processes, starts a JVM or a browser

CHILD_SCRIPT = Path(__file__).with_name("crash_child.py")
_spec = importlib.util.spec_from_file_location("taskpoint_tests_crash_child", CHILD_SCRIPT)
assert _spec is not None and _spec.loader is not None
child = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(child)

KEEP = 3
SEED = int(os.environ.get("TASKPOINT_CRASH_SEED", "20261126"))


class Child:
    """One run of crash_child.py."""

    def __init__(
        self,
        url: str,
        attempt: int,
        log: Path,
        work: Path,
        seed: int,
        *extra: str,
        env: dict[str, str] | None = None,
    ):
        self.stderr_path = work.parent / f"child-{seed}.stderr"
        self.stderr = open(self.stderr_path, "wb")  # noqa: SIM115 - closed in close()
        args = [str(CHILD_SCRIPT), url, str(attempt), str(KEEP), str(log), str(work), str(seed)]
        self.proc = subprocess.Popen(
            [sys.executable, *args, *extra],
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=env,
        )

    def wait_ready(self, timeout: float = 30) -> None:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else b""
        if line.strip() != b"ready":
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"child did not start: {self.errors()}")

    def kill(self) -> None:
        if self.proc.poll() is not None:
            pytest.fail(f"child exited on its own (rc {self.proc.returncode}): {self.errors()}")
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(30) == -signal.SIGKILL

    def finish(self, timeout: float = 60) -> int:
        rc = self.proc.wait(timeout)
        self.close()
        return rc

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.stderr.close()

    def errors(self) -> str:
        self.stderr.flush()
        return self.stderr_path.read_text(errors="replace")[-4000:]


def _logged(log: Path) -> list[tuple[str, int]]:
    """Complete lines of the child's commit log (a kill may cut the last one short)."""
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines(keepends=True):
        if line.endswith("\n"):
            vid, counter = line.split()
            out.append((vid, int(counter)))
    return out


def _newest_logged(log: Path) -> str:
    """The newest version the child logged: not always its last line (a sync write is logged
    when it returns, an async write before it only once the child sees its future done)."""
    return max((vid for vid, _ in _logged(log)), key=parse_version_id)  # type: ignore[arg-type,return-value]


def _tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _expected(version: Any) -> dict[str, bytes]:
    return child.expected_tree(version.step, version.metadata["size"], version.metadata["layout"])


def _verify_scope(url: str, attempt: int, log: Path, scratch: Path, **open_kwargs: Any) -> str:
    """Check the scope as a restarted attempt sees it; return the latest version id."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a CheckpointWarning means a torn/corrupt version
        cp = Checkpoint.open(url, attempt=attempt, keep=KEEP, **open_kwargs)
        versions = cp.versions()
        latest = cp.latest()
        logged = _logged(log)
        if not logged:
            return latest.id if latest else ""
        assert versions and latest is not None, "the child logged commits but none is left"
        assert latest == versions[-1]
        # retention runs just after a commit: a kill in between leaves one extra version, which
        # the next writer's first commit trims
        assert len(versions) <= KEEP + 2

        # every kept version is complete and is exactly what the child wrote for that counter
        by_id = {v.id: v for v in versions}
        for version in versions:
            out = cp.restore(scratch / f"v-{version.id}", version=version.id)
            assert _tree(out) == _expected(version), f"version {version.id} is not intact"
            shutil.rmtree(out)
        for vid, counter in logged:
            if vid in by_id:
                assert by_id[vid].step == counter

        # the last logged commit survived, or only newer versions pushed it out of retention
        last_vid, _ = logged[-1]
        last = parse_version_id(last_vid)
        assert latest.order >= last
        assert last_vid in by_id or (
            len(versions) >= KEEP and all(v.order > last for v in versions)
        ), f"logged commit {last_vid} lost; kept: {sorted(by_id)}"

        # read() and restore() of the latest agree with it
        expected = _expected(latest)
        if latest.kind == "dir":
            with pytest.raises(CheckpointError, match="restore"):
                cp.read()
        else:
            assert cp.read() == next(iter(expected.values()))
        out = cp.restore(scratch / "latest")
        assert _tree(out) == expected
        shutil.rmtree(out)
        cp.close()
        return latest.id


def _leftovers(root: Path) -> dict[str, list[str]]:
    names = os.listdir(root / "v") if (root / "v").exists() else []
    manifests = {n.removesuffix(".manifest.json") for n in names if n.endswith(".manifest.json")}
    staging = root / ".staging"
    return {
        "payloads": sorted(
            n for n in names if parse_version_id(n) is not None and n not in manifests
        ),
        "temps": sorted(n for n in names if n.startswith(".")),
        "staging": sorted(os.listdir(staging)) if staging.exists() else [],
    }


def test_sigkill_at_random_moments_never_loses_or_tears_a_commit(tmp_path):
    rng = random.Random(SEED)
    root = tmp_path / "scope"
    url = str(root)
    log = tmp_path / "commits.log"
    kills, attempt, same_attempt_runs = 0, 1, 0
    worst = {"payloads": 0, "temps": 0, "staging": 0}
    started = time.monotonic()
    for cycle in range(1, 53):
        extra = ("--big-first",) if cycle % 7 == 0 else ()
        run = Child(url, attempt, log, tmp_path / "work", cycle, *extra)
        try:
            run.wait_ready()
            time.sleep(rng.uniform(0.0, 0.35))
            run.kill()
            kills += 1
        finally:
            run.close()
        _verify_scope(url, attempt + 1, log, tmp_path / "scratch")
        left = _leftovers(root)
        for kind, names in left.items():
            worst[kind] = max(worst[kind], len(names))
        # bounded, not piling up with the kills (about one per kill without sweeping): each
        # restarted writer sweeps at its first commit; a writer killed before that cannot
        assert len(left["payloads"]) <= 12, left
        # A killed writer also leaves the retired manifests whose deletes it had let wait.
        assert len(left["temps"]) <= 6 + LAZY_CHORES, left
        assert len(left["staging"]) <= 12, left
        # restart as the next attempt most of the time, and sometimes as the same attempt again
        same_attempt_runs += 1
        if same_attempt_runs >= 3 or rng.random() < 0.6:
            attempt, same_attempt_runs = attempt + 1, 0

    assert kills >= 50
    # a clean run of a later attempt commits, exits normally and leaves no garbage at all
    final = Child(url, attempt + 1, log, tmp_path / "work", 999, "--count", "12")
    try:
        final.wait_ready()
        assert final.finish() == 0, final.errors()
    finally:
        final.close()
    latest_id = _verify_scope(url, attempt + 2, log, tmp_path / "scratch")
    assert latest_id == _newest_logged(log)
    assert parse_version_id(latest_id)[0] == attempt + 1
    assert _leftovers(root) == {"payloads": [], "temps": [], "staging": []}
    elapsed = time.monotonic() - started
    print(f"\n{kills} kills in {elapsed:.1f} s; worst leftovers {worst}")


def _s3_uncommitted(backend: Any) -> list[str]:
    """Payloads without a manifest that no sweep accounts for. Retired payloads (marked
    ``<id>.retired.<ms>``) are kept on purpose for the grace period, for readers elsewhere."""
    entries = backend.entries()
    manifests = {e.removesuffix(".manifest.json") for e in entries if e.endswith(".manifest.json")}
    retired = {e.split(".", 1)[0] for e in entries if ".retired." in e}
    return sorted(
        e
        for e in entries
        if parse_version_id(e) is not None and e not in manifests and e not in retired
    )


def test_sigkill_with_s3_storage(s3_backend, s3_server, tmp_path):
    """The same on S3 over HTTP (moto): an object PUT is atomic, the manifest PUT conditional."""
    rng = random.Random(SEED + 1)
    url = s3_backend.url
    log = tmp_path / "commits.log"
    child_tmp = tmp_path / "child-tmp"  # where a child stages async snapshots for S3
    child_tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(child_tmp)}
    s3_args = ("--endpoint", s3_server.endpoint_url, "--max-size", str(8 << 20))
    options = {"storage_options": s3_server.storage_options}
    kills, attempt = 0, 1
    for cycle in range(1, 11):
        extra = ("--big-first",) if cycle % 4 == 0 else ()
        run = Child(url, attempt, log, tmp_path / "work", 100 + cycle, *s3_args, *extra, env=env)
        try:
            run.wait_ready()
            time.sleep(rng.uniform(0.05, 0.5))
            run.kill()
            kills += 1
        finally:
            run.close()
        _verify_scope(url, attempt + 1, log, tmp_path / "scratch", **options)
        assert len(_s3_uncommitted(s3_backend)) <= 8
        if rng.random() < 0.7:
            attempt += 1
    assert kills >= 10

    final = Child(url, attempt + 1, log, tmp_path / "work", 999, *s3_args, "--count", "6", env=env)
    try:
        final.wait_ready()
        assert final.finish() == 0, final.errors()
    finally:
        final.close()
    latest_id = _verify_scope(url, attempt + 2, log, tmp_path / "scratch", **options)
    assert latest_id == _newest_logged(log)
    assert _s3_uncommitted(s3_backend) == []
    print(f"\n{kills} kills on S3")


def test_killed_writers_staging_in_temp_dir_is_swept(s3_backend, s3_server, tmp_path):
    child_tmp = tmp_path / "child-tmp"
    child_tmp.mkdir()
    staging = child_tmp / "taskpoint-staging"  # where remote stores stage async snapshots
    env = {**os.environ, "TMPDIR": str(child_tmp)}
    s3_args = ("--endpoint", s3_server.endpoint_url, "--max-size", str(1 << 20))
    only_async_dirs = ("--layouts", "dir-async")
    log = tmp_path / "commits.log"
    work = tmp_path / "work"
    for attempt in (1, 2, 3):
        run = Child(
            s3_backend.url, attempt, log, work, attempt, *s3_args, *only_async_dirs, env=env
        )
        try:
            run.wait_ready()
            deadline = time.monotonic() + 20
            while not (staging.exists() and any(staging.iterdir())) and (
                time.monotonic() < deadline
            ):
                time.sleep(0.01)  # until the child has staged a snapshot
            time.sleep(0.1)
            run.kill()
        finally:
            run.close()
    assert any(staging.iterdir())  # the last killed writer could not clean up after itself
    final = Child(s3_backend.url, 4, log, work, 4, *s3_args, "--count", "3", env=env)
    try:
        final.wait_ready()
        assert final.finish() == 0, final.errors()
    finally:
        final.close()
    assert sorted(os.listdir(staging)) == [], "staging of killed writers was not swept"
