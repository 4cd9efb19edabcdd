"""Write a torch state tree through a `Checkpoint` from reused staging buffers; read it back.

Shared by `TorchCheckpointer` and `LightningCheckpointer`. A save encodes the tree (JSON skeleton +
tensors, see ``_format``), copies header and tensors into one of two staging buffers
(pinned when CUDA is available; reallocated only when the state grows) and hands that buffer to
``Checkpoint.write(..., copy=False)``: the checkpoint's writer thread writes it without another
copy. Two buffers let one version be written while the next is staged; a save that finds both
busy waits for the older write.

An overlapped save (``defer``) copies only part of the state before it returns: the chosen CPU
tensors (those only ``optimizer.step()`` changes) are copied on a background thread while the
loop runs its next forward and backward; the caller waits for that copy (`wait_staged`) before
it lets anything change them. Each deferred tensor's version counter is compared before and
after its copy, so an in-place change in between fails the save instead of committing a state
that never existed.
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from typing import Any

import torch

from taskpoint.errors import CheckpointError, Preempted
from taskpoint.integrations.torch import _format as fmt
from taskpoint.integrations.torch._load import Loaded, fill

METADATA = {"format": "taskpoint.torch/1"}
_SLOTS = 2
_ALIGN = 4096


class _Slot:
    """One reusable staging buffer and the async write that still reads it."""

    def __init__(self) -> None:
        self.buffer: torch.Tensor | None = None
        self.view: memoryview | None = None
        self.future: Future[Any] | None = None
        self.order = 0

    def busy(self) -> bool:
        return self.future is not None and not self.future.done()

    def ensure(self, size: int, pin: bool) -> memoryview:
        if self.buffer is None or self.buffer.numel() < size:
            self.buffer = self.view = None  # drop the old one before allocating
            capacity = size + size // 16 + 4096  # slack: the header may grow a little
            raw = torch.empty(capacity + _ALIGN, dtype=torch.uint8, pin_memory=pin)
            # Page aligned, so the store can write it with O_DIRECT (no page-cache copy).
            start = -raw.data_ptr() % _ALIGN
            self.buffer = raw[start : start + capacity]
            self.view = memoryview(self.buffer.numpy())  # type: ignore[arg-type]  # ndarray is a Buffer
        assert self.view is not None
        return self.view


class StagedWriter:
    """Saves state trees to ``checkpoint`` through two reused staging buffers."""

    def __init__(self, checkpoint: Any) -> None:
        self.checkpoint = checkpoint
        self.slots = [_Slot() for _ in range(_SLOTS)]
        self._saves = 0
        self._lock = threading.Lock()
        self._pin = torch.cuda.is_available()
        self._staging: _SharedCopy | None = None  # the background copy of an overlapped save
        self._stager: ThreadPoolExecutor | None = None

    def write(
        self,
        state: Any,
        step: int,
        blocking: bool,
        defer: Callable[[torch.Tensor], bool] | None = None,
    ) -> Any:
        """Stage ``state`` and commit it as a version.

        Returns once every tensor is copied, except, for an async write, the CPU tensors that
        ``defer`` picks: those are copied on a background thread, and the caller must call
        `wait_staged` before anything changes them.
        """
        with self._lock:
            try:
                self.wait_staged()
            except Preempted:
                pass  # the earlier save did commit; this one commits too, then raises again
            encoded = fmt.encode(state)
            layout = fmt.plan(encoded)
            slot = self._free_slot()
            view = slot.ensure(layout.total, self._pin)
            later = []
            if defer is not None and not blocking:
                later = [
                    i
                    for i, t in enumerate(encoded.tensors)
                    if t.device.type == "cpu" and layout.entries[i][1] and defer(t)
                ]
            _stage(slot.buffer, view, encoded, layout, skip=frozenset(later))  # type: ignore[arg-type]
            slot.future, slot.order = None, self._saves
            self._saves += 1
            if later:
                return self._write_after_copy(slot, view, encoded, layout, later, step)
            try:
                result = self.checkpoint.write(
                    view[: layout.total],
                    step=step,
                    metadata=METADATA,
                    blocking=blocking,
                    copy=False,
                )
            except BaseException:
                # The writer may still hold this buffer (e.g. a preempted write that timed out
                # while committing): never reuse it.
                slot.buffer = slot.view = None
                raise
            if not blocking:
                slot.future = result
            return result

    def _write_after_copy(
        self,
        slot: _Slot,
        view: memoryview,
        encoded: fmt.Encoded,
        layout: fmt.Layout,
        later: list[int],
        step: int,
    ) -> Future[Any]:
        """Copy the tensors ``later`` names on the staging thread, then hand the buffer to the
        checkpoint's writer; the returned future resolves when that write does."""
        versions = [encoded.tensors[i]._version for i in later]
        done: Future[Any] = Future()
        slot.future = done
        buffer = slot.buffer
        assert buffer is not None

        copy = _SharedCopy(
            [
                job
                for i in later
                for job in _copy_jobs(
                    buffer, layout.data_start + layout.entries[i][0], encoded.tensors[i]
                )
            ]
        )

        def copy_then_write() -> None:
            try:
                copy.work()
                if copy.error is not None:
                    raise copy.error
                now = [encoded.tensors[i]._version for i in later]
                changed = [i for i, v, w in zip(later, versions, now, strict=True) if v != w]
                if changed:
                    shapes = ", ".join(str(tuple(encoded.tensors[i].shape)) for i in changed[:3])
                    raise CheckpointError(
                        f"checkpoint at step {step} not saved: {len(changed)} tensor(s) (shapes "
                        f"{shapes}) changed in place while they were being copied. An overlapped "
                        "save copies the optimizer's tensors until its next step(); change them "
                        "only through optimizer.step(), or call wait_staged() before changing "
                        "them yourself"
                    )
                written = self.checkpoint.write(
                    view[: layout.total], step=step, metadata=METADATA, blocking=False, copy=False
                )
            except BaseException as exc:
                if not isinstance(exc, CheckpointError):
                    slot.buffer = slot.view = None  # the writer may still hold it
                done.set_exception(exc)
                raise
            written.add_done_callback(lambda f: _settle(done, f))

        if self._stager is None:
            self._stager = ThreadPoolExecutor(1, thread_name_prefix="taskpoint-stage")
        copy.future = self._stager.submit(copy_then_write)
        self._staging = copy
        return done

    def wait_staged(self, *, report: bool = True) -> None:
        """Wait for the background copy of an overlapped save. ``report``: re-raise its error
        (once); without it an error stays for the next call that reports."""
        staging = self._staging
        if staging is None:
            return
        staging.work()  # copy beside the staging thread rather than wait idle
        wait_futures([staging.future])
        if report:
            self._staging = None
            staging.future.result()

    def _free_slot(self) -> _Slot:
        free = [s for s in self.slots if not s.busy()]
        if free:
            # The most recently used free one: saves that never overlap (blocking ones) keep
            # one buffer warm instead of two.
            return max(free, key=lambda s: (s.buffer is not None, s.order))
        oldest = min(self.slots, key=lambda s: s.order)
        wait_futures([oldest.future])  # type: ignore[list-item]
        return oldest

    def read(self) -> tuple[Any, list[torch.Tensor]] | None:
        """The latest version's skeleton and its tensors (do not hand these out: clone them),
        or ``None``."""
        loaded = self.read_into()
        return None if loaded is None else (loaded.skeleton, loaded.tensors)

    def read_into(
        self,
        into: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
        check: Callable[[Any], None] | None = None,
    ) -> Loaded | None:
        """Read the latest version, its tensors straight from disk into their destinations.

        ``into`` maps a top-level key of the saved state (``"model"``) to that component's own
        tensors by name (its ``state_dict()``): a saved tensor whose dtype and shape match one
        of them is read directly into its memory (CPU, contiguous), so a later
        ``load_state_dict`` copies nothing. Every other tensor is read into a new one. ``check``
        sees the saved state's skeleton before any tensor is read and may refuse it.
        """
        where = getattr(self.checkpoint, "url", repr(self.checkpoint))
        if not hasattr(self.checkpoint, "read_with"):  # a duck-typed checkpoint: read() only
            blob = self.checkpoint.read()
            if blob is None:
                return None
            header, data_start = fmt.parse(blob, where)
            if check is not None:
                check(header["state"])
            return Loaded(header["state"], fmt.tensor_views(blob, header, data_start), False)
        return self.checkpoint.read_with(lambda reader: fill(reader, where, into or {}, check))

    def wait(self, timeout: float | None = None) -> None:
        self.checkpoint.wait(timeout)


