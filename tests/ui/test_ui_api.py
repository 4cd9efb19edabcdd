"""The JSON API over a real home: CLI shapes, attempts and work series, exact lookups."""

from __future__ import annotations

import json
import subprocess

import pytest
from ui_support import Home, base_url, get

from support.fixtures import cli_command, tp_env
from taskpoint.ui.server import UiServer


def cli_json(home: Home, *args: str) -> object:
    out = subprocess.run(
        cli_command("--home", home.path, *args, "--json"),
        capture_output=True,
        text=True,
        env=tp_env(),
        timeout=60,
        check=True,
    ).stdout
    return json.loads(out)


def api(server: UiServer, path: str) -> object:
    response = get(base_url(server) + path)
    assert response.status == 200, response.body
    assert response.headers["Content-Type"].startswith("application/json")
    return response.json()


def contains(superset: object, subset: object) -> bool:
    """True when ``superset`` has every key and value of ``subset`` (lists item by item)."""
    if isinstance(subset, dict):
        return isinstance(superset, dict) and all(
            k in superset and contains(superset[k], v) for k, v in subset.items()
        )
    if isinstance(subset, list):
        return (
            isinstance(superset, list)
            and len(superset) == len(subset)
            and all(contains(a, b) for a, b in zip(superset, subset, strict=True))
        )
    return superset == subset


def test_list_has_the_shape_of_list_json_plus_what_the_page_shows(ui_home, ui_server):
    rows = api(ui_server, "/api/executions")
    cli_rows = cli_json(ui_home, "list")
    assert contains(rows, cli_rows)
    by_id = {r["id"]: r for r in rows}
    assert set(by_id) == set(ui_home.ids.values())
    seed = by_id[ui_home.ids["seed"]]
    assert seed["status"] == "succeeded" and seed["name"] == "example"
    assert seed["attempts"] == 3 and seed["duration_s"] > 0 and seed["started"]
    assert by_id[ui_home.ids["pipeline"]]["status"] == "failed"
    assert by_id[ui_home.ids["inline"]]["status"] == "preempted"


def test_list_filters_by_status_and_refuses_unknown_ones(ui_home, ui_server):
    failed = api(ui_server, "/api/executions?status=failed")
    assert [r["id"] for r in failed] == [ui_home.ids["pipeline"]]
    assert len(api(ui_server, "/api/executions?limit=2")) == 2
    assert get(base_url(ui_server) + "/api/executions?status=nope").status == 400
    assert get(base_url(ui_server) + "/api/executions?limit=0").status == 400


@pytest.mark.parametrize("name", ["seed", "training", "pipeline", "inline"])
def test_execution_has_the_shape_of_show_json(ui_home, ui_server, name):
    eid = ui_home.ids[name]
    doc = api(ui_server, f"/api/executions/{eid}")
    assert contains(doc, cli_json(ui_home, "show", eid))
    assert doc["now"] and "traceback" in doc
    for node in doc["nodes"]:
        assert {"max_attempts", "work"} <= set(node)
        assert all("traceback" in a for a in node["attempts"])


def test_seed_execution_retried_twice_and_counts_commits_along_the_resume_chain(ui_home, ui_server):
    doc = api(ui_server, f"/api/executions/{ui_home.ids['seed']}")
    assert doc["result"] == 11
    (node,) = doc["nodes"]
    assert [a["status"] for a in node["attempts"]] == ["recoverable", "recoverable", "succeeded"]
    assert [a["checkpoint_at_start"] for a in node["attempts"]] == [
        None,
        "0001-000004",
        "0002-000004",
    ]
    work = node["work"]
    assert work["unit"] == "commits"  # the seed writes no step
    ends = [p["level"] for p in work["points"] if p["kind"] == "end"]
    assert ends == [4, 8, 12]  # the seed's own iteration counter
    assert [f["status"] for f in work["failures"]] == ["recoverable", "recoverable"]
    assert all(f["lost_level"] == 0 for f in work["failures"])  # each retry resumed the latest
    # Retention (keep=2) pruned attempt 1's and 2's commits, but the records keep when each
    # attempt committed its last one: the lost time is exact.
    assert all(f["uncommitted_s"] is not None for f in work["failures"])
    assert all(f["uncommitted_max_s"] >= 0 for f in work["failures"])
    assert [c["id"] for c in node["checkpoints"]] == ["0003-000003", "0003-000004"]


def test_preempted_then_lost_attempts_and_the_work_they_cost(ui_home, ui_server):
    doc = api(ui_server, f"/api/executions/{ui_home.ids['training']}")
    (node,) = doc["nodes"]
    assert [a["status"] for a in node["attempts"]] == ["preempted", "lost", "succeeded"]
    work = node["work"]
    assert work["unit"] == "step"
    assert len(node["checkpoints"]) == 14  # keep=50: every commit is still there
    preempted, lost = work["failures"]
    # Preemption commits at once: little uncommitted work. The lost attempt slept 50 ms after
    # its last commit before SIGKILL: that much work was lost.
    assert lost["status"] == "lost" and lost["uncommitted_s"] >= 0.05
    assert lost["level"] == 9 and lost["resumed_level"] == 9 and lost["lost_level"] == 0
    assert preempted["level"] == 5 and preempted["resumed_level"] == 5
    commits = [p for p in work["points"] if p["kind"] == "commit"]
    assert [p["level"] for p in commits] == list(range(1, 15))
    assert all(p["pruned_before"] == 0 for p in commits)


