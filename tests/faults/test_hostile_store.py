"""Fault 14: a store that lies. Manifests that parse but are damaged (class 3), and special files
planted where payloads and manifests should be (class 4).

Each test commits versions 1 and 2 through the public API, damages version 2 behind the code's
back, straight in the store layout, and reads with a new scope: `read()`, `read_with()` and
`restore()` must return version 1 with a `CheckpointWarning` naming version 2, a restore target
must hold exactly version 1's tree, and `latest()` / `versions()` skip a version whose manifest is
unusable, with a warning, instead of raising. When no intact version is left, reading raises
`CheckpointCorruptError`.

Class 3 runs on local disk, ``memory://`` and S3 over HTTP (moto). Class 4 is local only (object
stores have no FIFOs or links) and runs its reader in a child process (faults_store.py) under an
address-space and a file-size limit and a deadline: code that follows a link to ``/dev/zero`` or
opens a FIFO must fail the test, not the machine that runs it. The child also reports how many
bytes it read, so "never reads more than the manifest says (+1)" is checked, not assumed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import crc32c
import fsspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.stores import MANIFEST, Backend
from taskpoint import Checkpoint, CheckpointCorruptError
from taskpoint.checkpoint import CheckpointWarning
from taskpoint.checkpoint.manifest import (
    MAX_MANIFEST_BYTES,
    FileEntry,
    Manifest,
    ManifestError,
    parse_manifest,
)

# These tests damage payload files: every write here has one (no inline versions).
pytestmark = pytest.mark.usefixtures("payload_files")

OLD = b"version one: the intact one"
NEW = b"version two: damaged behind the code's back"
SECRET = b"a file outside the store that must never be read"
OLD_TREE = {"state.txt": OLD, "sub/": None, "sub/pad.bin": b"p" * 4096}
CHILD = Path(__file__).with_name("faults_store.py")
CHILD_DEADLINE = 60  # seconds; an honest read of these tiny versions takes well under one
READ_BOUND = 8 << 20  # bytes a child may read per operation (imports included); damage is larger


# ------------------------------------------------------------------------------- the stores
class Store(Backend):
    """A `Backend` whose scopes keep 5 versions (damage never meets retention here)."""

    def open(self, **kwargs: Any) -> Checkpoint:
        return super().open(**{"keep": 5, **kwargs})

    def manifest(self, vid: str) -> dict[str, Any]:
        return json.loads(self.cat(vid + MANIFEST))

    def local(self, *parts: str) -> Path:
        assert self.name == "local"
        return Path(self.vpath(*parts))


@pytest.fixture
def local_store(tmp_path: Path) -> Iterator[Store]:
    root = str(tmp_path / "scope")
    store = Store("local", root, None, fsspec.filesystem("file"), root)
    yield store
    store.close()


@pytest.fixture
def memory_store() -> Iterator[Store]:
    from fsspec.implementations.memory import MemoryFileSystem

    top = f"/tp-{uuid.uuid4().hex}"
    store = Store(
        "memory", f"memory:/{top}/scope", None, fsspec.filesystem("memory"), top + "/scope"
    )
    yield store
    store.close()
    for key in [k for k in MemoryFileSystem.store if k.startswith(top)]:
        del MemoryFileSystem.store[key]
    MemoryFileSystem.pseudo_dirs[:] = [d for d in MemoryFileSystem.pseudo_dirs if top not in d]


@pytest.fixture
def s3_store(s3_server: Any) -> Iterator[Store]:
    pytest.importorskip("s3fs")
    prefix = f"hostile-{uuid.uuid4().hex}"
    fs = s3_server.filesystem
    store = Store(
        "s3", s3_server.url(prefix), s3_server.storage_options, fs, f"{s3_server.bucket}/{prefix}"
    )
    yield store
    store.close()
    fs.invalidate_cache()
    if fs.exists(store.root):
        fs.rm(store.root, recursive=True)


@pytest.fixture(params=["local", "memory", "s3"])
def store(request: pytest.FixtureRequest) -> Store:
    """The same test on local disk, memory:// and S3 over HTTP (moto server)."""
    return request.getfixturevalue(f"{request.param}_store")


