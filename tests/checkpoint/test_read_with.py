"""``Checkpoint.read_with``: a version streamed into the caller's buffers, returned only once
verified; damage makes it run again on the previous version; large writes (O_DIRECT where the
filesystem allows it) read back bit for bit, aligned or not."""

from __future__ import annotations

import mmap
import os

import pytest

from taskpoint import Checkpoint, CheckpointCorruptError, CheckpointError
from taskpoint.checkpoint import CheckpointWarning, localio


def _fill_all(reader) -> bytes:
    buffer = bytearray(reader.size)
    assert reader.readinto(buffer) == reader.size
    return bytes(buffer)


def _flip(backend, vid: str) -> None:
    data = backend.cat(vid, "data")
    backend.flip_byte(vid, "data", offset=len(data) // 2)


def test_read_with_streams_the_latest_version_into_the_callers_buffer(backend):
    cp = backend.open()
    assert cp.read_with(_fill_all) is None
    cp.write(b"old" * 1000)
    cp.write(b"new" * 300_000)
    assert cp.read_with(_fill_all) == b"new" * 300_000
    # a fill that reads only a prefix: the rest is read and verified after it returns
    assert cp.read_with(lambda r: r.read(6)) == b"newnew"


def test_a_damaged_version_reruns_fill_on_the_previous_one(backend):
    cp = backend.open()
    cp.write(b"good" * 100_000)
    bad = cp.write(b"evil" * 100_000)
    _flip(backend, bad.id)
    seen = []

    def fill(reader):
        data = _fill_all(reader)
        seen.append(data[:4])
        return data

    with pytest.warns(CheckpointWarning):
        assert backend.open(attempt=2).read_with(fill) == b"good" * 100_000
    assert seen[-1] == b"good"


def test_an_error_of_fill_on_an_intact_version_is_raised_as_it_is(backend):
    cp = backend.open()
    cp.write(b"x" * 1000)

    def fill(reader):
        reader.read(10)
        raise ValueError("not my format")

    with pytest.raises(ValueError, match="not my format"):
        cp.read_with(fill)


def test_an_error_of_fill_on_a_damaged_version_counts_as_damage(backend):
    cp = backend.open()
    cp.write(b"good" * 100_000)
    bad = cp.write(b"evil" * 100_000)
    _flip(backend, bad.id)

    def fill(reader):
        head = reader.read(4)
        if head != b"good":
            raise ValueError("unexpected header")  # what damage may look like to a parser
        return head

    with pytest.warns(CheckpointWarning):
        assert backend.open(attempt=2).read_with(fill) == b"good"
    only = backend.open(attempt=3, keep=1)
    only.write(b"evil" * 100_000)
    _flip(backend, only.latest().id)
    with pytest.warns(CheckpointWarning), pytest.raises(CheckpointCorruptError):
        backend.open(attempt=4).read_with(fill)


def test_read_with_refuses_a_directory_version(backend, tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"1")
    cp = backend.open()
    cp.save(tmp_path / "d")
    with pytest.raises(CheckpointError, match="directory"):
        cp.read_with(_fill_all)


@pytest.mark.parametrize("offset", [0, 7])
@pytest.mark.parametrize("size", [localio.DIRECT_MIN, localio.DIRECT_MIN + 4097, 40 << 20])
def test_large_writes_read_back_bit_for_bit(tmp_path, size, offset):
    """Page-aligned buffers (written straight with O_DIRECT) and unaligned or read-only ones
    (through the bounce buffer), each with a tail that is not a whole block."""
    data = os.urandom(size + offset)
    aligned = mmap.mmap(-1, size + offset)
    aligned[:] = data
    with Checkpoint.open(tmp_path / "ckpt") as cp:
        for source in (memoryview(aligned)[offset:], data[offset:], bytearray(data)[offset:]):
            cp.write(source)
            assert cp.read() == data[offset:]
            cp.write(source, blocking=False, copy=False).result()
            assert cp.read_with(_fill_all) == data[offset:]
