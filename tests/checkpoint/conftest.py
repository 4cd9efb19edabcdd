"""Fixtures for the checkpoint suites.

``backend`` runs a test once per storage kind: local disk, ``memory://`` and S3 over HTTP (moto
server). It opens scopes through the public API and gives raw access to the same storage through a
separate fsspec filesystem, so tests can plant, corrupt or inspect the store layout
(``<scope>/v/<id>/...`` and ``<scope>/v/<id>.manifest.json``) behind the code's back.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import crc32c
import fsspec
import pytest

from taskpoint import Checkpoint

MANIFEST = ".manifest.json"


@dataclass
class Backend:
    name: str
    url: str
    storage_options: dict[str, Any] | None
    fs: Any  # raw access to the same storage, independent of the code under test
    root: str  # the scope's root as a path of ``fs``
    opened: list[Checkpoint] = field(default_factory=list)

    def open(self, **kwargs: Any) -> Checkpoint:
        cp = Checkpoint.open(self.url, storage_options=self.storage_options, **kwargs)
        self.opened.append(cp)
        return cp

    # ---- raw access to the layout, relative to ``<scope>/v``
    def vpath(self, *parts: str) -> str:
        return "/".join([self.root, "v", *parts])

    def cat(self, *parts: str) -> bytes:
        self.fs.invalidate_cache()
        return self.fs.cat_file(self.vpath(*parts))

    def pipe(self, data: bytes, *parts: str) -> None:
        path = self.vpath(*parts)
        if self.name == "local":
            self.fs.makedirs(self.fs._parent(path), exist_ok=True)
        self.fs.pipe_file(path, data)
        self.fs.invalidate_cache()

    def rm(self, *parts: str) -> None:
        self.fs.rm(self.vpath(*parts), recursive=True)
        self.fs.invalidate_cache()

    def exists(self, *parts: str) -> bool:
        self.fs.invalidate_cache()
        return self.fs.exists(self.vpath(*parts))

    def files(self) -> set[str]:
        """Every stored file under ``v/``, relative to it."""
        self.fs.invalidate_cache()
        base = self.vpath()
        found = self.fs.find(base) if self.fs.exists(base) else []
        return {p[len(base) + 1 :] for p in (p.rstrip("/") for p in found)}

    def entries(self) -> set[str]:
        """Names directly under ``v/``: payload prefixes, manifests and temp files."""
        return {f.split("/", 1)[0] for f in self.files()}

    def flip_byte(self, *parts: str, offset: int = 0) -> None:
        data = bytearray(self.cat(*parts))
        data[offset] ^= 0xFF
        self.pipe(bytes(data), *parts)

    def plant_version(
        self,
        vid: str,
        files: dict[str, bytes],
        *,
        kind: str = "dir",
        dirs: list[str] | None = None,
        links: dict[str, str] | None = None,
        manifest_files: list[dict[str, Any]] | None = None,
        **overrides: Any,
    ) -> dict[str, Any]:
        """Write a payload and a hand-made manifest straight into the store layout."""
        for rel, data in files.items():
            self.pipe(data, vid, *rel.split("/"))
        attempt, seq = (int(x) for x in vid.split("-"))
        doc: dict[str, Any] = {
            "taskpoint_manifest": 1,
            "id": vid,
            "attempt": attempt,
            "seq": seq,
            "kind": kind,
            "step": None,
            "metadata": {},
            "created": "2026-01-01T00:00:00+00:00",
            "files": manifest_files
            if manifest_files is not None
            else [
                {"path": rel, "size": len(data), "crc32c": crc32c.crc32c(data)}
                for rel, data in files.items()
            ],
            "dirs": dirs or [],
            "links": links or {},
        }
        doc.update(overrides)
        self.pipe(json.dumps(doc).encode(), vid + MANIFEST)
        return doc


def _close_all(backend: Backend) -> None:
    for cp in backend.opened:
        try:
            cp.close(timeout=60)
        except Exception:
            pass  # a test that provoked a writer error has already checked it


@pytest.fixture
def local_backend(tmp_path: Path) -> Iterator[Backend]:
    root = tmp_path / "scope"
    backend = Backend("local", str(root), None, fsspec.filesystem("file"), str(root))
    yield backend
    _close_all(backend)


@pytest.fixture
def memory_backend() -> Iterator[Backend]:
    from fsspec.implementations.memory import MemoryFileSystem

    top = f"/tp-{uuid.uuid4().hex}"
    backend = Backend(
        "memory", f"memory:/{top}/scope", None, fsspec.filesystem("memory"), f"{top}/scope"
    )
    yield backend
    _close_all(backend)
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
    _close_all(backend)
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


@pytest.fixture
def hold() -> Iterator[Callable[..., Gate]]:
    """``hold(cp, "write_source")`` blocks that store method of ``cp`` until ``gate.release()``.

    Used to keep a write deterministically *in flight* (or a read in progress) while the test acts.
    """
    gates: list[Gate] = []

    def make(cp: Checkpoint, method: str = "write_source", count: int = 1) -> Gate:
        gate = Gate(count)
        store = cp._store
        setattr(store, method, gate.wrap(getattr(store, method)))
        gates.append(gate)
        return gate

    yield make
    for gate in gates:
        gate.release()
