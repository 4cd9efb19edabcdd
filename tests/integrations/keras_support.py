"""The model, data and probes of the Keras multi-backend tests; run as a script, their JAX side.

Keras picks its backend once per process, so the JAX runs happen in child processes started
with ``KERAS_BACKEND=jax``::

    python keras_support.py local OUT TORCH_CP   # reference, inline retry, cross-backend, ...
    python keras_support.py engine OUT LOG       # attempts in processes: SIGKILL, SIGTERM

Each writes ``OUT/result.json`` and the weights it compares as ``OUT/*.npz``. Nothing here
imports Keras at module level: ``build`` and friends take the ``keras`` module, so the torch side
of the cross-backend tests (in the test process) uses the same model.

The model has every kind of state a resume must restore on JAX: an unseeded ``Dropout`` and a
noise layer with an unseeded ``SeedGenerator`` (seeded once from Python's ``random`` at build,
then advanced inside the jitted step: JAX keeps its RNG state in these variables), a seeded
``Dropout``, batch-norm moving statistics (non-trainable variables), Adam with a learning-rate
schedule (optimizer variables), metrics, and ``shuffle=True`` (NumPy's global generator, drawn
when an epoch's iterator starts).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import numpy as np

EPOCHS, BATCHES, BATCH_SIZE = 3, 25, 16  # 75 training steps
SAVE_EVERY = 5


def data() -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(BATCHES * BATCH_SIZE, 8)).astype("float32")
    y = (x[:, :4].sum(1, keepdims=True) > x[:, 4:].sum(1, keepdims=True)).astype("float32")
    return x, y, x[:64], y[:64]


def build(keras: Any, *, wider: bool = False) -> Any:
    """The compiled test model (``wider``: one layer of another shape, for refusals)."""

    class Noise(keras.layers.Layer):
        """Gaussian noise from the layer's own, unseeded SeedGenerator."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.seed_generator = keras.random.SeedGenerator()

        def call(self, inputs: Any, training: bool = False) -> Any:
            if not training:
                return inputs
            shape = keras.ops.shape(inputs)
            return inputs + keras.random.normal(shape, stddev=0.05, seed=self.seed_generator)

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(48 if wider else 32, activation="relu"),
            keras.layers.Dropout(0.3),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dropout(0.2, seed=3),
            Noise(),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-2, decay_steps=10, decay_rate=0.9)
    model.compile(keras.optimizers.Adam(schedule), "binary_crossentropy", metrics=["accuracy"])
    return model