# ------------------------------------------------------------------------------- versions
def _bytes_versions(store: Store) -> tuple[str, str]:
    cp = store.open()
    return cp.write(OLD).id, cp.write(NEW).id  # type: ignore[union-attr]


def _dir_versions(store: Store, tmp_path: Path) -> tuple[str, str]:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "state.txt").write_bytes(OLD)
    (src / "sub" / "pad.bin").write_bytes(b"p" * 4096)
    cp = store.open()
    old = cp.save(src)
    (src / "state.txt").write_bytes(NEW)
    (src / "sub" / "new.bin").write_bytes(b"n" * 100)
    new = cp.save(src)
    return old.id, new.id  # type: ignore[union-attr]


def _tree(root: Path) -> dict[str, bytes | str | None]:
    """Everything under ``root``: file bytes, ``None`` for directories, link targets."""
    tree: dict[str, bytes | str | None] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            tree[rel] = f"-> {os.readlink(path)}"
        elif path.is_dir():
            tree[rel + "/"] = None
        else:
            tree[rel] = path.read_bytes()
    return tree


def _fill(reader: Any) -> bytes:
    return reader.read(reader.size)


# ------------------------------------------------------------------------------- class 3
def _dumps(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


def _entry(rel: str, data: bytes) -> dict[str, Any]:
    return {"path": rel, "size": len(data), "crc32c": crc32c.crc32c(data)}


def _plant(store: Store, vid: str, rel: str, data: bytes) -> None:
    """Put a payload file where the store allows it (not a file inside a file on local disk)."""
    try:
        store.pipe(data, vid, *rel.split("/"))
    except OSError:
        pass


def _file_under_file(store: Store, vid: str, doc: dict[str, Any]) -> bytes:
    inner = doc["files"][0]["path"] + "/inner"
    _plant(store, vid, inner, b"inner")
    doc["files"].append(_entry(inner, b"inner"))
    return _dumps(doc)


def _file_and_dir(store: Store, vid: str, doc: dict[str, Any]) -> bytes:
    doc["dirs"].append(doc["files"][0]["path"])
    return _dumps(doc)


def _link_and_dir(store: Store, vid: str, doc: dict[str, Any]) -> bytes:
    doc["links"]["alias"] = doc["files"][0]["path"]
    doc["dirs"].append("alias")
    return _dumps(doc)


def _dir_under_file(store: Store, vid: str, doc: dict[str, Any]) -> bytes:
    doc["dirs"].append(doc["files"][0]["path"] + "/d")
    return _dumps(doc)


def _dir_under_link(store: Store, vid: str, doc: dict[str, Any]) -> bytes:
    doc["links"]["alias"] = "sub"
    doc["dirs"].append("alias/d")
    return _dumps(doc)


def _created(moment: str) -> Callable[[Store, str, dict[str, Any]], bytes]:
    def damage(store: Store, vid: str, doc: dict[str, Any]) -> bytes:
        doc["created"] = moment
        return _dumps(doc)

    return damage


def _deep_metadata(store: Store, vid: str, doc: dict[str, Any]) -> bytes:
    doc["metadata"] = {"deep": "@DEEP@"}
    return _dumps(doc).replace(b'"@DEEP@"', b"[" * 100_000 + b"]" * 100_000)


def _path_named(path: str) -> Callable[[Store, str, dict[str, Any]], bytes]:
    def damage(store: Store, vid: str, doc: dict[str, Any]) -> bytes:
        doc["files"][0]["path"] = path
        return _dumps(doc)

    return damage


def _oversized(store: Store, vid: str, doc: dict[str, Any]) -> bytes:
    """Version 2's own, honest manifest, padded with whitespace past the bound: valid JSON that
    a reader without the bound would accept and load whole."""
    raw = _dumps(doc)
    return raw + b" " * (MAX_MANIFEST_BYTES + 1 - len(raw))


TREE_DAMAGE = [
    pytest.param(_file_under_file, id="file-a-and-file-a/b"),
    pytest.param(_file_and_dir, id="file-and-dir-same-name"),
    pytest.param(_link_and_dir, id="link-and-dir-same-name"),
    pytest.param(_dir_under_file, id="dir-under-file"),
    pytest.param(_dir_under_link, id="dir-under-link"),
]
ANY_DAMAGE = [
    pytest.param(_created("0001-01-01T00:00:00+14:00"), id="created-year-1-at-plus-14h"),
    pytest.param(_created("9999-12-31T23:59:59-14:00"), id="created-year-9999-at-minus-14h"),
    pytest.param(_deep_metadata, id="metadata-100000-deep"),
    pytest.param(_path_named("n" * 300), id="path-component-300-chars"),
    pytest.param(_path_named("/".join(["d" * 100] * 50)), id="path-5000-chars"),
    pytest.param(_oversized, id="manifest-over-the-bound"),
]


def _damage_manifest(store: Store, vid: str, damage: Callable[..., bytes]) -> None:
    if damage is _oversized and store.name == "s3":
        pytest.skip(
            "a 64 MiB upload to moto per test is slow; the object store refuses it by its size "
            "before fetching it, the same check as memory://"
        )
    store.pipe(damage(store, vid, store.manifest(vid)), vid + MANIFEST)


def _assert_listing_skips(cp: Checkpoint, good: str, bad: str) -> None:
    with pytest.warns(CheckpointWarning, match=bad):
        latest = cp.latest()
    assert latest is not None and latest.id == good
    assert latest.created.timestamp() > 0 and latest.created.isoformat()
    with pytest.warns(CheckpointWarning, match=bad):
        assert [v.id for v in cp.versions()] == [good]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("damage", ANY_DAMAGE)
def test_damaged_manifest_of_bytes_version_falls_back(store, damage, tmp_path):
    good, bad = _bytes_versions(store)
    _damage_manifest(store, bad, damage)
    cp = store.open(attempt=2)
    with pytest.warns(CheckpointWarning, match=bad):
        assert cp.read() == OLD
    with pytest.warns(CheckpointWarning, match=bad):
        assert cp.read_with(_fill) == OLD
    with pytest.warns(CheckpointWarning, match=bad):
        out = cp.restore(tmp_path / "restored")
    assert out is not None and _tree(out) == {"data": OLD}
    _assert_listing_skips(cp, good, bad)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("damage", TREE_DAMAGE + ANY_DAMAGE)
def test_damaged_manifest_of_dir_version_restores_the_previous_tree(store, damage, tmp_path):
    good, bad = _dir_versions(store, tmp_path)
    _damage_manifest(store, bad, damage)
    cp = store.open(attempt=2)
    with pytest.warns(CheckpointWarning, match=bad):
        out = cp.restore(tmp_path / "restored")
    assert out is not None and _tree(out) == OLD_TREE  # nothing of version 2
    _assert_listing_skips(cp, good, bad)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(_created("0001-01-01T00:00:00+14:00"), id="created-year-1"),
        pytest.param(_deep_metadata, id="metadata-100000-deep"),
    ],
)
def test_no_intact_version_left_is_an_error_not_none(store, damage):
    only = store.open().write(OLD).id  # type: ignore[union-attr]
    _damage_manifest(store, only, damage)
    cp = store.open(attempt=2)
    with (
        pytest.warns(CheckpointWarning, match=only),
        pytest.raises(CheckpointCorruptError, match=only),
    ):
        cp.read()


