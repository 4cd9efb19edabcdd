"""The manifest: the last file of a version, whose existence means "committed".

It lists every payload file with its size and CRC-32C, the directory tree (empty directories and
symlinks), and the user's step and metadata. Parsing is strict: a manifest from storage is
untrusted input (DESIGN.md, trust boundaries), so it is bounded (size, nesting depth, entries,
path length) *before* it is parsed or used, every path is checked before anything is written
from it, and whatever is wrong with it surfaces as `ManifestError`, never as another exception.
"""

from __future__ import annotations

import base64
import binascii
import json
import operator
import posixpath
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import accumulate, compress, count, pairwise
from typing import Any

from taskpoint.checkpoint.version import CheckpointVersion, PayloadKind, parse_version_id

FORMAT = 1
# An inline version (a small ``write()``): its bytes sit in the manifest, base64-encoded, and it
# has no payload prefix. Such manifests say format 2, so an older taskpoint refuses them as a
# format it does not know (and falls back) instead of looking for a payload file.
INLINE_FORMAT = 2
_KINDS = ("bytes", "file", "dir")

MAX_MANIFEST_BYTES = 64 << 20  # a store reads at most this much (+1 to see it is longer)
MAX_METADATA_DEPTH = 64  # levels of nesting in user metadata (the metadata object is level 1)
MAX_ENTRIES = 1_000_000  # files + dirs + links
MAX_CONTAINERS = 1_200_000  # JSON objects and arrays: one per file entry, the rest for metadata
MAX_PATH_BYTES = 4096  # Linux PATH_MAX, UTF-8 encoded
MAX_NAME_BYTES = 255  # NAME_MAX of every common filesystem, per path component
MAX_FILE_SIZE = (1 << 63) - 1  # off_t: anything larger cannot be a file
# `created` must be a date every consumer can convert (timestamp(), local time in any zone).
_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(9999, 1, 1, tzinfo=UTC)

# For the shape scan: keep brackets (as "[" and "]") and quotes, drop every other byte; then a
# string is a quote, anything but a quote, and a quote (or the end: never a failed match, which
# would be retried from every later quote).
_SHAPE = bytes.maketrans(b"{}", b"[]")
_NOT_SHAPE = bytes(b for b in range(256) if b not in b'[]{}"')
_STRING = re.compile(rb'"[^"]*"?')
_UP_DOWN = bytes.maketrans(b"[]", b"\x02\x00")
_ODD_PARTS = frozenset(("", ".", ".."))
_ENCODER = json.JSONEncoder(separators=(",", ":"), sort_keys=True)  # made once: ~5 us a commit


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
    # The bytes of an inline version (its one file, ``files[0]``, lives here, not in a prefix).
    inline: bytes | memoryview | None = None

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
        doc: dict[str, Any] = {
            "taskpoint_manifest": FORMAT if self.inline is None else INLINE_FORMAT,
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
        if self.inline is not None:
            doc["inline"] = base64.b64encode(self.inline).decode("ascii")
        return _ENCODER.encode(doc).encode()


def check_relative_path(path: Any) -> str:
    """Return ``path`` if it is a safe relative POSIX path inside a version, else raise."""
    if not isinstance(path, str) or not path:
        raise ManifestError(f"empty or non-string path {_show(path)}")
    if "\\" in path or "\x00" in path:
        raise ManifestError(f"path {_show(path)} contains a backslash or NUL")
    if path.startswith("/") or (len(path) > 1 and path[1] == ":"):
        raise ManifestError(f"absolute path {_show(path)}")
    if not _ODD_PARTS.isdisjoint(path.split("/")):
        raise ManifestError(f"path {_show(path)} is not normalised or climbs out with '..'")
    _check_length(path)
    return path


def check_link_target(link: str, target: str) -> str:
    """A link target must be relative and resolve inside the version's tree."""
    if not isinstance(target, str) or not target or target.startswith("/") or "\x00" in target:
        raise ManifestError(
            f"symlink {_show(link)} has an absolute or empty target {_show(target)}"
        )
    _check_length(target)
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(link), target))
    if resolved == ".." or resolved.startswith("../") or resolved.startswith("/"):
        raise ManifestError(
            f"symlink {_show(link)} -> {_show(target)} points outside the checkpoint"
        )
    return target


