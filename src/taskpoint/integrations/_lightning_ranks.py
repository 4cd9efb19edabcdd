"""`LightningCheckpointer` in a group of ranks: sharded saves and loads through DCP.

Used when ``Trainer.fit`` runs in more than one process (``strategy="ddp"``, or
``ModelParallelStrategy`` with FSDP2 ``fully_shard``), and by a single process whose latest
version was saved that way. The model's and optimizers' tensors go through DCP
(``get_state_dict``/``set_state_dict``: each rank writes its shard, the same path as a sharded
`TorchCheckpointer`); the rest of Lightning's checkpoint (loops, callbacks' states, LR schedulers,
precision plugin, step and epoch; the callback's RNG and sampler states among the callbacks') is
each rank's own state. One save is one taskpoint version that rank 0 commits.

Restore order. DCP needs the wrapped model and the optimizers, which exist only after
``strategy.setup``: the load runs in ``on_fit_start``. The Lightning part of the version is then
handed to Lightning's own restore path (``_loaded_checkpoint``). Strategies that restore after
their setup (``ModelParallelStrategy``) run it themselves right after ``on_fit_start``, their
model and optimizer loaders being no-ops; for the others (DDP, one device), whose restore of
modules and callbacks ran before the setup with nothing to load, it is run again here, and their
loaders get the state DCP just loaded (each tensor is copied onto itself).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

from taskpoint.errors import TaskpointError
from taskpoint.integrations.torch import _format as fmt
from taskpoint.integrations.torch import _sharding

if TYPE_CHECKING:
    from taskpoint.checkpoint import Checkpoint
    from taskpoint.integrations.torch._sharded import ShardedIO

HPARAM_KEYS = ("hyper_parameters", "hparams_name", "hparams_type")
_TENSOR_KEYS = ("state_dict", "optimizer_states")  # what DCP saves instead


class Restored(NamedTuple):
    step: int
    same_world: bool  # saved by as many ranks as restore it (RNG states then apply)


def open_io(checkpoint: Checkpoint, trainer: Any, timeout: float) -> ShardedIO | None:
    """The sharded writer when ``fit`` runs in a group of ranks (a collective: every rank's
    callback ``setup`` creates the checkpoint's own gloo groups), else ``None``."""
    if trainer.world_size == 1:
        return None
    check_strategy(trainer.strategy)
    io = _sharding.open_io(checkpoint, None, trainer.lightning_module, timeout)
    if io is None:
        raise TaskpointError(
            f"LightningCheckpointer: the Trainer has world_size={trainer.world_size} but no "
            "torch.distributed process group is initialised"
        )
    return io


def check_strategy(strategy: Any) -> None:
    """Refuse strategies whose state this path does not know how to hand back to Lightning."""
    from lightning.pytorch import strategies

    refused = tuple(
        getattr(strategies, name)
        for name in ("FSDPStrategy", "DeepSpeedStrategy")
        if hasattr(strategies, name)
    )
    known = tuple(
        getattr(strategies, name)
        for name in ("DDPStrategy", "ModelParallelStrategy", "SingleDeviceStrategy")
        if hasattr(strategies, name)
    )
    if isinstance(strategy, refused) or not isinstance(strategy, known):
        raise TaskpointError(
            f"LightningCheckpointer does not support {type(strategy).__name__} in a group of ranks "
            "(supported: DDPStrategy, and ModelParallelStrategy with FSDP2 fully_shard for "
            "sharded training; Lightning's FSDPStrategy (FSDP1) is not supported)"
        )


# ---------------------------------------------------------------------------------- saving
def save(io: ShardedIO, trainer: Any, blocking: bool) -> Any:
    """One sharded version of ``trainer``'s state, on every rank at once."""
    step = trainer.global_step
    state = _sharding.dcp_state(trainer.strategy.model, trainer.optimizers)
    own = {"step": step, "lightning": lightning_state(trainer)}
    return io.save(state, own, step, blocking)


def lightning_state(trainer: Any) -> dict[str, Any]:
    """Lightning's own checkpoint dict (``dump_checkpoint``: every hook runs as for a ``.ckpt``)
    without the model's and optimizers' states, which DCP saves instead."""
    connector = _connector(trainer)
    with _weights_left_out(connector, trainer.strategy):
        checkpoint = connector.dump_checkpoint(weights_only=False)
    for key in _TENSOR_KEYS:
        checkpoint.pop(key, None)
    return without_unencodable_hparams(checkpoint)


@contextlib.contextmanager
def _weights_left_out(connector: Any, strategy: Any) -> Iterator[None]:
    """While ``dump_checkpoint`` runs, the strategy's model and optimizer state producers give
    nothing: with FSDP2 they would gather or copy every shard (collectives on the training's
    group), only for the result to be dropped. Shadowed on the instances, then removed."""
    shadowed = ((connector, "_get_lightning_module_state_dict"), (strategy, "optimizer_state"))
    for owner, name in shadowed:
        if not callable(getattr(owner, name, None)):
            raise TaskpointError(
                f"LightningCheckpointer cannot save with this Lightning version (no "
                f"{type(owner).__name__}.{name})"
            )
    connector._get_lightning_module_state_dict = dict
    strategy.optimizer_state = lambda optimizer: {}
    try:
        yield
    finally:
        del connector._get_lightning_module_state_dict
        del strategy.optimizer_state


def without_unencodable_hparams(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The module's hyper-parameters are left out when they cannot be encoded (Lightning does
    not need them to resume: the module is built by the user's code)."""
    for key in HPARAM_KEYS:
        if key in checkpoint and not encodable(checkpoint[key]):
            del checkpoint[key]
    return checkpoint


def encodable(value: Any) -> bool:
    try:
        fmt.encode(value)
    except TypeError:
        return False
    return True


# ---------------------------------------------------------------------------------- restoring
def restore(checkpoint: Checkpoint, io: ShardedIO | None, trainer: Any) -> Restored | None:
    """In ``on_fit_start``: load the newest sharded version every rank can use into the wrapped
    model and the optimizers (DCP, any saved world size), and hand the rest to Lightning."""
    check_strategy(trainer.strategy)
    connector = _connector(trainer)
    if getattr(connector, "_ckpt_path", None):
        return None  # fit() was given a ckpt_path: Lightning restored it before the setup
    loaded = _sharding.restore(checkpoint, io, trainer.strategy.model, trainer.optimizers)
    if loaded is None:
        return None
    own = loaded.own
    if not isinstance(own, dict) or "lightning" not in own:
        raise TaskpointError(
            f"checkpoint version {loaded.version.id} is a sharded torch checkpoint not saved by "
            "LightningCheckpointer: load it with TorchCheckpointer"
        )
    connector._loaded_checkpoint = {**own["lightning"], **_for_lightning_loaders(trainer)}
    if not trainer.strategy.restore_checkpoint_after_setup:
        # Lightning ran this before strategy.setup, when nothing was loaded yet; run it now (the
        # strategies that restore after setup run it themselves after on_fit_start).
        connector._restore_modules_and_callbacks()
    return Restored(int(own["step"]), loaded.saved_world == _sharding.world_size())


def _for_lightning_loaders(trainer: Any) -> dict[str, Any]:
    """What Lightning's model and optimizer loaders get: nothing for the strategies whose
    loaders do nothing (they load through DCP themselves: ``lightning_restore_optimizer`` is
    False); for the others (DDP, one device, which call ``load_state_dict``), the state DCP
    just loaded, so each copy is onto itself."""
    if not trainer.strategy.lightning_restore_optimizer:
        return {"state_dict": {}, "optimizer_states": []}
    return {
        "state_dict": trainer.lightning_module.state_dict(),
        "optimizer_states": [optimizer.state_dict() for optimizer in trainer.optimizers],
    }


def _connector(trainer: Any) -> Any:
    connector = getattr(trainer, "_checkpoint_connector", None)
    needed = ("dump_checkpoint", "_restore_modules_and_callbacks", "_loaded_checkpoint")
    if connector is None or not all(hasattr(connector, name) for name in needed):
        raise TaskpointError(
            "LightningCheckpointer cannot reach this Lightning version's checkpoint connector "
            "(Trainer._checkpoint_connector with dump_checkpoint, _restore_modules_and_callbacks "
            "and _loaded_checkpoint); pass ckpt_path yourself"
        )
    return connector
