"""Sharded saves and loads of a `TorchCheckpointer` in a group of ranks (through DCP's planners).

One save is one taskpoint version (``checkpoint/ranked.py``)::

    v/<id>/dcp/r<rank>.bin      each rank's items (raw tensor bytes, value blobs), see ``_dcp``
    v/<id>/dcp/index.json       rank 0, at the commit: DCP's metadata + where each item lies
    v/<id>/ranks/<rank>.tpt     each rank's own state (step, RNG, sampler, scheduler, scaler, ...)
    v/<id>.manifest.json        rank 0, once every rank's files are durable

A save, on the caller's thread: agree on an id and on DCP's plan (collectives on the planning
group), then copy this rank's items into a reused staging buffer (page aligned, pinned when CUDA
is available), and return (async) or wait (blocking). On this rank's writer thread, in save order:
write the rank's files, then the commit (collectives on the commit group). Saves are never
superseded here: every rank must commit the same versions, in the same order.
"""

from __future__ import annotations

import io
import json
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

from taskpoint.checkpoint.failures import describe
from taskpoint.checkpoint.ranked import (
    Begun,
    RankedWriter,
    RankGroup,
    RankReport,
    VersionFiles,
    agreed_load,
    unusable,
)
from taskpoint.checkpoint.storage import crc_of, helper_thread
from taskpoint.errors import CheckpointError
from taskpoint.integrations import _toolkit as kit
from taskpoint.integrations.torch import _dcp
from taskpoint.integrations.torch._sharding import FORMAT
from taskpoint.integrations.torch._state import _Slot, _slot_view

if TYPE_CHECKING:
    from taskpoint.checkpoint import Checkpoint, CheckpointVersion
    from taskpoint.checkpoint.manifest import FileEntry, Manifest


def rank_state_file(rank: int) -> str:
    return f"ranks/{rank:05d}.tpt"


class _Staged:
    """One rank's part of a save, staged: what the writer thread writes and commits."""

    def __init__(self, begun: Begun, step: int, world: int) -> None:
        self.begun, self.step, self.world = begun, step, world
        self.view: memoryview | None = None  # the rank's items, laid out
        self.total = 0
        self.items: list[tuple[Any, _dcp.Item]] = []  # (MetadataIndex, where; crc filled later)
        self.own: bytes = b""  # the rank's own state blob
        self.metadata: Any = None  # rank 0: DCP's global metadata
        self.error: str | None = None  # staging failed: the commit reports it


