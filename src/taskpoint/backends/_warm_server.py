"""Inside a fork server: import once, fork attempts with those imports warm (the driver's side is
``forkserver.py``).

One loop serves the *base* server (a fresh interpreter that imports torch and taskpoint's attempt
runtime and nothing of the user's) and each *warm server* forked from it for one execution, which
also imports the execution's task modules and, while idle, the modules its attempts imported
later (``torch._dynamo`` from a first optimizer, say), so a retry after a SIGKILL pays the fork,
not the imports. Requests come one at a time on a Unix socket (a length-prefixed pickle, file
descriptors beside it); children are reaped on SIGCHLD and each one's exit code is written to
the status pipe the driver waits on.

A server must stay safe to fork: torch runs on one thread there (``torch.set_num_threads(1)``,
so no OpenMP pool exists to hang a forked child; each attempt gets the default, or what the
user's module set, back), and a warm import that starts a Python thread, initialises CUDA,
imports another fork-unsafe runtime (TensorFlow, JAX, Spark, Flink) or torch itself (which the
base server did not preload) *taints* it: it forks nothing more, and the driver drops it.
Native BLAS pools (numpy's and scipy's OpenBLAS start one at load) reset themselves at fork, as
they do under any forking ``multiprocessing``. An import that fails is only noted: the attempt
imports the module itself.
"""

from __future__ import annotations

import importlib
import os
import pickle
import select
import signal
import socket
import struct
import sys
import threading
import traceback
from dataclasses import dataclass
from typing import Any

_HEADER = struct.Struct("!Q")
STATUS = struct.Struct("!i")  # an attempt's exit code, on its status pipe
# Never imported into a server (their threads, devices or JVM gateways do not survive fork).
_FOREIGN = ("tensorflow", "jax", "pyspark", "pyflink")
# torch.cuda.is_available() then asks NVML instead of initialising CUDA, which would make
# every forked attempt unable to use the GPU.
_NVML_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"
_OWN_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD)


@dataclass(frozen=True)
class ModuleRef:
    """A module to import: by name, or (``file`` set) from that file under that name, as
    ``taskpoint run FILE.py`` loaded it in the driver."""

    name: str
    file: str | None = None


def import_module(ref: ModuleRef) -> Any:
    module = sys.modules.get(ref.name)
    # ``__mp_main__`` (the driver's script) is already in a server's sys.modules: multiprocessing
    # aliases it to the server's own ``__main__``, which is not the file.
    if module is not None and (ref.file is None or _same_file(module, ref.file)):
        return module
    if ref.file is not None:
        from taskpoint.engine.loader import load_file

        return load_file(ref.file, ref.name)
    return importlib.import_module(ref.name)


def _same_file(module: Any, file: str) -> bool:
    mine = getattr(module, "__file__", None)
    return mine is not None and os.path.realpath(mine) == os.path.realpath(file)


def send_message(sock: socket.socket, message: Any, fds: tuple[int, ...] = ()) -> None:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    socket.send_fds(sock, [_HEADER.pack(len(body))], list(fds))
    sock.sendall(body)


def recv_message(sock: socket.socket) -> tuple[Any, list[int]]:
    head, fds, _flags, _addr = socket.recv_fds(sock, _HEADER.size, 4)
    head = head + _recv_exactly(sock, _HEADER.size - len(head)) if head else head
    if not head:
        for fd in fds:
            os.close(fd)
        raise EOFError("the other end closed the connection")
    (size,) = _HEADER.unpack(head)
    return pickle.loads(_recv_exactly(sock, size)), fds


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    buffer = bytearray(size)
    view, got = memoryview(buffer), 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            raise EOFError("the connection closed in the middle of a message")
        got += n
    return bytes(buffer)


