"""What a version holds before it is written: a list of sources plus the tree's shape.

A `Payload` is built from the user's argument at call time. For an async write it is a
*snapshot*: bytes are copied (unless immutable) and files are copied into a staging directory, so
the caller may change its data the moment `write`/`save` returns.
"""

from __future__ import annotations

import os
import pickle
import shutil
import stat
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from taskpoint.checkpoint.version import PayloadKind
from taskpoint.errors import CheckpointError

BYTES_NAME = "data"  # the single file of a bytes or stream version
# A ``write()`` of at most this many bytes is an inline version: its bytes go inside the manifest,
# so a commit is one file and two syncs instead of a payload prefix, a file and five syncs.
INLINE_MAX = 64 << 10


@dataclass
class Source:
    """One payload file: exactly one of ``data``, ``file`` or ``stream`` is set."""

    path: str
    data: memoryview | None = None
    file: str | None = None
    stream: BinaryIO | None = None
    owned: bool = False  # a staged copy the store may move into place instead of copying


@dataclass
class Payload:
    kind: PayloadKind
    sources: list[Source]
    dirs: list[str] = field(default_factory=list)
    links: dict[str, str] = field(default_factory=dict)
    staging: str | None = None  # directory to delete once the payload is written or dropped

    def discard(self) -> None:
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None
        for src in self.sources:
            if src.data is not None:
                # Let go of the caller's buffer now: an mmap can be closed, a bytearray resized.
                src.data.release()

    def inline_data(self) -> memoryview | None:
        """The bytes of a ``write()`` small enough to go inside the manifest, else ``None``."""
        if self.kind != "bytes" or len(self.sources) != 1:
            return None
        data = self.sources[0].data
        return data if data is not None and len(data) <= INLINE_MAX else None


def bytes_payload(data: object, *, snapshot: bool) -> Payload:
    """Any object with the buffer protocol, as one flat view of its bytes (in C order).

    A C-contiguous buffer is used in place (``pickle.PickleBuffer`` only gives a flat byte view
    of it, whatever its format or shape: nothing is pickled). A strided one (a NumPy slice, a
    transposed or Fortran-ordered array) is not one run of memory in C order: its bytes are
    copied once, as ``bytes(memoryview(obj))`` gives them. With ``snapshot`` (an async write) a
    mutable buffer is copied at once; ``bytes`` are immutable and are not.
    """
    if isinstance(data, str):
        raise TypeError(
            "Checkpoint.write() takes bytes, not str: encode the text first, "
            "e.g. write(text.encode())"
        )
    try:
        view = memoryview(data)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            "Checkpoint.write() takes bytes or another object with the buffer protocol "
            "(bytearray, memoryview, array.array, mmap, a NumPy array), not "
            f"{type(data).__name__}; use save() for files, directories and streams"
        ) from None
    with view:
        contiguous = view.c_contiguous
        if not contiguous:
            flat = memoryview(view.tobytes())
            snapshot = False  # already a private copy
    if contiguous:
        flat = pickle.PickleBuffer(data).raw()  # type: ignore[arg-type]
    if snapshot and not (flat.readonly and isinstance(_base(flat), bytes)):
        copied = memoryview(bytes(flat))
        flat.release()
        flat = copied
    return Payload("bytes", [Source(BYTES_NAME, data=flat)])


def _base(view: memoryview) -> object:
    """The object that exports a view's memory (through views of views)."""
    base = view.obj
    while isinstance(base, memoryview):
        base = base.obj
    return base


def stream_payload(stream: BinaryIO, *, staging_root: str | None) -> Payload:
    """A stream is spooled to staging when snapshotting, else read while writing."""
    if staging_root is None:
        return Payload("bytes", [Source(BYTES_NAME, stream=stream)])
    staging = _new_staging(staging_root)
    target = os.path.join(staging, BYTES_NAME)
    with _dropped_on_error(staging), open(target, "wb") as out:
        shutil.copyfileobj(stream, out, 8 << 20)
    return Payload("bytes", [Source(BYTES_NAME, file=target, owned=True)], staging=staging)


def path_payload(src: str | os.PathLike[str], *, staging_root: str | None) -> Payload:
    """A file keeps its name; a directory keeps its whole tree (files, empty dirs, inner links)."""
    path = Path(src)
    if not path.exists():
        raise FileNotFoundError(f"cannot save checkpoint: {str(path)!r} does not exist")
    if path.is_file():
        name = path.name
        if staging_root is None:
            return Payload("file", [Source(name, file=str(path))])
        staging = _new_staging(staging_root)
        copy = os.path.join(staging, name)
        with _dropped_on_error(staging):
            shutil.copyfile(path, copy)
        return Payload("file", [Source(name, file=copy, owned=True)], staging=staging)
    if path.is_dir():
        return _dir_payload(path, staging_root)
    raise CheckpointError(f"cannot save {str(path)!r}: it is neither a file nor a directory")


def _dir_payload(root: Path, staging_root: str | None) -> Payload:
    staging = _new_staging(staging_root) if staging_root is not None else None
    with _dropped_on_error(staging):
        return _walk_dir(root, Payload("dir", [], staging=staging), staging)


def _walk_dir(root: Path, payload: Payload, staging: str | None) -> Payload:
    root_real = os.path.realpath(root)
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/")
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            rel = f"{rel_dir}/{name}" if rel_dir else name
            mode = os.lstat(full).st_mode
            if stat.S_ISLNK(mode):
                payload.links[rel] = _inner_link_target(full, root_real, rel)
                continue
            if stat.S_ISDIR(mode):
                payload.dirs.append(rel)
            elif stat.S_ISREG(mode):
                payload.sources.append(_dir_file_source(full, rel, staging))
        # os.walk does not descend into symlinked directories; they are recorded as links above.
    return payload


def _dir_file_source(full: str, rel: str, staging: str | None) -> Source:
    if staging is None:
        return Source(rel, file=full)
    copy = os.path.join(staging, *rel.split("/"))
    os.makedirs(os.path.dirname(copy), exist_ok=True)
    # A copy, not a hard link: a hard link shares the inode, so an in-place edit after save()
    # returns would leak into the snapshot.
    shutil.copyfile(full, copy)
    return Source(rel, file=copy, owned=True)


def _inner_link_target(full: str, root_real: str, rel: str) -> str:
    target = os.readlink(full)
    resolved = os.path.realpath(os.path.join(os.path.dirname(full), target))
    if os.path.isabs(target) or os.path.commonpath([resolved, root_real]) != root_real:
        raise CheckpointError(
            f"cannot save directory: symlink {rel!r} -> {target!r} points outside it; "
            "replace it with a copy of its target or a relative link inside the directory"
        )
    return target.replace(os.sep, "/")


@contextmanager
def _dropped_on_error(staging: str | None) -> Iterator[None]:
    """A snapshot that fails half-way (a full disk) must not leave its partial copy behind."""
    try:
        yield
    except BaseException:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        raise


def _new_staging(staging_root: str) -> str:
    path = os.path.join(staging_root, uuid.uuid4().hex)
    os.makedirs(path)
    return path
