"""`--backend`, `--scheduler`, `--workers`, `--storage` and `--storage-option` on run/resume."""

from __future__ import annotations

import json
import os

from cli_paths import WORKFLOWS

from taskpoint.cli.backend_options import parse_storage_options
from taskpoint.engine import default_engine

FLOW = WORKFLOWS / "pid_flow.py"


def test_backend_process_runs_inline_tasks_in_a_child_and_is_undone_after(cli, tmp_path):
    storage = tmp_path / "elsewhere"
    done = cli("run", FLOW, "flow", "--backend", "process", "--storage", storage, "--json")
    assert done.code == 0, done.err
    execution = json.loads(done.out)
    assert execution["result"] != os.getpid()
    assert execution["result"] == execution["nodes"][0]["attempts"][0]["pid"]  # the child's
    assert (storage / execution["id"] / "inputs.pkl").exists()
    engine = default_engine()  # the CLI builds an Engine per command: the default is untouched
    assert engine.backend is None and engine.storage is None


def test_dask_only_options_need_the_dask_backend(cli):
    done = cli("run", FLOW, "flow", "--workers", "2")
    assert done.code == 2
    assert "--scheduler and --workers need --backend dask" in done.err
    assert "Traceback" not in done.err


def test_a_malformed_storage_option_is_a_usage_error(cli):
    done = cli("run", FLOW, "flow", "--storage-option", "novalue")
    assert done.code == 2
    assert "KEY=VALUE" in done.err


def test_resume_accepts_the_backend_options(cli):
    first = json.loads(cli("run", FLOW, "flow", "--json").out)
    done = cli("resume", first["id"], "--backend", "inline", "--json")
    assert done.code == 0, done.err


def test_storage_options_nest_and_parse_json_values():
    options = parse_storage_options(
        ("key=123", "anon=false", "client_kwargs.region_name=eu-west-1", "block_size=1024")
    )
    assert options == {
        "key": "123",  # credentials stay strings
        "anon": False,
        "client_kwargs": {"region_name": "eu-west-1"},
        "block_size": 1024,
    }
