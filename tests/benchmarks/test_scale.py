"""Smoke test of the scale section: ``python -m benchmarks --quick --only scale`` runs its four
parts (records, fan-out, checkpoints, S3 through a moto server) at tiny sizes and writes its
rows, JSON and plot. Nothing about speed is asserted (the machine is shared)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

for _module in ("distributed", "moto", "boto3", "s3fs"):
    pytest.importorskip(_module)

ROOT = Path(__file__).resolve().parents[2]


def test_quick_scale_section_prints_its_rows_and_writes_json_and_plot(tmp_path):
    out = tmp_path / "results"
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--only",
            "scale",
            "--dir",
            str(tmp_path),
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = done.stdout
    for part in (
        "8 taskpoint list --limit 50",
        "8 taskpoint show EXEC",
        "web API /api/executions",
        "8 map, per item, inline",
        "8 map, per item, process",
        "8 map, per item, dask",
        "8 map on Dask, per item",
        "8 checkpoint write 16 B",
        "8 save dir of 500 files",
        "8 S3 write 32 MiB version",
        "8 S3 read 32 MiB version",
    ):
        assert part in table, f"no row {part!r}:\n{table}"
    payload = json.loads((out / "benchmarks.json").read_text())
    rows = payload["rows"]
    assert rows and {row["metric"].split()[0] for row in rows} == {"8"}
    scale = payload["scale"]
    assert set(scale["seconds"]) == {"records", "fanout", "checkpoints", "s3"}
    assert scale["records"]["sizes"] == [20, 200, 2000]
    for row in rows:
        assert row["taskpoint"] > 0, row
    if _has_matplotlib():
        assert (out / "scale.png").stat().st_size > 1000
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith("taskpoint-bench-")]
    assert not leftovers, f"benchmark scratch left behind: {leftovers}"


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True