# ------------------------------------------------------------------------------- class 4
def _run_reader(store: Store, tmp_path: Path, *ops: str) -> dict[str, dict[str, Any]]:
    """Run ``ops`` in a child reader (faults_store.py) under limits; its outcomes by op."""
    target = tmp_path / f"child-{uuid.uuid4().hex[:8]}"
    target.mkdir()
    command = [sys.executable, str(CHILD), store.url, str(target), *ops]
    try:
        proc = subprocess.run(command, capture_output=True, timeout=CHILD_DEADLINE, cwd=tmp_path)
    except subprocess.TimeoutExpired as exc:
        lines = (exc.stdout or b"").decode(errors="replace").splitlines()
        started = [json.loads(line)["op"] for line in lines if '"started"' in line]
        pytest.fail(
            f"the reader hung in {started[-1] if started else 'Checkpoint.open'}() "
            f"for {CHILD_DEADLINE} s and was killed"
        )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-4000:]
    outcomes = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    return {o["op"]: o for o in outcomes if not o.get("started")}


def _assert_fell_back(outcome: dict[str, Any], bad: str, expected: Any) -> None:
    op = outcome["op"]
    assert outcome["error"] is None, f"{op}() raised {outcome['error']}"
    assert outcome["result"] == expected, f"{op}() returned {outcome['result']!r}"
    assert any(w.startswith("CheckpointWarning") and bad in w for w in outcome["warnings"]), (
        f"{op}() gave no CheckpointWarning naming {bad}: {outcome['warnings']}"
    )
    assert outcome["read_bytes"] < READ_BOUND, f"{op}() read {outcome['read_bytes']} bytes"


