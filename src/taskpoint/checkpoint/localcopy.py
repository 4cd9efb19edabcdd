"""The local copy of a remote scope's latest version: where it lives, what bounds it.

A retried attempt on the machine that wrote a version of an object-store scope (``s3://`` ...)
would fetch it back over the network. So a writer keeps, on local disk, a copy of the payload
files of the latest version it committed (made from the bytes it had in hand, never downloaded)
and a reader on that machine restores from it at local disk speed. The store stays the truth:
its manifest says which version is latest and what each file's size and checksum are; a local
copy is used only for a version the store's listing picked, only when its record names that
exact manifest (a SHA-256 of the manifest's bytes: same scope, same id, same writer), and each
file is verified against the manifest's size and CRC-32C as it is read. A copy that fails any
of that is deleted and the bytes come from the store (``store_localcopy.py`` does the reading
and writing; this module is the directory).

Layout under the root (default ``$XDG_CACHE_HOME/taskpoint/versions``, else
``~/.cache/taskpoint/versions``)::

    <scope key>/<id>/entry.json        which scope, id and manifest (SHA-256), and its bytes
    <scope key>/<id>/v/<id>/<files>    the payload files, as in the store
    .pending/<host>-<pid>-<hex>/...    a copy being made; renamed into place at the commit

The scope key is a SHA-256 of the scope's URL and endpoint. One version per scope is kept (the
newest committed here), and the whole root stays under a byte limit (default 2 GiB; a version
is not copied when it would not fit, nor when it would take more than half the free space),
the least recently used versions going first. Entries appear by ``rename`` of a complete
directory, so processes sharing the root never see half of one; copies of killed writers are
swept once their process is gone.

Settings: ``Checkpoint.open(local_copy=, local_copy_limit=)``, else ``TASKPOINT_LOCAL_COPY``
(a directory, or ``off``) and ``TASKPOINT_LOCAL_COPY_LIMIT`` (bytes; ``K``, ``M``, ``G``, ``T``
suffixes are powers of 1024), else the defaults.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from typing import Any

from taskpoint._process import hostname, process_alive
from taskpoint.checkpoint.safeopen import open_in_store, read_bounded
from taskpoint.checkpoint.store_local import LocalStore
from taskpoint.checkpoint.version import parse_version_id
from taskpoint.errors import TaskpointError

log = logging.getLogger("taskpoint.checkpoint")

ENV = "TASKPOINT_LOCAL_COPY"
LIMIT_ENV = "TASKPOINT_LOCAL_COPY_LIMIT"
DEFAULT_LIMIT = 2 << 30
ENTRY = "entry.json"
PENDING = ".pending"
_OFF = frozenset(("off", "false", "0", "no", "none"))
_ON = frozenset(("on", "true", "1", "yes", "default"))
_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_HOST = hostname().replace("-", "_") or "host"

LocalCopySetting = str | os.PathLike[str] | bool | None


def default_directory() -> str:
    """``$XDG_CACHE_HOME/taskpoint/versions``, else ``~/.cache/taskpoint/versions``."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):  # the XDG rule: a relative value is ignored
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "taskpoint", "versions")


def directory_for(setting: LocalCopySetting) -> str | None:
    """The root a setting names, ``None`` when it turns the local copy off.

    ``None`` defers to ``TASKPOINT_LOCAL_COPY`` (unset or empty: the default directory);
    ``True`` (or ``on``) is the default directory, ``False`` (or ``off``) none, anything else a
    directory path."""
    if setting is None:
        setting = os.environ.get(ENV, "").strip() or True
    if isinstance(setting, bool):
        return default_directory() if setting else None
    if not isinstance(setting, str | os.PathLike):
        raise TypeError(
            "local_copy must be a directory path, True (the default directory), False (off) or "
            f"None (TASKPOINT_LOCAL_COPY, else the default), not {type(setting).__name__}"
        )
    text = os.fspath(setting).strip()
    if text.lower() in _OFF:
        return None
    if text.lower() in _ON:
        return default_directory()
    return os.path.abspath(os.path.expanduser(text))


