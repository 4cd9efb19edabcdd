"""The multi-rank commit protocol of ``checkpoint/ranked.py``, without torch: ranks are threads
of this process, each with its own `Checkpoint` object of one scope, talking through a group
that pickles what it passes (as a process group would)."""

from __future__ import annotations

import pickle
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from taskpoint.checkpoint import Checkpoint, CheckpointWarning
from taskpoint.checkpoint.manifest import Manifest
from taskpoint.checkpoint.ranked import RankedWriter, RankReport, VersionFiles, agreed_load
from taskpoint.errors import CheckpointError


class _Hub:
    def __init__(self, size: int) -> None:
        self.size = size
        self.barrier = threading.Barrier(size, timeout=30)
        self.slots: list[Any] = [None] * size
        self.value: Any = None


class ThreadGroup:
    """A `RankGroup` of threads: every object crosses as a pickle, as between processes."""

    def __init__(self, hub: _Hub, rank: int) -> None:
        self.hub, self.rank, self.size = hub, rank, hub.size

    def gather(self, obj: Any) -> list[Any] | None:
        self.hub.slots[self.rank] = pickle.dumps(obj)
        self.hub.barrier.wait()
        out = [pickle.loads(s) for s in self.hub.slots] if self.rank == 0 else None
        self.hub.barrier.wait()
        return out

    def broadcast(self, obj: Any) -> Any:
        if self.rank == 0:
            self.hub.value = pickle.dumps(obj)
        self.hub.barrier.wait()
        value = pickle.loads(self.hub.value)
        self.hub.barrier.wait()
        return value


def on_ranks(size: int, fn: Callable[[int, ThreadGroup], Any]) -> list[Any]:
    """Run ``fn(rank, group)`` on ``size`` threads; each one's result or exception."""
    hub = _Hub(size)
    with ThreadPoolExecutor(size) as pool:
        futures = [pool.submit(fn, rank, ThreadGroup(hub, rank)) for rank in range(size)]
        return [f.exception() or f.result() for f in futures]


def _save(url: Any, attempt: int, step: int, fail_rank: int | None = None) -> Callable:
    def rank_saves(rank: int, group: ThreadGroup) -> Any:
        with Checkpoint.open(url, attempt=attempt) as cp:
            writer = RankedWriter(cp, group)
            begun = writer.begin()
            report = RankReport(rank)
            if rank == fail_rank:
                report.error = "disk full (simulated)"
            else:
                data = memoryview(f"rank {rank} step {step}".encode())
                report.files = [writer.write_file(begun, f"r{rank}.bin", data)]

            def finish(begun: Any, reports: list[RankReport]) -> list[Any]:
                index = ",".join(f.path for r in reports for f in r.files).encode()
                return [writer.write_file(begun, "index.txt", memoryview(index))]

            return writer.commit(begun, report, step=step, metadata={"n": 2}, finish=finish)

    return rank_saves


def test_every_rank_s_files_are_committed_by_one_manifest(tmp_path):
    versions = on_ranks(2, _save(tmp_path, 1, step=5))
    assert versions[0] == versions[1] and versions[0].id == "0001-000001"
    assert versions[0].kind == "dir" and versions[0].step == 5 and versions[0].files == 3
    out = Checkpoint.open(tmp_path, readonly=True).restore(tmp_path / "out")
    assert (out / "r0.bin").read_bytes() == b"rank 0 step 5"
    assert (out / "r1.bin").read_bytes() == b"rank 1 step 5"
    assert (out / "index.txt").read_bytes() == b"r0.bin,r1.bin"


def test_a_rank_that_fails_to_write_means_no_version_on_any_rank(tmp_path):
    on_ranks(2, _save(tmp_path, 1, step=1))
    outcomes = on_ranks(2, _save(tmp_path, 1, step=2, fail_rank=1))
    assert all(isinstance(o, CheckpointError) for o in outcomes)
    assert "rank 1: disk full (simulated)" in str(outcomes[0])
    with Checkpoint.open(tmp_path, readonly=True) as cp:
        assert [v.step for v in cp.versions()] == [1]
    assert (tmp_path / "v" / "0001-000002" / "r0.bin").exists()  # garbage, uncommitted
    on_ranks(2, _save(tmp_path, 2, step=3))  # the next attempt sweeps it
    assert not (tmp_path / "v" / "0001-000002").exists()


def _load_own(url: Any) -> Callable:
    def rank_loads(rank: int, group: ThreadGroup) -> Any:
        with Checkpoint.open(url, attempt=3) as cp:

            def use(manifest: Manifest) -> bytes:
                files = VersionFiles(cp, manifest)
                try:
                    return files.read_whole(f"r{rank}.bin")
                finally:
                    files.close()

            return agreed_load(cp, group, use)

    return rank_loads


def test_damage_seen_by_one_rank_makes_every_rank_fall_back(tmp_path):
    on_ranks(2, _save(tmp_path, 1, step=1))
    on_ranks(2, _save(tmp_path, 1, step=2))
    shard = tmp_path / "v" / "0001-000002" / "r1.bin"
    shard.write_bytes(b"rank 1 step X")  # same size, other bytes: only rank 1 reads it
    # (warnings filters are process-wide: caught here, from both rank threads)
    with pytest.warns(CheckpointWarning, match="0001-000002 .*rank 1: .*checksum"):
        (data0, v0), (data1, v1) = on_ranks(2, _load_own(tmp_path))
    assert v0 == v1 and v0.step == 1  # both on the older version, the same one
    assert (data0, data1) == (b"rank 0 step 1", b"rank 1 step 1")


def test_nothing_committed_loads_nothing_on_every_rank(tmp_path):
    assert on_ranks(2, _load_own(tmp_path)) == [None, None]


def test_an_error_that_is_not_damage_is_raised_on_every_rank(tmp_path):
    on_ranks(2, _save(tmp_path, 1, step=1))

    def rank_loads(rank: int, group: ThreadGroup) -> Any:
        with Checkpoint.open(tmp_path, attempt=2) as cp:

            def use(manifest: Manifest) -> None:
                if rank == 1:
                    raise CheckpointError("storage unreachable (simulated)")

            return agreed_load(cp, group, use)

    outcomes = on_ranks(2, rank_loads)
    assert all(isinstance(o, CheckpointError) for o in outcomes)
    assert "storage unreachable" in str(outcomes[0]) and "rank 1" in str(outcomes[0])


@pytest.mark.parametrize("size", [1, 3])
def test_any_group_size(tmp_path, size):
    versions = on_ranks(size, _save(tmp_path, 1, step=1))
    assert len({v.id for v in versions}) == 1 and versions[0].files == size + 1
