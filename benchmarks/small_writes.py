"""Small writes (issue 16, items 2 and 3), each against a baseline measured in the same run.

1. Durable 16 B sync ``write()`` p50 and p99 against a raw 16 B write + fsync of a new file, and
   for information against a durable create (the same plus an fsync of its directory), against
   the two-sync commit alone (temp file fsynced, linked, directory fsynced: the least an atomic
   new name costs). All are interleaved, one sample of each in turn, so load on the machine hits
   them alike. Target: p50 <= 2 x the raw write + fsync. The delete of the version retention
   retires is left to the writer thread; it is waited for (untimed) after each sample, so it
   does not slow the next baseline, and reported with the call as an information row.
2. The call latency of an async 16 B ``write(..., blocking=False)`` while the writer is busy (a
   commit always in flight, the next one queued), with two CPU-bound processes started here
   beside it. Between calls the loop either sleeps (a loop whose compute releases the GIL, as
   NumPy or torch do) or spins in Python (one that holds it). Target: p50 <= 50 us, p99 <= 500 us.

    python -m benchmarks.small_writes [--count N] [--dir DIR] [--quick]

The machine's load average is printed with the figures: on a shared machine the tails (p99) are
the scheduler's as much as the code's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from benchmarks.common import Row, percentile, print_table, workdir_root
from taskpoint import Checkpoint

PAYLOAD = b"0123456789abcdef"
GAP_S = 0.0005  # between async calls: time for the writer to get on with its commit


def bench_small_writes(workdir: str, count: int) -> list[Row]:
    """Both measurements; rows ready for `print_table`."""
    return bench_durable(workdir, count) + bench_async_calls(workdir, count)


# ------------------------------------------------------------------------- durable sync writes
def bench_durable(workdir: str, count: int) -> list[Row]:
    scope = tempfile.mkdtemp(prefix="small-sync-", dir=workdir)
    raw_dir = tempfile.mkdtemp(prefix="small-raw-", dir=workdir)
    try:
        with_deletes: list[float] = []
        with Checkpoint.open(scope) as cp:
            for _ in range(5):  # warm up: first-commit sweep, imports, page cache
                cp.write(PAYLOAD)
                _raw_write_fsync(raw_dir, dir_sync=True)
            samples = _interleaved(
                {
                    "ours": lambda: _timed_write(cp, with_deletes),
                    "raw": lambda: _raw_write_fsync(raw_dir, dir_sync=False),
                    "raw+dir": lambda: _raw_write_fsync(raw_dir, dir_sync=True),
                    "floor": lambda: _two_sync_commit(raw_dir),
                },
                count,
            )
    finally:
        shutil.rmtree(scope, ignore_errors=True)
        shutil.rmtree(raw_dir, ignore_errors=True)
    samples["ours+deletes"] = with_deletes
    ms = {name: [s * 1e3 for s in values] for name, values in samples.items()}
    p50 = {name: statistics.median(values) for name, values in ms.items()}
    p99 = {name: percentile(values, 0.99) for name, values in ms.items()}
    ratio = p50["ours"] / p50["raw"]

    def info(metric: str, ours: str, base: str, note: str = "") -> Row:
        return Row(metric, p50[ours], p50[base], "ms", p50[ours] / p50[base], "(info)", None, note)

    return [
        Row("durable 16 B sync write p50 (vs raw 16 B write + fsync)", p50["ours"], p50["raw"],
            "ms", ratio, "<= 2 x baseline", ratio <= 2.0,
            "baseline: create a new file, write 16 B, fsync it, close"),
        Row("durable 16 B sync write p99 (vs raw 16 B write + fsync)", p99["ours"], p99["raw"],
            "ms", p99["ours"] / p99["raw"], "(info)", None),
        info("  p50 vs raw durable create", "ours", "raw+dir",
             "baseline: the same plus an fsync of the file's directory (a durable new name)"),
        info("  p50 vs the two-sync commit alone", "ours", "floor",
             "baseline: temp file written and fsynced, linked, unlinked, directory fsynced: "
             "what an atomic new name costs, without taskpoint"),
        info("  p50 with the deferred delete, vs raw", "ours+deletes", "raw",
             "the call plus the delete of the retired version it left to the writer thread "
             "(off the caller's path: batched 8 at a time in a loop, run by each wait() here)"),
    ]  # fmt: skip


def _timed_write(cp: Checkpoint, housekeeping: list[float]) -> float:
    """The ``write()`` call; then, untimed, the housekeeping it left to the writer thread (the
    delete of the version retention retired, which a loop that never waits batches
    `LAZY_CHORES` at a time) is run and waited for by ``wait()``, so it does not slow the
    baseline sample that follows. ``housekeeping`` gets the time of both, for information."""
    start = time.perf_counter()
    cp.write(PAYLOAD)
    call = time.perf_counter() - start
    cp.wait()
    housekeeping.append(time.perf_counter() - start)
    return call


def _two_sync_commit(directory: str) -> float:
    """An atomic, durable new name without taskpoint: a temp file written and fsynced, linked
    to its name (fails if taken), the temp name unlinked, the directory fsynced."""
    temp, final = os.path.join(directory, "floor.tmp"), os.path.join(directory, "floor")
    start = time.perf_counter()
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, PAYLOAD)
    os.fsync(fd)
    os.link(temp, final)
    os.unlink(temp)
    os.close(fd)
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(dfd)
    os.close(dfd)
    elapsed = time.perf_counter() - start
    os.unlink(final)
    return elapsed


def _raw_write_fsync(directory: str, *, dir_sync: bool) -> float:
    """The least a durable 16 B file costs: create, write, fsync (and the directory's fsync)."""
    path = os.path.join(directory, "raw.bin")
    start = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, PAYLOAD)
    os.fsync(fd)
    os.close(fd)
    if dir_sync:
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        os.fsync(dfd)
        os.close(dfd)
    elapsed = time.perf_counter() - start
    os.unlink(path)
    return elapsed


