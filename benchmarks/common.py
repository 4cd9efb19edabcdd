"""Shared helpers: alternate taskpoint/baseline runs, take medians, print one table; the
machine's own raw write figures (no taskpoint in them) that every I/O figure is read against."""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from taskpoint.checkpoint.diskprobe import probe_write_mode

RESULTS = Path(__file__).parent / "results"


@dataclass
class Row:
    metric: str
    taskpoint: float
    baseline: float | None
    unit: str
    ratio: float | None
    target: str
    ok: bool | None
    note: str = ""  # the baseline's name, or why a row is only informative


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def alternate(
    ours: Callable[[], float], base: Callable[[], float], repeats: int
) -> tuple[float, float]:
    """Run the pair alternately (noise hits both alike) and return both medians."""
    a, b = [], []
    for i in range(repeats):
        if i % 2:
            b.append(base())
            a.append(ours())
        else:
            a.append(ours())
            b.append(base())
    return statistics.median(a), statistics.median(b)


def rotate(fns: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Run several contenders round-robin, the order shifted each round; all samples by name."""
    names = list(fns)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for i in range(repeats):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(fns[name]())
    return samples


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def drop_cache(path: str | os.PathLike[str]) -> None:
    """Evict a file's (or a tree's) pages: fadvise(DONTNEED) on each file after syncing it.

    With ``TASKPOINT_BENCH_DROP_CACHES=1`` a global ``drop_caches`` is written too (where
    permitted): it is closer to a fresh machine but flushes every process's dirty pages, which a
    shared machine's other users feel, so it is opt-in.
    """
    if os.environ.get("TASKPOINT_BENCH_DROP_CACHES") == "1":
        with contextlib.suppress(OSError), open("/proc/sys/vm/drop_caches", "w") as handle:
            os.sync()
            handle.write("3\n")
    for root, _dirs, files in os.walk(path) if os.path.isdir(path) else [("", [], [path])]:
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fdatasync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def print_table(title: str, rows: list[Row]) -> None:
    print(f"\n{title}")
    header = (
        f"{'metric':<60} {'taskpoint':>10} {'baseline':>10} {'unit':<6} {'ratio':>7}  "
        f"{'target':<22} result"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        base = f"{r.baseline:10.4g}" if r.baseline is not None else f"{'-':>10}"
        ratio = f"{r.ratio:7.3f}" if r.ratio is not None else f"{'-':>7}"
        verdict = {True: "pass", False: "FAIL", None: "info"}[r.ok]
        print(
            f"{r.metric:<60} {r.taskpoint:10.4g} {base} {r.unit:<6} {ratio}  {r.target:<22} "
            f"{verdict}"
        )
        if r.note:
            print(f"{'':<4}{r.note}")


def save_json(name: str, rows: list[Row], params: dict[str, object], **extra: object) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"params": params, "rows": [asdict(r) for r in rows], **extra}
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path


def bandwidth_row(
    metric: str, gib: float, t_ours: float, t_base: float, target: float | None, note: str = ""
) -> Row:
    """A row in GiB/s: ratio = ours / baseline (higher is better)."""
    ours, base = gib / t_ours, gib / t_base
    ratio = ours / base
    return Row(
        metric,
        ours,
        base,
        "GiB/s",
        ratio,
        f">= {target} x baseline" if target else "(info)",
        None if target is None else ratio >= target,
        note,
    )


def workdir_root(given: str | None) -> str:
    """Where benchmark files go: ``--dir``, else the current directory (the disk to measure)."""
    return given or os.getcwd()


# ------------------------------------------------------------------ the machine's own figures
RAW_CHUNK = 64 << 20  # the raw baselines write in pieces this large


def raw_write(path: str, data: bytes | mmap.mmap, flags: int = 0) -> float:
    """Seconds to create ``path``, write ``data`` in 64 MiB pieces and fsync it."""
    start = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | flags, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view[:RAW_CHUNK]) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - start


def raw_direct_write(path: str, data: mmap.mmap) -> float | None:
    """`raw_write` with O_DIRECT (``data`` page aligned, whole blocks); None where refused."""
    if not hasattr(os, "O_DIRECT"):
        return None
    try:
        return raw_write(path, data, os.O_DIRECT)
    except OSError:
        return None  # EINVAL: no O_DIRECT on this filesystem (or this alignment)
    finally:
        if os.path.exists(path):
            os.unlink(path)


def aligned_buffer(size: int) -> mmap.mmap:
    """``size`` bytes (whole MiB) of page-aligned memory, random-looking, pages faulted in."""
    buffer = mmap.mmap(-1, size)
    block = os.urandom(1 << 20)
    for pos in range(0, size, len(block)):
        buffer[pos : pos + len(block)] = block
    return buffer


def machine_baselines(directory: str, size: int, repeats: int, count: int) -> dict[str, object]:
    """The disk's own figures, with no taskpoint in them: buffered write + fsync and O_DIRECT
    write + fsync of ``size`` bytes (MiB/s, medians), 16 B write + fsync latency (p50, ms), and
    what taskpoint's write probe measures and chooses there."""
    buffer = aligned_buffer(size)
    path = os.path.join(directory, f"taskpoint-baseline-{os.getpid()}.bin")

    def buffered() -> float:
        elapsed = raw_write(path, buffer)
        os.unlink(path)
        return elapsed

    def direct() -> float:
        return raw_direct_write(path, buffer) or float("nan")

    samples = rotate({"buffered": buffered, "direct": direct}, repeats)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    latency = []
    try:
        for _ in range(count):
            start = time.perf_counter()
            os.pwrite(fd, b"0123456789abcdef", 0)
            os.fsync(fd)
            latency.append(time.perf_counter() - start)
    finally:
        os.close(fd)
        os.unlink(path)
    probe = probe_write_mode(directory)
    mib = size / (1 << 20)
    direct_s = median(samples["direct"])
    return {
        "buffered_mib_s": mib / median(samples["buffered"]),
        "direct_mib_s": None if direct_s != direct_s else mib / direct_s,  # NaN: refused
        "fsync_16b_p50_ms": median(latency) * 1e3,
        "probe": {
            "buffered_mib_s": probe.mib_per_s("buffered"),
            "direct_mib_s": probe.mib_per_s("direct"),
            "chosen": probe.mode,
        },
    }


def format_baselines(label: str, base: dict[str, object]) -> str:
    def rate(value: object) -> str:
        return "refused" if value is None else f"{value:.0f} MiB/s"

    probe = base["probe"]
    assert isinstance(probe, dict)
    return (
        f"{label}: buffered write+fsync {rate(base['buffered_mib_s'])}, "
        f"O_DIRECT write+fsync {rate(base['direct_mib_s'])}, "
        f"16 B write+fsync p50 {base['fsync_16b_p50_ms']:.3g} ms; taskpoint's write probe: "
        f"buffered {rate(probe['buffered_mib_s'])}, direct {rate(probe['direct_mib_s'])} "
        f"-> {probe['chosen']}"
    )


def tmpfs_dir(given: str | None) -> str | None:
    """A writable tmpfs directory (``--tmpfs``, default /dev/shm), or None."""
    path = "/dev/shm" if given is None else given
    return path if path and os.path.isdir(path) and os.access(path, os.W_OK) else None
