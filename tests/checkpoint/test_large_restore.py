"""Restores of large local payload files: the mapped, in-kernel copy and its fallbacks.

Files of at least ``localio.MAPPED_COPY_MIN`` bytes are copied page cache to page cache while the
checksum reads the source through a mapping; smaller files go through buffers, several pieces
in flight. Each path must give the bytes back exactly and still catch damage.
"""

from __future__ import annotations

import glob
import os
import warnings

import pytest

from taskpoint import Checkpoint, CheckpointCorruptError
from taskpoint.checkpoint import CheckpointWarning, localio

SIZES = [
    localio.MAPPED_COPY_MIN,  # mapped, whole pieces
    localio.MAPPED_COPY_MIN + 12345,  # mapped, a short last piece
    localio.MAPPED_COPY_MIN - 1,  # buffered, several pieces in flight
]


def _payload(size: int) -> bytes:
    block = os.urandom(1 << 20)
    return (block * (size // len(block) + 1))[:size]


def _payload_file(scope: str) -> str:
    (path,) = glob.glob(os.path.join(scope, "v", "*", "data"))
    return path


@pytest.mark.parametrize("size", SIZES)
def test_a_large_version_restores_bit_for_bit(tmp_path, size):
    data = _payload(size)
    with Checkpoint.open(tmp_path / "ckpt", keep=1) as cp:
        cp.write(data)
        restored = cp.restore(tmp_path / "out")
    assert (restored / "data").read_bytes() == data


def test_the_copy_writes_from_the_mapping_where_the_kernel_cannot_copy(tmp_path, monkeypatch):
    """A restore target on another filesystem makes ``copy_file_range`` fail with EXDEV; the
    same bytes must then be written from the mapping."""
    monkeypatch.setattr(localio, "_copy_file_range", False)
    data = _payload(localio.MAPPED_COPY_MIN + 4097)
    with Checkpoint.open(tmp_path / "ckpt", keep=1) as cp:
        cp.write(data)
        restored = cp.restore(tmp_path / "out")
    assert (restored / "data").read_bytes() == data


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damage_in_a_large_latest_version_falls_back_to_the_previous(tmp_path, size, damage):
    older, newer = _payload(size), _payload(size)
    scope = str(tmp_path / "ckpt")
    with Checkpoint.open(scope, keep=2) as cp:
        cp.write(older)
        cp.write(newer)
        latest = os.path.join(scope, "v", cp.latest().id, "data")
        with open(latest, "r+b") as handle:
            if damage == "flip":
                handle.seek(size - 3)  # in the last piece: found only after everything else
                byte = handle.read(1)
                handle.seek(size - 3)
                handle.write(bytes([byte[0] ^ 0x01]))
            else:
                handle.truncate(size // 2)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            restored = cp.restore(tmp_path / "out")
    assert (restored / "data").read_bytes() == older
    assert [w for w in caught if issubclass(w.category, CheckpointWarning)]
    assert sorted(os.listdir(restored)) == ["data"]  # nothing of the damaged attempt left


def test_a_damaged_only_version_raises_and_leaves_no_file(tmp_path):
    size = localio.MAPPED_COPY_MIN
    scope = str(tmp_path / "ckpt")
    with Checkpoint.open(scope, keep=1) as cp:
        cp.write(_payload(size))
        with open(_payload_file(scope), "r+b") as handle:
            handle.seek(size // 2)
            handle.write(b"\0" * 16)
        target = tmp_path / "out"
        with pytest.warns(CheckpointWarning), pytest.raises(CheckpointCorruptError):
            cp.restore(target)
    assert not target.exists() or not any(target.iterdir())
