"""A store that other processes write to at the same time (issue: readers under retention, and
writers with the same attempt number).

- Readers never get ``None`` while a committed version exists: a writer with ``keep=1`` saves a
  40-file directory over and over while reader processes restore the latest version in a loop;
  every restore returns a complete tree of one save, on local disk (readers hold a lock the
  deleting writer respects) and on S3 over HTTP (retired payloads stay for a grace period).
- Two writers with the same attempt number (two standalone ``Checkpoint.open(url)`` processes)
  never overwrite or delete each other's committed versions: each id is reserved exclusively
  (``mkdir`` on local disk, a conditional PUT on object stores), so every version a writer was
  told is committed holds exactly what that writer saved.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import faults_shared_store as shared
import pytest
from faults_procs import DEADLINE
from faults_stats import record

from taskpoint import Checkpoint

HELPER = Path(shared.__file__)


def _spawn(*args: Any) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(HELPER), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen, out: Path) -> dict:
    _, err = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 0, err
    return json.loads(out.read_text())


def _scope(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> tuple[str, dict]:
    if kind == "local":
        return str(tmp_path / "scope"), {}
    s3 = request.getfixturevalue("s3_server")
    return s3.url(), s3.storage_options


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("kind", ["local", "s3"])
def test_readers_never_get_none_while_a_writer_retires_under_them(kind, tmp_path, request):
    url, options = _scope(kind, tmp_path, request)
    saves = 120 if kind == "local" else 12  # an S3 save of 40 files takes about 1 s here
    first = Checkpoint.open(url, keep=1, storage_options=options or None)
    with tempfile.TemporaryDirectory() as tmp:
        shared.write_state(Path(tmp), "w", -1)
        first.save(tmp)  # a committed version exists before any reader starts
    first.close()
    stop = tmp_path / "stop"
    readers = [
        (
            _spawn("reader", url, json.dumps(options), stop, 5, tmp_path / f"r{i}.json"),
            tmp_path / f"r{i}.json",
        )
        for i in range(2)
    ]
    writer_out = tmp_path / "w.json"
    writer = _spawn("writer", url, json.dumps(options), "w", saves, 1, writer_out)
    try:
        _finish(writer, writer_out)
    finally:
        stop.touch()
    results = [_finish(proc, out) for proc, out in readers]
    reads = sum(r["reads"] for r in results)
    record(f"concurrent reads under retention ({kind})", reads)
    for r in results:
        assert r["errors"] == [] and r["nones"] == 0 and r["torn"] == 0, r
        assert r["warnings"] == [], r["warnings"][:3]  # retirement is not damage
    assert reads >= 10


def _same_attempt_writers(url: str, options: dict, tmp_path: Path, saves: int) -> list[dict]:
    outs = [tmp_path / f"w{tag}.json" for tag in "ab"]
    procs = [
        _spawn("writer", url, json.dumps(options), tag, saves, 100, out)
        for tag, out in zip("ab", outs, strict=True)
    ]
    return [_finish(proc, out) for proc, out in zip(procs, outs, strict=True)]


def _check_committed(url: str, options: dict, results: list[dict], tmp_path: Path) -> int:
    committed = [pair for r in results for pair in r["committed"]]
    ids = [vid for vid, _ in committed]
    assert len(set(ids)) == len(ids), "two writers were told they committed the same id"
    cp = Checkpoint.open(url, attempt=2, keep=100, storage_options=options or None)
    assert sorted(v.id for v in cp.versions()) == sorted(ids)
    for vid, head in committed:
        restored = cp.restore(tmp_path / "check" / vid, version=vid)
        assert shared.check_tree(restored) == head, f"{vid} does not hold {head}"
    return len(ids)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("kind", ["local", "s3"])
def test_two_processes_with_the_same_attempt_keep_each_others_versions(kind, tmp_path, request):
    url, options = _scope(kind, tmp_path, request)
    results = _same_attempt_writers(url, options, tmp_path, 8 if kind == "s3" else 40)
    record(
        f"same-attempt writer versions ({kind})", _check_committed(url, options, results, tmp_path)
    )


@pytest.mark.timeout(300)
def test_two_scope_objects_with_the_same_attempt_on_memory(tmp_path):
    """memory:// lives in one process: two scope objects, each on its own thread."""
    import uuid

    url = f"memory://shared-{uuid.uuid4().hex}"
    results: list[dict] = [{}, {}]
    barrier = threading.Barrier(2)

    def write(index: int, tag: str) -> None:
        cp = Checkpoint.open(url, keep=100)
        with tempfile.TemporaryDirectory() as tmp:
            barrier.wait()
            committed = []
            for save in range(30):
                shared.write_state(Path(tmp), tag, save)
                committed.append([cp.save(tmp, step=save).id, f"{tag}:{save}"])
        results[index] = {"committed": committed}

    threads = [threading.Thread(target=write, args=(i, t)) for i, t in enumerate("ab")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DEADLINE)
    assert all(r for r in results), "a writer failed (see the thread's exception above)"
    record("same-attempt writer versions (memory)", _check_committed(url, {}, results, tmp_path))
