"""A rank group under a driver of its own (``taskpoint run``): SIGTERM to the driver reaches
every rank, they save together, the execution is preempted, and ``taskpoint resume`` continues
the group from the version they saved."""

from __future__ import annotations

import json
import os
import signal

import pytest

from support.fixtures import run_cli, start_cli
from support.polling import wait_for_file

pytest.importorskip("torch")
pytestmark = pytest.mark.timeout(180)


def test_sigterm_to_the_driver_preempts_every_rank_and_resume_continues(
    tmp_path, tp_home, workflow_copy
):
    flow_file = workflow_copy("ranks_flow.py")
    out = tmp_path / "out"
    out.mkdir()
    args = ["run", flow_file, "preempted_flow", "--out", out, "--total", "6", "--json"]
    proc = start_cli(*args, home=tp_home)
    for rank in (0, 1):
        wait_for_file(out / f"ready-r{rank}", 90, proc=proc)
    os.kill(proc.pid, signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=90)

    assert proc.returncode == 143, stderr
    preempted = json.loads(stdout)
    assert preempted["status"] == "preempted"
    assert [a["status"] for a in preempted["nodes"][0]["attempts"]] == ["preempted"]
    for rank in (0, 1):
        assert (out / f"preempted-a1-r{rank}").exists()

    resumed = run_cli("resume", preempted["id"], "--json", home=tp_home)
    assert resumed.returncode == 0, resumed.stderr
    done = json.loads(resumed.stdout)
    assert done["status"] == "succeeded"
    assert done["result"] == {"rank": 0, "start": 4, "attempt": 2}  # step 4, saved together