def _interleaved(fns: dict[str, Callable[[], float]], count: int) -> dict[str, list[float]]:
    """``count`` samples of each, taken in turn, the order shifted every round."""
    names = list(fns)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for i in range(count):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(fns[name]())
    return samples


# ------------------------------------------------------------------------- async call latency
def bench_async_calls(workdir: str, count: int) -> list[Row]:
    rows: list[Row] = []
    with _busy_processes(2):
        for gap_name, gap in (("sleep", _sleep_gap), ("spin", _spin_gap)):
            calls, commits, elapsed = _async_calls(workdir, count, gap)
            us = [c * 1e6 for c in calls]
            p50, p99 = statistics.median(us), percentile(us, 0.99)
            note = (
                f"gap between calls: {GAP_S * 1e6:.0f} us of {gap_name} "
                f"({'releases' if gap_name == 'sleep' else 'holds'} the GIL); the writer "
                f"committed {commits} versions in {elapsed:.2f} s, always busy; "
                "2 CPU-bound processes beside it"
            )
            rows += [
                Row(f"async 16 B write() call p50, writer busy, gap={gap_name}", p50, None,
                    "us", None, "<= 50 us", p50 <= 50.0, note),
                Row(f"async 16 B write() call p99, writer busy, gap={gap_name}", p99, None,
                    "us", None, "<= 500 us", p99 <= 500.0),
            ]  # fmt: skip
    return rows


def _sleep_gap() -> None:
    time.sleep(GAP_S)


def _spin_gap() -> None:
    end = time.perf_counter() + GAP_S
    while time.perf_counter() < end:
        pass


def _async_calls(
    workdir: str, count: int, gap: Callable[[], None]
) -> tuple[list[float], int, float]:
    """Time ``count`` async 16 B writes, each made while a commit is in flight."""
    scope = tempfile.mkdtemp(prefix="small-async-", dir=workdir)
    calls: list[float] = []
    try:
        with Checkpoint.open(scope) as cp:
            for _ in range(5):
                cp.write(PAYLOAD, blocking=False)
            cp.wait()
            futures = []
            started = time.perf_counter()
            for step in range(count):
                start = time.perf_counter()
                future = cp.write(PAYLOAD, step=step, blocking=False)
                calls.append(time.perf_counter() - start)
                futures.append(future)
                gap()
            cp.wait()
            elapsed = time.perf_counter() - started
            commits = sum(1 for f in futures if f.result() is not None)  # type: ignore[union-attr]
    finally:
        shutil.rmtree(scope, ignore_errors=True)
    return calls, commits, elapsed


@contextmanager
def _busy_processes(n: int) -> Iterator[None]:
    procs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL)
        for _ in range(n)
    ]
    try:
        time.sleep(0.2)  # let them get going
        yield
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


# ------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.small_writes")
    parser.add_argument("--count", type=int, default=1000, help="samples of each kind")
    parser.add_argument("--dir", default=None, help="directory on the disk to measure")
    parser.add_argument("--quick", action="store_true", help="a few samples: a smoke test")
    args = parser.parse_args(argv)
    count = 30 if args.quick else args.count
    workdir = tempfile.mkdtemp(prefix="taskpoint-bench-small-", dir=workdir_root(args.dir))
    load_before = os.getloadavg()
    try:
        rows = bench_small_writes(workdir, count)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    load_after = os.getloadavg()
    print_table(f"small writes ({count} samples each)", rows)
    print(
        f"\nload average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
        f"({os.cpu_count()} CPUs)"
    )
    return rows


if __name__ == "__main__":
    main()
