"""Fixtures for the checkpoint suites.

``backend`` runs a test once per storage kind: local disk, ``memory://`` and S3 over HTTP (moto
server). It opens scopes through the public API and gives raw access to the same storage through a
separate fsspec filesystem, so tests can plant, corrupt or inspect the store layout
(``<scope>/v/<id>/...`` and ``<scope>/v/<id>.manifest.json``) behind the code's back.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest

from support.stores import Backend
from taskpoint import Checkpoint


@pytest.fixture
def local_backend(tmp_path: Path) -> Iterator[Backend]:
    root = tmp_path / "scope"
    backend = Backend("local", str(root), None, fsspec.filesystem("file"), str(root))
    yield backend
    backend.close()


@pytest.fixture
def memory_backend() -> Iterator[Backend]:
    from fsspec.implementations.memory import MemoryFileSystem

    top = f"/tp-{uuid.uuid4().hex}"
    backend = Backend(
        "memory", f"memory:/{top}/scope", None, fsspec.filesystem("memory"), f"{top}/scope"
    )
    yield backend
    backend.close()
    for key in [k for k in MemoryFileSystem.store if k.startswith(top)]:
        del MemoryFileSystem.store[key]
    dirs = MemoryFileSystem.pseudo_dirs
    dirs[:] = [d for d in dirs if not d.startswith(top)]


@pytest.fixture
def s3_backend(s3_server: Any) -> Iterator[Backend]:
    prefix = f"cp-{uuid.uuid4().hex}"
    fs = s3_server.filesystem
    backend = Backend(
        "s3",
        s3_server.url(prefix),
        s3_server.storage_options,
        fs,
        f"{s3_server.bucket}/{prefix}",
    )
    yield backend
    backend.close()
    fs.invalidate_cache()
    if fs.exists(backend.root):
        fs.rm(backend.root, recursive=True)


@pytest.fixture(params=["local", "memory", "s3"])
def backend(request: pytest.FixtureRequest) -> Backend:
    """The same test against local disk, memory:// and S3 over HTTP (moto server)."""
    return request.getfixturevalue(f"{request.param}_backend")


class Gate:
    """Holds a store method on its first ``count`` calls until released (from another thread)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.calls = 0
        self.entered = threading.Event()
        self._open = threading.Event()
        self._lock = threading.Lock()

    def release(self) -> None:
        self._open.set()

    def wrap(self, method: Callable[..., Any]) -> Callable[..., Any]:
        def held(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.calls += 1
                hold = self.calls <= self.count
            if hold:
                self.entered.set()
                assert self._open.wait(60), "gate never released"
            return method(*args, **kwargs)

        return held


# The store methods that write a version: a payload file, or the manifest of an inline version.
WRITES = ("write_source", "commit_inline")


@pytest.fixture
def hold() -> Iterator[Callable[..., Gate]]:
    """``hold(cp, "read_file")`` blocks that store method of ``cp`` until ``gate.release()``;
    by default the first write of a version, inline or not (one gate for both methods).

    Used to keep a write deterministically *in flight* (or a read in progress) while the test acts.
    """
    gates: list[Gate] = []

    def make(cp: Checkpoint, method: str | tuple[str, ...] = WRITES, count: int = 1) -> Gate:
        gate = Gate(count)
        store = cp._store
        for name in (method,) if isinstance(method, str) else method:
            setattr(store, name, gate.wrap(getattr(store, name)))
        gates.append(gate)
        return gate

    yield make
    for gate in gates:
        gate.release()


@pytest.fixture
def payload_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ``write()`` gets a payload prefix with a file, as one over the inline limit does:
    for tests of payload files (damaging, holding or counting them) that write a few bytes."""
    from taskpoint.checkpoint import payload

    monkeypatch.setattr(payload, "INLINE_MAX", -1)
