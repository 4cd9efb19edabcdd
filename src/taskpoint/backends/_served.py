"""An attempt forked by a fork server: what the driver sends (``pack``) and what the child does
with it (``run_attempt``), beside the report of what it imported for the server to warm."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from taskpoint.backends._warm_server import ModuleRef, import_module, learnable
from taskpoint.backends.shipping import installed
from taskpoint.engine.attempt import AttemptJob, Outcome
from taskpoint.engine.events import AttemptInfo
from taskpoint.engine.task import Task
from taskpoint.errors import TaskpointError
from taskpoint.records.status import AttemptStatus

# The name the driver's script is loaded under in an attempt (multiprocessing's: the driver's
# ``__mp_main__`` is its ``__main__``, so what the attempt pickles by it loads in the driver).
MAIN_SCRIPT = "__mp_main__"


def from_main_script(task: Task) -> bool:
    """Is the task defined at the top level of the script the driver runs (``python job.py``)?"""
    fn = task.fn
    if fn.__module__ not in ("__main__", MAIN_SCRIPT) or "<locals>" in fn.__qualname__:
        return False
    file = getattr(sys.modules.get(fn.__module__), "__file__", None)
    return isinstance(file, str) and file.endswith(".py") and os.path.isfile(file)


@dataclass
class ServedAttempt:
    """The task by reference; the arguments pickled apart, loaded once its module is there."""

    module: ModuleRef
    qualname: str
    arguments: bytes
    info: AttemptInfo
    grace: float
    driver: int
    environ: dict[str, str]
    cwd: str
    path: list[str]
    argv: list[str]
    name: str


def pack(job: AttemptJob, name: str) -> tuple[ModuleRef, bytes] | None:
    """The task's module and the attempt as bytes; ``None`` when the arguments refer to the
    driver's ``__main__`` and the task is not from the driver's script (the child re-creates
    ``__main__`` only from that script, as a spawned child does)."""
    arguments = pickle.dumps(job.arguments, protocol=pickle.HIGHEST_PROTOCOL)
    module = task_module(job.task)
    if b"__main__" in arguments and module.name != MAIN_SCRIPT:
        return None
    served = ServedAttempt(
        module,
        job.task.fn.__qualname__,
        arguments,
        job.info,
        job.guard.grace,
        os.getpid(),
        # A fork server's children inherit the environment it started with; give them the
        # driver's as it is now, as fork and spawn do (and its directory and path).
        dict(os.environ),
        os.getcwd(),
        list(sys.path),
        list(sys.argv),
        name,
    )
    return module, pickle.dumps(served, protocol=pickle.HIGHEST_PROTOCOL)


def task_module(task: Task) -> ModuleRef:
    """How a fork server finds the task's module: by name (a package's module, an installed
    one), else from its file under the driver's name for it (a file run by ``taskpoint run``,
    whose name may not be importable); the driver's script (``python job.py``) as
    ``__mp_main__``, as a spawned child loads it (its ``if __name__ == "__main__":`` block does
    not run again)."""
    name = task.fn.__module__
    module = sys.modules[name]
    file = getattr(module, "__file__", None)
    if name in ("__main__", MAIN_SCRIPT):
        return ModuleRef(MAIN_SCRIPT, os.path.abspath(file) if file else None)
    if "." in name or hasattr(module, "__path__") or not file or not file.endswith(".py"):
        return ModuleRef(name)
    return ModuleRef(name) if installed(file) else ModuleRef(name, file)


def run_attempt(payload: bytes, result_fd: int, report_fd: int | None, threads: int | None) -> int:
    """In the forked child: run the attempt; its exit code (1 after an uncaught error, as in
    a ``multiprocessing`` child)."""
    code = 0
    try:
        # As a multiprocessing child starts: the server's finalizers are not this process's to
        # run, and objects made at import (a module-level Queue, say) are told of the fork.
        multiprocessing.util._finalizer_registry.clear()  # type: ignore[attr-defined]
        multiprocessing.util._run_after_forkers()  # type: ignore[attr-defined]
        if threads is not None:  # the server runs torch on one thread; the attempt gets its own
            sys.modules["torch"].set_num_threads(threads)
        report = _ImportReport(report_fd) if report_fd is not None else None
        try:
            _run(payload, result_fd)
            if report is not None:
                report.send()
        finally:  # end as a multiprocessing child does: its finalizers, then non-daemon threads
            multiprocessing.util._exit_function()  # type: ignore[attr-defined]
            threading._shutdown()  # type: ignore[attr-defined]
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (AttributeError, OSError, ValueError):
                pass
    return code


def _run(payload: bytes, result_fd: int) -> None:
    """Take on the driver's environment, directory and path, find the task (there already
    when its module was warm in the server, else imported now) and run it."""
    from taskpoint.backends.process import _child_main

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sender = Connection(result_fd, readable=False)
    job: ServedAttempt = pickle.loads(payload)
    os.environ.clear()
    os.environ.update(job.environ)
    _threads_as_the_environment_says()
    try:
        os.chdir(job.cwd)
    except OSError:
        pass
    sys.path[:] = job.path
    sys.argv[:] = job.argv
    multiprocessing.current_process().name = job.name
    try:
        obj: Any = import_module(job.module)
        if job.module.name == MAIN_SCRIPT:  # what refers to the driver's __main__ finds it
            sys.modules["__main__"] = obj
        for part in job.qualname.split("."):
            obj = getattr(obj, part)
        if not isinstance(obj, Task):
            raise TypeError(f"{job.qualname} is not a @task in this process")
        arguments = pickle.loads(job.arguments)
    except BaseException as exc:  # a configuration error, as when the driver cannot load it
        where = job.module.file or job.module.name
        error = TaskpointError(
            f"cannot load task {job.qualname} from {where} in the attempt's process: "
            f"{type(exc).__name__}: {exc}"
        )
        sender.send(Outcome.from_error(AttemptStatus.FAILED, error, job.info.checkpoint_at_start))
        sender.close()
        return
    _child_main(obj, arguments, job.info, job.grace, sender, job.driver, job.environ)


def _threads_as_the_environment_says() -> None:
    """A fresh interpreter's torch runs ``OMP_NUM_THREADS`` threads when it is set; the server
    measured its count in its own environment, which the driver's may have changed since (a Dask
    nanny sets ``OMP_NUM_THREADS=1`` in the process that starts it)."""
    torch = sys.modules.get("torch")
    try:
        threads = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        return
    if torch is not None and threads > 0:
        torch.set_num_threads(threads)


class _ImportReport:
    """Tell the server, now and then, which modules this attempt imported that the server has
    not (it was forked without them): it imports them while idle, for the next attempts.
    Reported from a thread, since an attempt killed by SIGKILL reports nothing at its end."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.known = set(sys.modules)
        self.lock = threading.Lock()
        threading.Thread(target=self._loop, name="taskpoint-import-report", daemon=True).start()

    def _loop(self) -> None:
        delay = 0.5
        while self.fd >= 0:
            time.sleep(delay)
            delay = min(delay * 2, 30.0)
            self.send()

    def send(self) -> None:
        with self.lock:
            if self.fd < 0:
                return
            fresh = [name for name in list(sys.modules) if name not in self.known]
            self.known.update(fresh)
            names = [n for n in fresh if _by_its_name(n) and learnable(n)]
            if not names:
                return
            data = ("\n".join(names) + "\n").encode()
            try:
                while data:
                    data = data[os.write(self.fd, data) :]
            except OSError:  # the server is gone
                os.close(self.fd)
                self.fd = -1


def _by_its_name(name: str) -> bool:
    """Imported under its own name (not an alias, not a module built at run time)."""
    spec = getattr(sys.modules.get(name), "__spec__", None)
    return spec is not None and spec.name == name
