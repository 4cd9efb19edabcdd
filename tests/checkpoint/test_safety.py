"""Restore never writes outside its target, whatever a (hand-crafted) manifest says.

Each test plants a hostile version straight into the store layout on top of an honest one, then
restores into a target deep inside a sandbox and checks that nothing outside the target changed,
that no restored link resolves outside it, and that the hostile version was not used.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from taskpoint import CheckpointError
from taskpoint.checkpoint import CheckpointWarning

BAD = "0001-000002"


def _snapshot(root: Path, skip: Path) -> dict[str, Any]:
    """Everything under ``root`` except ``skip``: files by hash, links by target, dirs."""
    out: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == skip or skip in Path(dirpath).parents:
            continue
        for name in dirnames + filenames:
            full = Path(dirpath, name)
            if full == skip:
                continue
            if full.is_symlink():
                out[str(full)] = ("link", os.readlink(full))
            elif full.is_dir():
                out[str(full)] = "dir"
            else:
                out[str(full)] = hashlib.sha256(full.read_bytes()).hexdigest()
    return out


def _assert_contained(target: Path) -> None:
    real = os.path.realpath(target)
    for dirpath, dirnames, filenames in os.walk(target):
        for name in dirnames + filenames:
            resolved = os.path.realpath(os.path.join(dirpath, name))
            assert os.path.commonpath([resolved, real]) == real, (
                f"{os.path.join(dirpath, name)} resolves outside the target: {resolved}"
            )


@pytest.fixture
def sandbox(tmp_path: Path) -> tuple[Path, Path]:
    """(sandbox root, restore target 3 levels below it): '../../..' from the target stays inside."""
    root = tmp_path / "sandbox"
    target = root / "a" / "b" / "target"
    target.parent.mkdir(parents=True)
    (root / "a" / "precious.txt").write_bytes(b"do not touch")
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_bytes(b"root:x:0:0")
    return root, target


def _honest_version(backend, tmp_path: Path) -> None:
    src = tmp_path / "honest"
    src.mkdir()
    (src / "good.txt").write_bytes(b"good")
    backend.open().save(src)


HOSTILE = [
    pytest.param({"files": {"../../../evil.txt": b"pwned"}}, id="dotdot-file"),
    pytest.param({"files": {"sub/../../escape.txt": b"pwned"}}, id="inner-dotdot-file"),
    pytest.param({"files": {"/tmp/evil-abs.txt": b"pwned"}}, id="absolute-file"),
    pytest.param({"files": {"C:/evil.txt": b"pwned"}}, id="drive-letter"),
    pytest.param({"files": {"a\\..\\..\\evil.txt": b"pwned"}}, id="backslashes"),
    pytest.param({"files": {"./x": b"pwned"}}, id="dot-component"),
    pytest.param({"files": {"ok.txt": b"x"}, "dirs": ["../../../evil-dir"]}, id="dotdot-dir"),
    pytest.param({"files": {"ok.txt": b"x"}, "dirs": ["/tmp/evil-dir"]}, id="absolute-dir"),
    pytest.param({"files": {}, "links": {"etc": "../../../etc"}}, id="link-dotdot"),
    pytest.param({"files": {}, "links": {"etc": "/etc"}}, id="link-absolute"),
    pytest.param({"files": {}, "links": {"d/up": "../../x"}}, id="nested-link-dotdot"),
    pytest.param({"files": {}, "links": {"../evil-link": "x"}}, id="link-path-dotdot"),
    pytest.param(
        # a file written *through* a symlink: the link would have to exist first to escape
        {"files": {"out/passwd": b"pwned"}, "links": {"out": "."}},
        id="file-through-link",
    ),
    pytest.param(
        {"files": {"ok.txt": b"x"}, "dirs": ["out/deeper"], "links": {"out": "."}},
        id="dir-through-link",
    ),
    pytest.param(
        # each link is lexically "inside", but l2 follows l1 up and then climbs once more
        {"files": {}, "dirs": ["d"], "links": {"d/l1": "..", "l2": "d/l1/.."}},
        id="link-chain-escape",
    ),
    pytest.param(
        {"files": {}, "dirs": ["d"], "links": {"d/l1": "..", "l2": "d/l1/../../../etc"}},
        id="link-chain-to-etc",
    ),
]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_manifest_never_writes_outside_the_target(backend, hostile, sandbox, tmp_path):
    _root, target = sandbox
    _honest_version(backend, tmp_path)
    backend.plant_version(
        BAD, hostile["files"], dirs=hostile.get("dirs"), links=hostile.get("links")
    )
    before = _snapshot(tmp_path, skip=target)
    cp = backend.open(attempt=2)
    with pytest.warns(CheckpointWarning, match=BAD):
        out = cp.restore(target)
    # the hostile version is skipped (like a corrupt one) and the honest one is used instead
    assert out == target
    assert sorted(p.name for p in target.iterdir()) == ["good.txt"]
    assert (target / "good.txt").read_bytes() == b"good"
    _assert_contained(target)
    assert _snapshot(tmp_path, skip=target) == before, "something outside the target changed"
    assert not Path("/tmp/evil-abs.txt").exists()
    assert not Path("/tmp/evil-dir").exists()


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_manifest_alone_is_an_error_not_a_silent_restore(backend, hostile, sandbox):
    root, target = sandbox
    backend.plant_version(
        BAD, hostile["files"], dirs=hostile.get("dirs"), links=hostile.get("links")
    )
    before = _snapshot(root, skip=target)
    cp = backend.open(attempt=2)
    with pytest.warns(CheckpointWarning), pytest.raises(CheckpointError, match=BAD):
        cp.restore(target)
    assert not target.exists() or not any(target.iterdir())
    assert _snapshot(root, skip=target) == before


def test_read_never_follows_a_hostile_bytes_path(backend, tmp_path):
    """read() of a bytes version whose file path climbs out of its prefix must not read it."""
    backend.open().write(b"honest bytes")
    # a secret that '<scope>/v/0001-000002/../../secret' would reach on a naive store
    secret = b"secret next to the scope"
    backend.fs.pipe_file(f"{backend.root}/secret", secret)
    backend.plant_version(
        BAD,
        {},
        kind="bytes",
        manifest_files=[{"path": "../../secret", "size": len(secret), "crc32c": 0}],
    )
    with pytest.warns(CheckpointWarning, match=BAD):
        assert backend.open(attempt=2).read() == b"honest bytes"


def test_honest_inner_links_are_restored_and_stay_inside(backend, tmp_path):
    backend.plant_version(
        "0001-000001",
        {"d/real.txt": b"real", "top.txt": b"top"},
        dirs=["d", "e"],
        links={"d/to-top": "../top.txt", "l": "d", "d/self": ".", "e/back": "../d/real.txt"},
    )
    target = tmp_path / "out"
    backend.open().restore(target)
    _assert_contained(target)
    assert (target / "d" / "to-top").read_bytes() == b"top"
    assert (target / "l" / "real.txt").read_bytes() == b"real"
    assert (target / "e" / "back").read_bytes() == b"real"
    assert os.readlink(target / "d" / "self") == "."


# ----------------------------------------------------------------------------- saving


def test_saving_a_directory_with_a_link_out_of_it_fails(backend, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"outside")
    src = tmp_path / "state"
    (src / "sub").mkdir(parents=True)
    (src / "ok.txt").write_bytes(b"ok")
    (src / "sub" / "leak").symlink_to("../../outside.txt")
    cp = backend.open()
    with pytest.raises(CheckpointError, match="leak"):
        cp.save(src)
    with pytest.raises(CheckpointError, match="leak"):
        cp.save(src, blocking=False)
    assert cp.latest() is None


def test_saving_a_directory_with_an_absolute_link_fails_even_if_inside(backend, tmp_path):
    src = tmp_path / "state"
    src.mkdir()
    (src / "ok.txt").write_bytes(b"ok")
    (src / "abs").symlink_to(src / "ok.txt")
    cp = backend.open()
    with pytest.raises(CheckpointError, match="abs"):
        cp.save(src)
    assert cp.latest() is None


def test_saving_a_directory_with_a_link_chain_out_of_it_fails(backend, tmp_path):
    src = tmp_path / "state"
    (src / "d").mkdir(parents=True)
    (src / "d" / "l1").symlink_to("..")
    (src / "l2").symlink_to("d/l1/..")  # resolves to tmp_path: outside
    cp = backend.open()
    with pytest.raises(CheckpointError, match="l2"):
        cp.save(src)


def test_nothing_in_a_checkpoint_is_unpickled_or_executed(backend, tmp_path):
    """A pickle that would run code on load is returned as plain bytes, never loaded."""
    import pickle

    marker = tmp_path / "executed"

    class Boom:
        def __reduce__(self):
            return (Path.touch, (marker,))

    evil = pickle.dumps(Boom())
    cp = backend.open()
    cp.write(evil, metadata={"__reduce__": "os.system"})
    assert cp.read() == evil
    cp.restore(tmp_path / "out")
    cp.versions()
    assert not marker.exists()
