"""Read-only view of a node's checkpoint scope: list committed versions, open payload files.

`Checkpoint.open` prepares a scope for writing (it creates ``v/`` on local disk), so the web view
uses the store classes directly and never calls anything that writes: it lists ``v/``, parses
manifests (strictly: they are untrusted input) and opens payload files named by a parsed
manifest, one at a time, for streaming.
"""

from __future__ import annotations

import logging
import os
from typing import Any, BinaryIO

from taskpoint.checkpoint import CheckpointVersion
from taskpoint.checkpoint.manifest import FileEntry, Manifest, ManifestError, parse_manifest
from taskpoint.checkpoint.storage import FsspecStore, LocalStore
from taskpoint.engine import blobs

log = logging.getLogger("taskpoint.ui")


class ReadOnlyScope:
    """The checkpoint scope of one node of one execution, opened for reading only."""

    def __init__(self, storage: str, execution_id: str, node_key: str) -> None:
        self.url = blobs.checkpoint_url(storage, execution_id, node_key)
        self._store = _make_store(self.url)

    def committed_ids(self) -> list[str]:
        """Committed version ids, oldest first (a scope nobody wrote to has none)."""
        return list(reversed(self._store.scan().committed))

    def manifest(self, version_id: str) -> Manifest | None:
        """The parsed manifest of a committed version; ``None`` if gone or unusable."""
        try:
            return parse_manifest(self._store.read_manifest(version_id), version_id)
        except FileNotFoundError:
            return None  # removed by retention since the listing
        except ManifestError as exc:
            log.warning("checkpoint version %s at %s is unusable: %s", version_id, self.url, exc)
            return None

    def versions(self) -> list[CheckpointVersion]:
        """Every committed version with a usable manifest, oldest first."""
        found = (self.manifest(vid) for vid in self.committed_ids())
        return [m.to_version() for m in found if m is not None]

    def open_file(self, version_id: str, entry: FileEntry) -> BinaryIO:
        """Open one payload file of a parsed manifest for reading (paths were validated)."""
        store = self._store
        if isinstance(store, LocalStore):
            path = os.path.join(store.vdir, version_id, *entry.path.split("/"))
            return open(path, "rb", buffering=0)
        return store.fs.open(f"{store.vdir}/{version_id}/{entry.path}", "rb")


def _make_store(url: str) -> LocalStore | FsspecStore:
    """Like the checkpoint layer's own factory, minus ``ensure()`` (which creates ``v/``)."""
    if "://" not in url or url.startswith("file://"):
        return LocalStore(url.removeprefix("file://"))
    from fsspec.core import url_to_fs

    fs: Any
    fs, root = url_to_fs(url)
    if type(fs).__name__ == "LocalFileSystem":
        return LocalStore(root)
    return FsspecStore(fs, root)
