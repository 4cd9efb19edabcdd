"""Write a torch state tree through a `Checkpoint` from reused staging buffers; read it back.

Shared by `TorchCheckpointer` and the Lightning callback. A save encodes the tree (JSON skeleton +
tensors, see ``_torch_format``), copies header and tensors into one of two staging buffers
(pinned when CUDA is available; reallocated only when the state grows) and hands that buffer to
``Checkpoint.write(..., copy=False)``: the checkpoint's writer thread writes it without another
copy. Two buffers let one version be written while the next is staged; a save that finds both
busy waits for the older write.
"""

from __future__ import annotations

import random
import threading
import warnings
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from typing import Any

import numpy as np
import torch

from taskpoint.integrations import _torch_format as fmt

METADATA = {"format": "taskpoint.torch/1"}
_SLOTS = 2


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
            self.buffer = torch.empty(capacity, dtype=torch.uint8, pin_memory=pin)
            self.view = memoryview(self.buffer.numpy())
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

    def write(self, state: Any, step: int, blocking: bool) -> Any:
        """Stage ``state`` (returns once every tensor is copied) and commit it as a version."""
        with self._lock:
            encoded = fmt.encode(state)
            layout = fmt.plan(encoded)
            slot = self._free_slot()
            view = slot.ensure(layout.total, self._pin)
            _stage(slot.buffer, view, encoded, layout)  # type: ignore[arg-type]
            slot.future, slot.order = None, self._saves
            self._saves += 1
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

    def _free_slot(self) -> _Slot:
        free = [s for s in self.slots if not s.busy()]
        if free:
            return min(free, key=lambda s: s.order)
        oldest = min(self.slots, key=lambda s: s.order)
        wait_futures([oldest.future])  # type: ignore[list-item]
        return oldest

    def read(self) -> tuple[Any, list[torch.Tensor]] | None:
        """The latest version's skeleton and read-only tensor views, or ``None``."""
        blob = self.checkpoint.read()
        if blob is None:
            return None
        where = getattr(self.checkpoint, "url", repr(self.checkpoint))
        header, data_start = fmt.parse(blob, where)
        return header["state"], fmt.tensor_views(blob, header, data_start)

    def wait(self, timeout: float | None = None) -> None:
        self.checkpoint.wait(timeout)


def _stage(
    buffer: torch.Tensor, view: memoryview, encoded: fmt.Encoded, layout: fmt.Layout
) -> None:
    fmt.write_header(view, layout)
    cuda_devices = set()
    with torch.no_grad():
        for t, (offset, nbytes) in zip(encoded.tensors, layout.entries, strict=True):
            if nbytes == 0:
                continue
            start = layout.data_start + offset
            target = buffer[start : start + nbytes].view(t.dtype).view(t.shape)
            if t.is_cuda:
                cuda_devices.add(t.device)
                target.copy_(t, non_blocking=True)  # pinned target: an async DMA
            else:
                target.copy_(t)
    for device in cuda_devices:  # every copy must have landed before the writer reads
        torch.cuda.current_stream(device).synchronize()


# ---------------------------------------------------------------------------------- RNG state
def rng_state() -> dict[str, Any]:
    """Python ``random``, NumPy global, torch CPU and (when available) every CUDA device's RNG."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(legacy=False),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available():
        count = torch.cuda.device_count()
        if len(cuda) != count:
            warnings.warn(
                f"checkpoint has CUDA RNG states for {len(cuda)} devices, this process sees "
                f"{count}; restoring the first {min(count, len(cuda))}",
                stacklevel=3,
            )
        for index, device_state in enumerate(cuda[:count]):
            torch.cuda.set_rng_state(device_state, index)
