"""The web view's data where the records now tell more (issue 17): UTC times with their offset
and the inputs as JSON in the executions list, the same durations as the CLI, retry budgets per
node, when each attempt last committed (so a preempted attempt that committed its step lost no
work), and a database written before those records existed still served read-only."""

from __future__ import annotations

import sqlite3
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from ui_support import SEED, base_url, get, serving

from support.fixtures import cli_command, tp_env
from taskpoint.checkpoint import CheckpointVersion
from taskpoint.engine.execution import Attempt
from taskpoint.records import schema
from taskpoint.ui.work import work_series


def _utc(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    assert value.utcoffset() == timedelta(0), f"{text} is not UTC with its offset"
    return value


def _api(server, path: str):
    response = get(base_url(server) + path)
    assert response.status == 200, response.body
    return response.json()


def test_list_rows_have_utc_times_inputs_and_the_durations_of_show(ui_home, ui_server):
    rows = {r["id"]: r for r in _api(ui_server, "/api/executions")}
    for row in rows.values():
        for key in ("created", "started"):
            _utc(row[key])
        assert row["ended"] is None or _utc(row["ended"])
        assert isinstance(row["inputs"], dict) and row["driver_runs"] == 1
    seed = rows[ui_home.ids["seed"]]
    assert seed["inputs"] == {"n_iterations": 12}
    doc = _api(ui_server, f"/api/executions/{ui_home.ids['seed']}")
    for key in ("started", "ended", "duration_s", "running_s", "driver_runs"):
        assert seed[key] == doc[key], key
    interrupted = rows[ui_home.ids["interrupted"]]
    assert interrupted["ended"] is None and _utc(interrupted["last_seen"])


def test_nodes_carry_their_budgets_and_attempts_the_budget_their_retry_spent(ui_home, ui_server):
    (node,) = _api(ui_server, f"/api/executions/{ui_home.ids['seed']}")["nodes"]
    assert node["budgets"] == {
        "retries": {"spent": 2, "limit": 3},
        "system_retries": {"spent": 0, "limit": 3},
    }
    assert [a["budget"] for a in node["attempts"]] == ["retries", "retries", None]
    (node,) = _api(ui_server, f"/api/executions/{ui_home.ids['training']}")["nodes"]
    assert [a["budget"] for a in node["attempts"]] == ["system_retries", "system_retries", None]
    crunch = _api(ui_server, f"/api/executions/{ui_home.ids['pipeline']}")["nodes"][1]
    assert crunch["exhausted"] is None  # a ValueError is not retried: no budget ran out


def test_a_preempted_attempt_that_committed_its_step_lost_no_work(ui_home, ui_server):
    for name in ("inline", "training"):
        (node,) = _api(ui_server, f"/api/executions/{ui_home.ids[name]}")["nodes"]
        preempted = node["attempts"][0]
        assert preempted["status"] == "preempted"
        assert preempted["checkpoint_at_end"].startswith("0001-")  # its own, on preemption
        assert _utc(preempted["last_commit"]) <= _utc(preempted["ended"])
        failure = node["work"]["failures"][0]
        # Exact, and only the time from that commit to the attempt's end.
        assert failure["uncommitted_s"] is not None and failure["uncommitted_s"] < 1.0


def _downgrade_to(db_path: Path, version: int) -> None:
    """Make the database what taskpoint wrote at schema ``version`` (columns added later gone)."""
    with sqlite3.connect(db_path) as db:
        for table in ("executions", "nodes", "attempts"):
            columns = [row[1] for row in db.execute(f"PRAGMA table_info({table})")]
            kept = ", ".join(c for c in columns if schema.ADDED_IN.get(c, 0) <= version)
            db.execute(f"CREATE TABLE old_{table} AS SELECT {kept} FROM {table}")
            db.execute(f"DROP TABLE {table}")
            db.execute(f"ALTER TABLE old_{table} RENAME TO {table}")
        db.execute(f"PRAGMA user_version={version}")


def test_a_database_from_before_budgets_and_times_is_served_as_it_is(tmp_path):
    home = tmp_path / "home"
    ran = subprocess.run(
        cli_command("--home", home, "run", SEED, "example", "--n-iterations", "12", "--json"),
        capture_output=True,
        text=True,
        env=tp_env(),
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr
    db_path = home / "taskpoint.db"
    _downgrade_to(db_path, 2)
    with serving(home) as server:
        (row,) = _api(server, "/api/executions")
        assert row["driver_runs"] == 1 and row["duration_s"] > 0
        doc = _api(server, f"/api/executions/{row['id']}")
    (node,) = doc["nodes"]
    assert node["budgets"] is None and node["exhausted"] is None  # not recorded back then
    assert all(a["budget"] is None and a["last_commit"] is None for a in node["attempts"])
    assert [p["level"] for p in node["work"]["points"] if p["kind"] == "end"] == [4, 8, 12]
    with sqlite3.connect(f"{db_path.as_uri()}?mode=ro", uri=True) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (2,)  # never migrated from here


def _version(attempt: int, seq: int, t: float, step: int) -> CheckpointVersion:
    return CheckpointVersion(
        id=f"{attempt:04d}-{seq:06d}",
        attempt=attempt,
        seq=seq,
        step=step,
        metadata={},
        kind="bytes",
        size=3,
        files=1,
        created=datetime.fromtimestamp(t, UTC),
    )


def test_a_pruned_last_commit_is_drawn_where_and_at_the_level_the_records_say():
    # Attempt 1 was preempted right after committing step 50 (its 5th commit); retention has
    # pruned all of its versions since. The records kept when it committed and the step.
    attempts = [
        Attempt(1, "preempted", None, 0.0, 10.0, 1, None, "0001-000005",
                last_commit=9.9, step_at_end=50),
        Attempt(2, "succeeded", None, 11.0, 20.0, 1, "0001-000005", "0002-000002",
                last_commit=19.0, step_at_start=50, step_at_end=70),
    ]  # fmt: skip
    series = work_series(attempts, [_version(2, 1, 15.0, 60), _version(2, 2, 19.0, 70)], 30.0)
    assert series["unit"] == "step"
    (pruned,) = [p for p in series["points"] if p.get("pruned")]
    assert (pruned["attempt"], pruned["t"], pruned["level"]) == (1, 9.9, 50)
    assert pruned["pruned_before"] == 5  # the stretch up to it is interpolated
    assert [p["level"] for p in series["points"] if p["kind"] == "start"] == [0, 50]
    (failure,) = series["failures"]
    assert failure["uncommitted_s"] == pytest.approx(0.1)  # not the whole attempt
    assert (failure["level"], failure["resumed_level"], failure["lost_level"]) == (50, 50, 0)
