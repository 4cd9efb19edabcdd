"""Keras 3 on JAX: an MLP whose ``fit`` survives a failure mid-epoch, exactly.

    pip install 'taskpoint[keras-jax]'
    taskpoint run examples/keras_jax.py pipeline --epochs 3 --fail-at-batch 45
    taskpoint run examples/keras_jax.py pipeline --epochs 3 --fail-at-batch -1   # never fails

The first attempt raises ``RecoverableError`` when training batch 45 (counted from 0, over all
epochs; batch 15 of epoch 2) begins. The engine retries the task in a fresh process;
``KerasCheckpointer`` restores what it saved after 40 batches (weights, batch-norm statistics,
Adam state, learning-rate schedule position, the dropout and noise layers' ``SeedGenerator``
states, in which JAX keeps its randomness, NumPy's RNG behind ``shuffle=True``, the epoch's
metrics) and ``fit`` skips the 10 batches of epoch 2 already trained and continues from there.
The printed weight digest is the same as a run that never failed. Kill the attempt's process
instead (``kill -9``) and it is retried the same way.
"""

import os

# Keras fixes its backend when it is first imported: choose JAX before that. Every attempt's
# process (the engine starts them) inherits this setting.
os.environ["KERAS_BACKEND"] = "jax"

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
        self.at, self.epoch = at, 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        global_batch = self.epoch * BATCHES_PER_EPOCH + batch
        if current_context().attempt == 1 and global_batch == self.at:
            raise RecoverableError(f"simulated failure at training batch {self.at}")


def make_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCHES_PER_EPOCH * 32, 16)).astype("float32")
    y = (x[:, :8].sum(axis=1) > x[:, 8:].sum(axis=1)).astype("float32")
    return x, y


@task(retries=2, isolation="process")
def train(epochs: int, fail_at_batch: int) -> str:
    keras.utils.set_random_seed(0)  # the same initial weights and seeds on every attempt
    model = keras.Sequential(
        [
            keras.Input((16,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Dropout(0.2),
            keras.layers.GaussianNoise(0.05),
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