def _check_length(path: str) -> None:
    # surrogateescape: names read from a non-UTF-8 directory come back as they were on disk.
    try:
        encoded = path.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise ManifestError(f"path {_show(path)} is not a valid file name") from None
    if len(encoded) <= MAX_NAME_BYTES:
        return  # the usual case, and no part is longer than the whole
    longest = max(map(len, encoded.split(b"/")))
    if len(encoded) > MAX_PATH_BYTES or longest > MAX_NAME_BYTES:
        raise ManifestError(
            f"path {_show(path)} is longer than the filesystem allows ({len(encoded)} bytes, "
            f"a name of {longest}; at most {MAX_PATH_BYTES}, and {MAX_NAME_BYTES} per name)"
        )


def _show(value: object) -> str:
    """A short repr of an untrusted value for a message (a path may be 4 KiB, a value 64 MiB)."""
    text = repr(value) if isinstance(value, str | int | float | None) else type(value).__name__
    return text if len(text) <= 80 else f"{text[:60]}..."


def parse_manifest(raw: bytes, expected_id: str) -> Manifest:
    """Parse and validate untrusted manifest bytes; raise `ManifestError` on anything odd."""
    try:
        return _parse(raw, expected_id)
    except ManifestError:
        raise
    except Exception as exc:  # a check missed something: still damage, never a crash
        raise ManifestError(
            f"manifest unusable ({type(exc).__name__}: {_show(str(exc))})"
        ) from None