def _latin(data: bytes) -> str:
    return data.decode("latin-1")


def _as_child_tree(tree: dict[str, bytes | str | None]) -> dict[str, str]:
    """A tree as the child reports it: contents as latin-1 text, directories as ""."""
    return {rel: "" if data is None else _latin(data) for rel, data in tree.items()}  # type: ignore[arg-type]


def _assert_bytes_fallback(outcomes: dict[str, dict[str, Any]], bad: str) -> None:
    _assert_fell_back(outcomes["read"], bad, _latin(OLD))
    _assert_fell_back(outcomes["read_with"], bad, _latin(OLD))
    _assert_fell_back(outcomes["restore"], bad, {"data": _latin(OLD)})


def _replace(path: Path, make: Callable[[Path], None]) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
    make(path)


def _match_manifest_to(store: Store, vid: str, data: bytes) -> None:
    """Make version ``vid``'s manifest state ``data``'s size and checksum: only the rule that a
    store entry is never reached through a link can refuse what it then points to."""
    doc = store.manifest(vid)
    doc["files"][0].update(size=len(data), crc32c=crc32c.crc32c(data))
    store.pipe(_dumps(doc), vid + MANIFEST)


def _payload_fifo(store: Store, vid: str, tmp_path: Path) -> None:
    _replace(store.local(vid, "data"), os.mkfifo)


def _payload_dev_zero(store: Store, vid: str, tmp_path: Path) -> None:
    _replace(store.local(vid, "data"), lambda p: p.symlink_to("/dev/zero"))


def _payload_link_outside(store: Store, vid: str, tmp_path: Path) -> None:
    outside = tmp_path / "outside.bin"
    outside.write_bytes(SECRET)
    _match_manifest_to(store, vid, SECRET)
    _replace(store.local(vid, "data"), lambda p: p.symlink_to(outside))


def _payload_dir_link_outside(store: Store, vid: str, tmp_path: Path) -> None:
    outside = tmp_path / "outside-dir"
    outside.mkdir()
    (outside / "data").write_bytes(SECRET)
    _match_manifest_to(store, vid, SECRET)
    _replace(store.local(vid), lambda p: p.symlink_to(outside, target_is_directory=True))


def _payload_longer(store: Store, vid: str, tmp_path: Path) -> None:
    os.truncate(store.local(vid, "data"), len(NEW) + (64 << 20))  # a sparse tail of zeros


