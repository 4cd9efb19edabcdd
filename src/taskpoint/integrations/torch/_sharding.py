"""When `TorchCheckpointer` saves sharded, and how it moves its state in and out of DCP's form.

Sharded (``_sharded``) when asked (``sharded=True``), or by default when a ``torch.distributed``
process group of more than one rank is initialised; a single process reads a sharded version
too (``restore`` looks at the latest version's format), so a plain model can load what a group
of ranks saved.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from taskpoint.checkpoint import Checkpoint
    from taskpoint.integrations.torch._sharded import Loaded, ShardedIO

# The manifest metadata of a sharded version (DCP and the sharded modules are imported only
# once a process saves or loads one: a single-process user never pays for them).
FORMAT = "taskpoint.torch.sharded/1"


def open_io(
    checkpoint: Any, sharded: bool | None, model: torch.nn.Module | None, timeout: float
) -> ShardedIO | None:
    """The sharded writer for this checkpointer, or ``None`` for the single-process format.

    In a group of ranks this creates the checkpoint's two gloo groups: a collective of the
    default group, so every rank must build its `TorchCheckpointer` at the same point."""
    from taskpoint.checkpoint.ranked import SoloGroup
    from taskpoint.integrations.torch import _dist

    world = _dist.world()
    if sharded is None:
        sharded = world is not None and world[1] > 1
    if not sharded:
        return None
    if model is None:
        raise ValueError("TorchCheckpointer(sharded=True) needs model=")
    if not hasattr(checkpoint, "_store"):
        raise TypeError("a sharded TorchCheckpointer needs a taskpoint Checkpoint")
    from taskpoint.integrations.torch._sharded import ShardedIO

    if world is None or world[1] == 1:
        return ShardedIO(checkpoint, SoloGroup(), SoloGroup())
    # Planning and agreeing on ids happen on the caller's thread, commits on the writer thread:
    # one group each, so the two threads' collectives never interleave on one group.
    return ShardedIO(checkpoint, _dist.GlooGroup(timeout), _dist.GlooGroup(timeout))


def close_io(io: ShardedIO) -> None:
    from taskpoint.integrations.torch import _dist

    io.close()
    for group in (io.plan_group, io.commit_group):
        if isinstance(group, _dist.GlooGroup):
            group.destroy()


def world_size() -> int:
    from taskpoint.integrations.torch import _dist

    world = _dist.world()
    return 1 if world is None else world[1]


def _optimizers(optimizer: Any) -> list[Any]:
    """``None``, one optimizer or a list of them (Lightning's ``trainer.optimizers``)."""
    if optimizer is None:
        return []
    return list(optimizer) if isinstance(optimizer, list | tuple) else [optimizer]


def dcp_state(model: torch.nn.Module | None, optimizer: Any) -> dict[str, Any]:
    """``{"model": ..., "optimizer": ...}`` as DCP's ``get_state_dict`` gives them: the same
    keys whatever wraps the model (DDP, FSDP2), shards as DTensors. ``optimizer``: ``None``,
    one, or a list (their states merged into one, as ``get_state_dict`` does)."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    assert model is not None
    optimizers = _optimizers(optimizer)
    model_state, optim_state = get_state_dict(model, optimizers)
    state: dict[str, Any] = {"model": model_state}
    if optimizers:
        state["optimizer"] = optim_state
    return state


def latest_is_sharded(checkpoint: Any) -> bool:
    """Is the newest committed version a sharded one (read by a single process)?"""
    latest = getattr(checkpoint, "latest", None)
    version = latest() if latest is not None else None
    return version is not None and version.metadata.get("format") == FORMAT


def restore(
    checkpoint: Checkpoint, io: ShardedIO | None, model: torch.nn.Module, optimizer: Any
) -> Loaded | None:
    """Load the newest sharded version into ``model`` and ``optimizer`` (through
    ``set_state_dict``); the rank's own state comes back in ``own``."""
    from torch.distributed.checkpoint.state_dict import set_state_dict

    from taskpoint.checkpoint.ranked import SoloGroup
    from taskpoint.integrations.torch._sharded import load

    found = (
        load(checkpoint, lambda: dcp_state(model, optimizer), SoloGroup())
        if io is None
        else io.load(lambda: dcp_state(model, optimizer))
    )
    if found is None:
        return None
    set_state_dict(
        model,
        _optimizers(optimizer),
        model_state_dict=found.state["model"],
        optim_state_dict=found.state.get("optimizer", {}),
    )
    return found
