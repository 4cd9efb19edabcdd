"""Smoke test of the performance suite: ``python -m benchmarks --quick`` runs every section at
tiny sizes and writes its table, JSON and plots. Nothing about speed is asserted (the CI machine
is shared); only that every benchmark still runs end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]
TARGETS = range(1, 8)


def test_quick_suite_prints_the_table_and_writes_json(tmp_path):
    out = tmp_path / "results"
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    env.pop("FLYTEKIT_PYTHON", None)  # the flytekit comparisons are not part of the smoke test
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--dir", str(tmp_path), "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = done.stdout
    assert "metric" in table and "target" in table and "ratio" in table
    for number in TARGETS:  # one row at least per target of the issue
        assert f"\n{number} " in table, f"no row for target {number}:\n{table}"
    assert "2 loop blocked per save, overlap=True" in table  # target 2 inside a training loop
    # the machine's own raw figures come first, so a slow disk is told from a slow taskpoint
    assert "disk: buffered write+fsync" in table and "16 B write+fsync p50" in table
    assert table.index("disk: buffered write+fsync") < table.index("\n1 ")
    assert "1 sync write 16 MiB, disk (vs faster raw" in table
    payload = json.loads((out / "benchmarks.json").read_text())
    rows = payload["rows"]
    assert {row["metric"].split()[0] for row in rows} == {str(n) for n in TARGETS}
    for row in rows:
        assert set(row) >= {"metric", "taskpoint", "baseline", "ratio", "target", "ok"}
    assert payload["machine"]["cpus"] >= 1
    assert payload["machine"]["baselines"]["disk"]["buffered_mib_s"] > 0
    if _has_matplotlib():
        for name in ("checkpoint.png", "training_loop.png", "goodput.png"):
            assert (out / name).stat().st_size > 1000
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith("taskpoint-bench-")]
    assert not leftovers, f"benchmark scratch left behind: {leftovers}"


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True
