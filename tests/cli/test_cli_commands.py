"""`taskpoint run | resume | list | show | checkpoints`: output, JSON shape and exit codes."""

from __future__ import annotations

import json

import pytest
from cli_paths import SEED, WORKFLOWS

from support.fixtures import run_cli

OPTIONS_FLOW = WORKFLOWS / "options_flow.py"


def test_run_seed_shows_retries_and_resumed_checkpoints(cli):
    r = cli("run", SEED, "example", "--n-iterations", "12")
    assert r.code == 0, r.err
    assert "result: 11" in r.out
    assert "succeeded" in r.out and "3 attempts" in r.out
    assert "attempt 1  recoverable" in r.err
    assert "Failed at iteration 4" in r.err
    assert "attempt 2 (retries 1/3, system 0/3)  started, resuming from checkpoint 0001-000004" in (
        r.err
    )
    assert "attempt 3  succeeded" in r.err


def test_run_json_shape(cli):
    r = cli("run", SEED, "example", "--n-iterations", "9", "--json")
    assert r.code == 0
    assert r.err == ""  # no progress lines with --json
    data = json.loads(r.out)
    assert {"id", "status", "result", "nodes"} <= data.keys()
    assert data["status"] == "succeeded" and data["result"] == 8
    (node,) = data["nodes"]
    assert {"key", "task", "status", "attempts", "checkpoints"} <= node.keys()
    assert node["key"] == "use_checkpoint#1" and node["task"] == "use_checkpoint"
    attempt_keys = {"n", "status", "error", "started", "ended"}
    attempt_keys |= {"checkpoint_at_start", "checkpoint_at_end"}
    for attempt in node["attempts"]:
        assert attempt_keys <= attempt.keys()
    assert [a["status"] for a in node["attempts"]] == ["recoverable", "recoverable", "succeeded"]
    assert node["attempts"][0]["error"].startswith("RecoverableError: Failed at iteration 3")
    assert node["checkpoints"]
    for cp in node["checkpoints"]:
        assert {"id", "attempt", "step", "size"} <= cp.keys()
    assert node["checkpoints"][-1]["id"] == node["attempts"][-1]["checkpoint_at_end"]


def test_options_from_signature_with_types_and_defaults(cli):
    r = cli("run", OPTIONS_FLOW, "flow", "--help")
    assert r.code == 0
    for expected in (
        "--n int",
        "[required]",
        "--ratio float",
        "[default: 0.5]",
        "--tags list[str]",
        "--out Path",
        "--verbose / --no-verbose",
        "--opt Opt",
        "--json",
    ):
        assert expected in r.out, expected
    assert "Combine the options" in r.out

    r = cli(
        "run",
        OPTIONS_FLOW,
        "flow",
        "--n",
        "3",
        "--tags",
        "x",
        "--tags",
        "y",
        "--verbose",
        "--opt",
        '{"lr": 0.2}',
        "--raw",
        "hi",
        "--out",
        "o.txt",
    )
    assert r.code == 0, r.err
    assert "3|0.5|['x', 'y']|o.txt|True|Opt(lr=0.2, name='adam')|b'hi'" in r.out


def test_run_without_name_lists_targets(cli):
    r = cli("run", OPTIONS_FLOW)
    assert r.code == 2
    assert "combine (task)" in r.out and "flow (workflow)" in r.out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "missing.py", "flow"], "no such file: missing.py"),
        (["run", "FLOW", "nope"], "'nope' is not defined in"),
        (["run", "FLOW", "flow", "--n", "abc"], "expects int, got 'abc'"),
        (["run", "FLOW", "flow"], "Missing"),
        (["run", "FLOW", "flow", "--n", "1", "--opt", "{bad"], "expects Opt as JSON"),
        (["run", "FLOW", "flow", "--n", "1", "--opt", "3"], "'--opt': expects Opt"),
        (["show", "nope"], "no execution"),
        (["resume", "nope"], "no execution"),
        (["checkpoints", "nope"], "no execution"),
        (["run", "FLOW", "flow", "--n", "1", "--bogus"], "No such option '--bogus'"),
    ],
)
def test_bad_input_is_one_line_exit_2(cli, args, message):
    cli("run", OPTIONS_FLOW, "fails", "--n", "1")  # a home with a database, for the id look-ups
    r = cli(*[str(OPTIONS_FLOW) if a == "FLOW" else a for a in args])
    assert r.code == 2
    assert message in r.err
    assert len(r.err.strip().splitlines()) == 1
    assert "Traceback" not in r.err


