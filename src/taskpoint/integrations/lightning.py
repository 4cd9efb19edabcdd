"""Lightning integration: ``Trainer.fit`` that resumes mid-epoch from the task's checkpoint.

```python
from taskpoint.integrations.lightning import LightningCheckpointer
from taskpoint.integrations.torch import ResumableSampler

loader = DataLoader(data, batch_size=32, sampler=ResumableSampler(data, seed=0))
trainer = Trainer(max_epochs=3, callbacks=[LightningCheckpointer(every_n_steps=100)])
trainer.fit(model, loader)          # a retried attempt continues where the last save left off
```

Every ``every_n_steps`` optimizer steps (and at the first step after SIGTERM, when the
engine has marked the attempt preempted) the callback takes Lightning's own full checkpoint
(``dump_checkpoint``: model, optimizers, LR schedulers, precision plugin, loop progress, every
callback's state) plus the Python/NumPy/torch CPU+CUDA RNG states and the position of each
`ResumableSampler` in the train loaders, and writes it through the task's `Checkpoint`
(asynchronously by default, from reused staging buffers). At the start of ``fit`` in a retried
attempt it hands the latest version to Lightning's restore path, so the user passes no
``ckpt_path`` (one passed explicitly wins); ``resumed_step`` is then the global step resumed
from (``None`` when nothing was).

What is exact: model, optimizer and scheduler states, the step, epoch and batch counters, other
callbacks' states and the RNG states are those of the save; with a `ResumableSampler` (given
``sampler=`` or inside ``batch_sampler=``) the next batch is the one an uninterrupted run trained
next, with or without loader workers; RNG states are restored after the train loader's iterator is
created, right before training continues. A deterministic ``fit`` (CPU, or CUDA with
``deterministic=True``) then ends with bitwise the same weights as an uninterrupted one.

Not exact: a train loader without `ResumableSampler` restarts its epoch from the beginning
(Lightning warns); randomness drawn inside loader *worker processes* is not replayed (workers are
seeded per loader iterator; with ``num_workers=0`` a dataset drawing from the global RNGs is
replayed exactly); a save is taken only on batches where the optimizer
stepped (accumulated gradients are not saved); plateau schedulers that step after
``on_train_batch_end`` and a validation loop interrupted in the middle follow Lightning's own
restart rules.

In a group of ranks (``@task(nproc=N)``, torchrun, ...; ``Trainer(strategy="ddp")``, or
``ModelParallelStrategy`` with FSDP2 ``fully_shard`` in ``configure_model``) every rank's callback
saves at the same steps (cadence and preemption agreed across ranks) into **one** sharded version,
as a sharded `TorchCheckpointer` does: the model's and optimizers' tensors through DCP (each rank
writes its shard), the rest of Lightning's checkpoint, RNG states and sampler positions per rank.
At the start of ``fit`` every rank loads the same version, once the strategy has wrapped the model
and made the optimizers (``on_fit_start``), on any number of ranks, and hands the rest to
Lightning's restore path. A single process (or `TorchCheckpointer` with a plain model) loads such
a version too. Give the train loader a `ResumableSampler` made in ``train_dataloader()`` (the
process group exists then: it takes its rank's share) or with ``num_replicas=``/``rank=``, and
``Trainer(use_distributed_sampler=False)`` (Lightning would wrap it). Limits: Lightning's
``FSDPStrategy`` (FSDP1; Lightning refuses it on CPU) and DeepSpeed are refused; restored on
another number of ranks, RNG states are not restored and rank ``r`` takes the Lightning state of
rank ``r % N``; a ``ckpt_path`` given to ``fit`` still wins, but with ``ModelParallelStrategy``
it is loaded over taskpoint's version (read for nothing, and named by ``resumed_step``).

Preemption: inside a task, SIGTERM stays the engine's during ``fit`` (Lightning's own SIGTERM
handler, which would stop ``fit`` with a ``SystemExit`` the engine counts as a failure, is set
aside): the callback saves at the end of the current batch, the write commits and raises
``Preempted``, and the retried attempt continues from that batch.

It is a Lightning ``Checkpoint`` callback: with it in ``callbacks`` Lightning adds no default
``ModelCheckpoint`` (add one yourself to also keep ``.ckpt`` files; keep
``enable_checkpointing`` at its default ``True``).

Storage: the same non-pickle layout as `TorchCheckpointer` (JSON header + raw tensors). Values in
the checkpoint dict that are not tensors, NumPy arrays, numbers, strings, bytes, lists, tuples or
dicts raise ``TypeError`` at save, naming where they are; only the module's hyper-parameters are
left out instead (Lightning does not need them to resume: the module is built by your code).
"""

