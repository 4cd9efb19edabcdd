"""Smoke test of the sharded rows (``python -m benchmarks --quick --only sharded``): two rank
processes save and restore a 16 MiB state through taskpoint and through DCP. Nothing about speed
is asserted (the machine is shared); only that the three rows come out with figures."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("torch.distributed.checkpoint")

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_sharded_rows(tmp_path):
    out = tmp_path / "results"
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "sharded", "--dir",
         str(tmp_path), "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = json.loads((out / "benchmarks.json").read_text())["rows"]
    names = [row["metric"] for row in rows]
    assert any("sharded sync save" in n and "vs DCP save" in n for n in names), names
    assert any("async save stall" in n and "DCP async_save" in n for n in names), names
    assert any("sharded restore" in n and "DCP load" in n for n in names), names
    for row in rows:
        assert row["metric"].startswith("9 ")
        assert math.isfinite(row["taskpoint"]) and row["ratio"] > 0, row
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith("taskpoint-bench-")]
    assert not leftovers, f"benchmark scratch left behind: {leftovers}"
