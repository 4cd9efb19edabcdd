"""Checkpoint I/O against raw OS baselines measured side by side in the same run.

    python -m benchmarks.checkpoint_io [--size-mib 1024] [--repeats 5] [--dir PATH] [--quick]
                                       [--write-mib 64,512,1024] [--tmpfs /dev/shm]

Targets: sync ``write()`` >= 0.90 x the faster of a raw buffered write + fsync and a raw O_DIRECT
write + fsync of the same page-aligned memory, at each size of ``--write-mib``, on the disk of
``--dir`` and on tmpfs (issue 16, item 1; the first large write probes the filesystem and is not
timed); sync write of a ``bytes`` payload >= 0.85 x raw os.write + fsync; durable 16 B write p50
<= 2 ms; async write call p50 <= 50 us for 16 B and <= 1.5 x an in-memory copy for 64 MiB;
restore >= 0.70 x a raw cold read (page cache dropped before both, where permitted).
Retention deletes the previous version on the writer thread after each commit; it is waited for
outside the timing, as the raw baselines' files are deleted outside theirs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

from benchmarks import small_writes
from benchmarks.common import (
    Row,
    aligned_buffer,
    alternate,
    bandwidth_row,
    drop_cache,
    format_baselines,
    machine_baselines,
    median,
    print_table,
    raw_direct_write,
    raw_write,
    rotate,
    save_json,
    tmpfs_dir,
)
from taskpoint import Checkpoint
from taskpoint.checkpoint.diskprobe import chosen_write_mode

WRITE_TARGET = 0.90


def bench_write_modes(locations: dict[str, str], sizes_mib: list[int], repeats: int) -> list[Row]:
    """Sync ``write()`` against raw buffered + fsync and raw O_DIRECT + fsync of the same
    page-aligned memory, rotated in each round; and, for information, ``write()`` of the same
    bytes as a ``bytes`` object (never page aligned: O_DIRECT needs a copy for it)."""
    rows = []
    for label, directory in locations.items():
        for mib in sizes_mib:
            need = 4 * (mib << 20) + (256 << 20)  # two versions, the raw file, and room
            if shutil.disk_usage(directory).free < need:
                rows.append(_skipped_row(label, mib, f"skipped: needs {need >> 20} MiB free"))
                continue
            workdir = tempfile.mkdtemp(prefix="taskpoint-bench-", dir=directory)
            try:
                rows += _bench_write_size(label, workdir, mib << 20, repeats)
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
    return rows


def _bench_write_size(label: str, workdir: str, size: int, repeats: int) -> list[Row]:
    buffer = aligned_buffer(size)
    as_bytes = bytes(buffer)
    cp = Checkpoint.open(os.path.join(workdir, "scope"), keep=1)
    # Untimed: the first large write probes, and the first two of hundreds of MiB try each way.
    for warm_up in (memoryview(buffer), memoryview(buffer), as_bytes, as_bytes):
        cp.write(warm_up)
        cp.wait()
    raw_path = os.path.join(workdir, "raw.bin")

    def ours(data: memoryview | bytes) -> float:
        start = time.perf_counter()
        cp.write(data)
        elapsed = time.perf_counter() - start
        cp.wait()  # retention's delete of the previous version: not part of this write
        return elapsed

    def buffered() -> float:
        elapsed = raw_write(raw_path, buffer)
        os.unlink(raw_path)
        return elapsed

    def direct() -> float:
        return raw_direct_write(raw_path, buffer) or float("nan")

    samples = rotate(
        {
            "ours": lambda: ours(memoryview(buffer)),
            "ours_bytes": lambda: ours(as_bytes),
            "buffered": buffered,
            "direct": direct,
        },
        repeats,
    )
    unprobed = "buffered (not probed: below the probe's size)"
    chosen = chosen_write_mode(workdir, size=size) or unprobed
    chosen_bytes = chosen_write_mode(workdir, aligned=False, size=size) or unprobed
    cp.close()
    t_buf, t_dir = median(samples["buffered"]), median(samples["direct"])
    direct_ok = t_dir == t_dir  # NaN: the filesystem refused O_DIRECT
    best, which = (t_dir, "O_DIRECT") if direct_ok and t_dir < t_buf else (t_buf, "buffered")
    gib, mib = size / (1 << 30), size >> 20
    rates = f"raw buffered {mib / t_buf:.0f} MiB/s, raw O_DIRECT " + (
        f"{mib / t_dir:.0f} MiB/s" if direct_ok else "refused"
    )
    return [
        bandwidth_row(
            f"sync write {mib} MiB, {label} (vs faster raw: {which})",
            gib,
            median(samples["ours"]),
            best,
            WRITE_TARGET,
            f"{rates}; taskpoint wrote {chosen}",
        ),
        bandwidth_row(
            f"  sync write {mib} MiB from bytes, {label} (vs faster raw)",
            gib,
            median(samples["ours_bytes"]),
            best,
            None,
            "a bytes object is never page aligned (O_DIRECT needs a copy of it); "
            f"taskpoint wrote {chosen_bytes}",
        ),
    ]


def _skipped_row(label: str, mib: int, why: str) -> Row:
    return Row(f"sync write {mib} MiB, {label}", float("nan"), None, "GiB/s", None,
               f">= {WRITE_TARGET} x baseline", None, why)  # fmt: skip


def raw_cold_read(path: str, chunk: int = 8 << 20) -> float:
    drop_cache(path)
    buf = bytearray(chunk)
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as handle:
        while handle.readinto(buf):
            pass
    return time.perf_counter() - start


def bench_large(workdir: str, size: int, repeats: int) -> list[Row]:
    raw_path = os.path.join(workdir, "raw.bin")
    cp = Checkpoint.open(os.path.join(workdir, "scope"), keep=1)
    gib = size / (1 << 30)
    rows = [_bench_sync_write(cp, raw_path, size, repeats)]

    def ours_restore() -> float:
        target = tempfile.mkdtemp(dir=workdir)
        drop_cache(cp.url)
        start = time.perf_counter()
        cp.restore(os.path.join(target, "out"))
        elapsed = time.perf_counter() - start
        shutil.rmtree(target)
        return elapsed

    t_ours, t_raw = alternate(ours_restore, lambda: raw_cold_read(raw_path), repeats)
    rows.append(
        bandwidth_row(f"restore {gib:.3g} GiB (vs raw cold read)", gib, t_ours, t_raw, 0.70)
    )

    def raw_copy() -> float:
        """The restore's fair baseline: the same bytes read cold and written to a new file."""
        target = tempfile.mkdtemp(dir=workdir)
        drop_cache(raw_path)
        start = time.perf_counter()
        shutil.copyfile(raw_path, os.path.join(target, "out"))
        elapsed = time.perf_counter() - start
        shutil.rmtree(target)
        return elapsed

    t_ours, t_raw = alternate(ours_restore, raw_copy, repeats)
    rows.append(
        bandwidth_row(
            f"  restore {gib:.3g} GiB (vs cold shutil.copyfile)", gib, t_ours, t_raw, None
        )
    )

    def ours_read() -> float:
        drop_cache(cp.url)
        start = time.perf_counter()
        cp.read()
        return time.perf_counter() - start

    t_ours, t_raw = alternate(ours_read, lambda: raw_cold_read(raw_path), repeats)
    rows.append(bandwidth_row(f"read() {gib:.3g} GiB (vs raw cold read)", gib, t_ours, t_raw, None))
    cp.close()
    os.unlink(raw_path)
    return rows


