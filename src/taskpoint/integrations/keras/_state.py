"""The blob a `KerasCheckpointer` checkpoint version holds, and the RNG states it carries.

One version is one blob in the integrations' envelope (see ``_toolkit``), no pickle::

    b"TPKERAS1"            8 bytes magic
    header length          8 bytes, little-endian unsigned
    header                 UTF-8 JSON: {"meta": {...}, "arrays": [[name, dtype, shape, offset]]}
    data region            each array's raw C-order bytes at a 64-byte aligned offset

Only plain numeric/bool dtypes are accepted when decoding (no object arrays), offsets and sizes
are checked against the blob, and nothing is executed or unpickled.

RNG states (Python ``random``, NumPy's global generator, torch's CPU and, once initialised, CUDA
generators where torch is loaded, and Keras' global ``SeedGenerator`` used by unseeded
``keras.random`` ops) are captured (through ``_toolkit``, with its CUDA policy) as JSON plus
arrays so a resumed attempt draws the same random numbers as an uninterrupted run from the point
of resumption on. The layers' own ``SeedGenerator`` states (seeded or not: the one place JAX keeps
its RNG state) are model variables and travel with them.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from taskpoint.integrations import _toolkit as kit

MAGIC = b"TPKERAS1"
WHAT = "a Keras training state written by KerasCheckpointer"
_KINDS = "biuf"  # bool, signed, unsigned, float: the only dtype kinds a state holds
_align = kit.align


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
    head = kit.pack(MAGIC, kit.dump_header({"meta": meta, "arrays": entries}))
    head += b"\0" * (_align(len(head)) - len(head))
    return b"".join([head, *chunks])


def decode(blob: bytes, where: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Parse a blob written by `encode`; raise `CheckpointError` naming ``where`` if not one."""
    view = memoryview(blob)
    header, end = kit.unpack(view, MAGIC, WHAT, where)
    try:
        base = _align(end)
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
    except (ValueError, KeyError, TypeError) as exc:
        raise kit.refused(WHAT, where, str(exc)) from None


# --------------------------------------------------------------------------------- RNG states


def capture_rng(prefix: str, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Capture the global RNG states: JSON part returned, array parts put in ``arrays``.

    torch's generators are captured when torch is loaded (always on the torch backend; on JAX
    only if something imported it, e.g. a torch ``DataLoader`` as input): a process that never
    loaded torch has drawn nothing from them.
    """
    with_torch = "torch" in sys.modules
    scalars, bulk = kit.rng_parts(kit.capture_rng(torch=with_torch))
    arrays[f"{prefix}/python"] = bulk["python"]
    arrays[f"{prefix}/numpy"] = bulk["numpy"]
    if with_torch:
        arrays[f"{prefix}/torch"] = bulk["torch"].numpy().copy()
    for i, device_state in enumerate(bulk.get("cuda", ())):
        arrays[f"{prefix}/cuda{i}"] = device_state.numpy().copy()
    keras_global = _keras_global_generator(create=False)
    if keras_global is not None:
        value = keras_global.state.value
        arrays[f"{prefix}/keras"] = np.array(_keras_ops().convert_to_numpy(value))
    return {**scalars, "cuda": len(bulk.get("cuda", ())), "keras": keras_global is not None}


def restore_rng(prefix: str, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Put back the global RNG states captured by `capture_rng`.

    A state saved on another backend restores too: Python's and NumPy's are the same, torch's
    is put back where torch is loaded, and Keras' global seed (int32 on torch, uint32 on JAX:
    the same bits) is reinterpreted.
    """
    # First: creating Keras' global generator draws its seed from Python's `random`.
    if meta.get("keras"):
        generator = _keras_global_generator(create=True)
        generator.state.assign(same_bits(arrays[f"{prefix}/keras"], generator.state.dtype))
    else:
        _forget_keras_global_generator()
    bulk: dict[str, Any] = {
        "python": arrays[f"{prefix}/python"],
        "numpy": arrays[f"{prefix}/numpy"],
    }
    if f"{prefix}/torch" in arrays and "torch" in sys.modules:
        import torch

        cuda = int(meta.get("cuda", 0))
        bulk["torch"] = torch.from_numpy(arrays[f"{prefix}/torch"].copy())
        bulk["cuda"] = [torch.from_numpy(arrays[f"{prefix}/cuda{i}"].copy()) for i in range(cuda)]
    kit.restore_rng(kit.rng_whole(meta, bulk))


def same_bits(array: np.ndarray, dtype: str) -> np.ndarray:
    """``array`` as ``dtype`` when only signedness differs (a seed state written on the other
    backend), else a copy unchanged (the caller checks the dtype)."""
    target = np.dtype(dtype)
    kinds = array.dtype.kind + target.kind
    if array.dtype != target and kinds in ("iu", "ui") and array.itemsize == target.itemsize:
        return array.copy().view(target)
    return array.copy()


def _keras_ops() -> Any:
    import keras

    return keras.ops


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
