"""The dispatch benchmark runs in the suite (small): it measures the Dask backend per attempt
against a bare `client.submit` round trip on the same cluster and prints the ratio."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_dispatch_benchmark_prints_per_attempt_ratio_against_bare_dask():
    args = ["--attempts", "12", "--workers", "1", "--no-save"]
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.dask_dispatch", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    metric = "per attempt, sequential, p50"
    line = next(x for x in done.stdout.splitlines() if x.startswith(metric))
    ours, base, unit, ratio = line[len(metric) :].split()[:4]
    assert unit == "ms" and float(ours) > 0 and float(base) > 0 and float(ratio) > 0
