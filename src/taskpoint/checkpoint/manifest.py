"""The manifest: the last file of a version, whose existence means "committed".

It lists every payload file with its size and CRC-32C, the directory tree (empty directories and
symlinks), and the user's step and metadata. Parsing is strict: a manifest from storage is
untrusted input, so every path is checked before anything is written from it.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from taskpoint.checkpoint.version import CheckpointVersion, PayloadKind, parse_version_id

FORMAT = 1
_KINDS = ("bytes", "file", "dir")


class ManifestError(ValueError):
    """A manifest is unreadable or unsafe; the version it describes is not used."""


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative POSIX path inside the version
    size: int
    crc32c: int


@dataclass
class Manifest:
    id: str
    attempt: int
    seq: int
    kind: PayloadKind
    step: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    files: list[FileEntry] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)
    links: dict[str, str] = field(default_factory=dict)  # link path -> relative target

    def to_version(self) -> CheckpointVersion:
        return CheckpointVersion(
            id=self.id,
            attempt=self.attempt,
            seq=self.seq,
            step=self.step,
            metadata=self.metadata,
            kind=self.kind,
            size=sum(f.size for f in self.files),
            files=len(self.files),
            created=self.created,
        )

    def dumps(self) -> bytes:
        doc = {
            "taskpoint_manifest": FORMAT,
            "id": self.id,
            "attempt": self.attempt,
            "seq": self.seq,
            "kind": self.kind,
            "step": self.step,
            "metadata": self.metadata,
            "created": self.created.isoformat(),
            "files": [{"path": f.path, "size": f.size, "crc32c": f.crc32c} for f in self.files],
            "dirs": self.dirs,
            "links": self.links,
        }
        return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def check_relative_path(path: str) -> str:
    """Return ``path`` if it is a safe relative POSIX path inside a version, else raise."""
    if not isinstance(path, str) or not path:
        raise ManifestError(f"empty or non-string path {path!r}")
    if "\\" in path or "\x00" in path:
        raise ManifestError(f"path {path!r} contains a backslash or NUL")
    if path.startswith("/") or (len(path) > 1 and path[1] == ":"):
        raise ManifestError(f"absolute path {path!r}")
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ManifestError(f"path {path!r} is not normalised or climbs out with '..'")
    return path


def check_link_target(link: str, target: str) -> str:
    """A link target must be relative and resolve inside the version's tree."""
    if not isinstance(target, str) or not target or target.startswith("/") or "\x00" in target:
        raise ManifestError(f"symlink {link!r} has an absolute or empty target {target!r}")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(link), target))
    if resolved == ".." or resolved.startswith("../") or resolved.startswith("/"):
        raise ManifestError(f"symlink {link!r} -> {target!r} points outside the checkpoint")
    return target


def parse_manifest(raw: bytes, expected_id: str) -> Manifest:
    """Parse and validate untrusted manifest bytes; raise `ManifestError` on anything odd."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestError(f"manifest is not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("taskpoint_manifest") != FORMAT:
        raise ManifestError("not a taskpoint manifest of a known format")
    try:
        manifest = _manifest_from_doc(doc)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ManifestError):
            raise
        raise ManifestError(f"manifest field missing or of the wrong type ({exc!r})") from None
    if manifest.id != expected_id or parse_version_id(manifest.id) != (
        manifest.attempt,
        manifest.seq,
    ):
        raise ManifestError(f"manifest names version {manifest.id!r}, expected {expected_id!r}")
    _check_tree(manifest)
    return manifest


def _manifest_from_doc(doc: dict[str, Any]) -> Manifest:
    kind = doc["kind"]
    if kind not in _KINDS:
        raise ManifestError(f"unknown payload kind {kind!r}")
    step = doc["step"]
    if step is not None and (not isinstance(step, int) or isinstance(step, bool)):
        raise ManifestError(f"step {step!r} is not an integer")
    metadata = doc["metadata"]
    if not isinstance(metadata, dict):
        raise ManifestError("metadata is not an object")
    files = []
    for entry in doc["files"]:
        size, crc = entry["size"], entry["crc32c"]
        if not isinstance(size, int) or size < 0 or not isinstance(crc, int):
            raise ManifestError(f"bad size or checksum for {entry.get('path')!r}")
        files.append(FileEntry(check_relative_path(entry["path"]), size, crc))
    links = doc["links"]
    if not isinstance(links, dict):
        raise ManifestError("links is not an object")
    return Manifest(
        id=str(doc["id"]),
        attempt=int(doc["attempt"]),
        seq=int(doc["seq"]),
        kind=kind,
        step=step,
        metadata=metadata,
        created=_utc(datetime.fromisoformat(doc["created"])),
        files=files,
        dirs=[check_relative_path(d) for d in doc["dirs"]],
        links={check_relative_path(k): check_link_target(k, v) for k, v in links.items()},
    )


def _utc(moment: datetime) -> datetime:
    """Versions report UTC; a manifest without a zone was written in UTC by convention."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _check_tree(manifest: Manifest) -> None:
    """No duplicate entries, and nothing is placed *through* a symlink (that could escape)."""
    paths = [f.path for f in manifest.files] + list(manifest.links)
    if len(set(paths)) != len(paths):
        raise ManifestError("manifest lists the same path twice")
    links = set(manifest.links)
    for path in [*paths, *manifest.dirs]:
        parts = path.split("/")
        for depth in range(1, len(parts)):
            if "/".join(parts[:depth]) in links:
                raise ManifestError(
                    f"path {path!r} goes through symlink {'/'.join(parts[:depth])!r}"
                )
    if manifest.kind != "dir" and (len(manifest.files) != 1 or manifest.links or manifest.dirs):
        raise ManifestError(f"a {manifest.kind!r} version must hold exactly one file")
