"""Read-only view of a node's checkpoint scope: list committed versions, open payload files.

`Checkpoint.open` prepares a scope for writing (it creates ``v/`` on local disk), so the web view
uses the store classes directly and never calls anything that writes: it lists ``v/``, parses
manifests (strictly: they are untrusted input) and opens payload files named by a parsed
manifest, one at a time, for streaming.

A store is untrusted (DESIGN.md, trust boundaries), so one damaged version must never break a
page: *any* failure to read, parse or use one version's manifest lists that version as damaged,
with the reason, and every other version as usual. A local payload file is opened below the
scope's ``v/`` directory without following any link, and only if it is a regular file.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from taskpoint.checkpoint import CheckpointVersion
from taskpoint.checkpoint.manifest import FileEntry, Manifest, ManifestError, parse_manifest
from taskpoint.checkpoint.storage import make_store
from taskpoint.engine import blobs

log = logging.getLogger("taskpoint.ui")
REASON_CHARS = 500


class DamagedVersion(Exception):
    """A committed version whose manifest cannot be read, parsed or used; ``reason`` says why."""

    def __init__(self, version_id: str, reason: str) -> None:
        super().__init__(f"checkpoint version {version_id} is damaged: {reason}")
        self.version_id, self.reason = version_id, reason


@dataclass
class ScopeListing:
    """What a node's scope holds: usable versions (oldest first), damaged ones with their
    reason, and ``error`` when the scope itself could not be listed."""

    versions: list[CheckpointVersion] = field(default_factory=list)
    damaged: list[DamagedVersion] = field(default_factory=list)
    error: str | None = None


class ReadOnlyScope:
    """The checkpoint scope of one node of one execution, opened for reading only."""

    def __init__(
        self,
        storage: str,
        execution_id: str,
        node_key: str,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        self.url = blobs.checkpoint_url(storage, execution_id, node_key)
        # The checkpoint layer's own factory; nothing here calls ``ensure()``, which creates.
        self._store = make_store(self.url, storage_options or {})

    def committed_ids(self) -> list[str]:
        """Committed version ids, oldest first (a scope nobody wrote to has none)."""
        return list(reversed(self._store.scan().committed))

    def manifest(self, version_id: str) -> Manifest:
        """The parsed manifest of a committed version. Raises `FileNotFoundError` when it is
        gone (retired since the listing) and `DamagedVersion` for anything else wrong."""
        try:
            # The store reads no link, FIFO or device, and at most MAX_MANIFEST_BYTES; the
            # parser refuses whatever the pages and the download could not use.
            manifest = parse_manifest(self._store.read_manifest(version_id), version_id)
        except FileNotFoundError:
            raise
        except Exception as exc:  # whatever it is, it is this version's damage, not the page's
            reason = str(exc) if isinstance(exc, ManifestError) else f"{type(exc).__name__}: {exc}"
            reason = reason if len(reason) <= REASON_CHARS else reason[: REASON_CHARS - 3] + "..."
            log.warning("checkpoint version %s at %s is damaged: %s", version_id, self.url, reason)
            raise DamagedVersion(version_id, reason) from None
        return manifest

    def listing(self) -> ScopeListing:
        """Every committed version, usable or damaged (oldest first)."""
        found = ScopeListing()
        try:
            ids = self.committed_ids()
        except Exception as exc:
            log.warning("cannot list checkpoint versions at %s: %s", self.url, exc)
            found.error = f"cannot list the checkpoint versions: {type(exc).__name__}: {exc}"
            return found
        for vid in ids:
            try:
                found.versions.append(self.manifest(vid).to_version())
            except FileNotFoundError:
                continue  # removed by retention since the listing
            except DamagedVersion as damaged:
                found.damaged.append(damaged)
        return found

    def versions(self) -> list[CheckpointVersion]:
        """Every committed version with a usable manifest, oldest first."""
        return self.listing().versions

    def open_file(self, version_id: str, entry: FileEntry) -> AbstractContextManager[BinaryIO]:
        """Open one payload file of a parsed manifest for reading (paths were validated).

        On local disk no component below ``v/`` may be a link and the file must be a regular
        one (the store refuses a link, a FIFO, a device, a directory); the caller still
        verifies the bytes against the manifest before sending any (see tarstream.py)."""
        return self._store.open_file(version_id, entry)
