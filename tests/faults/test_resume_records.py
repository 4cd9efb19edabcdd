"""What the records say about an execution whose driver was SIGKILLed and then resumed.

- The lost attempt ends where its driver was last alive (its last checkpoint commit, or the
  driver's heartbeat), not when someone typed `resume`; its end checkpoint and when it was
  committed are filled in from the store when the next attempt starts.
- The times of attempts, nodes and the execution agree across `show --json`, `list --json` and
  the web view's data: an execution's wall time spans all its driver runs, its running time
  counts only the time they ran.
- The work-over-time series resumes at the level each attempt reached (3 -> 11 -> ...), draws
  the pruned stretch of a lost attempt as an interpolation up to its recorded last commit, and
  marks no committed work as lost.
- Retry budgets: attempts cut short by the driver's death spend none, a resume does not refill
  what earlier attempts spent, and a failed node that is resumed starts fresh budgets.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import time
from datetime import datetime
from pathlib import Path

import pytest
from faults_procs import DEADLINE, Driver

from support.fixtures import run_cli
from support.polling import wait_until
from taskpoint.engine import Engine
from taskpoint.ui.api import Api
from taskpoint.ui.readonly import RecordsSource

pytestmark = pytest.mark.slow  # kills processes, starts a JVM or a browser

FLOW = Path(__file__).parent / "workflows" / "resumed_flow.py"


def _ts(iso: str) -> float:
    value = datetime.fromisoformat(iso)
    assert value.utcoffset() is not None, f"{iso} has no UTC offset"
    return value.timestamp()


def _versions(home: Path) -> list[Path]:
    return sorted(home.glob("blobs/*/nodes/*/checkpoints/v/*.manifest.json"))


def _kill_after(home: Path, driver: Driver, attempt: int, seq: int) -> tuple[str, float]:
    """SIGKILL the driver (and its session) once its attempt ``attempt`` committed version
    ``seq`` or later; return the execution id and the time the driver was gone."""

    def committed() -> list[Path]:
        return [
            p
            for p in _versions(home)
            if p.name.startswith(f"{attempt:04d}-") and p.name >= f"{attempt:04d}-{seq:06d}"
        ]

    found = wait_until(committed, DEADLINE, f"attempt {attempt} to commit {seq}", proc=driver.proc)
    driver.kill_group()
    # Once the driver is gone: until the kill lands it may still beat or commit (on a loaded
    # machine its last heartbeat came 0.4 ms after a time taken just before the kill).
    killed_at = time.time()
    return found[0].relative_to(home).parts[1], killed_at


def _cli_json(home: Path, *args: str) -> object:
    r = run_cli(*args, "--json", home=home, timeout=DEADLINE)
    assert r.returncode in (0, 1), r.stderr
    return json.loads(r.stdout)


def _latest_own(home: Path, execution_id: str, attempt: int) -> dict:
    """The newest version attempt ``attempt`` committed, as `taskpoint checkpoints` lists it."""
    (node,) = _cli_json(home, "checkpoints", execution_id)["nodes"]
    own = [v for v in node["checkpoints"] if v["attempt"] == attempt]
    assert own, f"attempt {attempt} committed nothing: {node}"
    return own[-1]


def test_lost_attempts_end_at_their_last_sign_of_life_and_the_work_resumes_further(
    tp_home, tmp_path
):
    steps = 40
    run = Driver(tp_home, tmp_path, "run", FLOW, "counting", "--steps", str(steps))
    eid, killed = _kill_after(tp_home, run, 1, 3)
    ends = [_latest_own(tp_home, eid, 1)]
    kills = [killed]
    again = Driver(tp_home, tmp_path, "resume", eid)
    _, killed = _kill_after(tp_home, again, 2, 5)
    ends.append(_latest_own(tp_home, eid, 2))
    kills.append(killed)
    final = run_cli("resume", eid, home=tp_home, timeout=DEADLINE)
    assert final.returncode == 0, final.stderr

    doc = _cli_json(tp_home, "show", eid)
    (node,) = doc["nodes"]
    attempts = node["attempts"]
    assert [a["status"] for a in attempts] == ["lost", "lost", "succeeded"]
    assert [a["driver_run"] for a in attempts] == [1, 2, 3]
    for a, end, killed in zip(attempts, ends, kills, strict=False):
        # What it committed last, and when, from the store; it ended there (or at a later
        # heartbeat of its driver), never after its driver was killed.
        assert a["checkpoint_at_end"] == end["id"]
        assert abs(_ts(a["last_commit"]) - _ts(end["created"])) < 0.002
        assert _ts(a["last_commit"]) - 0.002 <= _ts(a["ended"]) <= killed
        assert a["duration_s"] == pytest.approx(_ts(a["ended"]) - _ts(a["started"]), abs=0.002)
    assert attempts[1]["checkpoint_at_start"] == attempts[0]["checkpoint_at_end"]
    assert attempts[2]["checkpoint_at_start"] == attempts[1]["checkpoint_at_end"]

    # One definition of time everywhere: the node ran as long as its attempts, within the
    # execution's running time, which spans three driver runs and leaves out the gaps.
    assert doc["driver_runs"] == node["driver_runs"] == 3
    assert node["running_s"] == pytest.approx(sum(a["duration_s"] for a in attempts), abs=0.01)
    assert node["running_s"] <= doc["running_s"] + 0.01
    assert node["duration_s"] <= doc["duration_s"] + 0.01
    gaps = sum(
        _ts(later["started"]) - _ts(earlier["ended"])
        for earlier, later in itertools.pairwise(attempts)
    )
    assert 0 < doc["duration_s"] - doc["running_s"] <= gaps + 0.01
    assert doc["started"] == doc["created"] and _ts(doc["started"]) <= _ts(attempts[0]["started"])
    (row,) = _cli_json(tp_home, "list")
    for key in ("created", "started", "ended", "duration_s", "running_s", "driver_runs", "inputs"):
        assert row[key] == doc[key], key
    assert row["inputs"] == {"steps": steps, "pause": 0.05}

    shown = run_cli("show", eid, home=tp_home).stdout
    assert "in 3 driver runs)" in shown
    for end in ends:
        assert end["id"] in shown

    # The web view's work-over-time series, from the same records and the store.
    with RecordsSource(tp_home).open() as records:
        web = Api(Engine(home=str(tp_home))).execution(records, eid)
    work = web["nodes"][0]["work"]
    assert work["unit"] == "step"
    levels = [end["step"] for end in ends]
    assert [p["level"] for p in work["points"] if p["kind"] == "end"] == [*levels, steps]
    starts = [p["level"] for p in work["points"] if p["kind"] == "start"]
    assert starts == [0, *levels]  # each attempt resumed where the one before it got to
    for failure, level, attempt in zip(work["failures"], levels, attempts[:2], strict=True):
        assert failure["status"] == "lost"
        assert (failure["level"], failure["resumed_level"], failure["lost_level"]) == (
            level,
            level,
            0,
        )
        exact = _ts(attempt["ended"]) - _ts(attempt["last_commit"])
        assert failure["uncommitted_s"] == pytest.approx(exact, abs=0.002)
    # Retention pruned the lost attempts' commits: each is drawn up to its recorded last commit,
    # the stretch before it as an interpolation.
    pruned = [p for p in work["points"] if p.get("pruned")]
    assert [(p["attempt"], p["level"]) for p in pruned] == [(1, levels[0]), (2, levels[1])]
    for point, attempt in zip(pruned, attempts, strict=False):
        assert point["kind"] == "commit" and point["pruned_before"] >= 1
        assert point["t"] == pytest.approx(_ts(attempt["last_commit"]), abs=0.002)


def test_an_attempt_that_committed_nothing_ends_at_its_drivers_last_heartbeat(tp_home, tmp_path):
    marker = tmp_path / "started"
    run = Driver(tp_home, tmp_path, "run", FLOW, "idling", "--marker", str(marker))
    wait_until(marker.exists, DEADLINE, "attempt 1 to start", proc=run.proc)
    db = tp_home / "taskpoint.db"

    def heartbeat() -> float | None:
        with sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True) as conn:
            return conn.execute("SELECT max(last_seen) FROM executions").fetchone()[0]

    seen = wait_until(heartbeat, DEADLINE, "the driver's first heartbeat", proc=run.proc)
    killed = time.time()
    run.kill_group()
    (row,) = _cli_json(tp_home, "list")
    assert row["status"] == "interrupted"
    # Its last sign of life (JSON times have millisecond precision), before the resume.
    assert seen - 0.001 <= _ts(row["last_seen"]) <= killed
    before = _cli_json(tp_home, "show", row["id"])
    (interrupted,) = before["nodes"][0]["attempts"]
    assert interrupted["ended"] is None and interrupted["status"] == "interrupted"
    assert interrupted["duration_s"] == pytest.approx(
        _ts(row["last_seen"]) - _ts(interrupted["started"]), abs=0.002
    )

    resumed = run_cli("resume", "--last", home=tp_home, timeout=DEADLINE)
    assert resumed.returncode == 0, resumed.stderr
    doc = _cli_json(tp_home, "show", row["id"])
    lost, done = doc["nodes"][0]["attempts"]
    assert lost["status"] == "lost" and lost["checkpoint_at_end"] is None
    assert seen - 0.001 <= _ts(lost["ended"]) <= killed  # not when `resume` was typed
    assert lost["duration_s"] > 0 and lost["budget"] is None
    assert done["status"] == "succeeded" and doc["driver_runs"] == 2


def test_budgets_carry_over_a_resume_and_a_failed_node_starts_fresh(tp_home, tmp_path):
    run = Driver(tp_home, tmp_path, "run", FLOW, "budgeted")
    eid, _ = _kill_after(tp_home, run, 2, 2)  # attempt 1 spent the one retry; 2 is cut short
    _, progress = run.output()
    assert "attempt 1  recoverable" in progress and "; retrying (retries 1/1)" in progress

    # Attempt 2 died with its driver: it spent nothing, and the retry attempt 1 spent stays
    # spent, so attempt 3's failure fails the node.
    failed = run_cli("resume", eid, home=tp_home, timeout=DEADLINE)
    assert failed.returncode == 1, failed.stderr
    assert "attempt 3 (retries 1/1, system 0/3)  started" in failed.stderr
    assert "; no retry left: retries 1/1 spent" in failed.stderr
    assert (
        "RecoverableError: attempt 3 fails too (no retry left: retries 1/1 spent;" in failed.stdout
    )
    doc = _cli_json(tp_home, "show", eid)
    (node,) = doc["nodes"]
    assert [a["status"] for a in node["attempts"]] == ["recoverable", "lost", "recoverable"]
    assert [a["budget"] for a in node["attempts"]] == ["retries", None, None]
    assert node["budgets"] == {
        "retries": {"spent": 1, "limit": 1},
        "system_retries": {"spent": 0, "limit": 3},
    }
    assert node["budget_from"] == 1 and node["exhausted"] == "retries"
    shown = run_cli("show", eid, home=tp_home).stdout
    assert "(no retry left: retries 1/1 spent)" in shown and "retries ran out" in shown

    # Resumed after the node failed (the code was fixed): fresh budgets from attempt 4 on.
    fixed = run_cli("resume", eid, home=tp_home, timeout=DEADLINE)
    assert fixed.returncode == 0, fixed.stderr
    assert "attempt 4 (retries 0/1, system 0/3)  started" in fixed.stderr
    doc = _cli_json(tp_home, "show", eid)
    (node,) = doc["nodes"]
    assert node["status"] == "succeeded" and node["budget_from"] == 4
    assert node["budgets"]["retries"] == {"spent": 0, "limit": 1} and node["exhausted"] is None
    shown = run_cli("show", eid, home=tp_home).stdout
    assert (
        "fresh retry budgets (the node had failed, then was resumed): flaky#1 from attempt 4"
        in (shown)
    )
