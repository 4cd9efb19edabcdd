"""`taskpoint goodput` across executions, the goodput part of `show`, and the resume guard's
warning in a run's output and in an attempt's log."""

from __future__ import annotations

import json

from cli_paths import WORKFLOWS

from support.fixtures import run_cli

FLOW = WORKFLOWS / "goodput_flow.py"


def _run(cli, target: str, *options: str) -> str:
    r = cli("run", FLOW, target, *options, "--json")
    assert r.code == 0, r.err
    return json.loads(r.out[r.out.index("{") :])["id"]


def test_a_run_that_restarted_from_scratch_says_so_in_its_output_and_in_show(cli):
    r = cli("run", FLOW, "forgets")
    assert r.code == 0, r.err
    (line,) = [x for x in r.err.splitlines() if "attempt 2  succeeded" in x]
    assert "warning: restarted from scratch" in line and "0001-000003 (step 3)" in line

    eid = json.loads(cli("list", "--json").out)[0]["id"]
    shown = cli("show", eid)
    assert "forgetful#1 attempt 2 restarted from scratch" in shown.out
    assert "ETTR" in shown.out
    doc = json.loads(cli("show", eid, "--json").out)
    node = doc["nodes"][0]
    assert node["goodput"]["restarted_from_scratch"] == 1
    first, second = (a["ledger"] for a in node["attempts"])
    assert first["resume_warning"] is None and first["loaded_version"] is None
    assert "0001-000003" in second["resume_warning"]


def test_the_warning_is_printed_live_by_an_attempt_in_a_child_and_kept_in_its_log(tp_home):
    ran = run_cli("run", FLOW, "forgets", "--in-child", "--json", home=tp_home)
    assert ran.returncode == 0, ran.stderr
    assert "forgetful_child#1 attempt 2 restarted from scratch" in ran.stderr
    eid = json.loads(ran.stdout[ran.stdout.index("{") :])["id"]
    logs = run_cli("logs", eid, "--attempt", "2", home=tp_home)
    assert logs.returncode == 0, logs.stderr
    assert "attempt 2 restarted from scratch" in logs.stdout


def test_goodput_sums_up_recent_executions_per_task(cli):
    forgets = _run(cli, "forgets")
    crashes = _run(cli, "crashes", "--nap", "0.3")

    doc = json.loads(cli("goodput", "--json").out)
    assert {e["id"] for e in doc["executions"]} == {forgets, crashes}
    tasks = {t["task"]: t for t in doc["tasks"]}
    assert set(tasks) == {"forgetful", "killed_once"}
    killed = tasks["killed_once"]
    assert killed["executions"] == 1 and killed["nodes"] == 1 and killed["attempts"] == 2
    assert killed["failures"] == {"lost": 1} and killed["work_lost_s"] >= 0.3
    assert 0 < killed["ettr"] < 1 and killed["restore_s"] > 0
    assert tasks["forgetful"]["failures"] == {"recoverable": 1}
    assert tasks["forgetful"]["restarted_from_scratch"] == 1
    assert doc["total"]["attempts"] == 4

    table = cli("goodput")
    assert table.code == 0, table.err
    for text in (forgets, crashes, "forgetful", "killed_once", "lost 1", "recoverable 1"):
        assert text in table.out
    assert "ETTR" in table.out

    one = json.loads(cli("goodput", crashes, "--json").out)
    assert [e["id"] for e in one["executions"]] == [crashes]
    assert [t["task"] for t in one["tasks"]] == ["killed_once"]
    assert json.loads(cli("goodput", "--limit", "1", "--json").out)["total"]["attempts"] == 2


def test_goodput_help_unknown_ids_and_an_empty_home(cli):
    helped = cli("goodput", "--help")
    assert helped.code == 0 and "ETTR" in helped.out and "--limit" in helped.out
    assert "no executions yet" in cli("goodput").out
    assert json.loads(cli("goodput", "--json").out)["executions"] == []
    _run(cli, "forgets")
    unknown = cli("goodput", "nosuchid")
    assert unknown.code == 2 and "no execution 'nosuchid'" in unknown.err
