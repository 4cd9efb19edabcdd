"""Attempts forked from a server that keeps their imports warm (the driver's side; the servers'
own loop is ``_warm_server.py``).

When torch (or another runtime that does not survive fork) is loaded in the driver, an attempt
with ``isolation="process"`` is not forked from the driver. A *base* server, a fresh interpreter
started once per driver process, imports torch and taskpoint's attempt runtime, nothing of the
user's. For each execution it forks a *warm server*, which imports the execution's task modules
(and so whatever they import: scikit-learn, Lightning, ...) before the first attempt, and, while
idle, the modules the attempts reported they imported later (``torch._dynamo``, pulled in by a
first optimizer). Each attempt is forked from its execution's warm server: a retry after a
SIGKILL pays the fork, the restore and the task's own set-up, not the imports.

Importing a task module runs its top level in the warm server, as a fresh attempt would. If that
import fails, the attempt imports the module itself (and meets the error there); if it makes the
server unsafe to fork (a thread, CUDA, another fork-unsafe runtime), the execution's attempts
come from the base server and import the module themselves. At most ``_MAX_WARM`` warm servers
live at once (least recently used first out); one that is closed finishes its running attempts.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from multiprocessing.connection import wait
from typing import Any

from taskpoint._process import process_alive
from taskpoint.backends._warm_server import STATUS, ModuleRef, recv_message, send_message
from taskpoint.errors import TaskpointError

log = logging.getLogger("taskpoint")

_MAX_WARM = 3


class ServerGone(TaskpointError):
    """The fork server died or refused to fork (tainted); a new one is needed."""


class _Server:
    """One server's control connection: one request and its reply at a time."""

    def __init__(self, sock: socket.socket, pid: int, process: Any = None) -> None:
        self.sock = sock
        self.pid = pid
        self.process = process  # the base server's Popen
        self.lock = threading.Lock()
        self.dead = False
        self.warmed: set[ModuleRef] = set()  # asked for already (whether it worked or not)

    def request(self, message: tuple, fds: tuple[int, ...] = ()) -> tuple:
        with self.lock:
            if self.dead:
                raise ServerGone(f"the fork server {self.pid} is gone")
            try:
                send_message(self.sock, message, fds)
                reply, _ = recv_message(self.sock)
            except (OSError, EOFError) as exc:
                self.close()
                raise ServerGone(f"the fork server {self.pid} is gone: {exc}") from exc
            except BaseException:  # Ctrl-C mid-request: its reply would answer the next one
                self.close()
                raise
        if reply[0] == "error":
            raise TaskpointError(f"the fork server {self.pid} failed: {reply[1]}")
        return reply

    def close(self) -> None:
        self.dead = True
        self.sock.close()
        if self.process is not None:
            self.process.poll()  # reap it if it already left


_lock = threading.Lock()
_base: _Server | None = None
_warm: OrderedDict[str, _Server | None] = OrderedDict()  # execution -> its server (None: cold)
_owner = 0  # the process these servers belong to (a forked child starts its own)


def start_attempt(
    execution: str, modules: list[ModuleRef], payload: bytes, result_fd: int, preload: list[str]
) -> ServerChild:
    """Fork one attempt (``payload`` for ``_served.run_attempt``) from the execution's warm
    server, warming ``modules`` there first (none: from the base server); it reports on
    ``result_fd``."""
    for _ in range(3):
        server = None
        try:
            server = _server_for(execution, preload, warm=bool(modules))
            if server is not _base:
                server = _warm_up(execution, server, modules)
            return _fork(server, payload, result_fd)
        except ServerGone as exc:
            _forget(execution, server, str(exc))
    raise TaskpointError("cannot start the attempt: its fork server keeps failing")