def _manifest_fifo(store: Store, vid: str, tmp_path: Path) -> None:
    _replace(store.local(vid + MANIFEST), os.mkfifo)


def _manifest_dev_zero(store: Store, vid: str, tmp_path: Path) -> None:
    _replace(store.local(vid + MANIFEST), lambda p: p.symlink_to("/dev/zero"))


PAYLOAD_SPECIAL = [
    pytest.param(_payload_fifo, id="payload-fifo"),
    pytest.param(_payload_dev_zero, id="payload-link-to-dev-zero"),
    pytest.param(_payload_link_outside, id="payload-link-to-matching-file-outside"),
    pytest.param(_payload_dir_link_outside, id="payload-dir-link-to-matching-dir-outside"),
    pytest.param(_payload_longer, id="payload-longer-than-manifest"),
]
MANIFEST_SPECIAL = [
    pytest.param(_manifest_fifo, id="manifest-fifo"),
    pytest.param(_manifest_dev_zero, id="manifest-link-to-dev-zero"),
]


@pytest.mark.timeout(150)
@pytest.mark.parametrize("damage", PAYLOAD_SPECIAL)
def test_special_payload_file_falls_back_without_hanging(local_store, damage, tmp_path):
    _good, bad = _bytes_versions(local_store)
    damage(local_store, bad, tmp_path)
    _assert_bytes_fallback(_run_reader(local_store, tmp_path, "read", "read_with", "restore"), bad)


@pytest.mark.timeout(150)
@pytest.mark.parametrize("damage", MANIFEST_SPECIAL)
def test_special_manifest_falls_back_without_hanging(local_store, damage, tmp_path):
    good, bad = _bytes_versions(local_store)
    damage(local_store, bad, tmp_path)
    outcomes = _run_reader(local_store, tmp_path, "read", "read_with", "restore", "latest")
    _assert_bytes_fallback(outcomes, bad)
    _assert_fell_back(outcomes["latest"], bad, good)
    versions = _run_reader(local_store, tmp_path, "versions")["versions"]
    _assert_fell_back(versions, bad, [good])


@pytest.mark.timeout(150)
@pytest.mark.parametrize("rel", ["state.txt", "sub/new.bin"])
def test_special_file_in_a_dir_version_restores_exactly_the_previous_tree(
    local_store, rel, tmp_path
):
    _good, bad = _dir_versions(local_store, tmp_path)
    _replace(local_store.local(bad, *rel.split("/")), os.mkfifo)
    outcome = _run_reader(local_store, tmp_path, "restore")["restore"]
    _assert_fell_back(outcome, bad, _as_child_tree(OLD_TREE))


@pytest.mark.timeout(150)
def test_only_version_special_payload_is_corrupt_error(local_store, tmp_path):
    only = local_store.open().write(OLD).id  # type: ignore[union-attr]
    _payload_fifo(local_store, only, tmp_path)
    outcome = _run_reader(local_store, tmp_path, "read")["read"]
    assert "CheckpointCorruptError" in outcome["error_mro"], outcome["error"]
    assert only in outcome["error"]


# ------------------------------------------------------------------------------- parse_manifest
VID = "0001-000002"


def _doc(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "taskpoint_manifest": 1,
        "id": VID,
        "attempt": 1,
        "seq": 2,
        "kind": "dir",
        "step": None,
        "metadata": {},
        "created": "2026-01-01T00:00:00+00:00",
        "files": [_entry("a", b"x")],
        "dirs": [],
        "links": {},
    }
    doc.update(overrides)
    return doc


def _raw(**overrides: Any) -> bytes:
    return _dumps(_doc(**overrides))


def _nested(depth: int) -> bytes:
    """A manifest whose metadata nests ``depth`` levels (the metadata object is level 1)."""
    inner = b"[" * (depth - 1) + b"]" * (depth - 1)
    return _raw(metadata={"m": "@"}).replace(b'"@"', inner)


