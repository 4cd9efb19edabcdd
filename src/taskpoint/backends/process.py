"""The process backend (``isolation="process"`` forks, ``"spawn"``): an attempt in a child process.

Fork (not spawn) so functions defined in a script run by ``taskpoint run FILE.py`` and in test
modules need not be importable by name, and so an attempt starts in milliseconds. The child runs
the engine's ``execute_attempt`` (context, checkpoint, SIGTERM -> preempted) and sends its outcome
through a pipe. A child that dies without reporting (SIGKILL, OOM kill, segfault, ``os._exit``)
is a *lost* attempt, retried from the latest checkpoint under the system budget. SIGINT (Ctrl-C)
reaches the whole process group: the child ignores it and the driver stops the child.
``"spawn"`` starts a fresh interpreter instead, for libraries that deadlock in a forked child
(OpenMP/MKL after a parallel region, CUDA); the task is then passed by reference.

``"process"`` switches to a fork server by itself when such a library is already loaded in the
driver and the task can be imported by name or is defined in the driver's script: a forked
child of a process that ran torch's OpenMP thread pool can hang forever in its first matrix
product, a fault no retry would cure. The fork
server (``forkserver.py``) is a fresh interpreter that imports torch once (importing starts no
thread pool); for each execution it forks a warm server that also imports the task's module, and
each attempt is forked from that: a retry after a SIGKILL starts in milliseconds with the task's
imports done, instead of the seconds a fresh interpreter spends importing torch and the rest.

Mapped and submitted nodes run in a pool of driver threads (``concurrency``, one per CPU), each
waiting on its own child. A task with ``nproc=N`` gets N such children as one attempt
(``ranks.py``).

Each child leads its own process group, and the group is killed when the attempt ends: processes
the task started (a ``DataLoader``'s workers, a shell command) do not outlive it, and the driver
learns of the child's death from a pidfd rather than from multiprocessing's sentinel pipe, which
those processes inherit and would keep open, delaying the retry until they exit.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
import warnings
from multiprocessing.connection import Connection, wait
from typing import Any

from taskpoint._process import process_alive
from taskpoint.backends import _served, forkserver
from taskpoint.backends._beats import BEAT, BeatingSender, BeatWatch
from taskpoint.backends.shipping import importable
from taskpoint.engine.attempt import AttemptHandle, AttemptJob, Outcome
from taskpoint.engine.events import AttemptInfo, Listener
from taskpoint.engine.execute import execute_attempt
from taskpoint.engine.preempt import PreemptionGuard, send_signal
from taskpoint.engine.task import Task
from taskpoint.errors import AttemptLost, TaskpointError
from taskpoint.records.status import AttemptStatus

log = logging.getLogger("taskpoint")
_ABORT_WAIT = 5.0  # seconds a child gets to stop on Ctrl-C before SIGKILL


class ProcessBackend:
    name = "process"
    in_driver = False

    def __init__(self, concurrency: int | None = None) -> None:
        self.concurrency = max(1, concurrency or os.cpu_count() or 1)

    def submit(self, job: AttemptJob) -> AttemptHandle:
        if job.task.nproc > 1:  # N rank processes, one attempt (ranks.py)
            from taskpoint.backends.ranks import RankGroupHandle

            return RankGroupHandle(job)
        return ProcessHandle(job)

    def close(self) -> None:
        pass


class ProcessHandle:
    """A started child: ``result()`` waits for its report, or for its death (a lost attempt)."""

    def __init__(self, job: AttemptJob) -> None:
        self.info = job.info
        self.guard = job.guard
        self.beats = BeatWatch(job.task.heartbeat_timeout)
        self.cancelled = False
        self.ended = threading.Event()
        self.receiver, sender = multiprocessing.Pipe(duplex=False)
        self.child: Any = self._start(job, sender)
        sender.close()
        self.guard.children.add(self.child.pid)
        if self.guard.preempted:  # SIGTERM landed while forking
            send_signal(self.child.pid, signal.SIGTERM)

    def _start(self, job: AttemptJob, sender: Connection) -> Any:
        """Start the child that runs the attempt and reports on ``sender``: forked, from the
        fork server or spawned (``start_method``). A Dask worker's ranks start otherwise
        (``_dask_ranks.py``)."""
        method = start_method(job.task)
        if method == "forkserver":
            child = _from_fork_server(job, sender)
            if child is not None:
                return child
            method = "spawn"
        mp = multiprocessing.get_context(method)
        # The parent pid lets the child stop with the driver. (PR_SET_PDEATHSIG fires when the
        # *thread* that forked exits: pool threads live until the execution ends.)
        child = mp.Process(  # type: ignore[attr-defined]  # stub: get_context(str)
            target=_child_main,
            args=(job.task, job.arguments, job.info, job.guard.grace, sender, os.getpid()),
            name=_process_name(job.info),
        )
        with warnings.catch_warnings():
            # Forking a threaded parent is safe here: the child touches no lock the parent's
            # threads use (the CLI's display pauses around fork, see cli/progress.py).
            warnings.simplefilter("ignore", DeprecationWarning)
            child.start()
        return child

    def result(self) -> Outcome:
        child, info = self.child, self.info
        exited = _exit_handle(child)
        try:
            message = _wait_for(child, self.receiver, self.guard, exited, self.beats)
            if message is not None:  # reported: let it exit by itself (it flushes its output)
                wait([exited], None)
        except KeyboardInterrupt as exc:
            _stop(child)
            message = Outcome.from_error(AttemptStatus.ABORTED, exc, info.checkpoint_at_start)
        finally:
            self.guard.children.discard(child.pid)
            self.receiver.close()
            _end_group(child.pid)
            if exited != child.sentinel:
                os.close(exited)
        child.join()
        self.ended.set()
        if message is None:
            message = Outcome.from_error(
                AttemptStatus.LOST, AttemptLost(_describe_death(child.exitcode, info))
            )
        if self.cancelled and message.status != AttemptStatus.SUCCEEDED:
            stopped = TaskpointError(
                f"{info.node} attempt {info.attempt} was stopped: its execution ended"
            )
            message = Outcome.from_error(AttemptStatus.ABORTED, stopped, message.checkpoint_at_end)
        message.pid = child.pid
        return message

    def cancel(self) -> None:
        """Stop the child: SIGTERM (it commits and stops), SIGKILL if it still runs a while
        later. Called from another thread than ``result()``'s, so it only sends signals: the
        waiting thread alone reaps the child."""
        self.cancelled = True
        if self.ended.is_set():
            return
        send_signal(self.child.pid, signal.SIGTERM)
        timer = threading.Timer(_ABORT_WAIT, self._kill_if_running)
        timer.daemon = True
        timer.start()

    def _kill_if_running(self) -> None:
        if not self.ended.is_set():
            send_signal(self.child.pid, signal.SIGKILL)


def run_in_process(
    task: Task, arguments: dict[str, Any], info: AttemptInfo, guard: PreemptionGuard
) -> Outcome:
    """One attempt in a child process, waited for here."""
    return ProcessHandle(AttemptJob(task, arguments, info, guard, Listener())).result()


# Runtimes whose thread pools (OpenMP/MKL), device state (CUDA) or JVM gateway (Spark, Flink)
# do not survive fork.
_FORK_UNSAFE = ("torch", "tensorflow", "jax", "pyspark", "pyflink")


# Imported by the fork server before it forks anything: importing them starts no threads.
_PRELOAD = ("torch",)


def _process_name(info: AttemptInfo) -> str:
    rank = f" rank {info.rank}" if info.world_size > 1 else ""
    return f"taskpoint {info.node} attempt {info.attempt}{rank}"


def _from_fork_server(job: AttemptJob, sender: Connection) -> Any:
    """Start the attempt from the execution's warm fork server; ``None`` when it must be
    spawned instead (its arguments refer to the driver's ``__main__``, or no fork server could
    be started)."""
    packed = _served.pack(job, _process_name(job.info))
    if packed is None:
        return None
    module, payload = packed
    preload = [name for name in _PRELOAD if name in sys.modules]
    # With TensorFlow, JAX, Spark or Flink in the driver the task's module imports them too,
    # which no server may: its attempts then come from the base server and import it.
    warm = not any(name in sys.modules for name in _FORK_UNSAFE if name not in _PRELOAD)
    try:
        return forkserver.start_attempt(
            job.info.execution_id, [module] if warm else [], payload, sender.fileno(), preload
        )
    except (OSError, TaskpointError) as exc:
        log.warning("taskpoint: no fork server (%s); %s is spawned instead", exc, job.info.node)
        return None


def start_method(task: Task) -> str:
    """``fork`` (fast, any function) unless spawn is asked for or fork would be unsafe; then a
    fork server where the platform has one."""
    if task.isolation == "spawn":
        return "spawn"
    if any(name in sys.modules for name in _FORK_UNSAFE) and (
        importable(task) or _served.from_main_script(task)
    ):
        if "forkserver" in multiprocessing.get_all_start_methods():
            return "forkserver"
        return "spawn"
    return "fork"


# Past the grace period the child's own alarm should have stopped it; a child still running this
# long after (hung in native code, say) is killed so the driver finishes before the machine goes.
_GRACE_MARGIN = 2.0


def _exit_handle(child: Any) -> Any:
    """What turns readable once the child has exited, before it is reaped (so its pid, which
    names its process group, is not reused meanwhile). A pidfd where the platform has one:
    multiprocessing's sentinel is a pipe the child's own children inherit, readable only once
    they have all exited too. A fork server's child has its own status pipe, written by the
    server."""
    if isinstance(child, forkserver.ServerChild):
        return child.sentinel
    try:
        return os.pidfd_open(child.pid)
    except (AttributeError, OSError):  # not Linux >= 5.3
        return child.sentinel


def _end_group(pid: int) -> None:
    """Kill what is left of the attempt's process group (the child made itself its leader)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_for(
    child: Any, receiver: Connection, guard: PreemptionGuard, exited: Any, beats: BeatWatch
) -> Outcome | None:
    """The child's outcome; ``None`` when it died without one; a lost outcome when it froze
    (sent no heartbeat for its timeout: it is killed)."""
    killed = False
    while True:
        # Wake up now and then: a SIGTERM handled meanwhile does not interrupt this wait.
        ready = wait([receiver, exited], 0.5)
        if receiver in ready or receiver.poll():
            try:
                message = receiver.recv()
            except (EOFError, OSError):
                return None
            except Exception as exc:  # the child's result could not be unpickled here
                return Outcome.from_error(
                    AttemptStatus.FAILED,
                    TaskpointError(f"cannot load the result of the attempt: {exc}"),
                )
            if not (isinstance(message, str) and message == BEAT):
                return message  # type: ignore[no-any-return]
            beats.beat()
        elif exited in ready:
            return None
        if killed:
            continue
        if beats.frozen():
            silent = beats.silent_for()
            log.warning(
                "attempt process %s sent no heartbeat for %.0f s (stopped, hung or deadlocked); "
                "killing it",
                child.pid,
                silent,
            )
            send_signal(child.pid, signal.SIGKILL)
            return Outcome.from_error(AttemptStatus.LOST, AttemptLost(_frozen(silent, beats)))
        # Past the grace period (its own alarm should have stopped it) the child is killed.
        deadline = guard.deadline
        if deadline is not None and time.monotonic() > deadline + _GRACE_MARGIN:
            log.warning(
                "attempt process %s did not stop within the %g s grace period; killing it",
                child.pid,
                guard.grace,
            )
            send_signal(child.pid, signal.SIGKILL)
            killed = True