def _bench_sync_write(cp: Checkpoint, raw_path: str, size: int, repeats: int) -> Row:
    data = os.urandom(1 << 20) * (size >> 20)
    gib = size / (1 << 30)

    def ours_write() -> float:
        start = time.perf_counter()
        cp.write(data)
        return time.perf_counter() - start

    def base_write() -> float:
        elapsed = raw_write(raw_path, data)
        os.unlink(raw_path)
        return elapsed

    t_ours, t_raw = alternate(ours_write, base_write, repeats)
    raw_write(raw_path, data)  # left in place as the baseline of the read measurements
    return bandwidth_row(f"sync write {gib:.3g} GiB (vs os.write+fsync)", gib, t_ours, t_raw, 0.85)


FLYTEKIT_SMALL = """
import logging, statistics, sys, tempfile, time
logging.disable(logging.WARNING)
from flytekit.core.checkpointer import SyncCheckpoint

cp = SyncCheckpoint(checkpoint_dest=tempfile.mkdtemp(dir=sys.argv[2]))
payload = b"0123456789abcdef"
samples = []
for _ in range(int(sys.argv[1])):
    start = time.perf_counter()
    cp.write(payload)
    samples.append(time.perf_counter() - start)
print(statistics.median(samples))
"""


def flytekit_small(python: str | None, workdir: str, count: int) -> float | str:
    """p50 seconds of flytekit's ``SyncCheckpoint.write`` of 16 bytes to a local destination,
    run in ``python`` (an interpreter with flytekit), or why it could not run."""
    import subprocess

    if not python:
        return "skipped: no --flytekit-python"
    done = subprocess.run(
        [python, "-c", FLYTEKIT_SMALL, str(count), workdir], capture_output=True, text=True
    )
    if done.returncode != 0:
        return "failed: " + (done.stderr.strip().splitlines() or ["?"])[-1]
    return float(done.stdout.split()[-1])


