"""Raw access to a checkpoint store's layout, beside scopes opened through the public API.

`Backend` names one storage kind (local disk, ``memory://``, S3 over HTTP), opens scopes on it
and reads, plants, corrupts or inspects ``<scope>/v/<id>/...`` and ``<scope>/v/<id>.manifest.json``
through a separate fsspec filesystem, behind the code's back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import crc32c

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

    def close(self) -> None:
        """Close every scope a test opened (a test that provoked a writer error has already
        checked it)."""
        for cp in self.opened:
            try:
                cp.close(timeout=60)
            except Exception:
                pass
