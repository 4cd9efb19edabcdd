"""A rank group on one Dask worker: the N ranks of an attempt of ``@task(nproc=N)`` run on the
machine of the worker that took the attempt.

The worker's attempt thread (``_dask_worker._execute``) is the group's driver: the process
backend's `RankGroupHandle` (``ranks.py``) with the worker's guard, so the group ends as it does
there (lost when a rank dies or freezes, recoverable when one raises ``RecoverableError``,
rank 0's value when all return), and the worker's SIGTERM, which `PreemptionPlugin` turns into
the guard's preemption, reaches every rank (the guard sends it on to its children): they save,
and the attempt is ``preempted``. The claim and the published outcome stay ``_dask_worker``'s.

How a rank starts differs, because a Dask worker process is no place to fork or to
``multiprocessing.Process`` from:

- forking it copies a process with an event loop, comm threads and executor threads, whose
  locks (logging, the loop's, the allocator's) may be held at that moment: the child can
  deadlock, and it would inherit the worker's sockets and signal handlers;
- the nanny starts its worker as a *daemonic* ``multiprocessing`` process, which may have no
  ``multiprocessing`` children (``distributed.worker.daemon``); and the fork server needs the
  task by module name, which a task shipped by value has not.

So each rank is a fresh interpreter started with ``subprocess`` (fork and exec in one step, in C:
safe from any thread). It gets the worker's ``sys.path``, environment and working directory, and
the attempt *as shipped* (``shipping.pack``'s payload: by reference, by source or by value), which
it unpacks itself as the worker did; then it is a rank like any other (``process._child_main``).
Starting an interpreter costs its imports (seconds for torch) once per rank and attempt.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from multiprocessing.connection import Connection
from typing import Any

from taskpoint.backends.process import ProcessHandle, _child_main
from taskpoint.backends.ranks import RankGroupHandle
from taskpoint.engine.attempt import AttemptJob, Outcome
from taskpoint.engine.events import AttemptInfo, Listener
from taskpoint.engine.preempt import PreemptionGuard
from taskpoint.engine.task import Task
from taskpoint.errors import TaskpointError
from taskpoint.records.status import AttemptStatus

# What the new interpreter runs: the worker's sys.path first (the task's modules may live on it),
# then taskpoint; argv holds the setup pipe and the result pipe.
_BOOT = (
    "import os, pickle, sys\n"
    "with os.fdopen(int(sys.argv[1]), 'rb') as setup:\n"
    "    sys.path[:], attempt = pickle.load(setup)\n"
    "from taskpoint.backends._dask_ranks import rank_main\n"
    "rank_main(attempt, int(sys.argv[2]))\n"
)


def run_group(
    payload: Any, task: Task, arguments: dict[str, Any], info: AttemptInfo, guard: PreemptionGuard
) -> Outcome:
    """Run the attempt's ``task.nproc`` ranks on this machine and wait for the group's outcome
    (in the worker's attempt thread)."""
    job = AttemptJob(task, arguments, info, guard, Listener())
    return RankGroupHandle(job, start=lambda one: SpawnedRank(one, payload)).result()


class SpawnedRank(ProcessHandle):
    """One rank, a fresh interpreter; watched as any attempt's child (result pipe, beats,
    the guard's children)."""

    def __init__(self, job: AttemptJob, payload: Any) -> None:
        self.payload = payload  # read by _start, which ProcessHandle.__init__ calls
        super().__init__(job)

    def _start(self, job: AttemptJob, sender: Connection) -> Any:
        attempt = pickle.dumps((self.payload, job.info, job.guard.grace, os.getpid()))
        setup, feed = os.pipe()
        exited, alive = os.pipe()  # ``alive`` stays open in the rank until it exits
        try:
            popen = subprocess.Popen(
                [sys.executable, "-c", _BOOT, str(setup), str(sender.fileno())],
                pass_fds=(setup, sender.fileno(), alive),
                stdin=subprocess.DEVNULL,
            )
        except BaseException:
            for fd in (setup, feed, exited, alive):
                os.close(fd)
            raise
        os.close(setup)
        os.close(alive)
        child = RankProcess(popen, exited)
        try:
            with open(feed, "wb") as pipe:
                pickle.dump((list(sys.path), attempt), pipe)
        except BrokenPipeError:
            pass  # the rank died before reading it: the driver sees it gone (lost)
        return child


class RankProcess:
    """A rank started with ``subprocess``: what the drivers use of a ``multiprocessing.Process``."""

    def __init__(self, popen: subprocess.Popen[bytes], sentinel: int) -> None:
        self._popen = popen
        self.pid = popen.pid
        self.sentinel = sentinel  # readable once the rank exited (where there is no pidfd)
        self._closed = False

    @property
    def exitcode(self) -> int | None:
        """As ``multiprocessing`` says it: negative when a signal killed the rank."""
        return self._popen.poll()

    def is_alive(self) -> bool:
        return self._popen.poll() is None

    def join(self, timeout: float | None = None) -> None:
        try:
            self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return
        if not self._closed:  # reaped: its sentinel has served (compared, never read, later)
            self._closed = True
            os.close(self.sentinel)


def rank_main(attempt: bytes, result: int) -> None:
    """In the rank's interpreter: load the shipped task, then run as a rank of the group."""
    from taskpoint.backends import shipping

    payload, info, grace, parent = pickle.loads(attempt)
    sender = Connection(result, readable=False)
    try:
        task, arguments = shipping.unpack(payload)
    except Exception as exc:  # as on the worker: retrying elsewhere would not help
        error = TaskpointError(
            f"cannot load the task of {info.node} in rank {info.rank} (pid {os.getpid()}): "
            f"{type(exc).__name__}: {exc}"
        )
        sender.send(Outcome.from_error(AttemptStatus.FAILED, error))
        sender.close()
        return
    _child_main(task, arguments, info, grace, sender, parent)