def recorder(keras: Any, log: Path | None, fault: str | None, fault_at: tuple[int, int]) -> Any:
    """A callback that logs every batch the optimizer really stepped on and injects ``fault`` at
    the start of batch ``fault_at`` (epoch, batch)."""

    class Recorder(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.trained: list[tuple[int, int]] = []
            self.epoch, self.iterations = 0, 0

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.epoch = epoch

        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            if fault and (self.epoch, batch) == fault_at:
                if fault == "recoverable":
                    from taskpoint import RecoverableError

                    raise RecoverableError(f"interrupted at {fault_at}")
                if fault == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                if fault == "term":  # preemption: the checkpointer saves after this batch
                    os.kill(os.getpid(), signal.SIGTERM)
            self.iterations = int(self.model.optimizer.iterations)

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            if int(self.model.optimizer.iterations) == self.iterations + 1:
                self.trained.append((self.epoch, batch))
                if log is not None:
                    with open(log, "a") as f:
                        f.write(f"{self.epoch} {batch}\n")

    return Recorder()


def train(
    keras: Any,
    checkpoint: Any = None,
    *,
    fault: str | None = None,
    fault_at: tuple[int, int] = (1, 10),
    log: Path | None = None,
    callback: bool = False,
    epochs: int = EPOCHS,
    wider: bool = False,
) -> dict[str, Any]:
    """Build and fit the model, with a KerasCheckpointer if ``callback`` or a ``checkpoint`` is
    given (``checkpoint=None``: the running task's)."""
    from taskpoint.integrations.keras import KerasCheckpointer

    model = build(keras, wider=wider)
    x, y, vx, vy = data()
    probe = recorder(keras, log, fault, fault_at)
    callbacks: list[Any] = [probe]
    tp = None
    if callback or checkpoint is not None:
        tp = KerasCheckpointer(every_n_steps=SAVE_EVERY, checkpoint=checkpoint)  # async saves
        callbacks.append(tp)
    history = model.fit(
        x,
        y,
        batch_size=BATCH_SIZE,
        epochs=epochs,
        shuffle=True,
        validation_data=(vx, vy),
        callbacks=callbacks,
        verbose=0,
    )
    return {
        "weights": weights(keras, model),
        "trained": [list(b) for b in probe.trained],
        "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
        "resumed": tp.resumed if tp else None,
        "resumed_step": tp.resumed_step if tp else None,
        "skipped": tp.skipped_batches if tp else 0,
    }


def weights(keras: Any, model: Any) -> dict[str, np.ndarray]:
    """Every model and optimizer variable, by position (the same on every backend), as NumPy."""
    variables = [("model", model.variables), ("optimizer", model.optimizer.variables)]
    return {
        f"{group}/{i}": np.array(keras.ops.convert_to_numpy(v.value))
        for group, vs in variables
        for i, v in enumerate(vs)
    }


def save_run(out: Path, name: str, run: dict[str, Any]) -> dict[str, Any]:
    """Write ``run``'s weights to ``out/name.npz``; the rest is returned for result.json."""
    np.savez(out / f"{name}.npz", **run.pop("weights"))
    return run


# ------------------------------------------------------------------------ the JAX side (script)
def _local(out: Path, torch_cp: str) -> dict[str, Any]:
    """The uninterrupted reference; a task retried inline after a ``RecoverableError``; a
    finished fit, not trained again; the torch checkpoint refused and restored.
    ``out/cp-finished`` is left for the torch side to restore."""
    import keras

    from taskpoint import Checkpoint, CheckpointError, task

    results: dict[str, Any] = {"backend": keras.backend.backend()}
    results["reference"] = save_run(out, "reference", train(keras))

    # ``@task``'s default isolation: the attempts run in this process, where Keras runs on JAX.
    @task(retries=1)
    def fit_inline(log: str) -> dict[str, Any]:
        return _attempt(keras, {1: ("recoverable", (1, 12))}, Path(log))

    results["inline"] = _execution(out, "inline", fit_inline, out / "inline.log")

    url = out / "cp-finished"
    save_run(out, "finished", train(keras, Checkpoint.open(url, attempt=1)))
    results["again"] = save_run(out, "again", train(keras, Checkpoint.open(url, attempt=2)))

    # Cross-backend: the torch run's finished checkpoint (one epoch) is refused by another model
    # (first: a fit that restores saves a version of its own when it ends), then restores here.
    try:
        train(keras, Checkpoint.open(torch_cp, attempt=2), epochs=1, wider=True)
        results["torch_refused"] = None
    except CheckpointError as exc:
        results["torch_refused"] = str(exc)
    results["from_torch"] = save_run(
        out, "from_torch", train(keras, Checkpoint.open(torch_cp, attempt=3), epochs=1)
    )
    return results


def _engine(out: Path, log: Path) -> dict[str, Any]:
    from taskpoint import task

    # Defined here, in the driver's script: the driver never imports JAX, so the engine forks
    # each attempt from it, and the attempt imports Keras on JAX itself.
    @task(retries=0, system_retries=2, isolation="process")
    def fit_killed_then_preempted(log: str) -> dict[str, Any]:
        import keras

        return _attempt(keras, {1: ("kill", (1, 12)), 2: ("term", (2, 15))}, Path(log))

    return _execution(out, "engine", fit_killed_then_preempted, log)


def _attempt(keras: Any, faults: dict[int, Any], log: Path) -> dict[str, Any]:
    """One attempt of an engine task: the fault ``faults`` plans for it, at its batch."""
    from taskpoint import current_context

    attempt = current_context().attempt
    with open(log, "a") as f:  # every attempt appends its trained batches after this line
        f.write(f"attempt {attempt}\n")
    fault, fault_at = faults.get(attempt, (None, (0, 0)))
    return train(keras, fault=fault, fault_at=fault_at, log=log, callback=True)


def _execution(out: Path, name: str, target: Any, log: Path) -> dict[str, Any]:
    import taskpoint

    execution = taskpoint.run(target, log=str(log))
    results: dict[str, Any] = {
        "status": execution.status,
        "error": str(execution.error) if execution.error else None,
        "attempts": [a.status for a in execution.nodes[0].attempts],
    }
    if execution.status == "succeeded":
        results["final"] = save_run(out, name, dict(execution.result))
    return results


if __name__ == "__main__":
    scenario, out_dir = sys.argv[1], Path(sys.argv[2])
    if scenario == "local":
        outcome = _local(out_dir, sys.argv[3])
    elif scenario == "engine":
        outcome = _engine(out_dir, Path(sys.argv[3]))
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")
    (out_dir / "result.json").write_text(json.dumps(outcome))
