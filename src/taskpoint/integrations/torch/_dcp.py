"""What a sharded `TorchCheckpointer` version holds, in DCP's terms, without pickle.

PyTorch's distributed checkpoint (DCP) plans which rank writes which piece of a state (dedup of
replicated tensors, shards of DTensors) and, on load, which piece each rank of any world size
reads (resharding). We use its planners and its ``load``; the bytes and the index are ours:

- each rank's items go into one file ``dcp/r<rank:05d>.bin``: raw tensor bytes at 64-byte
  aligned offsets, and non-tensor values (``lr``, ``step`` ints, param groups) as small blobs of
  the torch integration's own format (``_format``: JSON + raw tensors);
- ``dcp/index.json`` (written by rank 0 at the commit) is DCP's `Metadata` as JSON plus where
  each item lies: ``[fqn, chunk offsets | null, file, offset, nbytes, crc32c, dtype, shape]``.

DCP's own format pickles its metadata and loads non-tensor values with ``torch.load(...,
weights_only=False)``; a checkpoint in shared storage must not be able to run code when loaded
(DESIGN.md, trust boundaries), hence this. Every item carries its own CRC-32C, checked before
its bytes are used, so a rank that reads only its shard of a file still verifies what it reads.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.distributed._shard._utils import narrow_tensor_by_index
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner, DefaultSavePlanner
from torch.distributed.checkpoint.metadata import (
    BytesStorageMetadata,
    ChunkStorageMetadata,
    Metadata,
    MetadataIndex,
    TensorProperties,
    TensorStorageMetadata,
)
from torch.distributed.checkpoint.planner import LoadItemType, LoadPlan, ReadItem, WriteItemType
from torch.distributed.checkpoint.storage import StorageReader
from torch.futures import Future

from taskpoint.checkpoint.manifest import check_relative_path
from taskpoint.checkpoint.storage import ChecksumMismatch, crc_executor, crc_of
from taskpoint.integrations.torch import _format as fmt

INDEX = "dcp/index.json"
INDEX_FORMAT = 1
_MAX_ITEMS = 1_000_000


def rank_file(rank: int) -> str:
    return f"dcp/r{rank:05d}.bin"


# ---------------------------------------------------------------------------- non-tensor values
def value_blob(value: Any) -> bytes:
    """A non-tensor value as a ``_format`` blob (JSON skeleton + raw tensors): no pickle."""
    encoded = fmt.encode(value)
    layout = fmt.plan(encoded)
    blob = bytearray(layout.total)
    view = memoryview(blob)
    fmt.write_header(view, layout)
    for tensor, (offset, nbytes) in zip(encoded.tensors, layout.entries, strict=True):
        if nbytes:
            start = layout.data_start + offset
            flat = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
            view[start : start + nbytes] = flat.numpy().tobytes()
    return bytes(blob)


def value_of(blob: bytes | memoryview, where: str) -> Any:
    """The value `value_blob` encoded, its tensors fresh copies."""
    header, data_start = fmt.parse(blob, where)
    return fmt.decode(header["state"], fmt.tensor_views(blob, header, data_start), clone=True)


class SavePlanner(DefaultSavePlanner):
    """DCP's planner, with non-tensor values encoded by ``_format`` instead of ``torch.save``."""

    def transform_object(self, write_item: Any, object: Any) -> Any:
        if write_item.type == WriteItemType.BYTE_IO:
            return io.BytesIO(value_blob(object))
        return object


class LoadPlanner(DefaultLoadPlanner):
    """DCP's planner, decoding non-tensor values without ``torch.load`` (no unpickling)."""

    where = "a sharded torch checkpoint"

    def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
        decoded = value_of(value.getbuffer(), self.where)
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], decoded)
        else:
            self.state_dict[read_item.dest_index.fqn] = decoded


# ---------------------------------------------------------------------------- the index
@dataclass(frozen=True)
class Item:
    """Where one saved item lies: a byte range of one rank's file, and its checksum."""

    file: str
    offset: int
    nbytes: int
    crc32c: int
    dtype: str | None  # None: a non-tensor value (a ``_format`` blob)
    shape: tuple[int, ...]