REFUSED = [
    pytest.param(_raw(files=[_entry("a", b"x"), _entry("a/b", b"y")]), "under 'a'", id="a+a/b"),
    pytest.param(_raw(dirs=["a"]), "both a directory and a file", id="file-and-dir"),
    pytest.param(_raw(files=[], links={"l": "x"}, dirs=["l"]), "both", id="link-and-dir"),
    pytest.param(_raw(dirs=["a/d/e"]), "which is a file", id="dir-under-file"),
    pytest.param(_raw(links={"l": "a"}, dirs=["l/d"]), "which is a symlink", id="dir-under-link"),
    pytest.param(
        _raw(links={"l": "a"}, files=[_entry("a", b"x"), _entry("l/f", b"y")]),
        "which is a symlink",
        id="file-under-link",
    ),
    pytest.param(_raw(files=[_entry("a", b"x")] * 2), "twice", id="file-twice"),
    pytest.param(_raw(created="0001-01-01T00:00:00+14:00"), "created", id="created-year-1"),
    pytest.param(_raw(created="9999-12-31T23:59:59-14:00"), "created", id="created-9999"),
    pytest.param(_raw(created="not a date"), "created", id="created-garbage"),
    pytest.param(_raw(created=17), "created", id="created-int"),
    pytest.param(_nested(100_000), "nested deeper", id="depth-100000"),
    pytest.param(_nested(65), "nested deeper", id="depth-65"),
    pytest.param(b"[" * 100_000, "unbalanced", id="unclosed-100000"),
    pytest.param(
        _raw(files=[_entry("n" * 256, b"x")]), "longer than the filesystem", id="name-256"
    ),
    pytest.param(
        _raw(files=[_entry("/".join(["d" * 100] * 41), b"x")]), "longer than", id="path-4100"
    ),
    pytest.param(_raw(files=[], links={"l": "a/" * 2100}), "longer than", id="link-target-long"),
    pytest.param(_raw(files=[_entry("\ud800", b"x")]), "not a valid file name", id="surrogate"),
    pytest.param(b" " * (MAX_MANIFEST_BYTES + 1), "larger than", id="over-the-bound"),
    pytest.param(_raw(attempt=True), "'attempt'", id="attempt-bool"),
    pytest.param(_raw(attempt="1"), "'attempt'", id="attempt-str"),
    pytest.param(_raw(seq=2.0), "'seq'", id="seq-float"),
    pytest.param(_raw(id=2), "'id'", id="id-int"),
    pytest.param(_raw(step=True), "'step'", id="step-bool"),
    pytest.param(_raw(metadata=[]), "'metadata'", id="metadata-list"),
    pytest.param(_raw(files={"a": 1}), "'files'", id="files-object"),
    pytest.param(_raw(files=["a"]), "file entry", id="file-entry-string"),
    pytest.param(_raw(files=[{"path": "a"}]), "size", id="file-entry-no-size"),
    pytest.param(_raw(files=[{"path": "a", "size": 1, "crc32c": 1 << 40}]), "checksum", id="crc"),
    pytest.param(_raw(files=[{"path": "a", "size": -1, "crc32c": 0}]), "size", id="size-neg"),
    pytest.param(_raw(files=[{"path": "a", "size": 1 << 70, "crc32c": 0}]), "size", id="size-big"),
    pytest.param(_raw(dirs=[["d"]]), "path", id="dir-list"),
    pytest.param(_raw(dirs={}), "'dirs'", id="dirs-object"),
    pytest.param(_raw(links=[]), "'links'", id="links-list"),
    pytest.param(_raw(links={"l": 3}), "target", id="link-target-int"),
    pytest.param(_raw(kind=["dir"]), "'kind'", id="kind-list"),
    pytest.param(
        _raw().replace(b'"step": null', b'"step": ' + b"9" * 5000), "not valid JSON", id="int-5000"
    ),
    pytest.param(b"\xff\xfe{}", "UTF-8", id="not-utf8"),
    pytest.param(_raw()[:-1], "JSON", id="truncated"),
    pytest.param(b"null", "not a taskpoint manifest", id="null"),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("raw", "reason"), REFUSED)
