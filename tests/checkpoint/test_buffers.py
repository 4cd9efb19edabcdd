"""``write()`` takes any object with the buffer protocol: NumPy arrays, ``mmap``, ``array.array``,
``bytearray``, ``memoryview``. A version holds the buffer's bytes in C order (what
``bytes(memoryview(obj))`` gives); ``copy=False`` writes from the caller's memory without a copy,
and the default async write takes a snapshot before it returns.
"""

from __future__ import annotations

import array
import io
import mmap
from typing import Any

import numpy as np
import pytest

from taskpoint import Checkpoint

BIG = 200_000  # over the inline limit: a payload file


def _arrays() -> list[Any]:
    grid = np.arange(24, dtype=np.float64).reshape(4, 6)
    return [
        pytest.param(lambda: np.arange(10, dtype=np.int32), id="int32"),
        pytest.param(lambda: grid.copy(), id="2d-c-order"),
        pytest.param(lambda: np.asfortranarray(grid), id="2d-fortran-order"),
        pytest.param(lambda: grid[:, ::2], id="strided-slice"),
        pytest.param(lambda: grid.T, id="transposed"),
        pytest.param(lambda: np.arange(6, dtype=">i4"), id="big-endian"),
        pytest.param(lambda: np.zeros(3, dtype=[("a", "<f8"), ("b", "<i2")]), id="structured"),
        pytest.param(lambda: np.array(2.5), id="0-d"),
        pytest.param(lambda: np.arange(4, dtype=np.complex64), id="complex"),
        pytest.param(lambda: np.zeros(0, dtype=np.float32), id="empty"),
        pytest.param(lambda: np.random.default_rng(1).random(BIG // 8 + 3), id="large"),
    ]


@pytest.mark.parametrize("mode", ["sync", "async", "async-no-copy"])
@pytest.mark.parametrize("make", _arrays())
def test_numpy_arrays_read_back_as_their_bytes(backend, make, mode):
    arr = make()
    cp = backend.open()
    result = cp.write(arr, step=1, blocking=mode == "sync", copy=mode != "async-no-copy")
    version = result if mode == "sync" else result.result(30)
    assert version.size == arr.nbytes
    assert cp.read() == arr.tobytes() == bytes(memoryview(arr))
    restored = np.frombuffer(backend.open(attempt=2).read(), dtype=arr.dtype)
    assert np.array_equal(restored.reshape(arr.shape), arr)


@pytest.mark.parametrize("size", [16, BIG], ids=["inline", "payload"])
@pytest.mark.parametrize("blocking", [True, False], ids=["sync", "async"])
def test_array_array_bytearray_and_memoryview(backend, size, blocking):
    cp = backend.open()
    for data in (
        array.array("d", range(size // 8)),
        bytearray(b"b" * size),
        memoryview(bytearray(b"m" * size)),
        memoryview(array.array("i", range(size // 4)))[1:-1],
    ):
        result = cp.write(data, blocking=blocking)
        if not blocking:
            result.result(30)
        assert cp.read() == bytes(memoryview(data))


@pytest.mark.parametrize("size", [16, BIG], ids=["inline", "payload"])
def test_mmap_without_copy_is_written_in_place_and_let_go(backend, tmp_path, size):
    path = tmp_path / "state.bin"
    path.write_bytes(b"\0" * size)
    with open(path, "r+b") as handle:
        mapped = mmap.mmap(handle.fileno(), size)
    mapped[:5] = b"state"
    cp = backend.open()
    future = cp.write(mapped, blocking=False, copy=False)
    assert future.result(30) is not None
    mapped.close()  # the writer let go of the buffer once the write was done
    assert cp.read() == b"state" + b"\0" * (size - 5)

    anonymous = mmap.mmap(-1, size)
    anonymous[-3:] = b"end"
    cp.write(anonymous)  # sync: the buffer is let go when write() returns
    anonymous.close()
    assert cp.read()[-3:] == b"end"


@pytest.mark.parametrize("size", [16, BIG], ids=["inline", "payload"])
def test_copy_false_writes_from_the_callers_memory(backend, hold, size):
    """No snapshot with copy=False: a change made (against the contract) before the writer got
    to it shows in the version, which proves nothing was copied at call time."""
    cp = backend.open()
    gate = hold(cp)
    arr = np.zeros(size, dtype=np.uint8)
    future = cp.write(arr, blocking=False, copy=False)
    arr[:4] = [1, 2, 3, 4]
    gate.release()
    assert future.result(30) is not None
    assert cp.read()[:5] == b"\x01\x02\x03\x04\x00"


@pytest.mark.parametrize("size", [16, BIG], ids=["inline", "payload"])
def test_async_default_takes_a_snapshot_of_any_buffer(backend, hold, size):
    cp = backend.open()
    gate = hold(cp)
    arr = np.zeros(size, dtype=np.uint8)
    future = cp.write(arr, blocking=False)
    arr[:] = 7
    gate.release()
    assert future.result(30) is not None
    assert cp.read() == bytes(size)


@pytest.mark.parametrize("value", [12345, [1, 2], io.BytesIO(b"x"), object()])
def test_objects_without_the_buffer_protocol_are_refused(backend, value):
    cp: Checkpoint = backend.open()
    with pytest.raises(TypeError, match=r"buffer protocol.*save\(\)"):
        cp.write(value)
    assert cp.latest() is None