def item_record(index: MetadataIndex, item: Item) -> list[Any]:
    offsets = None if index.offset is None else list(index.offset)
    return [index.fqn, offsets, item.file, item.offset, item.nbytes, item.crc32c, item.dtype,
            list(item.shape)]  # fmt: skip


def index_doc(metadata: Metadata, records: list[list[Any]], world_size: int) -> dict[str, Any]:
    """DCP's metadata (made by rank 0's planner) and every rank's item records, as JSON."""
    state: dict[str, Any] = {}
    for fqn, meta in metadata.state_dict_metadata.items():
        if isinstance(meta, TensorStorageMetadata):
            state[fqn] = {
                "dtype": fmt.dtype_name(meta.properties.dtype),
                "requires_grad": bool(meta.properties.requires_grad),
                "size": list(meta.size),
                "chunks": [[list(c.offsets), list(c.sizes)] for c in meta.chunks],
            }
        else:
            state[fqn] = {"bytes": True}
    mappings = {k: list(v) for k, v in (metadata.planner_data or {}).items()}
    return {
        "format": INDEX_FORMAT,
        "world_size": world_size,
        "state": state,
        "mappings": mappings,
        "items": records,
    }


def parse_index(doc: Any, file_sizes: dict[str, int]) -> tuple[Metadata, dict[MetadataIndex, Item]]:
    """Rebuild DCP's `Metadata` and the item table from untrusted JSON; anything odd raises
    `ValueError` (damage to that version: the ranks fall back together)."""
    if not isinstance(doc, dict) or doc.get("format") != INDEX_FORMAT:
        raise ValueError("sharded checkpoint index has an unknown format")
    state, records = doc["state"], doc["items"]
    if not isinstance(state, dict) or not isinstance(records, list) or len(records) > _MAX_ITEMS:
        raise ValueError("sharded checkpoint index is malformed")
    md: dict[str, Any] = {}
    for fqn, meta in state.items():
        if not isinstance(meta, dict):
            raise ValueError(f"sharded checkpoint index: entry {fqn!r} is malformed")
        if meta.get("bytes") is True:
            md[fqn] = BytesStorageMetadata()
            continue
        chunks = [
            ChunkStorageMetadata(torch.Size(_ints(o)), torch.Size(_ints(s)))
            for o, s in meta["chunks"]
        ]
        props = TensorProperties(
            dtype=fmt.dtype_from_name(meta["dtype"]), requires_grad=bool(meta["requires_grad"])
        )
        md[fqn] = TensorStorageMetadata(props, torch.Size(_ints(meta["size"])), chunks)
    if not isinstance(doc["mappings"], dict):
        raise ValueError("sharded checkpoint index: malformed mappings")
    mappings = {k: tuple(v) for k, v in doc["mappings"].items()}
    items: dict[MetadataIndex, Item] = {}
    for fqn, offsets, path, offset, nbytes, crc, dtype, shape in records:
        item = Item(check_relative_path(path), int(offset), int(nbytes), int(crc), dtype,
                    tuple(_ints(shape)))  # fmt: skip
        size = file_sizes.get(item.file)
        if size is None or item.offset < 0 or item.nbytes < 0 or item.offset + item.nbytes > size:
            raise ValueError(f"sharded checkpoint item {fqn!r} lies outside the version's files")
        if dtype is not None:
            element = torch.empty((), dtype=fmt.dtype_from_name(dtype)).element_size()
            if math.prod(item.shape) * element != item.nbytes:
                raise ValueError(f"sharded checkpoint item {fqn!r} has an inconsistent size")
        key = MetadataIndex(str(fqn), None if offsets is None else _ints(offsets))
        items[key] = item
    metadata = Metadata(state_dict_metadata=md, planner_data=mappings, storage_data=None)
    return metadata, items


def _ints(values: Any) -> list[int]:
    if not isinstance(values, list) or not all(type(v) is int and v >= 0 for v in values):
        raise ValueError("sharded checkpoint index holds a malformed shape or offset")
    return values


# ---------------------------------------------------------------------------- reading
ReadRange = Callable[[str, int, memoryview], None]  # (file, offset, into): fill ``into`` exactly


READ_PIECE = 16 << 20  # bytes per read of an item