def bench_async_large(workdir: str, size: int, repeats: int) -> list[Row]:
    cp = Checkpoint.open(os.path.join(workdir, "async"), keep=1)
    source = bytearray(os.urandom(1 << 20) * (size >> 20))

    def ours() -> float:
        start = time.perf_counter()
        cp.write(source, blocking=False)
        elapsed = time.perf_counter() - start
        cp.wait()
        return elapsed

    def copy() -> float:
        start = time.perf_counter()
        snapshot = bytes(source)
        elapsed = time.perf_counter() - start
        del snapshot
        return elapsed

    t_ours, t_copy = alternate(ours, copy, max(repeats, 7))
    cp.close()
    ratio = t_ours / t_copy
    return [
        Row(f"async {size >> 20} MiB write() call (vs memcpy)", t_ours * 1e3, t_copy * 1e3, "ms",
            ratio, "<= 1.5 x baseline", ratio <= 1.5),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="large payload size (MiB)")
    parser.add_argument("--async-mib", type=int, default=64, help="async payload size (MiB)")
    parser.add_argument("--repeats", type=int, default=5, help="pairs per large measurement")
    parser.add_argument("--small-count", type=int, default=300, help="16 B writes to time")
    parser.add_argument("--dir", default=None, help="directory on the disk to measure")
    parser.add_argument(
        "--write-mib", default="64,512,1024", help="sizes of the write-mode rows (MiB, commas)"
    )
    parser.add_argument(
        "--tmpfs", default=None, help="tmpfs directory (default /dev/shm; '': none)"
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test only")
    args = parser.parse_args(argv)
    if args.quick:
        args.size_mib, args.async_mib, args.repeats, args.small_count = 16, 8, 3, 30
        args.write_mib = "16"
    workdir = tempfile.mkdtemp(prefix="taskpoint-bench-", dir=args.dir or os.getcwd())
    locations = {"disk": workdir}
    shm = tmpfs_dir(args.tmpfs)
    if shm:
        locations["tmpfs"] = shm
    try:
        size = (16 if args.quick else 256) << 20
        for label, directory in locations.items():
            base = machine_baselines(
                directory, size, 1 if args.quick else 3, 30 if args.quick else 100
            )
            print(format_baselines(f"{label} ({directory})", base), flush=True)
        sizes = [int(x) for x in args.write_mib.split(",") if x]
        rows = bench_write_modes(locations, sizes, args.repeats)
        rows += bench_large(workdir, args.size_mib << 20, args.repeats)
        rows += bench_async_large(workdir, args.async_mib << 20, args.repeats)
        rows += small_writes.bench_small_writes(workdir, args.small_count)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print_table("checkpoint I/O (medians; ratios against the baseline of the same run)", rows)
    path = save_json("checkpoint_io", rows, vars(args))
    print(f"\nresults: {path}")
    return rows


if __name__ == "__main__":
    main()