def test_unwritable_home(cli, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    r = cli("--home", blocker / "home", "run", SEED, "example", "--n-iterations", "3")
    assert r.code == 2
    assert "cannot open the records database" in r.err
    assert len(r.err.strip().splitlines()) == 1


def test_failed_run_exits_1_and_debug_shows_traceback(cli):
    r = cli("run", OPTIONS_FLOW, "fails", "--n", "7")
    assert r.code == 1
    assert "failed in node fails#1 after" in r.out
    assert "ValueError: cannot handle 7" in r.out
    assert "taskpoint resume" in r.out
    assert "Traceback" not in r.err
    r = cli("--debug", "run", OPTIONS_FLOW, "fails", "--n", "7")
    assert r.code == 1
    assert "Traceback" in r.err and "cannot handle 7" in r.err


def test_list_show_checkpoints_and_restore(cli, tmp_path):
    r = cli("list")
    assert r.code == 0 and "no executions" in r.out
    run = json.loads(cli("run", SEED, "example", "--n-iterations", "12", "--json").out)
    exec_id = run["id"]

    r = cli("list")
    assert exec_id in r.out and "succeeded" in r.out
    listed = json.loads(cli("list", "--json").out)
    assert listed[0]["id"] == exec_id and listed[0]["status"] == "succeeded"

    r = cli("show", exec_id)
    assert r.code == 0
    assert "use_checkpoint#1" in r.out and "recoverable" in r.out and "result: 11" in r.out
    shown = json.loads(cli("show", exec_id, "--json").out)
    assert shown["nodes"] == run["nodes"] and shown["result"] == 11

    r = cli("checkpoints", exec_id)
    assert r.code == 0 and "use_checkpoint#1" in r.out
    listing = json.loads(cli("checkpoints", exec_id, "use_checkpoint", "--json").out)
    versions = listing["nodes"][0]["checkpoints"]
    assert [v["id"] for v in versions] == [c["id"] for c in run["nodes"][0]["checkpoints"]]

    target = tmp_path / "restored"
    r = cli("checkpoints", exec_id, "use_checkpoint#1", "--restore", target)
    assert r.code == 0, r.err
    assert (target / "data").read_bytes() == b"12"
    older = versions[0]["id"]
    r = cli(
        "checkpoints",
        exec_id,
        "use_checkpoint#1",
        "--restore",
        tmp_path / "old",
        "--version",
        older,
    )
    assert r.code == 0, r.err
    assert (tmp_path / "old" / "data").read_bytes() == b"11"
    r = cli(
        "checkpoints",
        exec_id,
        "use_checkpoint#1",
        "--restore",
        tmp_path / "x",
        "--version",
        "0009-000001",
    )
    assert r.code == 2 and "no committed checkpoint version" in r.err
    r = cli("checkpoints", exec_id, "nonode")
    assert r.code == 2 and "has no node 'nonode'" in r.err


def test_resume_of_succeeded_execution_prints_result_and_runs_nothing(cli):
    run = json.loads(cli("run", SEED, "example", "--n-iterations", "10", "--json").out)
    r = cli("resume", run["id"][:8])
    assert r.code == 0
    assert "already succeeded; nothing to run" in r.err
    assert "result: 9" in r.out
    shown = json.loads(cli("show", run["id"], "--json").out)
    assert len(shown["nodes"][0]["attempts"]) == 1


def test_storage_option_puts_blobs_elsewhere(cli, tmp_path, tp_home):
    storage = tmp_path / "store"
    r = cli("--storage", storage, "run", SEED, "example", "--n-iterations", "3", "--json")
    data = json.loads(r.out)
    assert data["storage"] == str(storage)
    assert (storage / data["id"] / "nodes").is_dir()
    assert not (tp_home / "blobs").exists()


def test_console_script_entry_point_exit_code(tmp_path):
    args = ["run", SEED, "example", "--n-iterations", "3"]
    done = run_cli(*args, home=tmp_path / "home", timeout=60)  # python -m taskpoint.cli
    assert done.returncode == 0, done.stderr
    assert "result: 2" in done.stdout
    assert "resuming from checkpoint" in done.stderr