from __future__ import annotations

import logging
import signal
import threading
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

from taskpoint.integrations._lazy import require

require("lightning", "lightning")
require("numpy", "lightning")

from lightning.pytorch.callbacks import Checkpoint as _CheckpointCallback  # noqa: E402

from taskpoint.errors import TaskpointError  # noqa: E402
from taskpoint.integrations import _lightning_ranks as ranks  # noqa: E402
from taskpoint.integrations import _toolkit as kit  # noqa: E402
from taskpoint.integrations.torch import ResumableSampler, _sharding  # noqa: E402
from taskpoint.integrations.torch import _format as fmt  # noqa: E402
from taskpoint.integrations.torch._state import StagedWriter  # noqa: E402

if TYPE_CHECKING:
    from taskpoint.checkpoint import Checkpoint
    from taskpoint.integrations.torch._sharded import ShardedIO

__all__ = ["LightningCheckpointer"]

log = logging.getLogger("taskpoint")
_NOT_RESUMABLE = "You're resuming from a checkpoint that ended before the epoch ended"


class LightningCheckpointer(_CheckpointCallback):
    """Save ``Trainer.fit`` state to a taskpoint checkpoint and resume from it automatically.

    ``checkpoint`` defaults to ``taskpoint.current_context().checkpoint`` (looked up when
    ``fit`` starts; outside a task it must be given). ``every_n_steps``: save after every N-th
    optimizer step, or ``"auto"``: when ``checkpoint.due()`` says, asked after every optimizer
    step (an interval chosen from the measured cost of a save and the task's failure rate).
    ``blocking=False`` returns from the save as soon as the state is staged; the task's attempt
    waits for the write before it ends. ``rng=False`` leaves RNG states out. In a group of ranks
    (see the module docs) the checkpoint's collectives wait ``timeout`` seconds at most for the
    other ranks.
    After ``fit`` started, ``resumed_step`` is the global step resumed from, or ``None``.

    Examples:
        >>> import tempfile, warnings
        >>> import lightning.pytorch as pl
        >>> import torch
        >>> from taskpoint import Checkpoint
        >>> from taskpoint.integrations.lightning import LightningCheckpointer
        >>> class Model(pl.LightningModule):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.net = torch.nn.Linear(2, 1)
        ...     def training_step(self, batch, batch_idx):
        ...         return self.net(batch[0]).pow(2).mean()
        ...     def configure_optimizers(self):
        ...         return torch.optim.SGD(self.parameters(), lr=0.1)
        >>> x = torch.randn(32, 2)
        >>> loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=8)
        >>> cp = Checkpoint.open(tempfile.mkdtemp())      # inside a task: the task's own
        >>> def fit(max_steps: int) -> LightningCheckpointer:
        ...     callback = LightningCheckpointer(checkpoint=cp, every_n_steps=2)
        ...     trainer = pl.Trainer(max_steps=max_steps, logger=False, accelerator="cpu",
        ...                          enable_progress_bar=False, enable_model_summary=False,
        ...                          callbacks=[callback])
        ...     with warnings.catch_warnings():
        ...         warnings.simplefilter("ignore")
        ...         trainer.fit(Model(), loader)
        ...     return callback
        >>> fit(max_steps=2).resumed_step is None         # a first fit: nothing to resume
        True
        >>> fit(max_steps=4).resumed_step                 # a second fit continues at step 2
        2
        >>> cp.close()
    """

    def __init__(
        self,
        *,
        checkpoint: Checkpoint | None = None,
        every_n_steps: int | Literal["auto"] = 100,
        blocking: bool = False,
        rng: bool = True,
        timeout: float = 600.0,
    ) -> None:
        self.every_n_steps = kit.check_every_n_steps(every_n_steps)
        self.blocking = blocking
        self.rng = rng
        self.timeout = timeout
        self._checkpoint = checkpoint
        self._writer: StagedWriter | None = None
        self._io: ShardedIO | None = None  # in a group of ranks: the sharded writer
        self._sharded_restore = False  # load a sharded version in on_fit_start
        self._same_world = True  # the version loaded was saved by as many ranks
        self._trainer: Any = None
        self._ctx: Any = None
        self._pending: dict[str, Any] | None = None
        self._last_seen_step = -1
        self.resumed_step: int | None = None

    # ------------------------------------------------------------------------------ restoring
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage != "fit":
            return
        self._trainer = trainer
        self._checkpoint, self._ctx = kit.task_checkpoint(self._checkpoint, "LightningCheckpointer")
        self.resumed_step = None
        self._same_world = True
        if self._writer is None:
            self._writer = StagedWriter(self._checkpoint)
        self._io = ranks.open_io(self._checkpoint, trainer, self.timeout)
        # Sharded versions are loaded once the strategy has wrapped the model and made the
        # optimizers (on_fit_start); a single process reads one too (saved by a group of ranks).
        self._sharded_restore = self._io is not None or _sharding.latest_is_sharded(
            self._checkpoint
        )
        if self._sharded_restore:
            return
        loaded = self._writer.read()
        if loaded is None:
            return
        skeleton, views = loaded
        checkpoint = {
            key: fmt.decode(value, views, clone=key != "state_dict")
            for key, value in skeleton.items()
        }
        connector = getattr(trainer, "_checkpoint_connector", None)
        if connector is None or not hasattr(connector, "_loaded_checkpoint"):
            raise TaskpointError(
                "LightningCheckpointer cannot hand the checkpoint to this Lightning version "
                "(no Trainer._checkpoint_connector._loaded_checkpoint); pass ckpt_path yourself"
            )
        # Lightning's own restore path (model, callbacks, loops, optimizers, schedulers) reads
        # this dict when fit() was given no ckpt_path; a ckpt_path given explicitly replaces it.
        connector._loaded_checkpoint = checkpoint
        self.resumed_step = checkpoint.get("global_step")
        log.info("taskpoint: Trainer.fit resumes from step %s", self.resumed_step)

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        if not self._sharded_restore:
            return
        self._sharded_restore = False
        restored = ranks.restore(self._checkpoint, self._io, trainer)  # type: ignore[arg-type]
        if restored is not None:
            self.resumed_step, self._same_world = restored
            log.info("taskpoint: Trainer.fit resumes from sharded step %s", self.resumed_step)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict  # applied in on_train_start, once the train loader exists
        if any(s is not None for s in state_dict.get("samplers", [])):
            warnings.filterwarnings("ignore", message=_NOT_RESUMABLE)  # our sampler resumes

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._last_seen_step = trainer.global_step
        if self._ctx is not None:
            _hand_sigterm_to_taskpoint(trainer)
        # Before any save: a ResumableSampler that Lightning wrapped is refused here.
        samplers = [found[0] if found else None for found in _loader_samplers(trainer)]
        pending, self._pending = self._pending, None
        if pending is None:
            return
        saved = pending.get("samplers", [])
        if any(s is not None for s in saved):
            if len(saved) != len(samplers):
                raise TaskpointError(
                    f"the checkpoint has sampler states for {len(saved)} train loaders, this "
                    f"fit has {len(samplers)}: resume with the same train loaders"
                )
            for sampler, state in zip(samplers, saved, strict=True):
                if state is not None and sampler is not None:
                    sampler.load_state_dict(_normalized(state))
            # The loader iterator was created before this hook (and workers may have prefetched
            # from the old position): start it again from the restored sampler position.
            fetcher = getattr(trainer.fit_loop, "_data_fetcher", None)
            if fetcher is not None:
                iter(fetcher)
        # Saved by another number of ranks, each rank's random streams were another process's:
        # restoring rank (r % saved world)'s would only pretend to be exact.
        if self.rng and self._same_world and pending.get("rng") is not None:
            kit.restore_rng(pending["rng"])  # last: nothing may draw before training continues

    # ------------------------------------------------------------------------------ saving
    def state_dict(self) -> dict[str, Any]:
        """RNG states and train-sampler positions (also saved in Lightning's own checkpoints)."""
        state: dict[str, Any] = {"samplers": _sampler_states(self._trainer)}
        if self.rng:
            state["rng"] = kit.capture_rng(torch=True)
        return state

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        stepped, self._last_seen_step = step != self._last_seen_step, step
        preempted = self._ctx is not None and self._ctx.preempted
        due = stepped and (kit.cadence_due(self.every_n_steps, step, self._checkpoint) or preempted)
        agree = self.every_n_steps == "auto" or self._ctx is not None
        if self._io is not None and stepped and agree:
            # Ranks may disagree ("auto" times each rank's own saves; SIGTERM reaches ranks at
            # slightly different steps): all save if any would (a tiny collective).
            due = self._io.any_rank(due)
        if due:
            self.save(trainer)

    def save(self, trainer: Any, *, blocking: bool | None = None) -> Any:
        """Write Lightning's full checkpoint now; returns the version or its future. In a group
        of ranks every rank calls it at the same step (``on_train_batch_end`` does)."""
        assert self._writer is not None, "LightningCheckpointer.save() before Trainer.fit set it up"
        blocking = self.blocking if blocking is None else blocking
        if self._io is not None:
            # Preempted: committed before save returns, for the engine's hook to see.
            preempted = self._ctx is not None and self._ctx.preempted
            return ranks.save(self._io, trainer, blocking or preempted)
        checkpoint = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
        checkpoint = ranks.without_unencodable_hparams(checkpoint)
        return self._writer.write(checkpoint, trainer.global_step, blocking)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        if self._io is not None:
            self._io.drain()  # this rank's pending sharded saves, committed
        if self._writer is not None:
            self._writer.wait()  # surface a failed async write before fit returns

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """End of ``fit``: tear down the checkpoint's own gloo groups while the training's
        process group still exists (a live group of ours can hang its later teardown)."""
        io, self._io = self._io, None
        if io is not None:
            _sharding.close_io(io)