def _parse(raw: bytes, expected_id: str) -> Manifest:
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise ManifestError(f"manifest is {type(raw).__name__}, not bytes")
    raw = bytes(raw)
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestError(
            f"manifest is larger than {MAX_MANIFEST_BYTES >> 20} MiB ({len(raw)} bytes)"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ManifestError("manifest is not UTF-8 text") from None
    _check_shape(raw)  # before json.loads, which recurses once per level
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ManifestError(f"manifest is not valid JSON ({exc})") from None
    fmt = doc.get("taskpoint_manifest") if isinstance(doc, dict) else None
    if type(fmt) is not int or fmt not in (FORMAT, INLINE_FORMAT):
        raise ManifestError("not a taskpoint manifest of a known format")
    manifest = _manifest_from_doc(doc)
    if fmt == INLINE_FORMAT:
        manifest.inline = _inline(_field(doc, "inline", str))
    if manifest.id != expected_id or parse_version_id(manifest.id) != (
        manifest.attempt,
        manifest.seq,
    ):
        raise ManifestError(
            f"manifest names version {_show(manifest.id)}, expected {expected_id!r}"
        )
    _check_tree(manifest)
    return manifest


def _check_shape(raw: bytes) -> None:
    """Bound nesting depth and container count without recursing, before `json.loads`.

    json.loads recurses once per level (a deep document can exhaust the C stack when the
    recursion limit was raised) and makes an object per container, so both are counted on the
    bytes first. Only brackets outside strings count: escaped backslashes and quotes go first
    (left to right, as JSON pairs them), then everything but brackets and quotes, then quote
    pairs with nothing left between them, then the strings that held brackets. No two quotes
    are then adjacent, so brackets separate the strings left: too many of them means too many
    containers, refused before the (slower) string pass. Every step is linear in the size.
    The manifest itself is level 1, its metadata level 2.
    """
    shape = raw.replace(b"\\\\", b"").replace(b'\\"', b"") if b"\\" in raw else raw
    shape = shape.translate(_SHAPE, _NOT_SHAPE).replace(b'""', b"")
    if shape.count(b'"') > 4 * MAX_CONTAINERS + 4:
        raise ManifestError(f"manifest holds more than {MAX_CONTAINERS} objects and arrays")
    shape = _STRING.sub(b"", shape)
    opened = shape.count(b"[")
    if opened > MAX_CONTAINERS:
        raise ManifestError(f"manifest holds more than {MAX_CONTAINERS} objects and arrays")
    if len(shape) != 2 * opened:
        raise ManifestError("manifest is not valid JSON (unbalanced brackets)")
    # Depth after the i-th bracket is (sum of 2 per "[" and 0 per "]") - i.
    deepest = max(map(operator.sub, accumulate(shape.translate(_UP_DOWN)), count(1)), default=0)
    if deepest > MAX_METADATA_DEPTH + 1:
        raise ManifestError(f"manifest metadata is nested deeper than {MAX_METADATA_DEPTH} levels")


def check_metadata_shape(metadata_json: bytes) -> None:
    """Refuse, at write time, metadata that `parse_manifest` would refuse when reading it back
    (wrapped once, it sits at the level the manifest gives it)."""
    _check_shape(b"[" + metadata_json + b"]")


def _field(doc: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    if name not in doc:
        raise ManifestError(f"manifest has no {name!r} field")
    value = doc[name]
    if isinstance(value, bool) or not isinstance(value, kind):  # no field is a bool
        raise ManifestError(f"manifest field {name!r} has the wrong type ({type(value).__name__})")
    return value


def _manifest_from_doc(doc: dict[str, Any]) -> Manifest:
    kind = _field(doc, "kind", str)
    if kind not in _KINDS:
        raise ManifestError(f"unknown payload kind {_show(kind)}")
    raw_files = _field(doc, "files", list)
    dirs = _field(doc, "dirs", list)
    links = _field(doc, "links", dict)
    entries = len(raw_files) + len(dirs) + len(links)
    if entries > MAX_ENTRIES:  # before any per-entry work
        raise ManifestError(f"manifest lists {entries} entries, more than {MAX_ENTRIES}")
    return Manifest(
        id=_field(doc, "id", str),
        attempt=_field(doc, "attempt", int),
        seq=_field(doc, "seq", int),
        kind=kind,
        step=_field(doc, "step", (int, type(None))),
        metadata=_field(doc, "metadata", dict),
        created=_created(_field(doc, "created", str)),
        files=[_file_entry(entry) for entry in raw_files],
        dirs=[check_relative_path(d) for d in dirs],
        links={check_relative_path(k): check_link_target(k, v) for k, v in links.items()},
    )


def _file_entry(entry: Any) -> FileEntry:
    if not isinstance(entry, dict):
        raise ManifestError(f"a file entry is a {type(entry).__name__}, not an object")
    path = check_relative_path(entry.get("path"))
    size, crc = entry.get("size"), entry.get("crc32c")
    if type(size) is not int or not 0 <= size <= MAX_FILE_SIZE:
        raise ManifestError(f"bad size {_show(size)} for {_show(path)}")
    if type(crc) is not int or not 0 <= crc < 1 << 32:
        raise ManifestError(f"bad checksum {_show(crc)} for {_show(path)}")
    return FileEntry(path, size, crc)


def _created(text: str) -> datetime:
    """Versions report UTC; a manifest without a zone was written in UTC by convention."""
    try:
        moment = datetime.fromisoformat(text)
        moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
        sane = _EARLIEST <= moment < _LATEST
    except (ValueError, OverflowError):  # year 1 at +14:00 is before year 1 in UTC
        sane = False
    if not sane:
        raise ManifestError(f"created {_show(text)} is not a date between 1970 and 9998")
    return moment


def _check_tree(manifest: Manifest) -> None:
    """Each path has one kind, and nothing is placed under a file or a symlink.

    A directory may be listed twice (harmless); a file or link twice, or one name as two kinds,
    is damage. Under a symlink a restore would write wherever the link leads; under a file it
    would fail half-way. Parents of listed paths are directories. Sorted with "/" as the lowest
    character (NUL: no path holds one), every path under ``p`` comes right after ``p`` itself,
    so one pass comparing each path with the previous one finds every conflict.
    """
    kinds: dict[str, str] = {}
    for kind, paths in (
        ("directory", manifest.dirs),
        ("file", [f.path for f in manifest.files]),
        ("symlink", list(manifest.links)),
    ):
        named = dict.fromkeys([path.replace("/", "\0") for path in paths], kind)
        if len(named) < len(paths) and kind != "directory":
            twice = next(path for path, n in Counter(paths).items() if n > 1)
            raise ManifestError(f"{kind} {_show(twice)} is listed twice")
        for key in named.keys() & kinds.keys():
            raise ManifestError(f"path {_show(_path(key))} is both a {kinds[key]} and a {kind}")
        kinds.update(named)
    ordered = sorted(kinds)
    for prev, key in compress(pairwise(ordered), map(str.startswith, ordered[1:], ordered)):
        if key[len(prev)] == "\0" and kinds[prev] != "directory":
            raise ManifestError(
                f"path {_show(_path(key))} is placed under {_show(_path(prev))}, "
                f"which is a {kinds[prev]}"
            )
    if manifest.kind != "dir" and (len(manifest.files) != 1 or manifest.links or manifest.dirs):
        raise ManifestError(f"a {manifest.kind!r} version must hold exactly one file")
    if manifest.inline is not None:
        if manifest.kind != "bytes":
            raise ManifestError(f"a {manifest.kind!r} version cannot be inline")
        if len(manifest.inline) != manifest.files[0].size:
            raise ManifestError(
                f"inline data of {len(manifest.inline)} bytes, the manifest says "
                f"{manifest.files[0].size}"
            )


def _inline(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise ManifestError("inline data is not valid base64") from None


def _path(key: str) -> str:
    return key.replace("\0", "/")
