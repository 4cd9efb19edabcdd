"""Shared helpers: alternate taskpoint/baseline runs, take medians, print one table."""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

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


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def drop_cache(path: str | os.PathLike[str]) -> None:
    """Evict a file's (or a tree's) pages: fadvise(DONTNEED) on each file after syncing it,
    plus a global drop_caches where permitted (in containers that write may do nothing)."""
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
    header = f"{'metric':<44} {'taskpoint':>12} {'baseline':>12} {'unit':<6} {'ratio':>7}  target"
    print(header)
    print("-" * len(header) + "-" * 14)
    for r in rows:
        base = f"{r.baseline:12.4g}" if r.baseline is not None else f"{'-':>12}"
        ratio = f"{r.ratio:7.3f}" if r.ratio is not None else f"{'-':>7}"
        verdict = {True: "pass", False: "FAIL", None: ""}[r.ok]
        print(
            f"{r.metric:<44} {r.taskpoint:12.4g} {base} {r.unit:<6} {ratio}  {r.target} {verdict}"
        )


def save_json(name: str, rows: list[Row], params: dict[str, object]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"params": params, "rows": [asdict(r) for r in rows]}, indent=2))
    return path
