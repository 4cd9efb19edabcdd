"""`ResumableSampler`: a sampler whose position inside an epoch is part of its state."""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Any

import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[int]):
    """Yields dataset indices epoch after epoch and can resume in the middle of an epoch.

    The order of epoch ``e`` is a pure function of ``(seed, e)``: with ``shuffle`` it is
    ``torch.randperm(n, generator=torch.Generator().manual_seed(seed + e))``, else ``0..n-1``.
    ``state_dict()`` holds ``epoch`` and ``position`` (indices of that epoch already consumed);
    after ``load_state_dict()`` the next ``iter()`` yields exactly the remaining indices of the
    interrupted epoch, and later epochs are identical to an uninterrupted run's.

    What "consumed" means (``auto_advance``):

    - ``auto_advance=True`` (default): ``position`` counts indices *yielded*. That equals the
      indices trained on when the sampler feeds a ``DataLoader`` with ``num_workers=0``: the
      loader's batch sampler pulls exactly ``batch_size`` indices per batch, when that batch is
      requested, so after the training loop got batch *k* the position is ``k * batch_size``.
      When the epoch's iterator is exhausted the sampler moves to ``epoch + 1``, position 0.
    - ``auto_advance=False``: use it with ``num_workers > 0`` (workers prefetch, so the sampler
      runs ahead of training). ``position`` moves only when the training loop calls
      ``advance(len(batch))`` after training on a batch, and the loop must call
      ``set_epoch(epoch)`` at the start of every epoch.

    ``set_epoch(e)`` with ``e`` different from the current epoch starts epoch ``e`` at position 0;
    with the same epoch it keeps the position (so ``for epoch in range(sampler.epoch, E):
    sampler.set_epoch(epoch)`` resumes correctly). Only the newest iterator moves the position:
    ``iter()``, ``set_epoch()`` to another epoch and ``load_state_dict()`` detach older iterators,
    which keep yielding their own order without touching the state.

    In a group of ranks it replaces ``DistributedSampler``: ``num_replicas`` and ``rank`` default
    to the initialised ``torch.distributed`` process group's (1 and 0 without one). Each epoch's
    order is padded (with its first indices) to a multiple of ``num_replicas`` and rank ``r``
    takes every ``num_replicas``-th index from ``r``, as ``DistributedSampler`` does; ``len()``
    and ``position`` count this rank's indices. Each rank saves its own state (the
    `TorchCheckpointer` of a group saves ``objects`` per rank). Loaded into another number of
    replicas, the position is carried over as the share of the epoch consumed (rounded down:
    a few samples may be seen again, none is skipped).

    Examples:
        >>> from taskpoint.integrations.torch import ResumableSampler
        >>> sampler = ResumableSampler(6, seed=0)
        >>> it = iter(sampler)
        >>> trained = [next(it), next(it)]            # two indices trained, then a crash
        >>> resumed = ResumableSampler(6, seed=0)
        >>> resumed.load_state_dict(sampler.state_dict())
        >>> trained + list(resumed) == sampler.order(0)   # the rest of the same epoch
        True
    """

    def __init__(
        self,
        data_source_or_len: Sized | int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        auto_advance: bool = True,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        source = data_source_or_len
        n = source if isinstance(source, int) else len(source)
        if n < 0:
            raise ValueError(f"ResumableSampler needs a length >= 0, got {n}")
        self.num_samples = n
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.auto_advance = bool(auto_advance)
        self.num_replicas, self.rank = _replicas(num_replicas, rank)
        # This rank's share of an epoch (the order padded to a multiple of the replicas).
        self.local_samples = -(-n // self.num_replicas)
        self.epoch = 0
        self.position = 0
        self._iteration = 0  # only the newest iterator advances the position

    def order(self, epoch: int) -> list[int]:
        """The full index order of ``epoch`` (a pure function of ``seed`` and ``epoch``)."""
        if not self.shuffle:
            return list(range(self.num_samples))
        generator = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(self.num_samples, generator=generator).tolist()

    def local_order(self, epoch: int) -> list[int]:
        """This rank's indices of ``epoch``, in the order it yields them."""
        order = self.order(epoch)
        if self.num_replicas == 1:
            return order
        padded = order + order[: self.local_samples * self.num_replicas - len(order)]
        while len(padded) < self.local_samples * self.num_replicas:  # fewer samples than ranks
            padded += order[: self.local_samples * self.num_replicas - len(padded)]
        return padded[self.rank :: self.num_replicas]

    def __len__(self) -> int:
        return self.local_samples

    def __iter__(self) -> Iterator[int]:
        self._iteration += 1
        return self._iterate(self.epoch, self.position, self._iteration)

    def _iterate(self, epoch: int, start: int, token: int) -> Iterator[int]:
        order = self.local_order(epoch)
        for i in range(start, len(order)):
            if self.auto_advance and self._iteration == token:
                self.position = i + 1  # counted before the index leaves: "yielded"
            yield order[i]
        if self.auto_advance and self._iteration == token:
            self.epoch, self.position = epoch + 1, 0

    def set_epoch(self, epoch: int) -> None:
        """Make ``epoch`` current; a different epoch starts at position 0, the same one keeps it."""
        if epoch != self.epoch:
            self.epoch, self.position = int(epoch), 0
            self._iteration += 1  # an iterator still open belongs to the old epoch

    def advance(self, n: int) -> None:
        """Record that the training loop consumed ``n`` more indices (``auto_advance=False``)."""
        if self.auto_advance:
            raise RuntimeError(
                "ResumableSampler.advance() is for auto_advance=False; this sampler already "
                "counts the indices it yields"
            )
        if n < 0 or self.position + n > self.local_samples:
            raise ValueError(
                f"cannot advance by {n}: position {self.position} of {self.local_samples}"
            )
        self.position += n

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "num_samples": self.num_samples,
            "num_replicas": self.num_replicas,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore epoch and position; refuse a state saved for a different data set or order."""
        saved = (state["num_samples"], state["seed"], state["shuffle"])
        if saved != (self.num_samples, self.seed, self.shuffle):
            raise ValueError(
                f"ResumableSampler state was saved for (num_samples, seed, shuffle) = {saved}, "
                f"but this sampler has {(self.num_samples, self.seed, self.shuffle)}: resuming "
                "would not continue the same order"
            )
        replicas = int(state.get("num_replicas", 1))
        if replicas < 1 or not 0 <= state["position"] <= -(-self.num_samples // replicas):
            raise ValueError(f"ResumableSampler position {state['position']} is out of range")
        position = int(state["position"])
        if replicas != self.num_replicas:  # the same share of the epoch, rounded down
            position = min(self.local_samples, position * replicas // self.num_replicas)
        self.epoch, self.position = int(state["epoch"]), position
        self._iteration += 1

    def __repr__(self) -> str:
        return (
            f"ResumableSampler(num_samples={self.num_samples}, shuffle={self.shuffle}, "
            f"seed={self.seed}, epoch={self.epoch}, position={self.position}, "
            f"num_replicas={self.num_replicas}, rank={self.rank})"
        )


def _replicas(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    """``(num_replicas, rank)``: given, or the initialised process group's, or ``(1, 0)``."""
    import torch.distributed as dist

    grouped = dist.is_available() and dist.is_initialized()
    if num_replicas is None:
        num_replicas = dist.get_world_size() if grouped else 1
    if rank is None:
        rank = dist.get_rank() if grouped else 0
    if num_replicas < 1 or not 0 <= rank < num_replicas:
        raise ValueError(
            f"ResumableSampler needs num_replicas >= 1 and 0 <= rank < num_replicas, got "
            f"num_replicas={num_replicas}, rank={rank}"
        )
    return int(num_replicas), int(rank)
