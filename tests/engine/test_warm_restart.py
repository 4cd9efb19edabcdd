"""Restarts that only restore: with torch loaded in the driver, process attempts come from a
fork server that imported the task's module (and what it imports) once, so the attempt after a
SIGKILL does not import it again; what the first attempt imported later is warmed for the next
ones; a module the server cannot import (or that would make it unsafe to fork) is imported by
the attempt itself.

Each test copies ``workflows/warm_counted.py`` under a fresh module name, with settings beside
it; the copy logs the pid of each process that imports it and of each attempt."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import taskpoint
from support.fixtures import run_cli
from support.polling import wait_until

pytest.importorskip("torch")  # the fork server is for drivers that have torch loaded

WORKFLOWS = Path(__file__).parent / "workflows"


def copy_module(folder: Path, name: str, template: str = "warm_counted", **settings: Any) -> Path:
    """``folder/<name>.py``, a copy of a workflows/ module, with its settings; the path of the
    log of its importers' pids."""
    shutil.copy(WORKFLOWS / f"{template}.py", folder / f"{name}.py")
    (folder / f"{name}.json").write_text(json.dumps(settings))
    return folder / f"{name}.imports"


def pids(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def attempts_of(log: Path) -> list[int]:
    return pids(log.with_suffix(".attempts"))


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import torch  # noqa: F401  (loaded in the driver: attempts come from the fork server)

    from taskpoint.backends import process

    # With TensorFlow, JAX, Spark or Flink in the driver no server is kept warm (the task's
    # module would import them there too); collecting the integration tests imports them into
    # this process, so they are hidden from the driver's check while these tests run.
    for name in process._FORK_UNSAFE:
        if name not in process._PRELOAD:
            monkeypatch.delitem(sys.modules, name, raising=False)
    folder = tmp_path / "mods"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    return folder


def run_counted(name: str, total: int = 4) -> taskpoint.Execution:
    module = __import__(name)
    execution = taskpoint.run(module.counted, total=total)
    assert execution.status == "succeeded", execution.error
    return execution


def default_torch_threads() -> int:
    """What a fresh interpreter gets (an attempt from the server must get the same)."""
    code = "import torch; print(torch.get_num_threads())"
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True).stdout)


def test_the_attempt_after_a_sigkill_does_not_import_the_task_module_again(modules: Path):
    log = copy_module(modules, "warm_heavy", heavy=True)
    execution = run_counted("warm_heavy")
    assert [a.status for a in execution.nodes[0].attempts] == ["lost", "succeeded"]
    start, attempt, pid, threads = execution.result
    assert (start, attempt) == (2, 2)
    first, second = attempts_of(log)
    assert second == pid
    imported = pids(log)
    # The driver and the execution's warm server ran the module's top level (the first attempt
    # is forked once the server has imported it); neither attempt did.
    assert imported[0] == os.getpid() and len(imported) == 2
    assert first not in imported and second not in imported
    assert threads == default_torch_threads()  # the server's single thread is not inherited


def test_what_the_first_attempt_imported_later_is_warm_for_the_next(modules: Path):
    """The first attempt imports a module inside the task (as torch's first optimizer pulls in
    torch._dynamo); the server learns it while the attempt runs, and the next attempt, after a
    SIGKILL, finds it imported."""
    helper_log = copy_module(modules, "warm_lazy_helper", template="warm_helper")
    log = copy_module(modules, "warm_lazy", helper="warm_lazy_helper")
    execution = run_counted("warm_lazy")
    assert [a.status for a in execution.nodes[0].attempts] == ["lost", "succeeded"]
    first, second = attempts_of(log)
    imported = pids(helper_log)
    assert imported[0] == first  # the first attempt imported it, then the server did
    assert len(imported) == 2 and second not in imported
    assert len(pids(log)) == 2  # the task's module: driver and server only


def test_a_module_that_fails_to_import_in_the_server_is_imported_by_the_attempt(modules: Path):
    """The second import (the server's) raises; the attempt imports the module itself."""
    log = copy_module(modules, "warm_fails", fail_second_import=True)
    execution = run_counted("warm_fails", total=1)
    assert [a.status for a in execution.nodes[0].attempts] == ["succeeded"]
    imported = pids(log)
    assert len(imported) == 3 and imported[2] == execution.result[2]


def test_a_module_that_starts_a_thread_is_imported_by_each_attempt(modules: Path):
    """A thread in the server would make forking it unsafe: the module is not kept warm there,
    and each attempt (from the base server) imports it, as a fresh interpreter would."""
    log = copy_module(modules, "warm_threaded", thread=True)
    execution = run_counted("warm_threaded")
    assert [a.status for a in execution.nodes[0].attempts] == ["lost", "succeeded"]
    first, second = attempts_of(log)
    imported = pids(log)
    assert first in imported and second in imported


def test_taskpoint_run_keeps_the_file_warm_across_a_sigkill(tmp_path: Path):
    """Through the CLI, with a file name that is no module name (loaded under a private one);
    the file imports torch at its top, so the driver has it loaded."""
    log = copy_module(tmp_path, "my-job", torch_at_import=True)
    done = run_cli(
        "run", tmp_path / "my-job.py", "flow", "--total", "4", home=tmp_path / "home", timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "result: 2" in done.stdout
    attempts = wait_until(lambda: attempts_of(log), 5, "the attempts' pids")
    assert len(attempts) == 2
    imported = pids(log)
    assert len(imported) == 2 and not set(attempts) & set(imported)


def test_arguments_that_refer_to_main_are_spawned():
    """A fork server re-creates the driver's ``__main__`` only for a task of the driver's
    script: a task of another module whose arguments refer to ``__main__`` is spawned."""
    from engine_spawn_tasks import spawned

    from taskpoint.backends import _served
    from taskpoint.engine.attempt import AttemptJob

    job = AttemptJob(spawned, {"value": "__main__"}, None, None, None)  # type: ignore[arg-type]
    assert _served.pack(job, "name") is None
