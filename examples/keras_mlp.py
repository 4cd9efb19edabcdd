"""Keras 3 (torch backend): an MLP whose ``fit`` survives a failure mid-epoch, exactly.

    taskpoint run examples/keras_mlp.py pipeline --epochs 3 --fail-at-batch 45
    taskpoint run examples/keras_mlp.py pipeline --epochs 3 --fail-at-batch -1   # never fails

The first attempt raises ``RecoverableError`` at training batch 45 (in epoch 2). The engine retries
the task in a fresh process; ``KerasCheckpointer`` restores what it saved after batch 40 (weights,
Adam state, learning-rate schedule position, dropout seeds, RNG states, metrics) and ``fit``
continues with batch 41 of epoch 2. The printed weight digest is the same as a run that never
failed. Kill the attempt's process instead (``kill -9``) and it is retried the same way.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported; no TensorFlow needed

import hashlib

import keras
import numpy as np

from taskpoint import RecoverableError, current_context, task, workflow
from taskpoint.integrations.keras import KerasCheckpointer

BATCHES_PER_EPOCH = 30


class FailOnce(keras.callbacks.Callback):
    """Simulates a crash: raises on the first attempt when training batch ``at`` begins."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at, self.seen = at, 0

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        global_batch = self.seen + batch
        if current_context().attempt == 1 and global_batch == self.at:
            raise RecoverableError(f"simulated failure at training batch {self.at}")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seen = (epoch + 1) * BATCHES_PER_EPOCH

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.seen = epoch * BATCHES_PER_EPOCH


def make_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCHES_PER_EPOCH * 32, 16)).astype("float32")
    y = (x[:, :8].sum(axis=1) > x[:, 8:].sum(axis=1)).astype("float32")
    return x, y


@task(retries=2, isolation="process")
def train(epochs: int, fail_at_batch: int) -> str:
    keras.utils.set_random_seed(0)  # the same initial weights on every attempt
    model = keras.Sequential(
        [
            keras.Input((16,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-2, decay_steps=20, decay_rate=0.9)
    model.compile(keras.optimizers.Adam(schedule), "binary_crossentropy", metrics=["accuracy"])
    x, y = make_data()
    checkpointing = KerasCheckpointer(every_n_steps=10)
    history = model.fit(
        x,
        y,
        batch_size=32,
        epochs=epochs,
        shuffle=True,
        callbacks=[checkpointing, FailOnce(fail_at_batch)],
        verbose=0,
    )
    if checkpointing.resumed_step is not None:
        print(f"resumed from {checkpointing.resumed}")
    digest = hashlib.sha256(b"".join(np.asarray(w).tobytes() for w in model.get_weights()))
    return f"loss {history.history['loss'][-1]:.6f}, weights sha256 {digest.hexdigest()[:16]}"


@workflow
def pipeline(epochs: int = 3, fail_at_batch: int = 45) -> str:
    return train(epochs=epochs, fail_at_batch=fail_at_batch)