def _stop(child: Any) -> None:
    if not child.is_alive():
        return
    send_signal(child.pid, signal.SIGTERM)
    child.join(_ABORT_WAIT)
    if child.is_alive():
        send_signal(child.pid, signal.SIGKILL)
        child.join()


def _frozen(silent: float, beats: BeatWatch) -> str:
    return (
        f"the attempt's process sent no heartbeat for {silent:.0f} s (heartbeat_timeout="
        f"{beats.timeout:g}): it was stopped, hung or deadlocked, and was killed; raise the "
        "task's heartbeat_timeout if it runs long calls that hold the GIL"
    )


def _describe_death(exitcode: int | None, info: AttemptInfo) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            how = f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            how = f"was killed by signal {-exitcode}"
    elif exitcode is None:  # a fork server's child whose server died: its status is unknown
        how = "ended without reporting a result"
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
    environ: dict[str, str] | None = None,
) -> None:
    """An attempt in the child; ``environ`` is given only to a fork server's child."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:  # lead a process group, so what the task starts ends with the attempt
        os.setpgid(0, 0)
    except OSError:
        pass
    if environ is not None:
        os.environ.clear()
        os.environ.update(environ)
        _watch_driver(parent)
    else:
        _stop_with_parent(parent)
    sender = BeatingSender(sender)  # type: ignore[assignment]  # beats share the pipe
    # Print straight to the inherited descriptors, not through the parent's live display.
    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    if info.world_size > 1:  # one rank of a group: torchrun's environment (ranks.py)
        from taskpoint.backends._rank_child import enter_rank

        guard = enter_rank(info, grace, sender)
    else:
        guard = PreemptionGuard(grace)
    with guard.installed():
        outcome = execute_attempt(
            AttemptJob(task, arguments, info, guard, Listener()), whole_process=True
        )
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


def _watch_driver(driver: int) -> None:
    """Get SIGTERM when the driver dies, in a fork server's child: its parent is the server,
    which outlives the driver as long as any of its children runs (they hold its liveness pipe),
    so the parent-death signal would never come. A thread waits on the driver itself."""

    def watch() -> None:
        try:
            handle = os.pidfd_open(driver)  # readable once the driver has exited
        except (AttributeError, OSError):
            while process_alive(driver):
                time.sleep(0.5)
        else:
            import select

            select.select([handle], [], [])
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="taskpoint-driver-watch", daemon=True).start()


def _send(sender: Connection | BeatingSender, outcome: Outcome, task: Task) -> None:
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
    if outcome.status == AttemptStatus.SUCCEEDED:
        replacement = TypeError(
            f"task {task.name!r} returned a value that cannot be pickled ({problem}); "
            "outputs must be picklable so they can be stored and returned on resume"
        )
        outcome = Outcome.from_error(AttemptStatus.FAILED, replacement, outcome.checkpoint_at_end)
    else:  # keep the status and the text, drop the unpicklable exception object
        outcome.error = None
    sender.send(outcome)