def _settle(target: Future[Any], source: Future[Any]) -> None:
    exc = source.exception()
    if exc is not None:
        target.set_exception(exc)
    else:
        target.set_result(source.result())


_CHUNK = 8 << 20


def usable_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def spare_core() -> bool:
    """True if torch's intra-op threads leave at least one usable core to a background copy."""
    return torch.get_num_threads() < usable_cores()


def _slot_view(buffer: torch.Tensor, start: int, like: torch.Tensor) -> torch.Tensor:
    """The bytes of ``buffer`` from ``start`` as a tensor of ``like``'s dtype and shape."""
    nbytes = like.numel() * like.element_size()
    return buffer[start : start + nbytes].view(like.dtype).view(like.shape)


def _copy_chunk(dst: int, src: int, nbytes: int) -> None:
    # ctypes releases the GIL for the call: the loop's Python runs on meanwhile.
    ctypes.memmove(dst, src, nbytes)


def _copy_jobs(buffer: torch.Tensor, start: int, tensor: torch.Tensor) -> list[Callable[[], None]]:
    """The copy of a CPU tensor's bytes into ``buffer`` at ``start``, as chunks any thread can run.

    A contiguous tensor is copied by ``memmove`` of 8 MiB chunks, one core per thread: torch's
    ``copy_`` would spread each chunk over its intra-op threads, on the cores the loop's own ops
    are using at that moment."""
    nbytes = tensor.numel() * tensor.element_size()
    if tensor.is_contiguous():
        dst, src = buffer.data_ptr() + start, tensor.data_ptr()
        return [
            functools.partial(_copy_chunk, dst + at, src + at, min(_CHUNK, nbytes - at))
            for at in range(0, nbytes, _CHUNK)
        ]
    target = _slot_view(buffer, start, tensor)

    def strided() -> None:
        with torch.no_grad():
            target.copy_(tensor)

    return [strided]