class Reader(StorageReader):
    """A DCP `StorageReader` over one taskpoint version, verifying each item's checksum."""

    def __init__(
        self,
        metadata: Metadata,
        items: dict[MetadataIndex, Item],
        read: ReadRange,
        rank: int = 0,
    ) -> None:
        super().__init__()
        self.metadata = metadata
        self.items = items
        self.read = read
        self.rank = rank  # where in the list of files this rank starts reading

    def reset(self, checkpoint_id: Any = None) -> None:
        pass

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        return self.metadata

    def set_up_storage_reader(
        self, metadata: Metadata, is_coordinator: bool, *args: Any, **kwargs: Any
    ) -> None:
        pass

    def prepare_local_plan(self, plan: LoadPlan) -> LoadPlan:
        return plan

    def prepare_global_plan(self, plans: list[LoadPlan]) -> list[LoadPlan]:
        return plans

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: Any) -> bool:
        return False

    def read_data(self, plan: LoadPlan, planner: Any) -> Future[None]:
        # One pass over each file, whatever order the planner chose. Each rank starts with
        # another file (rank r with the r-th): ranks that all need every file (a replicated
        # state) then read different files from the disk at the same time, and find the rest
        # in the page cache another rank filled, instead of all reading the same file at once.
        files = sorted({self._item(r).file for r in plan.items})
        start = self.rank % len(files) if files else 0
        turn = {name: (i - start) % len(files) for i, name in enumerate(files)}
        requests = sorted(
            plan.items, key=lambda r: (turn[self._item(r).file], self._item(r).offset)
        )
        for req in requests:
            item = self._item(req)
            if req.type == LoadItemType.BYTE_IO:
                raw = bytearray(item.nbytes)
                self._fill(item, memoryview(raw))
                planner.load_bytes(req, io.BytesIO(raw))
                continue
            if item.dtype is None:
                raise ValueError(f"{req.storage_index.fqn}: the index says it is no tensor")
            target = planner.resolve_tensor(req).detach()
            whole = list(req.storage_offsets) == [0] * len(item.shape) and list(
                req.lengths
            ) == list(item.shape)
            if whole and _fillable(target, item):
                self._fill(item, _bytes_of(target))  # straight into the destination
            else:
                stored = torch.empty(item.shape, dtype=fmt.dtype_from_name(item.dtype))
                self._fill(item, _bytes_of(stored))
                part = narrow_tensor_by_index(stored, req.storage_offsets, req.lengths)
                if target.size() != part.size():
                    raise ValueError(f"{req.storage_index.fqn}: saved part does not fit")
                target.copy_(part)
            planner.commit_tensor(req, target)
        done: Future[None] = Future()
        done.set_result(None)
        return done

    def _item(self, req: ReadItem) -> Item:
        item = self.items.get(req.storage_index)
        if item is None:
            raise KeyError(f"{req.storage_index.fqn}: not in the checkpoint's index")
        return item

    def _fill(self, item: Item, into: memoryview) -> None:
        """Read ``item`` into ``into`` piece by piece, each piece checksummed on the checksum
        thread while the next one is read. (One read of a whole item of hundreds of MiB ran at a
        quarter of the disk's speed from a cold cache: the kernel reads such a request ahead in
        small synchronous steps, while a stream of pieces keeps its readahead going.)"""
        crc = 0
        pending = None
        for at in range(0, item.nbytes, READ_PIECE):
            piece = into[at : at + READ_PIECE]
            self.read(item.file, item.offset + at, piece)
            if pending is not None:
                crc = pending.result()
            pending = crc_executor().submit(crc_of, piece, crc)
        if pending is not None:
            crc = pending.result()
        if crc != item.crc32c:
            raise ChecksumMismatch(f"{item.file} at {item.offset}: checksum mismatch")


def _fillable(target: torch.Tensor, item: Item) -> bool:
    return (
        item.dtype is not None
        and target.device.type == "cpu"
        and target.is_contiguous()
        and fmt.dtype_name(target.dtype) == item.dtype
        and tuple(target.shape) == item.shape
    )


def _bytes_of(tensor: torch.Tensor) -> memoryview:
    """A writable byte view of a contiguous CPU tensor's memory."""
    return memoryview(tensor.reshape(-1).view(torch.uint8).numpy()).cast("B")  # type: ignore[arg-type]  # ndarray is a Buffer