def _hand_sigterm_to_taskpoint(trainer: Any) -> None:
    """Inside a task, SIGTERM is the engine's preemption: the next save commits and raises
    ``Preempted``. Lightning's own handler would end ``fit`` with ``SIGTERMException`` (a
    ``SystemExit``, which the engine would record as a failure) before that save, so the
    handler Lightning found when ``fit`` started (the engine's) is put back; Lightning restores
    its bookkeeping at teardown as usual."""
    if threading.current_thread() is not threading.main_thread():
        return
    connector = getattr(trainer, "_signal_connector", None)
    previous = getattr(connector, "_original_handlers", {}).get(signal.SIGTERM)
    if callable(previous):
        signal.signal(signal.SIGTERM, previous)


# ---------------------------------------------------------------------------------- samplers
def _flatten(loaders: Any) -> Iterator[Any]:
    if isinstance(loaders, dict):
        for value in loaders.values():
            yield from _flatten(value)
    elif isinstance(loaders, list | tuple):
        for value in loaders:
            yield from _flatten(value)
    elif loaders is not None:
        yield loaders


def _loader_samplers(trainer: Any) -> list[tuple[ResumableSampler, int | None] | None]:
    """For each train loader: its ResumableSampler and batch size, or ``None``."""
    out: list[tuple[ResumableSampler, int | None] | None] = []
    for loader in _flatten(getattr(trainer, "train_dataloader", None)):
        batch_sampler = getattr(loader, "batch_sampler", None)
        for candidate in (
            getattr(loader, "sampler", None),
            getattr(batch_sampler, "sampler", None),
        ):
            _refuse_wrapped(candidate)
            if isinstance(candidate, ResumableSampler):
                size = getattr(loader, "batch_size", None) or getattr(
                    batch_sampler, "batch_size", None
                )
                out.append((candidate, size))
                break
        else:
            out.append(None)
    return out