class ShardedIO:
    """Saves and loads a `TorchCheckpointer`'s state as multi-rank versions of ``checkpoint``."""

    def __init__(self, checkpoint: Checkpoint, plan: RankGroup, commit: RankGroup) -> None:
        self.checkpoint = checkpoint
        self.plan_group, self.commit_group = plan, commit
        self.planning = RankedWriter(checkpoint, plan)
        self.committing = RankedWriter(checkpoint, commit)
        self.rank, self.world = plan.rank, plan.size
        self.slots = [_Slot(), _Slot()]
        self._pin = torch.cuda.is_available()
        self._lock = threading.Lock()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="taskpoint-sharded")
        self._pending: list[Future[Any]] = []
        self._saves = 0
        self.committing.add_drain(self.drain)

    # ---------------------------------------------------------------------------- saving
    def save(self, state: dict[str, Any], own: dict[str, Any], step: int, blocking: bool) -> Any:
        """Save ``state`` (sharded through DCP) and ``own`` (this rank's alone) as one version,
        on every rank at once. Returns the `CheckpointVersion` (blocking) or its future."""
        with self._lock:
            started = self.planning.before_write(step)
            staged, slot = self._stage(state, own, step)
            future = self._writer.submit(self._write_and_commit, staged)
            slot.future, slot.order = future, self._saves
            self._saves += 1
            if blocking:
                result: Any = future.result()
            else:
                self._pending.append(future)
                result = future
            return self.planning.after_write(result, blocking, started)

    def _stage(
        self, state: dict[str, Any], own: dict[str, Any], step: int
    ) -> tuple[_Staged, _Slot]:
        # A free buffer first: the id is reserved only then, so at most two ids of this writer
        # are uncommitted at any time (retention takes older uncommitted ones for dead writes).
        slot = self._free_slot()
        begun = self.planning.begin()
        staged = _Staged(begun, step, self.world)
        planner = _dcp.SavePlanner()

        def local_plan() -> Any:
            planner.set_up_planner(state, None, self.rank == 0)
            return planner.create_local_plan()

        # The plan is agreed on every rank, or refused on every rank (rank 0 says why).
        plans = self.plan_group.gather(_capture(local_plan))
        outcome: Any = None
        if self.rank == 0:
            assert plans is not None
            failed = [p for p in plans if isinstance(p, str)]
            made = failed[0] if failed else _capture(lambda: planner.create_global_plan(plans))
            outcome = made if isinstance(made, str) else made[0]  # the plans, not the metadata
            if not isinstance(made, str):
                staged.metadata = made[1]
        outcome = self.plan_group.broadcast(outcome)
        if isinstance(outcome, str):
            staged.error = f"planning failed: {outcome}"
        else:
            try:
                plan = planner.finish_plan(outcome[self.rank])
                self._copy_items(planner, plan.items, staged, slot)
                staged.own = _dcp.value_blob(own)
            except Exception as exc:  # reported at the commit, so no rank waits for this one
                staged.error = describe(exc)
        return staged, slot

    def _copy_items(self, planner: Any, items: list[Any], staged: _Staged, slot: _Slot) -> None:
        data = [(item, planner.resolve_data(item)) for item in items]
        offset, spans = 0, []
        for _item, value in data:
            nbytes = value.getbuffer().nbytes if isinstance(value, io.BytesIO) else (
                value.numel() * value.element_size())  # fmt: skip
            spans.append((offset, nbytes))
            offset = kit.align(offset + nbytes)
        staged.total = offset
        view = slot.ensure(max(offset, 1), self._pin)
        buffer = slot.buffer
        assert buffer is not None
        cuda = set()
        with torch.no_grad():
            for (item, value), (at, nbytes) in zip(data, spans, strict=True):
                if isinstance(value, io.BytesIO):
                    view[at : at + nbytes] = value.getbuffer()
                    entry = _dcp.Item(_dcp.rank_file(self.rank), at, nbytes, 0, None, ())
                else:
                    tensor = value.detach()
                    target = _slot_view(buffer, at, tensor)
                    if tensor.is_cuda:
                        cuda.add(tensor.device)
                    target.copy_(tensor, non_blocking=tensor.is_cuda)
                    name = _dcp.fmt.dtype_name(tensor.dtype)
                    shape = tuple(tensor.shape)
                    entry = _dcp.Item(_dcp.rank_file(self.rank), at, nbytes, 0, name, shape)
                staged.items.append((item.index, entry))
        for device in cuda:  # every copy must have landed before the writer reads
            torch.cuda.current_stream(device).synchronize()
        staged.view = view

    def _free_slot(self) -> _Slot:
        free = [s for s in self.slots if not s.busy()]
        if free:
            return max(free, key=lambda s: s.buffer is not None)
        oldest = min(self.slots, key=lambda s: s.order)
        wait_futures([oldest.future])  # type: ignore[list-item]
        return oldest

    def _write_and_commit(self, staged: _Staged) -> CheckpointVersion:
        """On the writer thread: this rank's files, then the commit every rank joins."""
        report = RankReport(self.rank, error=staged.error)
        if staged.error is None:
            try:
                report.files, report.extra = self._write_files(staged)
            except Exception as exc:
                report.error = describe(exc)
        return self.committing.commit(
            staged.begun,
            report,
            step=staged.step,
            metadata={"format": FORMAT, "world_size": staged.world},
            finish=lambda begun, reports: self._finish(begun, reports, staged),
        )

    def _write_files(self, staged: _Staged) -> tuple[list[FileEntry], list[list[Any]]]:
        assert staged.view is not None
        view = staged.view[: staged.total]
        # Each item's checksum, beside the write of the file (both release the GIL).
        crcs = helper_thread("item-crc").submit(
            lambda: [crc_of(view[i.offset : i.offset + i.nbytes]) for _, i in staged.items]
        )
        entries = [self.committing.write_file(staged.begun, _dcp.rank_file(self.rank), view)]
        entries.append(
            self.committing.write_file(
                staged.begun, rank_state_file(self.rank), memoryview(staged.own)
            )
        )
        records = [
            _dcp.item_record(index, _with_crc(item, crc))
            for (index, item), crc in zip(staged.items, crcs.result(), strict=True)
        ]
        return entries, records

    def _finish(self, begun: Begun, reports: list[RankReport], staged: _Staged) -> list[FileEntry]:
        """Rank 0, after every rank's files are durable: the index of where each item lies."""
        records = [record for r in reports for record in r.extra or []]
        doc = _dcp.index_doc(staged.metadata, records, staged.world)
        raw = json.dumps(doc, separators=(",", ":")).encode()
        return [self.committing.write_file(begun, _dcp.INDEX, memoryview(raw))]

    def drain(self, timeout: float | None = None) -> None:
        """Wait for this rank's pending saves; re-raise the first error (once)."""
        pending, self._pending = self._pending, []
        done, not_done = wait_futures(pending, timeout=timeout)
        self._pending = list(not_done)
        for future in pending:
            if future in done and future.exception() is not None:
                raise future.exception()  # type: ignore[misc]

    def any_rank(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is true on any (a collective: all ranks call it)."""
        agree = getattr(self.plan_group, "any_true", None)
        return bool(flag) if agree is None else bool(agree(flag))

    # ---------------------------------------------------------------------------- loading
    def load(self, make_state: Callable[[], dict[str, Any]]) -> Loaded | None:
        """See `load`, on this group's ranks (after this rank's pending saves)."""
        self.drain()
        return load(self.checkpoint, make_state, self.plan_group)

    def close(self) -> None:
        self._writer.shutdown(wait=True)


class Loaded(NamedTuple):
    """A loaded sharded version: the DCP state filled in, this rank's own state, and more."""

    state: dict[str, Any]
    own: Any
    saved_world: int
    version: CheckpointVersion