def limit_for(limit: int | None) -> int:
    """Bytes the root may hold: ``limit``, else ``TASKPOINT_LOCAL_COPY_LIMIT``, else 2 GiB."""
    if limit is None:
        raw = os.environ.get(LIMIT_ENV, "").strip()
        if not raw:
            return DEFAULT_LIMIT
        parsed = parse_size(raw)
        if parsed is None or parsed < 1:
            raise TaskpointError(
                f"{LIMIT_ENV} must be a size in bytes > 0 (e.g. 2147483648, 512M, 2GiB), "
                f"got {raw!r}; fix or unset it"
            )
        return parsed
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"local_copy_limit must be a number of bytes >= 1, got {limit!r}")
    return limit


def parse_size(text: str) -> int | None:
    """``"1073741824"``, ``"512M"``, ``"2GiB"`` ... in bytes (suffixes are powers of 1024)."""
    match = _SIZE.match(text)
    if match is None:
        return None
    return int(match.group(1)) << (10 * " kmgt".index(match.group(2).lower() or " "))


def scope_key(url: str, storage_options: dict[str, Any]) -> str:
    """The directory name of a scope: its URL and endpoint (two servers may share a bucket
    name), hashed so that any URL makes one safe, short name."""
    client = storage_options.get("client_kwargs") or {}
    endpoint = storage_options.get("endpoint_url") or client.get("endpoint_url") or ""
    named = json.dumps([url.rstrip("/"), str(endpoint)])
    return hashlib.sha256(named.encode()).hexdigest()[:40]


def manifest_digest(manifest: bytes) -> str:
    return hashlib.sha256(manifest).hexdigest()


class Pending:
    """A copy of one version being made, in its own directory under ``.pending``."""

    def __init__(self, root: str, vid: str, budget: int) -> None:
        self.dir = os.path.join(root, PENDING, f"{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:12]}")
        self.vid = vid
        self.budget = budget
        self.size = 0
        self.files: dict[str, int] = {}  # path -> bytes copied
        self.failed = False
        os.makedirs(os.path.join(self.dir, "v", vid), mode=0o700)

    def path_for(self, rel: str) -> str:
        path = os.path.join(self.dir, "v", self.vid, *rel.split("/"))
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        return path

    def take(self, rel: str, n: int) -> bool:
        """Count ``n`` more bytes of file ``rel``; False (the copy given up) past the budget."""
        if self.failed:
            return False
        if self.size + n > self.budget:
            self.give_up("the version is larger than the local copy may hold")
            return False
        self.size += n
        self.files[rel] = self.files.get(rel, 0) + n
        return True

    def complete(self, manifest: bytes) -> bool:
        """Does the copy hold every file of the committed manifest, at its size? (Not when
        other processes wrote some of them: the ranks of a multi-rank version.)"""
        try:  # the bytes this process just committed: plain JSON, no need of the strict parse
            wanted = {f["path"]: f["size"] for f in json.loads(manifest)["files"]}
        except (ValueError, KeyError, TypeError):
            return False
        return wanted == self.files

    def give_up(self, why: str) -> None:
        if not self.failed:
            log.debug("no local copy of checkpoint version %s: %s", self.vid, why)
        self.failed = True
        shutil.rmtree(self.dir, ignore_errors=True)


