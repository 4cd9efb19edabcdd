"""Where records live: a project settings file found from any subdirectory, ``--home`` after
the subcommand, ``python -m taskpoint``, and a plain ``python train.py`` naming its execution."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cli_paths import WORKFLOWS

from support.fixtures import tp_env
from taskpoint.engine.config import Engine
from taskpoint.engine.project import ProjectConfigError, find_project_config

PLAIN = WORKFLOWS / "plain_python_flow.py"


def taskpoint_cmd(*args, cwd: Path, env: dict[str, str] | None = None):
    return subprocess.run(
        [sys.executable, "-m", "taskpoint", *map(str, args)],
        cwd=cwd,
        env=env or tp_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_pyproject_settings_are_found_from_a_subdirectory(tmp_path, monkeypatch):
    monkeypatch.delenv("TASKPOINT_HOME", raising=False)
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.taskpoint]\nhome = "runs/records"\nstorage = "runs/blobs"\n'
    )
    deep = tmp_path / "src" / "pkg"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    engine = Engine()
    assert engine.resolved_home() == str(tmp_path / "runs" / "records")
    assert engine.resolved_storage() == str(tmp_path / "runs" / "blobs")
    # An engine's own field and the environment still come first.
    assert Engine(home=str(tmp_path / "mine")).resolved_home() == str(tmp_path / "mine")
    monkeypatch.setenv("TASKPOINT_HOME", str(tmp_path / "env"))
    assert Engine().resolved_home() == str(tmp_path / "env")


def test_taskpoint_toml_wins_over_a_pyproject_above_it(tmp_path, monkeypatch):
    monkeypatch.delenv("TASKPOINT_HOME", raising=False)
    (tmp_path / "pyproject.toml").write_text('[tool.taskpoint]\nhome = "outer"\n')
    inner = tmp_path / "inner"
    inner.mkdir()
    (inner / "taskpoint.toml").write_text(
        'home = "/abs/records"\nstorage = "s3://bucket/runs"\n'
        '[storage-options]\nclient_kwargs = { endpoint_url = "http://127.0.0.1:9" }\n'
    )
    monkeypatch.chdir(inner)
    found = find_project_config()
    assert found.path == inner / "taskpoint.toml"
    assert found.home == "/abs/records" and found.storage == "s3://bucket/runs"
    options = Engine().storage_options_for("s3://bucket/runs")
    assert options["client_kwargs"] == {"endpoint_url": "http://127.0.0.1:9"}


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[tool.taskpoint]\nhomee = 'x'\n", ["homee", "known: home"]),
        ("[tool.taskpoint]\nhome = 3\n", ["home must be a string"]),
        ("[tool.taskpoint\n", ["cannot read"]),
    ],
)
def test_a_bad_settings_file_names_itself_and_the_problem(tmp_path, text, words):
    (tmp_path / "pyproject.toml").write_text(text)
    with pytest.raises(ProjectConfigError) as info:
        find_project_config(tmp_path)
    assert str(tmp_path / "pyproject.toml") in str(info.value)
    for word in words:
        assert word in str(info.value)


def test_list_finds_the_projects_executions_from_any_subdirectory(tmp_path):
    project = tmp_path / "project"
    (project / "notebooks" / "deep").mkdir(parents=True)
    (project / "pyproject.toml").write_text('[tool.taskpoint]\nhome = ".records"\n')
    ran = taskpoint_cmd("run", PLAIN, "doubled", "--x", "4", "--json", cwd=project)
    assert ran.returncode == 0, ran.stderr
    execution_id = json.loads(ran.stdout)["id"]
    assert (project / ".records" / "taskpoint.db").exists()
    listed = taskpoint_cmd("list", "--json", cwd=project / "notebooks" / "deep")
    assert listed.returncode == 0, listed.stderr
    assert [row["id"] for row in json.loads(listed.stdout)] == [execution_id]


def test_home_after_the_subcommand(tmp_path):
    home = tmp_path / "elsewhere"
    ran = taskpoint_cmd("run", PLAIN, "doubled", "--home", home, "--json", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    execution_id = json.loads(ran.stdout)["id"]
    for args in (["list", "--home", home, "--json"], ["show", execution_id, "--home", home]):
        shown = taskpoint_cmd(*args, cwd=tmp_path)
        assert shown.returncode == 0, shown.stderr
        assert execution_id in shown.stdout
    # Without it, this directory has no records: the flag really moved the home.
    missing = taskpoint_cmd("show", execution_id, cwd=tmp_path)
    assert missing.returncode == 2 and "no executions are recorded" in missing.stderr


def test_plain_python_prints_the_execution_and_how_to_resume(tmp_path):
    home = tmp_path / "home"
    proc = subprocess.run(
        [sys.executable, str(PLAIN)],
        cwd=tmp_path,
        env=tp_env(home),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "result: 42" in proc.stdout
    match = re.search(r"execution (\w+) \(doubled\) started.*taskpoint resume (\w+)", proc.stderr)
    assert match and match.group(1) == match.group(2), proc.stderr
    shown = taskpoint_cmd("show", match.group(1), cwd=tmp_path, env=tp_env(home))
    assert shown.returncode == 0 and "succeeded" in shown.stdout, shown.stderr