def test_failed_attempt_has_error_and_traceback(ui_home, ui_server):
    doc = api(ui_server, f"/api/executions/{ui_home.ids['pipeline']}")
    assert doc["status"] == "failed" and doc["failed_node"] == "crunch#1"
    prepare, crunch = doc["nodes"]
    assert prepare["status"] == "succeeded"
    (attempt,) = crunch["attempts"]
    assert attempt["status"] == "failed"
    assert attempt["error"].startswith("ValueError: cannot crunch 100 rows")
    assert "Traceback" in attempt["traceback"] and "ValueError" in attempt["traceback"]


def test_checkpoints_have_the_shape_of_checkpoints_json(ui_home, ui_server):
    eid = ui_home.ids["pipeline"]
    every = api(ui_server, f"/api/executions/{eid}/checkpoints")
    assert contains(every, cli_json(ui_home, "checkpoints", eid))
    one = api(ui_server, f"/api/executions/{eid}/nodes/prepare%231/checkpoints")
    assert contains(one, cli_json(ui_home, "checkpoints", eid, "prepare#1"))
    assert [c["kind"] for c in one["nodes"][0]["checkpoints"]] == ["bytes", "dir"]
    # ... plus the damaged versions of each node (none here; see test_ui_damaged.py).
    assert [n["damaged_checkpoints"] for n in every["nodes"]] == [[], []]


@pytest.mark.parametrize(
    "path",
    [
        "/api/executions/{short}",  # a prefix of a real id: ids match exactly
        "/api/executions/nope",
        "/api/executions/{seed}/nodes/use_checkpoint/checkpoints",  # a task name, not a key
        "/api/executions/{seed}/nodes/..%2F..%2F..%2Fetc/checkpoints",
        "/api/executions/{seed}/nodes/use_checkpoint%231/checkpoints/0001-000001.tar",  # pruned
        "/api/executions/{seed}/nodes/use_checkpoint%231/checkpoints/..%2F0003-000004.tar",
        "/api/executions/{seed}/nodes/use_checkpoint%231/checkpoints/0003-000004",
        "/api/executions/{seed}/nodes/use_checkpoint%231/checkpoints/0003-000004.manifest.json",
        "/api/executions/..%2F{seed}",
        "/static/..%2F..%2Fserver.py",
        "/static/../api.py",
        "/static/index.html",  # pages are served at their routes only
        "/executions/{short}",
        "/etc/passwd",
    ],
)
def test_unknown_or_crafted_paths_are_404(ui_home, ui_server, path):
    seed = ui_home.ids["seed"]
    response = get(base_url(ui_server) + path.format(seed=seed, short=seed[:6]))
    assert response.status == 404, response.body
    if path.startswith(("/api/", "/static/")):
        assert "error" in response.json()
    else:  # a page: a readable one (test_ui_views.py)
        assert response.headers["Content-Type"].startswith("text/html")


def test_bad_percent_encoding_is_400(ui_server):
    assert get(base_url(ui_server) + "/api/executions/%ff%fe").status == 400


def test_execution_whose_driver_was_killed_shows_interrupted(ui_home, ui_server):
    doc = api(ui_server, f"/api/executions/{ui_home.ids['interrupted']}")
    assert doc["status"] == "interrupted"
    (node,) = doc["nodes"]
    (attempt,) = node["attempts"]
    assert attempt["status"] == "interrupted" and attempt["ended"] is None
    end = node["work"]["points"][-1]
    assert end["kind"] == "end" and end["level"] >= 3  # its last retained commit, not zero
    # Its last sign of life: its last retained commit, or a later heartbeat of its driver.
    assert end["t"] >= max(p["t"] for p in node["work"]["points"] if p["kind"] == "commit")
    rows = api(ui_server, "/api/executions?status=interrupted")
    assert [r["id"] for r in rows] == [ui_home.ids["interrupted"]]


def test_the_goodput_ledger_of_a_preempted_then_lost_training(ui_home, ui_server):
    doc = api(ui_server, f"/api/executions/{ui_home.ids['training']}")
    (node,) = doc["nodes"]
    preempted, lost, done = (a["ledger"] for a in node["attempts"])
    # Attempts that reported measured themselves; the SIGKILLed one could not.
    assert preempted["measured"] and done["measured"] and not lost["measured"]
    assert lost["start_s"] is None and lost["work_lost_s"] >= 0.05  # slept after its commit
    assert preempted["work_lost_s"] < 1.0  # it committed its step in progress
    assert done["loaded_version"] == node["attempts"][2]["checkpoint_at_start"]
    assert done["loaded_step"] == 9 and done["restore_s"] > 0 and done["work_lost_s"] == 0
    assert all(a["resume_warning"] is None for a in (preempted, lost, done))
    goodput = node["goodput"]
    assert goodput["failures"] == {"preempted": 1, "lost": 1} and goodput["attempts"] == 3
    assert 0 < goodput["ettr"] < 1 and goodput["work_lost_s"] >= 0.05
    assert doc["goodput"]["ettr"] == goodput["ettr"]
