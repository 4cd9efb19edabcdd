"""The on-disk layout of a `TorchCheckpointer` version: JSON header + raw tensor bytes, no pickle.

One checkpoint version is one blob in the integrations' envelope (see ``_toolkit``)::

    b"TPTORCH1"                 8 bytes magic
    header length               8 bytes, little-endian unsigned
    header                      UTF-8 JSON
    padding                     zero bytes up to a multiple of 64
    data region                 each tensor's raw bytes at a 64-byte aligned offset

The header is ``{"format": 1, "tensors": [[dtype, shape, offset, nbytes], ...], "state": ...}``
where ``state`` is the state tree in a tagged JSON form: JSON scalars and lists as themselves,
dicts with plain string keys as objects, and everything else as a one-key tag object:
``{"$t": i}`` tensor *i*, ``{"$nd": i}`` NumPy array stored as tensor *i*, ``{"$tuple": [...]}``,
``{"$dict": [[key, value], ...]}`` (non-string keys), ``{"$odict": [...], "$meta": ...}``
(an ``OrderedDict`` and its ``_metadata``, as in ``Module.state_dict()``), ``{"$float": "nan"}``,
``{"$bytes": base64}``, ``{"$np": [dtype, value]}`` (NumPy scalar), ``{"$dtype": name}``.
Floats are written with ``repr`` precision, so every value round-trips exactly. Decoding builds
only these data types: nothing in a checkpoint is executed or unpickled.
"""

from __future__ import annotations

import base64
import math
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import torch

from taskpoint.errors import CheckpointError
from taskpoint.integrations import _toolkit as kit

MAGIC = b"TPTORCH1"
FORMAT = 1
ALIGN = kit.ALIGN
WHAT = "a torch training state written by TorchCheckpointer or LightningCheckpointer"
align = kit.align


@dataclass
class Encoded:
    """A state tree split into a JSON-able skeleton and the tensors it refers to by index."""

    skeleton: Any = None
    tensors: list[torch.Tensor] = field(default_factory=list)


def encode(state: Any) -> Encoded:
    """Split ``state`` into skeleton + tensors; raise `TypeError` naming any unsupported value."""
    out = Encoded()
    out.skeleton = _encode(state, out.tensors, "state")
    return out


