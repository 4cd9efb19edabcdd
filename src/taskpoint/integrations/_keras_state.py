"""The blob a `TaskpointCallback` checkpoint version holds, and the RNG states it carries.

One version is one blob, no pickle::

    b"TPKERAS1"            8 bytes magic
    header length          8 bytes, little-endian unsigned
    header                 UTF-8 JSON: {"meta": {...}, "arrays": [[name, dtype, shape, offset]]}
    data region            each array's raw C-order bytes at a 64-byte aligned offset

Only plain numeric/bool dtypes are accepted when decoding (no object arrays), offsets and sizes
are checked against the blob, and nothing is executed or unpickled.

RNG states (Python ``random``, NumPy's global generator, torch's CPU and, once initialised, CUDA
generators, and Keras' global ``SeedGenerator`` used by unseeded ``keras.random`` ops) are
captured as JSON plus arrays so a resumed attempt draws the same random numbers as an
uninterrupted run from the point of resumption on.
"""

from __future__ import annotations

import json
import random
import struct
from typing import Any

import numpy as np

from taskpoint.errors import CheckpointError

MAGIC = b"TPKERAS1"
ALIGN = 64
_PREFIX = struct.Struct("<8sQ")
_KINDS = "biuf"  # bool, signed, unsigned, float: the only dtype kinds a state holds


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def encode(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> bytes:
    """Serialise ``meta`` (JSON-able) and named arrays into one blob (copies the arrays)."""
    entries, chunks, offset = [], [], 0
    for name, array in arrays.items():
        array = np.asarray(array, order="C")
        if array.dtype.kind not in _KINDS:
            raise TypeError(f"array {name!r} has dtype {array.dtype}, which is not numeric")
        entries.append([name, array.dtype.str, list(array.shape), offset])
        data = array.tobytes()
        pad = _align(len(data)) - len(data)
        chunks.append(data + b"\0" * pad)
        offset += len(data) + pad
    header = json.dumps({"meta": meta, "arrays": entries}, separators=(",", ":")).encode()
    head = _PREFIX.pack(MAGIC, len(header)) + header
    head += b"\0" * (_align(len(head)) - len(head))
    return b"".join([head, *chunks])


def decode(blob: bytes, where: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Parse a blob written by `encode`; raise `CheckpointError` naming ``where`` if not one."""
    view = memoryview(blob)
    try:
        magic, size = _PREFIX.unpack_from(view)
        if magic != MAGIC:
            raise ValueError(f"it starts with {bytes(view[:8])!r}, not {MAGIC!r}")
        start = _PREFIX.size
        header = json.loads(bytes(view[start : start + size]))
        base = _align(start + size)
        arrays = {}
        for name, dtype_str, shape, offset in header["arrays"]:
            dtype = np.dtype(dtype_str)
            if dtype.kind not in _KINDS:
                raise ValueError(f"array {name!r} has the non-numeric dtype {dtype_str!r}")
            count = int(np.prod(shape, dtype=np.int64))
            begin, end = base + offset, base + offset + count * dtype.itemsize
            if offset < 0 or end > len(view):
                raise ValueError(f"array {name!r} lies outside the blob")
            arrays[name] = np.frombuffer(view[begin:end], dtype=dtype).reshape(shape)
        return header["meta"], arrays
    except (ValueError, KeyError, TypeError, struct.error) as exc:
        raise CheckpointError(
            f"the latest checkpoint at {where} is not a Keras training state written by "
            f"taskpoint's TaskpointCallback ({exc}); use a checkpoint scope of its own for "
            "TaskpointCallback"
        ) from None


# --------------------------------------------------------------------------------- RNG states


def capture_rng(prefix: str, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Capture the global RNG states: JSON part returned, array parts put in ``arrays``."""
    import torch

    version, py_state, gauss = random.getstate()
    arrays[f"{prefix}/python"] = np.asarray(py_state, dtype=np.uint64)
    name, keys, pos, has_gauss, cached = np.random.get_state()
    arrays[f"{prefix}/numpy"] = np.asarray(keys, dtype=np.uint32)
    arrays[f"{prefix}/torch"] = torch.get_rng_state().numpy().copy()
    cuda = 0
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            arrays[f"{prefix}/cuda{i}"] = state.numpy().copy()
            cuda += 1
    keras_global = _keras_global_generator(create=False)
    if keras_global is not None:
        arrays[f"{prefix}/keras"] = keras_global.state.value.detach().cpu().numpy().copy()
    return {
        "python": [version, gauss],
        "numpy": [name, int(pos), int(has_gauss), float(cached)],
        "cuda": cuda,
        "keras": keras_global is not None,
    }


def restore_rng(prefix: str, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Put back the global RNG states captured by `capture_rng`."""
    import torch

    # First: creating Keras' global generator draws its seed from Python's `random`.
    if meta.get("keras"):
        _keras_global_generator(create=True).state.assign(arrays[f"{prefix}/keras"].copy())
    else:
        _forget_keras_global_generator()
    version, gauss = meta["python"]
    py_state = tuple(int(v) for v in arrays[f"{prefix}/python"])
    random.setstate((version, py_state, gauss))
    name, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, arrays[f"{prefix}/numpy"].copy(), pos, has_gauss, cached))
    torch.set_rng_state(torch.from_numpy(arrays[f"{prefix}/torch"].copy()))
    cuda = int(meta.get("cuda", 0))
    if cuda and torch.cuda.is_available() and torch.cuda.device_count() == cuda:
        torch.cuda.set_rng_state_all(
            [torch.from_numpy(arrays[f"{prefix}/cuda{i}"].copy()) for i in range(cuda)]
        )


def _keras_global_generator(create: bool) -> Any:
    """Keras' global SeedGenerator (private Keras API, looked up defensively), or ``None``."""
    try:
        from keras.src.backend.common import global_state
        from keras.src.random import seed_generator
    except ImportError:  # pragma: no cover - a Keras without these internals
        return None
    if create:
        return seed_generator.global_seed_generator()
    return global_state.get_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR)


def _forget_keras_global_generator() -> None:
    try:
        from keras.src.backend.common import global_state
        from keras.src.random import seed_generator
    except ImportError:  # pragma: no cover
        return
    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
