"""A process forked from one holding an open Checkpoint can use it (the engine forks attempts).

Threads do not survive fork: the child must neither wait forever for the parent's writer thread
or its housekeeping, nor lose its own writes.
"""

from __future__ import annotations

import os
import signal
import time
import traceback
from collections.abc import Callable

import pytest

from taskpoint import Checkpoint

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")


def _in_forked_child(body: Callable[[], None], timeout: float = 20) -> None:
    """Run ``body`` in a forked child; fail with its traceback, or if it hangs."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        os.close(read_fd)
        code = 0
        try:
            body()
        except BaseException:
            os.write(write_fd, traceback.format_exc().encode())
            code = 1
        os._exit(code)
    os.close(write_fd)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.02)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(read_fd)
        pytest.fail(f"forked child hung for {timeout} s")
    with os.fdopen(read_fd, "rb") as pipe:
        report = pipe.read().decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, report


def test_forked_child_writes_sync_async_and_large(local_backend):
    cp = local_backend.open(keep=10)
    cp.write(b"parent async", blocking=False).result(30)
    cp.write(os.urandom(9 << 20))  # > 8 MiB: the checksum runs on a pool thread
    cp.wait()

    def child() -> None:
        big = os.urandom(9 << 20)
        cp.write(big)
        assert cp.write(b"child async", blocking=False).result(10) is not None
        cp.wait(timeout=10)
        assert cp.read() == b"child async"

    _in_forked_child(child)
    assert cp.read() == b"child async"


@pytest.mark.usefixtures("payload_files")  # inline versions leave no payload to delete
def test_forked_child_does_not_wait_for_the_parents_housekeeping(local_backend, hold):
    cp = local_backend.open(keep=1)
    gate = hold(cp, "delete_payload")  # retention's deferred deletes stay pending in the parent
    for i in range(3):
        cp.write(f"v{i}".encode())
    assert gate.entered.wait(10)

    def child() -> None:
        cp.wait(timeout=10)
        cp.close(timeout=10)

    _in_forked_child(child)
    gate.release()
    cp.wait(timeout=30)


def test_forked_child_does_not_wait_for_the_parents_write_in_flight(local_backend, hold):
    cp = local_backend.open(keep=10)
    gate = hold(cp)
    future = cp.write(b"parent in flight", blocking=False)
    assert gate.entered.wait(10)

    def child() -> None:
        version = cp.write(b"child sync")  # waits for earlier async writes of *this* process
        assert version is not None
        cp.close(timeout=10)

    _in_forked_child(child)
    gate.release()
    assert future.result(30) is not None
    reader = Checkpoint.open(local_backend.url, attempt=2)
    stored = {(reader.restore(version=v.id) / "data").read_bytes() for v in reader.versions()}
    assert {b"child sync", b"parent in flight"} <= stored


def test_forked_child_does_not_delete_the_parents_staged_snapshots(local_backend, hold, tmp_path):
    src = tmp_path / "state"
    src.mkdir()
    (src / "f").write_bytes(b"parent queued")
    cp = local_backend.open(keep=10)
    gate = hold(cp)
    in_flight = cp.write(b"parent in flight", blocking=False)
    assert gate.entered.wait(10)
    queued = cp.save(src, blocking=False)  # its snapshot waits in the parent's staging dir

    def child() -> None:
        child_src = tmp_path / "child-state"
        child_src.mkdir()
        (child_src / "f").write_bytes(b"child")
        assert cp.save(child_src, blocking=False).result(10) is not None
        cp.close(timeout=10)  # cleans up the child's staging, and only that

    _in_forked_child(child)
    gate.release()
    assert in_flight.result(30) is not None
    version = queued.result(30)
    assert version is not None
    restored = cp.restore(tmp_path / "out", version=version.id)
    assert (restored / "f").read_bytes() == b"parent queued"