def _encode(value: Any, tensors: list[torch.Tensor], path: str) -> Any:
    if value is None or isinstance(value, bool | str):
        return value
    if type(value) is int:
        return value
    if type(value) is float:
        return value if math.isfinite(value) else {"$float": repr(value)}
    if isinstance(value, torch.Tensor):
        tensors.append(_check_tensor(value, path))
        return {"$t": len(tensors) - 1}
    if isinstance(value, torch.dtype):
        return {"$dtype": dtype_name(value)}
    if isinstance(value, bytes | bytearray):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, list):
        return [_encode(v, tensors, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return {"$tuple": [_encode(v, tensors, f"{path}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, dict):
        return _encode_dict(value, tensors, path)
    encoded = _encode_numpy(value, tensors)
    if encoded is not None:
        return encoded
    raise TypeError(
        f"cannot checkpoint {path}: values of type {type(value).__module__}."
        f"{type(value).__qualname__} are not supported (supported: tensors, NumPy arrays and "
        "scalars, None, bool, int, float, str, bytes, list, tuple, dict); keep such objects out "
        "of state_dict() or convert them to one of these types"
    )


def _encode_dict(value: dict, tensors: list[torch.Tensor], path: str) -> Any:
    items = [(k, _encode(v, tensors, f"{path}[{k!r}]")) for k, v in value.items()]
    if isinstance(value, OrderedDict):
        pairs = [[_encode(k, tensors, path), v] for k, v in items]
        tagged: dict[str, Any] = {"$odict": pairs}
        meta = getattr(value, "_metadata", None)
        if meta is not None:
            tagged["$meta"] = _encode(meta, tensors, f"{path}._metadata")
        return tagged
    if all(type(k) is str and not k.startswith("$") for k, _ in items):
        return dict(items)
    return {"$dict": [[_encode(k, tensors, path), v] for k, v in items]}


def _encode_numpy(value: Any, tensors: list[torch.Tensor]) -> Any:
    module = type(value).__module__
    if not module.startswith("numpy"):
        return None
    import numpy as np

    if isinstance(value, np.ndarray) and value.dtype.kind in "biufc":
        # Stored as raw bytes so every NumPy dtype works (torch lacks some, e.g. uint32 ops).
        raw = np.ascontiguousarray(value).reshape(-1).view(np.uint8)
        tensors.append(torch.from_numpy(raw))
        return {"$nd": len(tensors) - 1, "dtype": value.dtype.str, "shape": list(value.shape)}
    if isinstance(value, np.generic) and value.dtype.kind in "biufc":
        return {"$np": [value.dtype.str, _encode(value.item(), tensors, "")]}
    return None


def _check_tensor(t: torch.Tensor, path: str) -> torch.Tensor:
    if t.layout != torch.strided or t.is_quantized or t.is_nested or t.is_meta:
        raise TypeError(
            f"cannot checkpoint {path}: only dense (strided) tensors with storage are supported, "
            f"got layout={t.layout}, quantized={t.is_quantized}, meta={t.is_meta}"
        )
    return t


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def dtype_from_name(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None) if name.isidentifier() else None
    if not isinstance(dtype, torch.dtype):
        raise CheckpointError(f"torch checkpoint names an unknown dtype {name!r}")
    return dtype


# ---------------------------------------------------------------------------------- layout
@dataclass
class Layout:
    """Where each tensor goes: the encoded header and the byte range of every tensor."""

    header: bytes
    data_start: int
    entries: list[tuple[int, int]]  # (offset in the data region, nbytes) per tensor
    total: int


def plan(encoded: Encoded) -> Layout:
    """Compute the header and tensor offsets (from shapes and dtypes only: no data is read)."""
    specs, entries, offset, end = [], [], 0, 0
    for t in encoded.tensors:
        nbytes = t.numel() * t.element_size()
        specs.append([dtype_name(t.dtype), list(t.shape), offset, nbytes])
        entries.append((offset, nbytes))
        end = offset + nbytes
        offset = align(end)
    header = kit.dump_header({"format": FORMAT, "tensors": specs, "state": encoded.skeleton})
    data_start = align(kit.PREFIX_SIZE + len(header))
    return Layout(header, data_start, entries, data_start + end)


def write_header(view: memoryview, layout: Layout) -> None:
    """Write magic, header length, header and zero padding at the start of ``view``."""
    head = kit.pack(MAGIC, layout.header)
    n = len(head)
    view[:n] = head
    view[n : layout.data_start] = bytes(layout.data_start - n)


# ---------------------------------------------------------------------------------- reading
PREFIX_SIZE = kit.PREFIX_SIZE


def parse(blob: bytes | memoryview, where: str) -> tuple[dict[str, Any], int]:
    """Return the header dict and the data-region start of a blob, validating its bounds."""
    size = header_size(blob, where)
    if PREFIX_SIZE + size > len(blob):
        raise CheckpointError(f"torch checkpoint at {where}: the header lies outside the blob")
    return parse_header(blob[PREFIX_SIZE : PREFIX_SIZE + size], len(blob), where)


def header_size(prefix: bytes | memoryview, where: str) -> int:
    """The JSON header's length, from the blob's first `PREFIX_SIZE` bytes."""
    return kit.header_size(prefix, MAGIC, WHAT, where)


def parse_header(raw: bytes | memoryview, total: int, where: str) -> tuple[dict[str, Any], int]:
    """Parse the JSON header of a blob of ``total`` bytes; return it and the data-region start."""
    end = PREFIX_SIZE + len(raw)
    header = kit.load_header(raw, WHAT, where)
    if header.get("format") != FORMAT:
        raise CheckpointError(
            f"torch checkpoint at {where} has format {header.get('format')!r}; this taskpoint "
            f"reads format {FORMAT}: upgrade taskpoint"
        )
    data_start = align(end)
    if end > total:
        raise CheckpointError(f"torch checkpoint at {where}: the header lies outside the blob")
    for _, _, offset, nbytes in header["tensors"]:
        if offset < 0 or nbytes < 0 or data_start + offset + nbytes > total:
            raise CheckpointError(f"torch checkpoint at {where}: a tensor lies outside the blob")
    return header, data_start


def tensor_views(blob: bytes | memoryview, header: dict[str, Any], data_start: int) -> list:
    """Read-only CPU tensors viewing the blob (no copy); clone before handing out ownership."""
    views = []
    for name, shape, offset, nbytes in header["tensors"]:
        dtype = dtype_from_name(name)
        if nbytes == 0:
            views.append(torch.empty(shape, dtype=dtype))
            continue
        with warnings.catch_warnings():  # bytes are read-only; we only ever read these views
            warnings.simplefilter("ignore", UserWarning)
            raw = torch.frombuffer(
                blob, dtype=torch.uint8, count=nbytes, offset=data_start + offset
            )
        views.append(raw.view(dtype).view(shape))
    return views


def decode(skeleton: Any, tensors: list[torch.Tensor], *, clone: bool) -> Any:
    """Rebuild the state tree; with ``clone`` every tensor is a fresh, writable copy."""
    if isinstance(skeleton, list):
        return [decode(v, tensors, clone=clone) for v in skeleton]
    if not isinstance(skeleton, dict):
        return skeleton
    if not any(k.startswith("$") for k in skeleton):
        return {k: decode(v, tensors, clone=clone) for k, v in skeleton.items()}
    return _decode_tag(skeleton, tensors, clone)


def _decode_tag(tag: dict[str, Any], tensors: list[torch.Tensor], clone: bool) -> Any:
    if "$t" in tag:
        t = tensors[tag["$t"]]
        return t.clone() if clone else t
    if "$nd" in tag:
        import numpy as np

        raw = tensors[tag["$nd"]].numpy()
        return raw.view(np.dtype(tag["dtype"])).reshape(tag["shape"]).copy()
    if "$tuple" in tag:
        return tuple(decode(v, tensors, clone=clone) for v in tag["$tuple"])
    if "$dict" in tag:
        return {
            decode(k, tensors, clone=clone): decode(v, tensors, clone=clone)
            for k, v in tag["$dict"]
        }
    if "$odict" in tag:
        result = OrderedDict(
            (decode(k, tensors, clone=clone), decode(v, tensors, clone=clone))
            for k, v in tag["$odict"]
        )
        if "$meta" in tag:
            result._metadata = decode(tag["$meta"], tensors, clone=clone)  # type: ignore[attr-defined]
        return result
    if "$float" in tag:
        return float(tag["$float"])
    if "$bytes" in tag:
        return base64.b64decode(tag["$bytes"])
    if "$dtype" in tag:
        return dtype_from_name(tag["$dtype"])
    if "$np" in tag:
        import numpy as np

        dtype, value = tag["$np"]
        return np.dtype(dtype).type(decode(value, tensors, clone=clone))
    raise CheckpointError(f"torch checkpoint header has an unknown tag {sorted(tag)}")
