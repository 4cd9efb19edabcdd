"""Read a torch state version straight into its destination tensors (see ``_state``).

A saved tensor whose dtype and shape match one of the component's own CPU tensors is read from
the checkpoint directly into that tensor's memory, so ``load_state_dict`` afterwards copies
nothing; the rest are read into new tensors, in file order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch

from taskpoint.errors import CheckpointError
from taskpoint.integrations.torch import _format as fmt


class Loaded(NamedTuple):
    """A read version: its skeleton and tensors. ``owned``: each tensor is referenced once and is
    either new or the destination it was read into, so none needs a clone."""

    skeleton: Any
    tensors: list[torch.Tensor]
    owned: bool


def fill(
    reader: Any,
    where: str,
    into: Mapping[str, Mapping[str, torch.Tensor]],
    check: Callable[[Any], None] | None,
) -> Loaded:
    """Parse the header, then read every tensor into its destination, in file order."""
    size = fmt.header_size(reader.read(fmt.PREFIX_SIZE), where)
    if fmt.PREFIX_SIZE + size > reader.size:
        raise CheckpointError(f"torch checkpoint at {where}: the header lies outside the blob")
    header, data_start = fmt.parse_header(reader.read(size), reader.size, where)
    state = header["state"]
    if check is not None:
        check(state)
    specs = [(fmt.dtype_from_name(d), shape, off, n) for d, shape, off, n in header["tensors"]]
    order = sorted(range(len(specs)), key=lambda i: specs[i][2])
    ends = [specs[i][2] + specs[i][3] for i in order]
    if any(specs[b][2] < ends[k] for k, b in enumerate(order[1:])):
        return _fill_overlapping(reader, state, specs, data_start)
    targets = _targets(state, into, specs)
    tensors: list[torch.Tensor] = [None] * len(specs)  # type: ignore[list-item]
    for i in order:
        dtype, shape, offset, nbytes = specs[i]
        tensor = targets.get(i)
        if tensor is None:
            tensor = torch.empty(shape, dtype=dtype)
        tensors[i] = tensor
        if nbytes == 0:
            continue
        gap = data_start + offset - reader.position
        if gap:
            reader.read(gap)
        if reader.readinto(_bytes_of(tensor)) != nbytes:
            raise CheckpointError(f"torch checkpoint at {where}: a tensor lies outside the blob")
    return Loaded(state, tensors, _each_once(state, len(tensors)))


def _fill_overlapping(reader: Any, state: Any, specs: list, data_start: int) -> Loaded:
    """Tensors that share bytes (TorchCheckpointer never writes that): read the whole data
    region into one buffer and give each tensor its own copy."""
    reader.read(data_start - reader.position)
    region = torch.empty(reader.size - data_start, dtype=torch.uint8)
    reader.readinto(region.numpy())
    tensors = []
    for dtype, shape, offset, nbytes in specs:
        raw = region[offset : offset + nbytes].clone()
        tensors.append(raw.view(dtype).view(shape) if nbytes else torch.empty(shape, dtype=dtype))
    return Loaded(state, tensors, False)


def _targets(
    state: Any, into: Mapping[str, Mapping[str, torch.Tensor]], specs: list
) -> dict[int, torch.Tensor]:
    """Saved tensor index -> the component's own tensor to read it into, where one matches."""
    targets: dict[int, torch.Tensor] = {}
    used: set[int] = set()
    for key, own in into.items():
        saved = state.get(key) if isinstance(state, dict) else None
        pairs = saved.get("$odict") if isinstance(saved, dict) else None
        for pair in pairs if isinstance(pairs, list) else ():
            name, tag = pair if isinstance(pair, list) and len(pair) == 2 else (None, None)
            index = tag.get("$t") if isinstance(tag, dict) and len(tag) == 1 else None
            tensor = own.get(name) if isinstance(name, str) else None
            if not isinstance(index, int) or not 0 <= index < len(specs) or tensor is None:
                continue
            dtype, shape, _, nbytes = specs[index]
            if (
                tensor.device.type == "cpu"
                and tensor.dtype == dtype
                and list(tensor.shape) == list(shape)
                and tensor.is_contiguous()
                and nbytes > 0
                and tensor.data_ptr() not in used
                and index not in targets
            ):
                used.add(tensor.data_ptr())
                targets[index] = tensor
    return targets


def _bytes_of(tensor: torch.Tensor) -> Any:
    """A writable byte view of a contiguous CPU tensor's memory."""
    return tensor.detach().reshape(-1).view(torch.uint8).numpy()


def _each_once(state: Any, count: int) -> bool:
    """True if the skeleton refers to every tensor index at most once."""
    seen: set[int] = set()
    stack = [state]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            for key in ("$t", "$nd"):
                if key in node:
                    if node[key] in seen:
                        return False
                    seen.add(node[key])
            stack.extend(node.values())
    return True
