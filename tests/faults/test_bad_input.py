"""Fault 8: bad input at the API and at the CLI gets one clear error each.

API: the error's type is the one a Python user expects (``TypeError`` for a wrong call,
``ValueError`` for a bad value, a ``TaskpointError`` for a missing execution or an unusable home
or storage) and its message names what was wrong and where. CLI (a real ``taskpoint`` process):
exit status 2, exactly one line on stderr, no traceback unless ``--debug``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from faults_procs import DEADLINE, cli_command, tp_env
from faults_stats import record

import taskpoint
from taskpoint import Checkpoint, TaskpointError, task, workflow
from taskpoint.errors import ExecutionNotFound

WORKFLOWS = Path(__file__).parent / "workflows"


@task
def add(a: int, b: int = 1) -> int:
    return a + b


@workflow
def flow(a: int) -> int:
    return add(a=a)


@pytest.fixture
def readonly_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory nobody can write to, root included: a read-only tmpfs, else a path below a
    regular file (which no one can create either)."""
    path = tmp_path / "ro"
    path.mkdir()
    mounted = (
        os.geteuid() == 0
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k,ro", "tmpfs", str(path)], capture_output=True
        ).returncode
        == 0
    )
    if not mounted:
        path.rmdir()
        path.write_text("a file, not a directory")
    try:
        yield path / "home" if not mounted else path
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


API_CASES: list[tuple[str, Callable[[], object], type[BaseException], list[str]]] = [
    (
        "wrong type",
        lambda: taskpoint.run(flow, a="x"),
        TypeError,
        ["workflow 'flow'", "'a'", "int", "str"],
    ),
    ("missing parameter", lambda: taskpoint.run(flow), TypeError, ["workflow 'flow'", "'a'"]),
    (
        "unknown parameter",
        lambda: taskpoint.run(flow, a=1, bogus=2),
        TypeError,
        ["workflow 'flow'", "'bogus'"],
    ),
    (
        "too many arguments",
        lambda: taskpoint.run(flow, 1, 2),
        TypeError,
        ["workflow 'flow'", "positional"],
    ),
    ("task call, wrong type", lambda: add(a=1.5), TypeError, ["task 'add'", "'a'", "float"]),
    ("task call, unknown parameter", lambda: add(a=1, c=1), TypeError, ["task 'add'", "'c'"]),
    ("not a workflow", lambda: taskpoint.run(len, 1), TypeError, ["@workflow or @task"]),
    ("unknown execution", lambda: taskpoint.resume("nope"), ExecutionNotFound, ["'nope'"]),
    ("keep=0", lambda: task(keep=0)(len), ValueError, ["keep", ">= 1"]),
    ("keep=1.5", lambda: task(keep=1.5)(len), TypeError, ["keep", "1.5"]),
    ("retries='3'", lambda: task(retries="3")(len), TypeError, ["retries", "'3'"]),
    ("retries=-1", lambda: task(retries=-1)(len), ValueError, ["retries", ">= 0"]),
    ("retry_delay=None", lambda: task(retry_delay=None)(len), TypeError, ["retry_delay"]),
    ("retry_on=5", lambda: task(retry_on=5)(len), TypeError, ["retry_on", "5"]),
    ("isolation", lambda: task(isolation="thread")(len), ValueError, ["isolation", "'thread'"]),
    ("unknown option", lambda: task(bogus=1)(len), TypeError, ["'bogus'"]),
    ("checkpoint keep=0", lambda: Checkpoint.open("cp", keep=0), ValueError, ["keep", ">= 1"]),
    ("checkpoint url", lambda: Checkpoint.open(123), TypeError, ["path or URL", "int"]),
    ("checkpoint timeout", lambda: Checkpoint.open("cp", timeout=-1), ValueError, ["timeout"]),
    (
        "write str",
        lambda: Checkpoint.open("cp").write("text"),
        TypeError,
        ["encode"],
    ),
    (
        "save missing file",
        lambda: Checkpoint.open("cp").save("no-such-file"),
        FileNotFoundError,
        ["no-such-file"],
    ),
    ("context outside a task", taskpoint.current_context, TaskpointError, ["outside a task"]),
]


@pytest.mark.parametrize(
    ("call", "error", "words"), [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES]
)
def test_api_bad_input_raises_one_clear_error(call, error, words, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error) as raised:
        call()
    record("bad_inputs")
    text = str(raised.value)
    for word in words:
        assert word in text, f"{word!r} not in {text!r}"
    assert "\n" not in text