def _refuse_wrapped(sampler: Any) -> None:
    """Lightning's ``use_distributed_sampler`` wraps a sampler it does not know in a
    ``DistributedSamplerWrapper``: each rank would take a share of the ResumableSampler's own
    order, and the positions saved would not be the wrapper's."""
    inner = getattr(getattr(sampler, "dataset", None), "_sampler", None)
    if isinstance(inner, ResumableSampler):
        raise TaskpointError(
            "Lightning wrapped the ResumableSampler in a DistributedSamplerWrapper: pass "
            "Trainer(use_distributed_sampler=False); a ResumableSampler made once the process "
            "group exists (in train_dataloader()) or given num_replicas= and rank= takes its "
            "rank's share itself"
        )


def _sampler_states(trainer: Any) -> list[dict[str, Any] | None]:
    """Sampler positions from Lightning's own batch counter, not from the sampler's.

    The sampler runs ahead of training when workers prefetch; Lightning's ``ready`` count is
    the number of batches of this epoch handed to training, the batch that just ended included.
    """
    if trainer is None or getattr(trainer, "train_dataloader", None) is None:
        return []
    batches = trainer.fit_loop.epoch_loop.batch_progress.current.ready
    states: list[dict[str, Any] | None] = []
    for found in _loader_samplers(trainer):
        if found is None:
            states.append(None)
            continue
        sampler, batch_size = found
        state = sampler.state_dict()
        if batch_size is not None:
            position = min(batches * batch_size, sampler.local_samples)  # this rank's share
            state.update(epoch=trainer.current_epoch, position=position)
        states.append(state)
    return states


def _normalized(state: dict[str, Any]) -> dict[str, Any]:
    """A finished epoch (this rank's share of it) resumes as the start of the next one."""
    share = -(-state["num_samples"] // int(state.get("num_replicas", 1)))
    if state["position"] >= share:
        return {**state, "epoch": state["epoch"] + 1, "position": 0}
    return state
