"""The checkpoint's own collectives: a gloo process group beside the training's.

A multi-rank save plans, agrees on a version id and commits through collectives. Run on the
training's group (NCCL on GPUs, or the default gloo group) they would queue behind, or interleave
with, the training's own collectives, and an async save's commit on the writer thread would race
the loop's all-reduces; so checkpoints get groups of their own, created (a collective itself) by
every rank when the `TorchCheckpointer` is built. gloo runs on CPU, whatever the training uses.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import torch.distributed as dist

# How long a rank waits for the others at a checkpoint collective: a rank that died leaves the
# others waiting this long at most (a launcher usually ends them first).
DEFAULT_TIMEOUT = 600.0


def world() -> tuple[int, int] | None:
    """``(rank, world_size)`` of the initialised default process group, else ``None``."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    return dist.get_rank(), dist.get_world_size()


class GlooGroup:
    """A `RankGroup` (``checkpoint/ranked.py``) over a new gloo group of every rank."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.rank = dist.get_rank()
        self.size = dist.get_world_size()
        self.pg: Any = dist.new_group(backend="gloo", timeout=timedelta(seconds=timeout))

    def gather(self, obj: Any) -> list[Any] | None:
        out: list[Any] | None = [None] * self.size if self.rank == 0 else None
        dist.gather_object(obj, out, dst=0, group=self.pg)
        return out

    def broadcast(self, obj: Any) -> Any:
        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self.pg)
        return box[0]

    def any_true(self, flag: bool) -> bool:
        """Whether any rank's ``flag`` is true (one small all-reduce)."""
        import torch

        value = torch.tensor([1 if flag else 0], dtype=torch.int32)
        dist.all_reduce(value, op=dist.ReduceOp.MAX, group=self.pg)
        return bool(value.item())

    def destroy(self) -> None:
        """Tear the group down (before ``destroy_process_group``: a live group of our own can
        hang gloo's teardown of the default one)."""
        if self.pg is not None and dist.is_initialized():
            dist.destroy_process_group(self.pg)
        self.pg = None
