"""`KerasCheckpointer`: a Keras callback that resumes ``fit`` mid-epoch (see the package docs;
the blob it writes and the RNG states it carries are ``_state``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from taskpoint.errors import CheckpointError, TaskpointError
from taskpoint.integrations import _toolkit as kit
from taskpoint.integrations.keras import _backend
from taskpoint.integrations.keras import _state as state

keras: Any = _backend.load_keras()

if TYPE_CHECKING:
    from taskpoint.checkpoint import Checkpoint

FORMAT = "taskpoint.keras/1"
__all__ = ["KerasCheckpointer"]


class KerasCheckpointer(keras.callbacks.Callback):
    """Save the training state every N batches and resume an interrupted ``fit`` mid-epoch.

    ``every_n_steps``: save after every N-th trained batch (counted over the whole run, so save
    points are the same on every attempt), or ``"auto"``: when ``checkpoint.due()`` says, asked
    after every trained batch (an interval chosen from the measured cost of a save and the
    task's failure rate). ``blocking=False`` (default) serialises the state at
    once and lets the checkpoint's background writer commit it; the end-of-training save is
    always waited for. ``checkpoint`` defaults to ``taskpoint.current_context().checkpoint``
    (looked up when ``fit`` starts; outside a task it must be given). ``save_on_epoch_end`` also
    saves after each epoch (after validation).

    After ``fit``: ``resumed_step`` is the global step (batches trained over all attempts) of the
    restored state or ``None``; ``resumed`` has its details (``{"epoch", "batch", "step"}``), and
    ``skipped_batches`` is the number of batches not trained again.

    Examples:
        >>> import tempfile
        >>> import keras
        >>> import numpy as np
        >>> from taskpoint import Checkpoint
        >>> from taskpoint.integrations.keras import KerasCheckpointer
        >>> x = np.random.default_rng(0).normal(size=(64, 3)).astype("float32")
        >>> y = x.sum(axis=1, keepdims=True)
        >>> cp = Checkpoint.open(tempfile.mkdtemp())      # inside a task: the task's own
        >>> def fit(epochs: int) -> KerasCheckpointer:
        ...     keras.utils.set_random_seed(0)
        ...     model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        ...     model.compile("sgd", "mse")
        ...     callback = KerasCheckpointer(checkpoint=cp, every_n_steps=2)
        ...     _ = model.fit(x, y, batch_size=16, epochs=epochs, verbose=0, callbacks=[callback])
        ...     return callback
        >>> fit(epochs=1).resumed_step is None            # a first fit: nothing to resume
        True
        >>> fit(epochs=2).resumed_step                    # 4 batches were trained: epoch 2 next
        4
        >>> cp.close()
    """

    def __init__(
        self,
        *,
        checkpoint: Checkpoint | None = None,
        every_n_steps: int | Literal["auto"] = 100,
        blocking: bool = False,
        save_on_epoch_end: bool = True,
    ) -> None:
        super().__init__()
        every_n_steps = kit.check_every_n_steps(every_n_steps)
        self._backend = keras.backend.backend()
        _backend.check_supported(self._backend)
        self.every_n_steps = every_n_steps
        self.blocking = blocking
        self.save_on_epoch_end = save_on_epoch_end
        self._checkpoint = checkpoint
        self._context: Any = None
        self.resumed_step: int | None = None
        self.resumed: dict[str, int] | None = None
        self.skipped_batches = 0
        self.skipping = False
        self._reset_progress()

    def _reset_progress(self) -> None:
        self._epoch = 0
        self._batch = 0  # batches trained (or skipped) in the current epoch
        self._done_epochs = 0  # epochs completed
        self._global_step = 0  # batches trained since the first attempt started
        self._epoch_rng: tuple[dict[str, Any], dict[str, np.ndarray]] | None = None
        self._resume: tuple[dict[str, Any], dict[str, np.ndarray]] | None = None
        self._skip = 0
        self._skip_logs: Any = None
        self._original_train_function: Any = None
        self._written_on = self._backend

    @property
    def checkpoint(self) -> Checkpoint:
        """The checkpoint scope in use (the running task's, unless one was passed)."""
        if self._checkpoint is None or self._context is None:
            self._checkpoint, self._context = kit.task_checkpoint(
                self._checkpoint, "KerasCheckpointer"
            )
        return self._checkpoint

    # ------------------------------------------------------------------------------ restoring
    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._reset_progress()
        self.resumed_step, self.resumed = None, None
        self.skipped_batches, self.skipping = 0, False
        steps_per_execution = getattr(self.model, "steps_per_execution", 1)
        if steps_per_execution != 1:  # one call would train (or skip) several batches
            raise TaskpointError(
                "KerasCheckpointer needs a model compiled with steps_per_execution=1 (it counts, "
                f"saves and skips batch by batch), not {steps_per_execution}"
            )
        blob = self.checkpoint.read()
        if blob is None:
            return
        meta, arrays = state.decode(blob, self.checkpoint.url)
        if meta.get("format") != FORMAT:
            raise CheckpointError(
                f"the latest checkpoint at {self.checkpoint.url} has format "
                f"{meta.get('format')!r}, not {FORMAT!r}; use a checkpoint scope of its own for "
                "KerasCheckpointer"
            )
        model = self.model
        self._written_on = str(meta.get("backend", "torch"))  # older versions: torch only
        optimizer = model.optimizer
        if optimizer is not None and not optimizer.built:
            optimizer.build(model.trainable_variables)
        self._assign("model", model.variables, meta, arrays)
        self._assign("optimizer", optimizer.variables if optimizer else [], meta, arrays)
        epoch, batch = int(meta["epoch"]), int(meta["batch"])
        self._global_step = int(meta["global_step"])
        self.resumed_step = self._global_step
        self.resumed = {"epoch": epoch, "batch": batch, "step": self._global_step}
        self._epoch, self._batch, self._done_epochs = epoch, batch, epoch
        planned = self.params.get("epochs")
        if meta.get("finished") and meta.get("planned_epochs") == planned:
            epoch = max(epoch, int(planned))  # that fit ended (maybe stopped early): not again
        model._initial_epoch = epoch  # read by fit() after on_train_begin (as BackupAndRestore)
        self._resume = (meta, arrays)
        if batch > 0:
            self._original_train_function = model.train_function
            model.train_function = self._skipping_train_function(model.train_function)

    def _skipping_train_function(self, original: Any) -> Any:
        """``original``, except that it trains nothing while batches are being skipped: the
        batch is still drawn from the data pipeline (so the order after it is the same) and the
        logs are the restored metrics'."""
        if self._backend == "jax":
            # JAX's fit passes the whole training state through a pure step function:
            # ``logs, state = train_function(state, iterator)``, the step drawing its batch.
            def jax_step(train_state: Any, iterator: Any) -> Any:
                if self._skip > 0:
                    next(iterator)
                    return self._skip_logs, train_state
                return original(train_state, iterator)

            return jax_step

        def torch_step(data: Any) -> Any:  # torch's fit draws the batch itself
            if self._skip > 0:
                return self._skip_logs
            return original(data)

        return torch_step

    def _assign(self, group: str, variables: list[Any], meta: dict, arrays: dict) -> None:
        saved = meta[group]
        where = self.checkpoint.url
        if self._written_on != self._backend:
            where += f" (written on the {self._written_on} backend, this model runs on "
            where += f"{self._backend})"
        if len(saved) != len(variables):
            raise CheckpointError(
                f"the checkpoint at {where} holds {len(saved)} {group} variables "
                f"but this model has {len(variables)}: it was written by a different model or "
                "optimizer; build the same model, or use a new checkpoint scope"
            )
        for i, (variable, (path, dtype)) in enumerate(zip(variables, saved, strict=True)):
            value = arrays[f"{group}/{i}"]
            if dtype != variable.dtype and _is_seed_state(variable):
                # A SeedGenerator's state is int32 on torch, uint32 on JAX: the same bits.
                value, dtype = state.same_bits(value, variable.dtype), variable.dtype
            if tuple(value.shape) != tuple(variable.shape) or dtype != variable.dtype:
                raise CheckpointError(
                    f"{group} variable {i} ({variable.path}) has shape {tuple(variable.shape)} "
                    f"and dtype {variable.dtype}, but the checkpoint at {where} "
                    f"holds {path} with shape {tuple(value.shape)} and dtype {dtype}: it was "
                    "written by a different model; build the same model, or use a new "
                    "checkpoint scope"
                )
            variable.assign(_backend.from_numpy(self._backend, value, dtype))

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch, self._batch = epoch, 0
        if self._resume is not None:
            meta, arrays = self._resume
            if epoch == int(meta["epoch"]):
                state.restore_rng("rng_epoch", meta["rng_epoch"], arrays)
                if int(meta["batch"]) > 0:
                    model = self.model
                    self._assign("metrics", model.metrics_variables, meta, arrays)
                    # What a skipped step reports: the restored totals (they do not change).
                    self._skip_logs = model.get_metrics_result()
                    self._skip = int(meta["batch"])
                    self.skipping = True
                else:
                    self._resume = None
        self._epoch_rng = self._capture_rng("rng_epoch")

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._batch = batch + 1
        if self._skip > 0:
            self._skip -= 1
            self.skipped_batches += 1
            if self._skip == 0:
                self._end_skipping()
            return
        self._global_step += 1
        preempted = self._context is not None and self._context.preempted
        if preempted:
            self._save(blocking=True)  # commits, then the engine's Preempted is raised
        elif kit.cadence_due(self.every_n_steps, self._global_step, self.checkpoint):
            self._save()

    def _end_skipping(self) -> None:
        meta, arrays = self._resume  # type: ignore[misc]
        state.restore_rng("rng_now", meta["rng_now"], arrays)
        self._restore_train_function()
        self._resume, self.skipping = None, False

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._done_epochs = epoch + 1
        if self.save_on_epoch_end:
            self._save(next_epoch=True)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self._restore_train_function()  # in case fit stopped while still skipping
        self.model._initial_epoch = None  # so a later fit() is not shifted by our restore
        self._save(next_epoch=True, finished=True, blocking=True)
        self.checkpoint.wait()

    def _restore_train_function(self) -> None:
        if self._original_train_function is not None:
            self.model.train_function = self._original_train_function
            self._original_train_function = None

    # ------------------------------------------------------------------------------ saving
    def _capture_rng(self, prefix: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        arrays: dict[str, np.ndarray] = {}
        return state.capture_rng(prefix, arrays), arrays

    def _save(
        self, *, next_epoch: bool = False, finished: bool = False, blocking: bool | None = None
    ) -> Any:
        model = self.model  # on JAX this puts the epoch's training state back into the variables
        optimizer = model.optimizer
        groups = {
            "model": model.variables,
            "optimizer": optimizer.variables if optimizer is not None else [],
            "metrics": [] if next_epoch else model.metrics_variables,
        }
        arrays: dict[str, np.ndarray] = {}
        meta: dict[str, Any] = {
            "format": FORMAT,
            "backend": self._backend,
            "epoch": self._done_epochs if next_epoch else self._epoch,
            "batch": 0 if next_epoch else self._batch,
            "global_step": self._global_step,
            "finished": finished,
            "planned_epochs": self.params.get("epochs"),
        }
        for group, variables in groups.items():
            meta[group] = [[v.path, v.dtype] for v in variables]
            for i, v in enumerate(variables):
                arrays[f"{group}/{i}"] = _backend.to_numpy(self._backend, v.value, v.dtype)
        now_meta, now_arrays = self._capture_rng("rng_now")
        if next_epoch or self._epoch_rng is None:
            epoch_meta, epoch_arrays = self._capture_rng("rng_epoch")
        else:
            epoch_meta, epoch_arrays = self._epoch_rng
        meta["rng_now"], meta["rng_epoch"] = now_meta, epoch_meta
        arrays.update(now_arrays)
        arrays.update(epoch_arrays)
        blob = state.encode(meta, arrays)
        return self.checkpoint.write(
            blob,
            step=self._global_step,
            metadata={"epoch": meta["epoch"], "batch": meta["batch"], "finished": finished},
            blocking=self.blocking if blocking is None else blocking,
        )


def _is_seed_state(variable: Any) -> bool:
    return str(variable.path).endswith("seed_generator_state")