class _SharedCopy:
    """Copy jobs any thread may take. The staging thread starts them; a thread that needs the
    copy finished (the loop, at the optimizer's next step) takes the rest instead of idling."""

    def __init__(self, jobs: list[Callable[[], None]]) -> None:
        self.future: Future[None] = Future()  # the staging thread's whole run (copy, then write)
        self._jobs = jobs
        self._taken = 0
        self._left = len(jobs)
        self._lock = threading.Lock()
        self._finished = threading.Event()
        self.error: BaseException | None = None
        if not jobs:
            self._finished.set()

    def work(self) -> None:
        """Run jobs until none is left, then wait for those other threads are running. A job's
        error stops the rest and is kept in ``error`` (for the staging thread to raise)."""
        while not self._finished.is_set():
            with self._lock:
                if self._taken == len(self._jobs):
                    break
                job = self._jobs[self._taken]
                self._taken += 1
            try:
                job()
            except BaseException as exc:
                self.error = self.error or exc
                self._finished.set()
            with self._lock:
                self._left -= 1
                if self._left == 0:
                    self._finished.set()
        self._finished.wait()


def _stage(
    buffer: torch.Tensor,
    view: memoryview,
    encoded: fmt.Encoded,
    layout: fmt.Layout,
    skip: frozenset[int] = frozenset(),
) -> None:
    fmt.write_header(view, layout)
    cuda_devices = set()
    with torch.no_grad():
        for i, t in enumerate(encoded.tensors):
            offset, nbytes = layout.entries[i]
            if nbytes == 0 or i in skip:
                continue
            target = _slot_view(buffer, layout.data_start + offset, t)
            if t.is_cuda:
                cuda_devices.add(t.device)
                target.copy_(t, non_blocking=True)  # pinned target: an async DMA
            else:
                target.copy_(t)
    for device in cuda_devices:  # every copy must have landed before the writer reads
        torch.cuda.current_stream(device).synchronize()
