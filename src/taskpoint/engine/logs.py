"""Each attempt's stdout and stderr, kept in the store beside its checkpoints and still shown
live on the terminal.

``<storage>/<execution>/nodes/<node>/logs/attempt-0003.log`` holds what attempt 3 printed.
While an attempt runs, ``sys.stdout`` and ``sys.stderr`` are wrapped by one process-wide tee
that writes everything through to the real stream and copies what the attempt's own thread
prints (or, in an attempt's child process, every thread) into that attempt's log. On local disk
the log is appended as it is written, so ``taskpoint logs --follow`` sees it grow and a SIGKILL
loses nothing that was printed; on an object store it is spooled locally and uploaded every
few seconds and when the attempt ends. A log stops growing at ``MAX_LOG_BYTES`` (one line says
so); the terminal still gets everything.
"""

from __future__ import annotations

import io
import os
import stat
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, BinaryIO, TextIO

from taskpoint.engine import blobs

MAX_LOG_BYTES = 64 << 20
UPLOAD_EVERY = 5.0  # seconds between uploads of a remote log while its attempt runs


def log_url(node_url: str, attempt: int) -> str:
    return f"{node_url}/logs/attempt-{attempt:04d}.log"


class AttemptLog:
    """The log file of one attempt (thread-safe appends, bounded in size)."""

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        self.url = url
        self._options = dict(options or {})
        self._lock = threading.Lock()
        self._written = 0
        self._full = False
        self._dirty = False
        local = blobs.local_path(url)
        self._remote = local is None
        self._closed = False
        # A local log is created at its first write: an attempt that prints nothing (most inline
        # calls) costs no directory and no file, and readers take no file for an empty log.
        self._local = local
        self._file: BinaryIO | None = None
        if local is None:
            self._file = tempfile.TemporaryFile(prefix="taskpoint-log-")  # noqa: SIM115
            self._stop = threading.Event()
            self._uploader = threading.Thread(
                target=self._upload_now_and_then, name="taskpoint-log-upload", daemon=True
            )
            self._uploader.start()

    def write(self, text: str) -> None:
        data = text.encode("utf-8", "replace")
        with self._lock:
            if self._full or self._closed:
                return
            if self._file is None:
                assert self._local is not None
                try:
                    os.makedirs(os.path.dirname(self._local), exist_ok=True)
                    self._file = open(self._local, "ab", buffering=0)  # noqa: SIM115 (close())
                except OSError as exc:  # a log must never fail the attempt's own printing
                    self._full = True
                    if sys.__stderr__ is not None:
                        sys.__stderr__.write(
                            f"taskpoint: cannot create the log {self.url}: {exc}\n"
                        )
                    return
            if self._written + len(data) > MAX_LOG_BYTES:
                data = f"\n[taskpoint: log truncated at {MAX_LOG_BYTES >> 20} MiB]\n".encode()
                self._full = True
            self._file.write(data)
            self._written += len(data)
            self._dirty = True

    @property
    def wrote(self) -> bool:
        """Whether the attempt printed anything into this log."""
        return self._written > 0 or self._full

    def close(self) -> None:
        if self._remote:
            self._stop.set()
            self._uploader.join()
            self._upload()
        with self._lock:
            self._closed = True
            if self._file is not None:
                self._file.close()

    def _upload_now_and_then(self) -> None:
        while not self._stop.wait(UPLOAD_EVERY):
            self._upload()

    def _upload(self) -> None:
        with self._lock:
            if not self._dirty or self._closed or self._file is None:
                return
            self._file.seek(0)
            data = self._file.read()
            self._file.seek(0, io.SEEK_END)
            self._dirty = False
        try:
            blobs.put_bytes(self.url, data, self._options)
        except Exception as exc:  # a log must never fail the attempt
            if sys.__stderr__ is not None:
                sys.__stderr__.write(f"taskpoint: cannot upload the log {self.url}: {exc}\n")


class _Tee(io.TextIOBase):
    """Writes through to ``stream`` and copies into the log of the writing thread's attempt."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        written = self.stream.write(text)
        log = _routes.get(threading.get_ident()) or _routes.get(_ALL_THREADS)
        if log is not None and text:
            log.write(text)
        return written if written is not None else len(text)

    def flush(self) -> None:
        self.stream.flush()

    def fileno(self) -> int:
        return self.stream.fileno()

    def isatty(self) -> bool:
        return self.stream.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "encoding", "utf-8")

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return getattr(self.stream, "errors", None)

    @property
    def buffer(self) -> Any:
        return getattr(self.stream, "buffer", None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


_ALL_THREADS = -1
_routes: dict[int, AttemptLog] = {}
_install_lock = threading.Lock()
_installed = 0
_saved: tuple[TextIO, TextIO] | None = None
# The tees of the last capture, put in place again while they wrap the same streams: an inline
# task call then creates (and a garbage collection closes and flushes) no stream objects.
_tees: tuple[_Tee, _Tee] | None = None


@contextmanager
def captured(log: AttemptLog | None, whole_process: bool = False) -> Iterator[None]:
    """Copy what this thread (``whole_process``: every thread) prints into ``log``."""
    global _installed, _saved
    if log is None:
        yield
        return
    key = _ALL_THREADS if whole_process else threading.get_ident()
    with _install_lock:
        if _installed == 0:
            _saved = (sys.stdout, sys.stderr)
            sys.stdout, sys.stderr = _tees_for(*_saved)  # type: ignore[assignment]
        _installed += 1
        _routes[key] = log
    try:
        yield
    finally:
        with _install_lock:
            _routes.pop(key, None)
            _installed -= 1
            if _installed == 0 and _saved is not None:
                # Only put back what we replaced: a task that swapped the streams itself keeps
                # its own (and our tee is simply no longer routed).
                if isinstance(sys.stdout, _Tee):
                    sys.stdout = _saved[0]
                if isinstance(sys.stderr, _Tee):
                    sys.stderr = _saved[1]
                _saved = None
        if log.wrote:  # the terminal shows what the attempt printed before what follows
            _flush(sys.stdout)
            _flush(sys.stderr)
        log.close()


def _tees_for(out: TextIO, err: TextIO) -> tuple[_Tee, _Tee]:
    global _tees
    tees = _tees
    if (
        tees is None
        or tees[0].closed  # the task may close the streams
        or tees[1].closed
        or tees[0].stream is not out
        or tees[1].stream is not err
    ):
        tees = _tees = (_Tee(out), _Tee(err))
    return tees


def _flush(stream: Any) -> None:
    try:
        stream.flush()
    except Exception:
        pass


def read_log(
    url: str, options: Mapping[str, Any] | None = None, offset: int = 0, limit: int = 1 << 20
) -> bytes:
    """Up to ``limit`` bytes of the log from ``offset``; ``b""`` past its end or when the
    attempt printed nothing (no file). A local log is opened without following a link and
    must be a regular file (a FIFO planted in the store cannot hang the reader)."""
    local = blobs.local_path(url)
    try:
        if local is not None:
            fd = os.open(local, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise OSError(f"{local} is not a regular file")
                return os.pread(fd, limit, offset)
            finally:
                os.close(fd)
        fs, path = blobs.remote_fs(url, options)
        size = fs.size(path)
        if offset >= size:
            return b""
        return fs.cat_file(path, start=offset, end=min(size, offset + limit))
    except FileNotFoundError:
        return b""
