"""Restarts that only restore: with torch loaded in the driver, process attempts come from a
fork server that imported the task's module (and what it imports) once, so the attempt after a
SIGKILL does not import it again; what the first attempt imported later is warmed for the next
ones; a module the server cannot import (or that would make it unsafe to fork) is imported by
the attempt itself."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import taskpoint
from support.fixtures import run_cli
from support.polling import wait_until

pytest.importorskip("torch")  # the fork server is for drivers that have torch loaded

# Each import of the module appends "<pid>" to this file: who ran its top level.
COUNTED = """
import os, signal, sys, time
with open({log!r}, "a") as handle:
    handle.write(f"{{os.getpid()}}\\n")
{extra}
from taskpoint import current_context, task


@task(isolation="process", system_retries=2)
def counted(total: int) -> list:
    ctx = current_context()
    prev = ctx.checkpoint.read()
    start = int(prev) if prev else 0
    with open({log!r} + ".attempts", "a") as handle:
        handle.write(f"{{os.getpid()}}\\n")
    for i in range(start, total):
        ctx.checkpoint.write(str(i + 1).encode())
        if ctx.attempt == 1 and i == 1:
            {before_kill}
            os.kill(os.getpid(), signal.SIGKILL)
    import torch

    return [start, ctx.attempt, os.getpid(), torch.get_num_threads()]
"""


HELPER = """
import os
with open({log!r}, "a") as handle:
    handle.write(f"{{os.getpid()}}\\n")
"""


def write_module(
    folder: Path, name: str, extra: str = "", before_kill: str = "pass", log: Path | None = None
) -> Path:
    log = log or folder / f"{name}.imports"
    source = COUNTED.format(log=str(log), extra=textwrap.dedent(extra), before_kill=before_kill)
    (folder / f"{name}.py").write_text(source)
    return log


def pids(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import torch  # noqa: F401  (loaded in the driver: attempts come from the fork server)

    folder = tmp_path / "mods"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    return folder


def run_counted(name: str) -> taskpoint.Execution:
    module = __import__(name)
    execution = taskpoint.run(module.counted, total=4)
    assert execution.status == "succeeded", execution.error
    return execution


def default_torch_threads() -> int:
    """What a fresh interpreter gets (an attempt from the server must get the same)."""
    code = "import torch; print(torch.get_num_threads())"
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True).stdout)


def test_the_attempt_after_a_sigkill_does_not_import_the_task_module_again(modules: Path):
    log = write_module(modules, "warm_counted", extra="import sklearn.linear_model  # heavy")
    execution = run_counted("warm_counted")
    assert [a.status for a in execution.nodes[0].attempts] == ["lost", "succeeded"]
    start, attempt, pid, threads = execution.result
    assert (start, attempt) == (2, 2)
    first, second = pids(Path(str(log) + ".attempts"))
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
    helper_log = modules / "warm_lazy_helper.imports"
    (modules / "warm_lazy_helper.py").write_text(HELPER.format(log=str(helper_log)))
    wait_for_server = (
        "import warm_lazy_helper; "
        "[time.sleep(0.05) for _ in range(600) "
        f"if len(open({str(helper_log)!r}).read().split()) < 2]"
    )
    log = write_module(modules, "warm_lazy", before_kill=wait_for_server)
    execution = run_counted("warm_lazy")
    assert [a.status for a in execution.nodes[0].attempts] == ["lost", "succeeded"]
    first, second = pids(Path(str(log) + ".attempts"))
    imported = pids(helper_log)
    assert imported[0] == first  # the first attempt imported it, then the server did
    assert len(imported) == 2 and second not in imported
    assert len(pids(log)) == 2  # the task's module: driver and server only


def test_a_module_that_fails_to_import_in_the_server_is_imported_by_the_attempt(modules: Path):
    """The second import (the server's) raises; the attempt imports the module itself."""
    log = modules / "warm_fails.imports"
    extra = f"""
    if len(open({str(log)!r}).read().split()) == 2:
        raise RuntimeError("not in the server")
    """
    write_module(modules, "warm_fails", extra=extra, log=log)
    module = __import__("warm_fails")
    execution = taskpoint.run(module.counted, total=1)
    assert execution.status == "succeeded", execution.error
    assert [a.status for a in execution.nodes[0].attempts] == ["succeeded"]
    imported = pids(log)
    assert len(imported) == 3 and imported[2] == execution.result[2]


def test_a_module_that_starts_a_thread_is_imported_by_each_attempt(modules: Path):
    """A thread in the server would make forking it unsafe: the module is not kept warm there,
    and each attempt (from the base server) imports it, as a fresh interpreter would."""
    extra = """
    import threading
    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
    """
    log = write_module(modules, "warm_threaded", extra=extra)
    execution = run_counted("warm_threaded")
    assert [a.status for a in execution.nodes[0].attempts] == ["lost", "succeeded"]
    first, second = pids(Path(str(log) + ".attempts"))
    imported = pids(log)
    assert first in imported and second in imported


JOB = """
import os, signal
import torch  # noqa: F401  (the driver has torch loaded: attempts come from the fork server)
from taskpoint import current_context, task, workflow

with open({log!r}, "a") as handle:
    handle.write(f"{{os.getpid()}}\\n")


@task(isolation="process", system_retries=2)
def step(total: int) -> int:
    ctx = current_context()
    prev = ctx.checkpoint.read()
    start = int(prev) if prev else 0
    with open({log!r} + ".attempts", "a") as handle:
        handle.write(f"{{os.getpid()}}\\n")
    for i in range(start, total):
        ctx.checkpoint.write(str(i + 1).encode())
        if ctx.attempt == 1 and i == 1:
            os.kill(os.getpid(), signal.SIGKILL)
    return start


@workflow
def flow(total: int) -> int:
    return step(total=total)
"""


def test_taskpoint_run_keeps_the_file_warm_across_a_sigkill(tmp_path: Path):
    """Through the CLI, with a file name that is no module name (loaded under a private one)."""
    log = tmp_path / "imports"
    job = tmp_path / "my-job.py"
    job.write_text(JOB.format(log=str(log)))
    done = run_cli("run", job, "flow", "--total", "4", home=tmp_path / "home", timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "result: 2" in done.stdout
    attempts = wait_until(lambda: pids(Path(str(log) + ".attempts")), 5, "the attempts' pids")
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