def test_parse_manifest_refuses_with_a_reason(raw, reason):
    with pytest.raises(ManifestError, match=reason) as refused:
        parse_manifest(raw, VID)
    assert len(str(refused.value)) < 400, "a warning must stay readable"


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(_raw(dirs=["d", "d", "d/e"]), id="dir-listed-twice"),
        pytest.param(_nested(64), id="metadata-64-deep"),
        pytest.param(_raw(created="2026-01-01T00:00:00"), id="created-naive"),
        pytest.param(_raw(files=[_entry("n" * 255, b"x")]), id="name-255"),
        pytest.param(_raw(files=[_entry("/".join(["d" * 127] * 32), b"x")]), id="path-4095"),
        pytest.param(_raw(files=[_entry("caf\udce9", b"x")]), id="non-utf8-name-from-disk"),
        pytest.param(
            _raw(files=[_entry('[[["{', b"x")], metadata={"k": "]]]" * 50, '\\"[': "[" * 80}),
            id="brackets-quotes-backslashes-in-strings",
        ),
        pytest.param(
            _raw(links={"l": "a"}, files=[_entry("a", b"x"), _entry("l2", b"y")]),
            id="link-and-sibling-with-its-prefix",
        ),
        pytest.param(
            _raw(files=[_entry("a", b"x"), _entry("a.b/c", b"y"), _entry("a-b", b"z")]),
            id="names-sorting-around-a-file",
        ),
    ],
)
def test_parse_manifest_accepts_honest_edge_cases(raw):
    version = parse_manifest(raw, VID).to_version()
    assert version.created.timestamp() > 0 and version.created.isoformat()
    json.dumps(version.metadata)  # re-serialising never recurses too deep


def test_dumps_is_unchanged_and_round_trips():
    from datetime import UTC, datetime

    manifest = Manifest(
        VID,
        1,
        2,
        "dir",
        7,
        {"lr": 0.1},
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        [FileEntry("d/a.bin", 3, 42)],
        ["e"],
        {"l": "d/a.bin"},
    )
    raw = manifest.dumps()
    assert raw == (
        b'{"attempt":1,"created":"2026-01-02T03:04:05+00:00","dirs":["e"],'
        b'"files":[{"crc32c":42,"path":"d/a.bin","size":3}],"id":"0001-000002","kind":"dir",'
        b'"links":{"l":"d/a.bin"},"metadata":{"lr":0.1},"seq":2,"step":7,"taskpoint_manifest":1}'
    )
    assert parse_manifest(raw, VID) == manifest


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'"\\' * (4 << 20), id="unterminated-escapes"),
        pytest.param(b'"' * (8 << 20), id="quotes"),
        pytest.param(b'["[",[],' * (1 << 20) + b"0]", id="strings-between-brackets"),
        pytest.param(b"[]," * (3 << 20), id="many-containers"),
    ],
)
def test_hostile_json_shapes_are_refused_in_linear_time(raw):
    with pytest.raises(ManifestError):
        parse_manifest(raw, VID)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=12,
)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    field=st.sampled_from(sorted(_doc())),
    value=_JSON,
    cut=st.integers(min_value=0, max_value=400),
    flip=st.binary(max_size=3),
)
def test_parse_manifest_raises_nothing_but_manifest_error(field, value, cut, flip):
    doc = _doc(files=[_entry("a", b"x"), _entry("d/b", b"y")], dirs=["d"], links={"l": "a"})
    doc[field] = value
    for raw in (_dumps(doc), _dumps(_doc())[:cut] + flip + _dumps(_doc())[cut:]):
        try:
            manifest = parse_manifest(raw, VID)
        except ManifestError:
            continue
        version = manifest.to_version()
        version.created.timestamp()
        json.dumps(version.metadata)
