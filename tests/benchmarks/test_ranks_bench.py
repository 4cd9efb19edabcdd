"""Smoke test of the rank-group restart benchmark: ``python -m benchmarks --quick --only ranks``
kills rank 1 of a two-rank DDP job once and prints the restart taken apart. Nothing about speed
is asserted (the machine is shared); only that it runs end to end and every phase is there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]


def test_quick_group_restart_row(tmp_path):
    out = tmp_path / "results"
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    argv = ["-m", "benchmarks", "--quick", "--only", "ranks", "--dir", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, *argv, "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = json.loads((out / "benchmarks.json").read_text())["rows"]
    (row,) = [r for r in rows if "group restart" in r["metric"]]
    assert row["metric"].startswith("9 ")
    assert row["taskpoint"] > 0 and row["baseline"] > 0, row["note"]
    for phase in ("detect", "end the others", "start", "restore", "first step"):
        assert f"{phase} " in row["note"], row["note"]
    assert "1 SIGKILLs" in row["note"]