def _server_for(execution: str, preload: list[str], warm: bool) -> _Server:
    global _base, _owner
    with _lock:
        if _owner != os.getpid():  # a forked copy of the driver: these servers are not its own
            _base, _owner = None, os.getpid()
            _warm.clear()
            _replaced.clear()
        if _base is None or _base.dead:
            _base = _start_base(preload)
        if not warm:
            return _base
        if execution in _warm:
            _warm.move_to_end(execution)
            server = _warm[execution]
            return server if server is not None else _base
        ours, theirs = socket.socketpair()
        try:
            _, pid = _base.request(("server",), (theirs.fileno(),))
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        server = _warm[execution] = _Server(ours, pid)
        while len(_warm) > _MAX_WARM:
            _, old = _warm.popitem(last=False)
            if old is not None:
                old.close()  # it finishes its running attempts, then exits
        return server


def _start_base(preload: list[str]) -> _Server:
    ours, theirs = socket.socketpair()
    path = [entry for entry in sys.path if isinstance(entry, str)]
    command = (
        f"import sys; sys.path[:] = {path!r}; "
        "from taskpoint.backends._warm_server import serve; "
        f"serve({theirs.fileno()}, {preload!r})"
    )
    flags: list[str] = getattr(subprocess, "_args_from_interpreter_flags", list)()  # -X, -W
    try:
        process = subprocess.Popen(
            [sys.executable, *flags, "-c", command],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
        )
    finally:
        theirs.close()
    return _Server(ours, process.pid, process)


def _warm_up(execution: str, server: _Server, modules: list[ModuleRef]) -> _Server:
    """Import the task's modules in its warm server (once); the server to fork from."""
    todo = [ref for ref in modules if ref not in server.warmed]
    if not todo:
        return server
    server.warmed.update(todo)
    reply = server.request(("warm", todo, dict(os.environ), os.getcwd(), list(sys.path)))
    _, errors, taint = reply
    for name, error in errors.items():
        log.info("taskpoint: the fork server cannot import %s (%s): attempts do", name, error)
    if taint is None:
        return server
    log.info("taskpoint: %s; attempts of %s import their modules themselves", taint, execution)
    with _lock:
        server.close()
        if _warm.get(execution) is server:
            _warm[execution] = None
        assert _base is not None
        return _base


def _forget(execution: str, server: _Server | None, why: str) -> None:
    """Drop a server that is gone or refused to fork. The base is started again on the next
    attempt; a warm server is replaced once, after that the execution's attempts come from the
    base (and import their modules themselves)."""
    global _base
    log.info("taskpoint: %s", why)
    with _lock:
        if server is None:  # the base failed to fork a warm server: it is closed already
            return
        server.close()
        if server is _base:
            _base = None
        elif _warm.get(execution) is server:
            if execution in _replaced:
                _warm[execution] = None
            else:
                _replaced.add(execution)
                del _warm[execution]


_replaced: set[str] = set()  # executions whose warm server was replaced once already


def _fork(server: _Server, payload: bytes, result_fd: int) -> ServerChild:
    status_r, status_w = os.pipe()
    try:
        reply = server.request(("fork", payload), (result_fd, status_w))
    except BaseException:
        os.close(status_r)
        raise
    finally:
        os.close(status_w)
    if reply[0] == "tainted":
        os.close(status_r)
        raise ServerGone(f"the fork server {server.pid} stopped forking: {reply[1]}")
    return ServerChild(reply[1], status_r)


class ServerChild:
    """An attempt forked by a server, with the part of ``multiprocessing.Process``'s interface
    the process backend uses. ``sentinel`` turns readable when the server wrote the exit code
    (or died: the code is then unknown, ``None``, once the attempt is gone too)."""

    def __init__(self, pid: int, status_fd: int) -> None:
        self.pid = pid
        self.sentinel = status_fd
        self.exitcode: int | None = None
        self._ended = False
        self._lock = threading.Lock()

    def join(self, timeout: float | None = None) -> None:
        with self._lock:
            if self._ended or not wait([self.sentinel], timeout):
                return
            data = b""
            while len(data) < STATUS.size:
                more = os.read(self.sentinel, STATUS.size - len(data))
                if not more:
                    break
                data += more
            if len(data) == STATUS.size:
                (self.exitcode,) = STATUS.unpack(data)
            else:  # the server died: wait for the attempt itself
                while process_alive(self.pid):
                    time.sleep(0.05)
            os.close(self.sentinel)
            self._ended = True

    def is_alive(self) -> bool:
        self.join(0)
        return not self._ended
