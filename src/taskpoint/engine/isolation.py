"""``isolation="process"`` (fork) and ``"spawn"``: run an attempt in a child process.

Fork (not spawn) so functions defined in a script run by ``taskpoint run FILE.py`` and in test
modules need not be importable by name, and so an attempt starts in milliseconds. The child runs
the same inline flow (context, checkpoint proxy, SIGTERM -> preempted) and sends its outcome
through a pipe. A child that dies without reporting (SIGKILL, OOM kill, segfault, ``os._exit``)
is a *lost* attempt, retried from the latest checkpoint under the system budget. SIGINT (Ctrl-C)
reaches the whole process group: the child ignores it and the driver stops the child.
``"spawn"`` starts a fresh interpreter instead, for libraries that deadlock in a forked child
(OpenMP/MKL after a parallel region, CUDA); the task is then passed by reference.

``"process"`` switches to spawn by itself when such a library is already loaded in the driver
and the task can be imported by name: a forked child of a process that ran torch's OpenMP
thread pool can hang forever in its first matrix product, a fault no retry would cure.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import sys
import warnings
from multiprocessing.connection import Connection, wait
from typing import Any

from taskpoint.engine.attempt import Outcome, run_inline
from taskpoint.engine.events import AttemptInfo, Listener
from taskpoint.engine.preempt import PreemptionGuard, _kill
from taskpoint.engine.task import Task
from taskpoint.errors import AttemptLost, TaskpointError

_ABORT_WAIT = 5.0  # seconds a child gets to stop on Ctrl-C before SIGKILL


def run_in_process(
    task: Task, arguments: dict[str, Any], info: AttemptInfo, guard: PreemptionGuard
) -> Outcome:
    mp = multiprocessing.get_context(start_method(task))
    receiver, sender = mp.Pipe(duplex=False)
    child = mp.Process(
        target=_child_main,
        args=(task, arguments, info, guard.grace, sender, os.getpid()),
        name=f"taskpoint {info.node} attempt {info.attempt}",
    )
    with warnings.catch_warnings():
        # Forking a threaded parent is safe here: the child touches no lock the parent's
        # threads use (the CLI's display pauses around fork, see cli/live.py).
        warnings.simplefilter("ignore", DeprecationWarning)
        child.start()
    sender.close()
    guard.child_pid = child.pid
    try:
        if guard.preempted:  # SIGTERM landed while forking
            _kill(child.pid, signal.SIGTERM)
        message = _wait_for(child, receiver)
    except KeyboardInterrupt as exc:
        _stop(child)
        message = Outcome.from_error("aborted", exc, info.checkpoint_at_start)
    finally:
        guard.child_pid = None
        receiver.close()
    child.join()
    if message is None:
        message = Outcome.from_error("lost", AttemptLost(_describe_death(child.exitcode, info)))
    message.pid = child.pid
    return message


# Runtimes whose thread pools (OpenMP/MKL) or device state (CUDA) do not survive fork.
_FORK_UNSAFE = ("torch", "tensorflow", "jax")


def start_method(task: Task) -> str:
    """``fork`` (fast, any function) unless spawn is asked for or fork would be unsafe."""
    if task.isolation == "spawn":
        return "spawn"
    if any(name in sys.modules for name in _FORK_UNSAFE) and _importable(task):
        return "spawn"
    return "fork"


def _importable(task: Task) -> bool:
    """A spawned child finds the task by module and qualified name: is it there?"""
    fn = task.fn
    module = sys.modules.get(fn.__module__)
    if fn.__module__ in ("__main__", "__mp_main__") or module is None:
        return False
    if getattr(module, "__file__", None) is None or "<locals>" in fn.__qualname__:
        return False
    obj: Any = module
    for part in fn.__qualname__.split("."):
        obj = getattr(obj, part, None)
    return obj is task


def _wait_for(child: Any, receiver: Connection) -> Outcome | None:
    while True:
        ready = wait([receiver, child.sentinel])
        if receiver in ready or receiver.poll():
            try:
                return receiver.recv()
            except (EOFError, OSError):
                return None
            except Exception as exc:  # the child's result could not be unpickled here
                return Outcome.from_error(
                    "failed", TaskpointError(f"cannot load the result of the attempt: {exc}")
                )
        if child.sentinel in ready:
            return None


def _stop(child: Any) -> None:
    _kill(child.pid, signal.SIGTERM)
    child.join(_ABORT_WAIT)
    if child.is_alive():
        _kill(child.pid, signal.SIGKILL)
        child.join()


def _describe_death(exitcode: int | None, info: AttemptInfo) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            how = f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            how = f"was killed by signal {-exitcode}"
    else:
        how = f"exited with status {exitcode} without reporting a result"
    return f"the process of {info.node} attempt {info.attempt} {how}"


def _child_main(
    task: Task,
    arguments: dict[str, Any],
    info: AttemptInfo,
    grace: float,
    sender: Connection,
    parent: int,
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _stop_with_parent(parent)
    # Print straight to the inherited descriptors, not through the parent's live display.
    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    guard = PreemptionGuard(grace)
    with guard.installed():
        outcome = run_inline(task, arguments, info, guard, Listener())
    _send(sender, outcome, task)
    sender.close()


def _stop_with_parent(parent: int) -> None:
    """Get SIGTERM (a preemption: commit and stop) if the driver dies, instead of running on
    unobserved next to the attempt a resume will start (Linux; elsewhere a no-op)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the driver died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _send(sender: Connection, outcome: Outcome, task: Task) -> None:
    if outcome.error is not None:
        try:  # exceptions with custom __init__ often pickle but fail to unpickle
            pickle.loads(pickle.dumps(outcome.error))
        except Exception:
            outcome.error = None  # the driver rebuilds one from the type name and message
    try:
        sender.send(outcome)
        return
    except Exception as exc:  # the output or the exception could not be pickled
        problem = exc
    if outcome.status == "succeeded":
        replacement = TypeError(
            f"task {task.name!r} returned a value that cannot be pickled ({problem}); "
            "outputs must be picklable so they can be stored and returned on resume"
        )
        outcome = Outcome.from_error("failed", replacement, outcome.checkpoint_at_end)
    else:  # keep the status and the text, drop the unpicklable exception object
        outcome.error = None
    sender.send(outcome)