def serve(fd: int, preload: list[str]) -> None:
    """The base server's main (``python -c``): preload, then serve until the driver goes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # it leaves when the driver closes the socket
    os.environ.setdefault(_NVML_CHECK, "1")
    for name in preload:
        try:
            importlib.import_module(name)
        except Exception:  # attempts import it themselves
            traceback.print_exc()
    torch_threads = None
    torch = sys.modules.get("torch")
    if torch is not None:
        torch_threads = torch.get_num_threads()
        torch.set_num_threads(1)  # no intra-op thread pool here, ever
    import taskpoint.backends.process  # noqa: F401  (the attempt's runtime, warm for every child)

    Server(socket.socket(fileno=fd), learn=False, torch_threads=torch_threads).run()


def _ignore(signum: int, frame: Any) -> None:
    """SIGCHLD's handler: a real one (SIG_IGN would reap children before their status is read);
    the wakeup fd is what wakes the loop."""


class Server:
    def __init__(self, sock: socket.socket, learn: bool, torch_threads: int | None) -> None:
        self.sock = sock
        self.learn = learn  # warm what attempts report they imported
        self.torch_threads = torch_threads  # what an attempt gets back
        self.children: dict[int, int | None] = {}  # pid -> status pipe (None: a warm server)
        self.reports: dict[int, bytearray] = {}  # an attempt's import report pipe -> unread bytes
        self.pending: list[str] = []
        self.failed: set[str] = set()
        self.tainted: str | None = None
        self.closing = False
        self.wake_r, self.wake_w = os.pipe()
        for end in (self.wake_r, self.wake_w):
            os.set_blocking(end, False)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, _ignore)

    def run(self) -> None:
        """Serve requests, reap children; when idle, warm what attempts reported. Ends when the
        driver closed the socket and every child was reaped."""
        while not self.closing or self.children:
            watch = [self.wake_r, *self.reports]
            if not self.closing:
                watch.append(self.sock.fileno())
            idle = bool(self.pending) and not self.closing and self.tainted is None
            ready, _, _ = select.select(watch, [], [], 0 if idle else None)
            if self.wake_r in ready:
                while _read_some(self.wake_r):
                    pass
            self._reap()
            for fd in ready:
                if fd in self.reports:
                    self._read_report(fd)
            if not self.closing and self.sock.fileno() in ready:
                self._serve_one()
            elif idle and not ready:
                self._learn_one()
        for fd in list(self.reports):
            os.close(fd)

    # -- requests --------------------------------------------------------------------------------

    def _serve_one(self) -> None:
        try:
            message, fds = recv_message(self.sock)
        except (EOFError, OSError):
            self.closing = True
            self.sock.close()
            return
        kind, args = message[0], message[1:]
        try:
            if kind == "warm":
                reply = self._warm(*args)
            elif kind == "fork":
                reply = self._fork(args[0], fds[0], fds[1])
                fds = []
            elif kind == "server":
                reply = self._fork_server(fds[0])
                fds = []
            else:
                reply = ("error", f"unknown request {kind!r} (taskpoint versions differ?)")
        except Exception as exc:
            reply = ("error", f"{type(exc).__name__}: {exc}")
        finally:
            for fd in fds:
                os.close(fd)
        try:
            send_message(self.sock, reply)
        except OSError:
            self.closing = True

    def _warm(
        self, refs: list[ModuleRef], environ: dict[str, str], cwd: str, path: list[str]
    ) -> tuple:
        """Import the task modules (with the driver's environment, directory and path as a fresh
        attempt would): ``("ok", {name: error}, taint or None)``."""
        os.environ.clear()
        os.environ.update(environ)
        os.environ.setdefault(_NVML_CHECK, "1")
        try:
            os.chdir(cwd)
        except OSError:
            pass
        sys.path[:] = path
        errors = {}
        for ref in refs:
            if self.tainted is not None:
                break
            error = self._import(ref)
            if error is not None:
                errors[ref.name] = error
        return ("ok", errors, self.tainted)

    def _fork(self, payload: bytes, result_fd: int, status_fd: int) -> tuple:
        """Fork one attempt: ``("ok", pid)``, or ``("tainted", why)`` (fork nothing more)."""
        if self.tainted is not None:
            os.close(result_fd)
            os.close(status_fd)
            return ("tainted", self.tainted)
        report_r, report_w = os.pipe() if self.learn else (None, None)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                self._leave(keep=(result_fd, report_w), also=(status_fd, report_r))
                from taskpoint.backends._served import run_attempt

                code = run_attempt(payload, result_fd, report_w, self.torch_threads)
            finally:
                os._exit(code)
        os.close(result_fd)
        self.children[pid] = status_fd
        if report_r is not None and report_w is not None:
            os.close(report_w)
            self.reports[report_r] = bytearray()
        return ("ok", pid)

    def _fork_server(self, fd: int) -> tuple:
        """Fork a warm server for one execution, serving on ``fd``: ``("ok", pid)``."""
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                self._leave(keep=(fd,), server=True)
                Server(socket.socket(fileno=fd), True, self.torch_threads).run()
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        os.close(fd)
        self.children[pid] = None
        return ("ok", pid)

    def _leave(
        self, keep: tuple[int | None, ...], also: tuple[int | None, ...] = (), server: bool = False
    ) -> None:
        """In a new child: close what belongs to this server and its other children (and
        ``also``, the server's ends of this child's own pipes)."""
        signal.set_wakeup_fd(-1)
        if not server:
            for signum in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, signal.SIG_DFL)
        self.sock.close()
        for fd in (self.wake_r, self.wake_w, *self.children.values(), *self.reports, *also):
            if fd is not None and fd not in keep:
                os.close(fd)

    def _reap(self) -> None:
        for pid in list(self.children):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 255 << 8
            if done == 0:
                continue
            status_fd = self.children.pop(pid)
            if status_fd is not None:
                try:
                    os.write(status_fd, STATUS.pack(os.waitstatus_to_exitcode(status)))
                except OSError:
                    pass
                os.close(status_fd)

    # -- warm imports ----------------------------------------------------------------------------

    def _read_report(self, fd: int) -> None:
        data = _read_some(fd)
        buffer = self.reports[fd]
        if not data:
            del self.reports[fd]
            os.close(fd)
            data = b"\n"  # a last name without its newline
        buffer += data
        *lines, rest = bytes(buffer).split(b"\n")
        buffer[:] = rest
        for line in lines:
            name = line.decode(errors="replace").strip()
            new = name not in sys.modules and name not in self.pending and name not in self.failed
            if name and new and learnable(name):
                self.pending.append(name)

    def _learn_one(self) -> None:
        self.pending.sort(key=lambda name: (name.count("."), name))  # packages first
        name = self.pending.pop(0)
        if name not in sys.modules and name not in self.failed:
            self._import(ModuleRef(name))

    def _import(self, ref: ModuleRef) -> str | None:
        """Import ``ref`` here; its error if it failed. Sets ``tainted`` if the import made this
        process unsafe to fork."""
        if ref.name in sys.modules:
            return None
        threads = _os_threads()
        had_torch = "torch" in sys.modules
        handlers = {signum: signal.getsignal(signum) for signum in _OWN_SIGNALS}
        error = None
        try:
            import_module(ref)
        except BaseException as exc:  # whatever the module's top level raises, SystemExit too
            self.failed.add(ref.name)
            error = f"{type(exc).__name__}: {exc}"
        finally:  # a module may install its own: the server keeps its (an attempt resets them)
            for signum, handler in handlers.items():
                if handler is not None:
                    signal.signal(signum, handler)
            signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        unsafe = self._unsafe(threads, had_torch)
        if unsafe is not None:
            self.tainted = f"importing {ref.name} {unsafe}"
        return error

    def _unsafe(self, threads_before: int, had_torch: bool) -> str | None:
        if threading.active_count() > 1:
            return "started a thread"
        foreign = [name for name in _FOREIGN if name in sys.modules]
        if foreign:
            return f"imported {foreign[0]}"
        torch = sys.modules.get("torch")
        if torch is None:
            return None
        if not had_torch:
            return "imported torch, which the server had not"
        cuda = sys.modules.get("torch.cuda")
        if cuda is not None and cuda.is_initialized():
            return "initialised CUDA"
        threads = torch.get_num_threads()
        if threads != 1:  # the module chose a thread count: attempts get it
            if _os_threads() > threads_before:
                return "ran torch on several threads"
            self.torch_threads = threads
            torch.set_num_threads(1)
        return None


def learnable(name: str) -> bool:
    top = name.partition(".")[0]
    return top not in _FOREIGN and top not in ("__main__", "__mp_main__")


def _read_some(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except BlockingIOError:
        return b""


def _os_threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()
