"""A damaged latest version is skipped with a warning; if nothing intact is left, it is an error.

Damage is done behind the code's back, straight in the store layout, on every backend.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from taskpoint import CheckpointCorruptError, CheckpointError
from taskpoint.checkpoint import CheckpointWarning

# Damage to payload files: every write here has one (inline versions: test_inline.py).
pytestmark = pytest.mark.usefixtures("payload_files")


def _flip(backend, vid: str, rel: str) -> None:
    data = backend.cat(vid, *rel.split("/"))
    backend.flip_byte(vid, *rel.split("/"), offset=len(data) // 2)


def _truncate(backend, vid: str, rel: str) -> None:
    data = backend.cat(vid, *rel.split("/"))
    backend.pipe(data[: len(data) - 1], vid, *rel.split("/"))


def _remove(backend, vid: str, rel: str) -> None:
    backend.rm(vid, *rel.split("/"))


DAMAGE = [
    pytest.param(_flip, id="flipped-byte"),
    pytest.param(_truncate, id="truncated"),
    pytest.param(_remove, id="missing"),
]


def _tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


@contextmanager
def _no_warnings() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("error", CheckpointWarning)
        yield


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_latest_bytes_version_falls_back_on_read(backend, damage):
    cp = backend.open()
    cp.write(b"good old version" * 1000)
    bad = cp.write(b"newer version that gets damaged" * 1000)
    damage(backend, bad.id, "data")
    reader = backend.open(attempt=2)
    with pytest.warns(CheckpointWarning) as record:
        assert reader.read() == b"good old version" * 1000
    messages = [str(w.message) for w in record]
    assert any(bad.id in m and "data" in m for m in messages), messages


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_latest_file_version_falls_back_on_restore(backend, damage, tmp_path):
    src = tmp_path / "model.bin"
    cp = backend.open()
    src.write_bytes(b"weights v1" * 5000)
    cp.save(src)
    src.write_bytes(b"weights v2" * 5000)
    bad = cp.save(src)
    damage(backend, bad.id, "model.bin")
    with pytest.warns(CheckpointWarning, match=rf"{bad.id}.*model\.bin"):
        out = backend.open(attempt=2).restore(tmp_path / "out")
    assert _tree(out) == {"model.bin": b"weights v1" * 5000}


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_file_inside_latest_directory_version_falls_back(backend, damage, tmp_path):
    src = tmp_path / "state"
    (src / "z-sub").mkdir(parents=True)
    for name in ("a.bin", "b.bin", "z-sub/c.bin"):
        (src / name).write_bytes(f"v1 {name}".encode() * 3000)
    cp = backend.open()
    cp.save(src)
    good = _tree(src)
    for name in ("a.bin", "b.bin", "z-sub/c.bin"):
        (src / name).write_bytes(f"v2 {name}".encode() * 3000)
    (src / "only-in-v2.bin").write_bytes(b"new")
    bad = cp.save(src)
    damage(backend, bad.id, "z-sub/c.bin")  # restored after the others: partial work to undo
    target = tmp_path / "out"
    with pytest.warns(CheckpointWarning, match=rf"{bad.id}.*z-sub/c\.bin"):
        out = backend.open(attempt=2).restore(target)
    assert out == target
    assert _tree(out) == good  # nothing of the damaged version is left behind
    assert {p.name for p in target.iterdir()} == {"a.bin", "b.bin", "z-sub"}


@pytest.mark.parametrize(
    "manifest",
    [
        pytest.param(b"{not json", id="garbage"),
        pytest.param(b"", id="empty"),
        pytest.param(b"\xff\xfe\x00binary", id="binary"),
        pytest.param(b'{"hello": "world"}', id="not-a-manifest"),
        pytest.param(b"[1, 2, 3]", id="json-list"),
    ],
)
def test_garbage_manifest_is_skipped_with_a_warning(backend, manifest, tmp_path):
    cp = backend.open()
    cp.write(b"intact")
    bad = cp.write(b"manifest will be garbage")
    backend.pipe(manifest, bad.id + ".manifest.json")
    reader = backend.open(attempt=2)
    with pytest.warns(CheckpointWarning, match=bad.id):
        assert reader.read() == b"intact"
    with pytest.warns(CheckpointWarning, match=bad.id):
        assert _tree(reader.restore(tmp_path / "out")) == {"data": b"intact"}
    with pytest.warns(CheckpointWarning, match=bad.id):
        assert reader.latest().id == "0001-000001"
    with pytest.warns(CheckpointWarning, match=bad.id):
        assert [v.id for v in reader.versions()] == ["0001-000001"]


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda d: d.update(id="0001-000009"), id="wrong-id"),
        pytest.param(lambda d: d.update(attempt=7), id="wrong-attempt"),
        pytest.param(lambda d: d.pop("files"), id="no-files"),
        pytest.param(lambda d: d.update(kind="pickle"), id="unknown-kind"),
        pytest.param(lambda d: d["files"][0].update(size=-1), id="negative-size"),
        pytest.param(lambda d: d["files"][0].update(crc32c="abc"), id="bad-crc"),
        pytest.param(lambda d: d.update(taskpoint_manifest=99), id="future-format"),
        pytest.param(lambda d: d["files"].append(dict(d["files"][0])), id="duplicate-file"),
    ],
)
def test_inconsistent_manifest_is_skipped_with_a_warning(backend, change: Callable):
    cp = backend.open()
    cp.write(b"intact")
    bad = cp.write(b"newer")
    doc = json.loads(backend.cat(bad.id + ".manifest.json"))
    change(doc)
    backend.pipe(json.dumps(doc).encode(), bad.id + ".manifest.json")
    with pytest.warns(CheckpointWarning, match=bad.id):
        assert backend.open(attempt=2).read() == b"intact"


def test_manifest_checksum_mismatch_is_detected(backend):
    """A payload that matches in size but not in checksum is corrupt (a same-size overwrite)."""
    cp = backend.open()
    cp.write(b"A" * 100)
    bad = cp.write(b"B" * 100)
    backend.pipe(b"C" * 100, bad.id, "data")
    with pytest.warns(CheckpointWarning, match="checksum"):
        assert cp.read() == b"A" * 100


def test_damage_in_an_older_version_does_not_matter(backend, tmp_path):
    cp = backend.open()
    old = cp.write(b"old")
    cp.write(b"new")
    _flip(backend, old.id, "data")
    with _no_warnings():
        assert cp.read() == b"new"
        assert _tree(cp.restore(tmp_path / "out")) == {"data": b"new"}


@pytest.mark.parametrize("damage", DAMAGE)
def test_no_intact_version_raises_corrupt_error_listing_problems(backend, damage, tmp_path):
    cp = backend.open()
    first = cp.write(b"first" * 100)
    second = cp.write(b"second" * 100)
    damage(backend, first.id, "data")
    _flip(backend, second.id, "data")
    reader = backend.open(attempt=2)
    assert reader.prev_exists()
    with pytest.warns(CheckpointWarning), pytest.raises(CheckpointCorruptError) as info:
        reader.read()
    error = info.value
    assert isinstance(error, CheckpointError)
    assert len(error.problems) == 2
    assert any(first.id in p for p in error.problems)
    assert any(second.id in p for p in error.problems)
    assert first.id in str(error) and second.id in str(error) and backend.url in str(error)

    target = tmp_path / "out"
    with pytest.warns(CheckpointWarning), pytest.raises(CheckpointCorruptError):
        reader.restore(target)
    assert not any(target.iterdir())  # no half-restored files left to be mistaken for a state

    before = set(os.listdir(tempfile.gettempdir()))
    with pytest.warns(CheckpointWarning), pytest.raises(CheckpointCorruptError):
        reader.restore()
    leaked = {n for n in set(os.listdir(tempfile.gettempdir())) - before if "restore" in n}
    assert not leaked, f"temp restore dirs left behind: {leaked}"


def test_only_a_garbage_manifest_raises_corrupt_error_not_none(backend):
    backend.pipe(b"{garbage", "0001-000001.manifest.json")
    cp = backend.open()
    assert cp.prev_exists()
    with pytest.warns(CheckpointWarning), pytest.raises(CheckpointCorruptError) as info:
        cp.read()
    assert "0001-000001" in str(info.value)


def test_next_attempt_writes_on_top_of_a_corrupt_version(backend):
    cp = backend.open()
    cp.write(b"good")
    bad = cp.write(b"bad")
    _truncate(backend, bad.id, "data")
    nxt = backend.open(attempt=2)
    with pytest.warns(CheckpointWarning):
        assert nxt.read() == b"good"
    nxt.write(b"fresh")
    with _no_warnings():
        assert nxt.read() == b"fresh"
