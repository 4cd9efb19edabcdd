"""`TorchCheckpointer`: save and restore a PyTorch training state (see the package docs).

Encoding lives in ``_format``, staging and writing in ``_state``, reading in ``_load``.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Literal

import torch

from taskpoint.errors import CheckpointError
from taskpoint.integrations import _toolkit as kit
from taskpoint.integrations.torch import _format as fmt
from taskpoint.integrations.torch import _sharding
from taskpoint.integrations.torch._state import StagedWriter, spare_core

if TYPE_CHECKING:
    from taskpoint.checkpoint import Checkpoint, CheckpointVersion

__all__ = ["TorchCheckpointer"]


class TorchCheckpointer:
    """Save and restore a PyTorch training state through a taskpoint `Checkpoint`.

    ``checkpoint`` defaults to ``taskpoint.current_context().checkpoint`` (inside a task; outside
    one it must be given). ``every_n_steps`` is the cadence of `maybe_save` (``save`` saves
    whenever it is called): every N steps, or ``"auto"``, when ``checkpoint.due()`` says (an
    interval chosen from the measured cost of a save and the task's failure rate). After
    `restore`, ``resumed_step`` is the step resumed from (``None`` when nothing was).
    ``objects`` maps names to anything with
    ``state_dict()``/``load_state_dict()`` (a `ResumableSampler`, an EMA, ...) or to a
    ``torch.Generator``. With ``rng`` the Python,
    NumPy global and torch CPU/CUDA RNG states are saved and restored too.

    Memory: two staging buffers, each the size of the state (pinned when CUDA is available), are
    kept between saves so the next save reuses them.

    ``overlap=True`` (needs ``optimizer``) shortens the stall of an async save further: the
    optimizer's CPU tensors (its parameters, which the model's state shares, and its state such
    as momentum) are copied on a background thread while the loop runs its next forward and
    backward, and the optimizer's next ``step()`` waits for (and helps with) what is left of it.
    Everything else is copied before ``save`` returns. It pays where torch leaves a core free
    (``torch.get_num_threads()`` below the usable cores): with every core busy, a copy beside
    the loop slows it more than the copy takes on all cores, so then ``save`` copies everything
    first, as without ``overlap``.
    CUDA tensors are always copied before ``save`` returns (an async DMA).

    In a group of ranks (an initialised ``torch.distributed`` process group of more than one
    rank: DDP, FSDP2 ``fully_shard``, launched by taskpoint, torchrun, SLURM ...), or with
    ``sharded=True``, every rank builds the checkpointer and calls ``save``/``restore`` together:
    the state (``get_state_dict``/``set_state_dict`` of ``torch.distributed.checkpoint``) is
    saved through DCP's planners, each rank writing its own shard, into **one** version that
    rank 0 commits once every rank's files are durable; each rank's scheduler, scaler,
    ``objects`` and RNG states are saved per rank. ``restore`` loads the same version on every
    rank, into any number of ranks (resharding), or into a plain model in one process.
    Checkpoint collectives run on gloo groups of their own (``timeout`` seconds at most), never
    on the training's. ``overlap`` does not apply there (every tensor is copied before ``save``
    returns).

    The rule that comes with ``overlap``: until that next ``step()``, change those tensors only
    through it (or call `wait_staged` first). An in-place change in between is caught (tensor
    version counters) and fails that save with `CheckpointError`, raised by the next
    ``save``/``wait``; nothing wrong is committed.

    Examples:
        >>> import tempfile
        >>> import torch
        >>> from taskpoint import Checkpoint
        >>> from taskpoint.integrations.torch import TorchCheckpointer
        >>> model = torch.nn.Linear(4, 2)
        >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> cp = Checkpoint.open(tempfile.mkdtemp())      # inside a task: the task's own
        >>> ckpt = TorchCheckpointer(checkpoint=cp, model=model, optimizer=optimizer)
        >>> ckpt.save(10, blocking=True).step
        10
        >>> fresh = torch.nn.Linear(4, 2)                 # other initial weights
        >>> TorchCheckpointer(checkpoint=cp, model=fresh).restore()
        10
        >>> torch.equal(fresh.weight, model.weight)
        True
        >>> cp.close()
    """

    def __init__(
        self,
        *,
        checkpoint: Checkpoint | None = None,
        model: torch.nn.Module | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any = None,
        scaler: Any = None,
        objects: Mapping[str, Any] | None = None,
        every_n_steps: int | Literal["auto"] | None = None,
        rng: bool = True,
        overlap: bool = False,
        sharded: bool | None = None,
        timeout: float = 600.0,
    ) -> None:
        checkpoint, self._ctx = kit.task_checkpoint(checkpoint, "TorchCheckpointer")
        self.checkpoint = checkpoint
        if every_n_steps is not None:
            every_n_steps = kit.check_every_n_steps(every_n_steps)
        self.every_n_steps = every_n_steps
        self.resumed_step: int | None = None
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.scaler = scaler
        self.objects = dict(objects or {})
        self.rng = rng
        for name, obj in self.objects.items():
            if not isinstance(obj, torch.Generator) and not (
                hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict")
            ):
                raise TypeError(
                    f"TorchCheckpointer objects[{name!r}] ({type(obj).__name__}) has no "
                    "state_dict()/load_state_dict() and is not a torch.Generator"
                )
        self._writer = StagedWriter(checkpoint)
        self._sharded = _sharding.open_io(checkpoint, sharded, model, timeout)
        self.overlap = overlap
        if overlap:
            if optimizer is None:
                raise ValueError(
                    "TorchCheckpointer(overlap=True) needs the optimizer: its step() is where "
                    "the background copy of the state must have finished"
                )
            writer = weakref.ref(self._writer)

            def before_step(*_: Any) -> None:
                staged = writer()
                if staged is not None:
                    staged.wait_staged(report=False)

            # Held by the optimizer: a weak reference, so the hook does not keep this alive.
            self._hook = optimizer.register_step_pre_hook(before_step)

    @property
    def preempted(self) -> bool:
        """True once the running task's attempt got SIGTERM (always False outside a task).

        Save at once when it turns true (``if step % n == 0 or ckpt.preempted: ckpt.save(step)``):
        inside a task that save commits and then raises ``Preempted``, so the retried attempt
        loses no step.
        """
        return self._ctx is not None and self._ctx.preempted

    # ------------------------------------------------------------------------------ saving
    def maybe_save(
        self, step: int, *, blocking: bool = False
    ) -> CheckpointVersion | Future[CheckpointVersion | None] | None:
        """`save` when ``step`` is a multiple of ``every_n_steps`` (with ``"auto"``: when
        ``checkpoint.due()`` says; call this after every step) or the attempt is preempted;
        else return ``None``. In a group of ranks, where ranks may disagree (``"auto"`` times
        each rank's own saves; SIGTERM reaches ranks at slightly different steps), the ranks
        agree first (a tiny collective on the checkpoint's group): all save if any would."""
        if self.every_n_steps is None:
            raise ValueError('TorchCheckpointer.maybe_save() needs every_n_steps=N or "auto"')
        due = kit.cadence_due(self.every_n_steps, step, self.checkpoint) or self.preempted
        if self._sharded is not None and (self.every_n_steps == "auto" or self._ctx is not None):
            due = self._sharded.any_rank(due)
        if due:
            return self.save(step, blocking=blocking)
        return None

    def save(
        self, step: int, *, blocking: bool = False
    ) -> CheckpointVersion | Future[CheckpointVersion | None]:
        """Commit the current state as a new checkpoint version tagged with ``step``.

        Returns once every tensor has been copied into a staging buffer (CUDA copies included):
        the caller may change the model at once. With ``overlap=True`` an async save returns
        before the optimizer's CPU tensors are copied; its next ``step()`` waits for them.

        ``blocking=False`` returns the future of the write (a newer save may supersede a queued
        one: its future then resolves to ``None``);
        ``blocking=True`` returns the committed `CheckpointVersion`. If both staging buffers
        are still being written, this waits for the older write first.
        """
        if isinstance(step, bool) or not isinstance(step, int):
            raise TypeError(f"step must be an int, got {type(step).__name__}")
        if self._sharded is not None:
            state = _sharding.dcp_state(self.model, self.optimizer)
            # Preempted: committed before save returns, for the engine's hook to see.
            blocking = blocking or self.preempted
            return self._sharded.save(state, self._collect_own(step), step, blocking)
        defer = None
        # Preempted: commit this one at once. No spare core: a copy beside the loop would slow
        # every torch op of the next steps by more than the copy takes on all cores now.
        if self.overlap and not self.preempted and spare_core():
            owned = self._optimizer_storages()
            defer = lambda t: t.untyped_storage().data_ptr() in owned  # noqa: E731
        return self._writer.write(self._collect(step), step, blocking, defer)

    def _optimizer_storages(self) -> set[int]:
        """Storage addresses of the tensors only ``optimizer.step()`` changes."""
        assert self.optimizer is not None
        tensors = [p for group in self.optimizer.param_groups for p in group["params"]]
        for per_param in self.optimizer.state.values():
            tensors += [v for v in per_param.values() if isinstance(v, torch.Tensor)]
        return {t.untyped_storage().data_ptr() for t in tensors if t.device.type == "cpu"}

    def wait_staged(self) -> None:
        """Wait until an overlapped save has copied the state (``overlap=True``); after this
        the tensors may be changed by anything. Re-raises that save's error."""
        self._writer.wait_staged()

    def _collect(self, step: int) -> dict[str, Any]:
        state: dict[str, Any] = {"step": step}
        if self.model is not None:
            state["model"] = self.model.state_dict()
        if self.optimizer is not None:
            state["optimizer"] = self.optimizer.state_dict()
        state.update(self._collect_own(step))
        return state

    def _collect_own(self, step: int) -> dict[str, Any]:
        """What is not the model or the optimizer (in a group of ranks: each rank's own)."""
        state: dict[str, Any] = {"step": step}
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        state["objects"] = {
            name: obj.get_state() if isinstance(obj, torch.Generator) else obj.state_dict()
            for name, obj in self.objects.items()
        }
        if self.rng:
            state["rng"] = kit.capture_rng(torch=True)
        return state

    def wait(self, timeout: float | None = None) -> None:
        """Block until every async save is committed; re-raise a writer error."""
        self._writer.wait_staged()
        if self._sharded is not None:
            self._sharded.drain(timeout)
        self.checkpoint.wait(timeout)

    # ------------------------------------------------------------------------------ restoring
    def restore(self) -> int | None:
        """Load the latest committed version into the objects in place; return its step (also
        kept in ``resumed_step``).

        Returns ``None`` (and changes nothing) when nothing was committed yet. Model tensors are
        copied into the model's own parameters and buffers (``load_state_dict``, strict); the
        optimizer, scheduler, scaler and objects get their own copies of saved tensors.
        """
        sharded = self._sharded is not None or _sharding.latest_is_sharded(self.checkpoint)
        if sharded:
            return self._restore_sharded()
        # The model's tensors are read from disk straight into its own memory (its
        # load_state_dict then copies nothing); everything else into new tensors.
        self._writer.wait_staged(report=False)  # an overlapped save may still read them
        into = {"model": self.model.state_dict()} if self.model is not None else {}
        loaded = self._writer.read_into(into, self._check_components)
        if loaded is None:
            return None
        skeleton, views, owned = loaded
        if self.model is not None:
            self.model.load_state_dict(fmt.decode(skeleton["model"], views, clone=False))
        for name in ("optimizer", "scheduler", "scaler"):
            target = getattr(self, name)
            if target is not None:
                target.load_state_dict(fmt.decode(skeleton[name], views, clone=not owned))
        for name, obj in self.objects.items():
            state = fmt.decode(skeleton["objects"][name], views, clone=not owned)
            if isinstance(obj, torch.Generator):
                obj.set_state(state)
            else:
                obj.load_state_dict(state)
        if self.rng and "rng" in skeleton:
            kit.restore_rng(fmt.decode(skeleton["rng"], views, clone=not owned))
        self.resumed_step = skeleton["step"]
        return self.resumed_step

    def _restore_sharded(self) -> int | None:
        """Load a sharded version through DCP (any world size, or one plain process)."""
        if self.model is None:
            raise ValueError("TorchCheckpointer needs model= to restore a sharded checkpoint")
        loaded = _sharding.restore(self.checkpoint, self._sharded, self.model, self.optimizer)
        if loaded is None:
            return None
        self._check_components({**loaded.own, "model": 0, "optimizer": 0})
        for name in ("scheduler", "scaler"):
            target = getattr(self, name)
            if target is not None:
                target.load_state_dict(loaded.own[name])
        for name, obj in self.objects.items():
            if isinstance(obj, torch.Generator):
                obj.set_state(loaded.own["objects"][name])
            else:
                obj.load_state_dict(loaded.own["objects"][name])
        # Another world size: each rank's random streams were another process's; restoring
        # rank (r % saved world)'s would only pretend to be exact.
        if self.rng and "rng" in loaded.own and loaded.saved_world == _sharding.world_size():
            kit.restore_rng(loaded.own["rng"])
        self.resumed_step = loaded.own["step"]
        return self.resumed_step

    def close(self) -> None:
        """Wait for pending saves, then tear down the checkpoint's own process groups (before
        ``destroy_process_group``; call it on every rank)."""
        self.wait()
        if self._sharded is not None:
            _sharding.close_io(self._sharded)
            self._sharded = None

    def _check_components(self, skeleton: Any) -> None:
        """Refuse a version that lacks a component we restore (before any tensor is read)."""
        where = getattr(self.checkpoint, "url", repr(self.checkpoint))
        missing = [
            name
            for name in ("model", "optimizer", "scheduler", "scaler")
            if getattr(self, name) is not None and name not in skeleton
        ]
        missing += [f"objects[{n!r}]" for n in self.objects if n not in skeleton["objects"]]
        if missing:
            raise CheckpointError(
                f"the latest torch checkpoint at {where} has no state for {', '.join(missing)}; "
                "pass the same components to TorchCheckpointer as when it was saved"
            )