class LocalCopies:
    """The local copies of one scope (at most one version kept) in a root shared by all."""

    def __init__(self, root: str, key: str, url: str, limit: int) -> None:
        self.root = root
        self.url = url
        self.limit = limit
        self.scope_dir = os.path.join(root, key)

    # ------------------------------------------------------------------ reading
    def has(self, vid: str) -> bool:
        return os.path.isdir(os.path.join(self.scope_dir, vid))

    def matching(self, vid: str, manifest: bytes) -> LocalStore | None:
        """The copy of ``vid`` as a local store of its files, if its record names exactly this
        manifest; a copy whose record does not (or cannot be read) is deleted."""
        entry = os.path.join(self.scope_dir, vid)
        try:
            with open_in_store(entry, [ENTRY]) as handle:
                record = json.loads(read_bounded(handle, 64 << 10))
            matches = (
                isinstance(record, dict)
                and record.get("id") == vid
                and record.get("url") == self.url
                and record.get("manifest") == manifest_digest(manifest)
            )
        except (OSError, ValueError) as exc:
            if isinstance(exc, FileNotFoundError) and not os.path.isdir(entry):
                return None  # evicted meanwhile
            matches = False
        if not matches:
            log.warning(
                "local copy of checkpoint version %s of %s is not the committed version: "
                "deleted, reading the store instead",
                vid,
                self.url,
            )
            self.discard(vid)
            return None
        return LocalStore(entry)

    def discard(self, vid: str) -> None:
        shutil.rmtree(os.path.join(self.scope_dir, vid), ignore_errors=True)

    def touch(self, vid: str) -> None:
        """Mark the copy used now: the byte limit evicts the least recently used first."""
        try:
            os.utime(os.path.join(self.scope_dir, vid))
        except OSError:
            pass

    # ------------------------------------------------------------------ writing
    def begin(self, vid: str) -> Pending | None:
        """A new copy of ``vid``, allowed the limit or half the free space, whichever is less."""
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        budget = min(self.limit, shutil.disk_usage(self.root).free // 2)
        return Pending(self.root, vid, budget) if budget > 0 else None

    def install(self, pending: Pending, manifest: bytes) -> None:
        """Make a finished copy the scope's entry for its version (just committed), unless a
        newer version has one already (a late writer of an older attempt); older ones go."""
        vid = pending.vid
        if not pending.complete(manifest):
            pending.give_up("it does not hold every file of the version")
            self.drop_older(vid)
            return
        record = {
            "format": 1,
            "id": vid,
            "url": self.url,
            "manifest": manifest_digest(manifest),
            "bytes": pending.size,
        }
        with open(os.path.join(pending.dir, ENTRY), "x") as out:
            json.dump(record, out)
        if any(_newer(other, vid) for other in self._ids()):
            pending.give_up("a newer version of the scope has a local copy")
            return
        for tries in range(2):
            os.makedirs(self.scope_dir, mode=0o700, exist_ok=True)
            try:
                os.rename(pending.dir, os.path.join(self.scope_dir, vid))
                break
            except FileNotFoundError:
                if tries:  # the scope directory was swept as empty in between, twice
                    raise
            except OSError:  # an entry of this id is there already: keep that one
                pending.give_up("a local copy of it exists")
                return
        self.drop_older(vid)
        self._bound(os.path.join(self.scope_dir, vid))
        self._sweep_pending()

    def drop_older(self, vid: str) -> None:
        """Delete the copies of versions older than ``vid`` (committed since: never latest)."""
        for other in self._ids():
            if _newer(vid, other):
                self.discard(other)

    def _ids(self) -> list[str]:
        try:
            return os.listdir(self.scope_dir)
        except (FileNotFoundError, NotADirectoryError):
            return []

    def _bound(self, keep: str) -> None:
        """Evict the least recently used copies (never ``keep``) until the root holds at most
        ``limit`` bytes; drop entries without a readable record, and empty scope dirs."""
        entries: list[tuple[float, int, str]] = []
        for scope in _subdirs(self.root):
            if os.path.basename(scope).startswith("."):
                continue
            found = _subdirs(scope)
            if not found and scope != self.scope_dir:
                _rmdir_quiet(scope)
            for entry in found:
                size = _recorded_size(entry)
                if size is None:
                    shutil.rmtree(entry, ignore_errors=True)
                    continue
                try:
                    entries.append((os.stat(entry).st_mtime, size, entry))
                except FileNotFoundError:
                    continue
        total = sum(size for _, size, _ in entries)
        for _, size, entry in sorted(entries):
            if total <= self.limit:
                break
            if entry != keep:
                shutil.rmtree(entry, ignore_errors=True)
                total -= size

    def _sweep_pending(self) -> None:
        """Copies that killed writers on this host left half-made."""
        for path in _subdirs(os.path.join(self.root, PENDING)):
            host, _, rest = os.path.basename(path).partition("-")
            pid = rest.split("-", 1)[0]
            if host == _HOST and pid.isdigit() and not process_alive(int(pid)):
                shutil.rmtree(path, ignore_errors=True)


def _newer(vid: str, than: str) -> bool:
    a, b = parse_version_id(vid), parse_version_id(than)
    return a is not None and b is not None and a > b


def _subdirs(path: str) -> list[str]:
    try:
        with os.scandir(path) as found:
            return [e.path for e in found if e.is_dir(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _recorded_size(entry: str) -> int | None:
    try:
        with open_in_store(entry, [ENTRY]) as handle:
            size = json.loads(read_bounded(handle, 64 << 10)).get("bytes")
    except (OSError, ValueError, AttributeError):
        return None
    return size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None


def _rmdir_quiet(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass
