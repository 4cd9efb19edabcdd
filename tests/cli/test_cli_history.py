"""What `list`, `show` and the end of a run say about past executions: statuses to filter on,
ISO 8601 times with their offset and the same durations in every view, stored tracebacks, the
user's frame of an error, the retry budget each retry spent, and `resume --last`."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from cli_paths import WORKFLOWS

FLOW = WORKFLOWS / "history_flow.py"


def _line_of(text: str) -> int:
    """The line of FLOW that holds ``text``."""
    for number, line in enumerate(FLOW.read_text().splitlines(), start=1):
        if text in line:
            return number
    raise AssertionError(f"{text!r} is not in {FLOW}")


def _run(cli, target: str, n: int = 3, code: int = 0):
    r = cli("run", FLOW, target, "--n", str(n))
    assert r.code == code, r.err
    return r


def _ids(cli, *args: str) -> list[str]:
    r = cli("list", "--json", *args)
    assert r.code == 0, r.err
    return [row["id"] for row in json.loads(r.out)]


def _utc(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    assert value.utcoffset() == timedelta(0), f"{text} is not UTC with its offset"
    return value


def test_list_filters_by_status(cli):
    _run(cli, "ok")
    _run(cli, "fails", code=1)
    ok, failed = _ids(cli, "--status", "succeeded"), _ids(cli, "--status", "failed")
    assert len(ok) == len(failed) == 1
    both = _ids(cli, "--status", "failed,succeeded")
    assert (
        set(both) == {*ok, *failed}
        and _ids(cli, "--status", "failed", "--status", "SUCCEEDED") == both
    )
    table = cli("list", "--status", "failed")
    assert failed[0] in table.out and ok[0] not in table.out
    assert "no preempted executions" in cli("list", "--status", "preempted").out

    bad = cli("list", "--status", "failed,done")
    assert bad.code == 2 and len(bad.err.strip().splitlines()) == 1
    assert "unknown status 'done'" in bad.err and "interrupted" in bad.err


def test_list_json_has_utc_times_inputs_and_the_durations_show_gives(cli):
    _run(cli, "ok", n=4)
    (row,) = json.loads(cli("list", "--json").out)
    assert row["inputs"] == {"n": 4}
    for key in ("created", "started", "ended"):
        _utc(row[key])
    doc = json.loads(cli("show", row["id"], "--json").out)
    for key in ("created", "started", "ended", "inputs", "duration_s", "running_s", "driver_runs"):
        assert row[key] == doc[key], key
    assert row["driver_runs"] == 1 and 0 < row["running_s"] == row["duration_s"]
    (node,) = doc["nodes"]
    (attempt,) = node["attempts"]
    for value in (doc["last_run_started"], node["started"], node["ended"], attempt["started"],
                  attempt["ended"], *(c["created"] for c in node["checkpoints"])):  # fmt: skip
        _utc(value)
    assert node["running_s"] == attempt["duration_s"] <= doc["running_s"]


def test_resume_last_picks_the_newest_execution_that_did_not_succeed(cli):
    none = cli("resume", "--last")
    assert none.code == 2 and "no executions are recorded" in none.err
    _run(cli, "ok")
    nothing = cli("resume", "--last")
    assert nothing.code == 2 and "no execution to resume" in nothing.err
    _run(cli, "fails", code=1)
    (failed,) = _ids(cli, "--status", "failed")
    _run(cli, "ok")
    again = cli("resume", "--last")
    assert again.code == 1 and f"resuming fails as execution {failed}" in again.err
    assert f"execution {failed} failed in node broken#1" in again.out

    both = cli("resume", failed, "--last")
    assert both.code == 2 and "an EXECUTION_ID or --last" in both.err
    neither = cli("resume")
    assert neither.code == 2 and "an EXECUTION_ID or --last" in neither.err


@pytest.mark.parametrize(
    ("target", "task", "raised"),
    [
        ("fails", "broken", 'raise ValueError(f"cannot handle'),
        ("fails_in_child", "broken_child", 'raise ValueError(f"the child cannot'),
    ],
)
def test_the_error_of_a_run_names_the_users_frame_and_show_prints_tracebacks(
    cli, target, task, raised
):
    r = _run(cli, target, n=7, code=1)
    where = f"history_flow.py:{_line_of(raised)} in {task}"
    (summary,) = [line for line in r.out.splitlines() if line.startswith("execution ")]
    assert summary.endswith(f"{where})") and "ValueError: " in summary
    assert "(raised at " in summary  # the file, as seen from the working directory
    (eid,) = _ids(cli)

    shown = cli("show", eid)
    assert "raised at " in shown.out and where in shown.out
    assert "Traceback" not in shown.out  # only with --traceback
    with_tb = cli("show", eid, "--traceback")
    assert with_tb.code == 0
    assert f"--- traceback of {task}#1 attempt 1 (failed) ---" in with_tb.out
    assert "Traceback (most recent call last)" in with_tb.out and where.split(":")[0] in with_tb.out
    assert "ValueError: " in with_tb.out

    doc = json.loads(cli("show", eid, "--json").out)
    (attempt,) = doc["nodes"][0]["attempts"]
    assert "ValueError" in attempt["traceback"] and "history_flow.py" in attempt["traceback"]
    assert "Traceback" in doc["traceback"]


def test_retries_say_which_budget_they_spend_and_which_ran_out(cli):
    r = _run(cli, "spends", code=1)
    assert "flaky#1  attempt 1 (retries 0/1, system 0/3)  started" in r.err
    assert "RecoverableError: flaky 3; retrying (retries 1/1)" in r.err
    assert "flaky#1  attempt 2 (retries 1/1, system 0/3)  started" in r.err
    assert "RecoverableError: flaky 3; no retry left: retries 1/1 spent" in r.err
    assert "RecoverableError: flaky 3 (no retry left: retries 1/1 spent; raised at " in r.out
    (eid,) = _ids(cli)
    shown = cli("show", eid).out
    assert "(no retry left: retries 1/1 spent)" in shown
    assert "retries 1/1, system 0/3" in shown  # the node's budgets
    assert "retried: retries" in shown and "retries ran out" in shown
    doc = json.loads(cli("show", eid, "--json").out)
    (node,) = doc["nodes"]
    assert node["exhausted"] == "retries" and node["budget_from"] == 1
    assert [a["budget"] for a in node["attempts"]] == ["retries", None]