def test_api_unwritable_home_and_storage(readonly_dir, monkeypatch):
    monkeypatch.setenv("TASKPOINT_HOME", str(readonly_dir))
    with pytest.raises(TaskpointError, match="records database") as raised:
        taskpoint.run(flow, a=1)
    assert str(readonly_dir) in str(raised.value)
    monkeypatch.undo()  # the private home again, but storage where nothing can be written
    monkeypatch.setenv("TASKPOINT_STORAGE", str(readonly_dir / "blobs"))
    with pytest.raises(TaskpointError, match="storage") as raised:
        taskpoint.run(flow, a=1)
    assert str(readonly_dir) in str(raised.value)
    record("bad_inputs", 2)


def _taskpoint(home: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli_command(*args),
        capture_output=True,
        text=True,
        env=tp_env(home),
        cwd=cwd,
        timeout=DEADLINE,
    )


CLI_CASES: list[tuple[str, list[str], str]] = [
    ("missing file", ["run", "missing.py", "flow"], "no such file: missing.py"),
    ("a directory", ["run", ".", "flow"], "no such file"),
    ("unknown name", ["run", "flow.py", "nope"], "'nope' is not defined in flow.py"),
    ("wrong type", ["run", "flow.py", "flow", "--a", "x"], "expects int, got 'x'"),
    ("missing parameter", ["run", "flow.py", "flow"], "Missing option '--a'"),
    ("unknown parameter", ["run", "flow.py", "flow", "--a", "1", "--b", "2"], "'--b'"),
    ("import error", ["run", "broken.py", "x"], "importing broken.py failed: SyntaxError"),
    ("keep=0 in the file", ["run", "keep0.py", "t"], "keep must be >= 1, got 0"),
    ("unknown execution: show", ["show", "nope"], "no execution 'nope'"),
    ("unknown execution: resume", ["resume", "nope"], "no execution 'nope'"),
    ("unknown execution: checkpoints", ["checkpoints", "nope"], "no execution 'nope'"),
    ("negative grace", ["--grace", "-1", "run", "flow.py", "flow", "--a", "1"], "--grace"),
    ("unknown command", ["bogus"], "No such command 'bogus'"),
    ("no command", [], "missing command"),
    (
        "bad storage URL",
        ["--storage", "nosuch://x", "run", "flow.py", "flow", "--a", "1"],
        "nosuch",
    ),
]


@pytest.fixture(scope="module")
def cli_work(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A working directory holding the files the cases name, and a home with records, made once
    for the module: no case changes what another one sees."""
    root = tmp_path_factory.mktemp("bad-input-cli")
    work, home = root / "work", root / "home"
    work.mkdir()
    shutil.copyfile(WORKFLOWS / "bad_input_flow.py", work / "flow.py")
    shutil.copyfile(WORKFLOWS / "keep0.py", work / "keep0.py")
    (work / "broken.py").write_text("def (\n")  # a string: the point is a syntax error
    done = _taskpoint(home, work, "run", "flow.py", "flow", "--a", "1")  # a home with records
    assert done.returncode == 0, done.stderr
    return work, home


@pytest.mark.parametrize(
    ("args", "message"), [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES]
)
def test_cli_bad_input_is_one_line_exit_2(cli_work, args, message):
    work, home = cli_work
    done = _taskpoint(home, work, *args)
    record("bad_inputs")
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("taskpoint: error: ") and message in lines[0], lines[0]
    assert "Traceback" not in done.stderr


def test_cli_unwritable_home_and_storage(cli_work, readonly_dir):
    work, home = cli_work
    for args, word in (
        (["--home", str(readonly_dir)], "records database"),
        (["--storage", str(readonly_dir / "blobs")], "storage"),
    ):
        done = _taskpoint(home, work, *args, "run", "flow.py", "flow", "--a", "1")
        record("bad_inputs")
        assert done.returncode == 2, done.stderr
        (line,) = done.stderr.strip().splitlines()
        assert word in line and str(readonly_dir) in line, line
        debug = _taskpoint(home, work, "--debug", *args, "run", "flow.py", "flow", "--a", "1")
        assert debug.returncode == 2 and "Traceback" in debug.stderr