def load(
    checkpoint: Checkpoint, make_state: Callable[[], dict[str, Any]], group: RankGroup
) -> Loaded | None:
    """Load the newest sharded version every rank of ``group`` can use (the same on each).

    ``make_state()`` (called only once a version is found, on every rank) gives the state to
    load into in place, as DCP's ``get_state_dict`` shapes it for this rank: DCP reads into it
    what this rank needs, whatever the world size that saved it (resharding). ``None`` when
    nothing was committed."""

    def use(manifest: Manifest) -> Any:
        if manifest.metadata.get("format") != FORMAT:
            raise unusable("not a sharded torch checkpoint (it was saved by a single process)")
        files = VersionFiles(checkpoint, manifest)
        try:
            state = make_state()
            own, world = load_version(files, state, group)
            return state, own, world
        finally:
            files.close()

    found = agreed_load(checkpoint, group, use)
    if found is None:
        return None
    (state, own, world), version = found
    return Loaded(state, own, world, version)


def load_version(files: VersionFiles, state: dict[str, Any], group: RankGroup) -> Any:
    """One rank's load of one sharded version: DCP reads the items this rank's ``state``
    needs (any world size), then the rank's own state (that of ``rank % saved world size``)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    manifest = files.manifest
    doc = json.loads(files.read_whole(_dcp.INDEX))
    sizes = {path: entry.size for path, entry in files.entries.items()}
    metadata, items = _dcp.parse_index(doc, sizes)
    reader = _dcp.Reader(metadata, items, files.read_range, rank=group.rank)
    planner = _dcp.LoadPlanner()
    planner.where = f"checkpoint version {manifest.id}"
    try:
        with warnings.catch_warnings():
            if group.size == 1:  # DCP warns that it assumes one process: that is the intent
                warnings.filterwarnings("ignore", "torch.distributed is disabled", UserWarning)
            dcp.load(state, storage_reader=reader, planner=planner,
                     process_group=getattr(group, "pg", None), no_dist=group.size == 1)  # fmt: skip
    except CheckpointException as exc:
        # Every rank sees every rank's failure: all take the same decision from it.
        errors = [error for error, _trace in exc.failures.values()]
        message = "; ".join(f"rank {r}: {describe(e)}" for r, (e, _) in exc.failures.items())
        if all(_damage(e) for e in errors):
            raise unusable(message) from None
        raise CheckpointError(f"could not load {manifest.id}: {message}") from None
    saved_world = int(manifest.metadata.get("world_size", 1))
    own = _dcp.value_of(files.read_whole(rank_state_file(group.rank % saved_world)), manifest.id)
    return own, saved_world


def _damage(exc: BaseException) -> bool:
    from taskpoint.checkpoint.failures import is_damage

    return is_damage(exc) or type(exc).__name__ == "_Unusable"


def _with_crc(item: _dcp.Item, crc: int) -> _dcp.Item:
    return _dcp.Item(item.file, item.offset, item.nbytes, crc, item.dtype, item.shape)


def _capture(action: Callable[[], Any]) -> Any:
    """The result, or the error's description (sent to the other ranks, who raise it too)."""
    try:
        return action()
    except Exception as exc:
        return describe(exc)


__all__ = ["FORMAT", "ShardedIO"]
