"""Fault 7: eight executions at once against one records home and one storage root.

Eight ``taskpoint run`` processes start together on a home that does not exist yet (so they also
race to create the database), each running a workflow of many small checkpointing nodes, inline
and process-isolated, with retries; readers (``taskpoint list``/``show``) poll meanwhile. Half
of the drivers are SIGKILLed mid-way and resumed, again all at once. Every process must succeed
without a "database is locked" escaping, and the records must be consistent: every node of
every execution succeeded once, its attempts numbered 1..k with only the last one succeeded,
and its checkpoints written by those attempts.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from faults_procs import DEADLINE, Driver, tp_env
from faults_stats import record

from support.polling import wait_until

pytestmark = pytest.mark.slow  # kills processes, starts a JVM or a browser

N_EXECUTIONS = 8
NODES = 12


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`taskpoint --home HOME ARGS` in this process, once the drivers are done: the look at the
    records after the race need not start an interpreter per execution."""
    from taskpoint.cli.app import run_cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run_cli(["--home", str(home), *args])
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def _readers(home: Path, cwd: Path) -> list[subprocess.Popen[str]]:
    """Readers polling the records while the drivers write."""
    return [
        subprocess.Popen(
            [sys.executable, str(Path(__file__).parent / "faults_list_poller.py")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=tp_env(home),
            cwd=cwd,
        )
        for _ in range(2)
    ]


def _finish(drivers: list[Driver]) -> list[dict]:
    results = []
    for driver in drivers:
        code = driver.wait(DEADLINE * 2)
        out, err = driver.output()
        assert "locked" not in err.lower(), err
        assert code == 0, err[-3000:]
        results.append(json.loads(out))
    return results


def _check_records(home: Path, ids: list[str]) -> None:
    listed = _cli(home, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    statuses = {e["id"]: e["status"] for e in json.loads(listed.stdout)}
    assert statuses == dict.fromkeys(ids, "succeeded")
    expected = sum(i * i for i in range(NODES))
    for execution_id in ids:
        shown = _cli(home, "show", execution_id, "--json")
        assert shown.returncode == 0, shown.stderr
        data = json.loads(shown.stdout)
        assert data["result"] == expected
        assert len(data["nodes"]) == NODES
        for node in data["nodes"]:
            assert node["status"] == "succeeded", node
            numbers = [a["n"] for a in node["attempts"]]
            assert numbers == list(range(1, len(numbers) + 1)), numbers
            statuses = [a["status"] for a in node["attempts"]]
            assert statuses[-1] == "succeeded" and "succeeded" not in statuses[:-1], statuses
            assert all(s in ("recoverable", "lost", "preempted") for s in statuses[:-1]), statuses
            attempts = {a["n"] for a in node["attempts"]}
            assert node["checkpoints"], node
            assert {c["attempt"] for c in node["checkpoints"]} <= attempts
            assert node["checkpoints"][-1]["step"] == 3


def test_eight_executions_at_once_share_one_home_and_storage(tmp_path, workflow_copy):
    home = tmp_path / "home"  # does not exist yet: the drivers race to create it
    work = tmp_path / "work"
    workflow_copy("fanflow.py", into=work)  # its nodes write progress files next to it
    started = time.monotonic()
    drivers = [
        Driver(
            home, work, "run", "fanflow.py", "fan", "--tag", f"x{k}", "--n", str(NODES), "--json"
        )
        for k in range(N_EXECUTIONS)
    ]
    readers = []
    try:
        # Half of them are killed (whole process groups) once they are under way.
        killed_drivers = []
        for k, driver in enumerate(drivers[: N_EXECUTIONS // 2]):
            progress = work / f"progress-x{k}"
            wait_until(
                lambda p=progress, d=driver: (
                    not d.alive() or (p.exists() and len(p.read_text().split()) >= 3)
                ),
                DEADLINE,
                f"driver {k} to make progress",
            )
            if driver.alive():
                driver.kill_group()
                killed_drivers.append(driver)
        readers = _readers(home, work)
        survivors = _finish([d for d in drivers if d not in killed_drivers])
        listed = _cli(home, "list", "--json")
        ids = {e["id"] for e in json.loads(listed.stdout)}
        killed = sorted(ids - {s["id"] for s in survivors})
        assert len(ids) == N_EXECUTIONS and len(killed) == len(killed_drivers), listed.stdout
        # resume the killed ones, all at once, with readers polling again
        readers += _readers(home, work)
        resumed = _finish([Driver(home, work, "resume", i, "--json") for i in killed])
        assert all(r["status"] == "succeeded" for r in survivors + resumed)
        for reader in readers:
            assert reader.wait(DEADLINE) == 0, reader.stderr.read() if reader.stderr else ""
        _check_records(home, sorted(ids))
        record("executions", N_EXECUTIONS)
        print(f"\n{N_EXECUTIONS} executions ({len(killed)} killed and resumed) in "
              f"{time.monotonic() - started:.1f} s")  # fmt: skip
    finally:
        for driver in drivers:
            driver.close()
        for reader in readers:
            if reader.poll() is None:
                reader.kill()
                reader.wait()
