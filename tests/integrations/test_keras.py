"""Keras 3 (torch backend): an interrupted ``model.fit`` resumed by `KerasCheckpointer` ends with
weights bitwise equal to an uninterrupted ``fit`` and trains no batch twice.

The model has unseeded dropout (torch's global generator), seeded dropout (a Keras
``SeedGenerator``), unseeded ``keras.random`` noise (Keras' global ``SeedGenerator``), Adam with
a learning-rate schedule and ``shuffle=True`` (a torch ``RandomSampler`` drawing from the global
generator): each of these diverges unless the callback restores its state exactly.
Interruptions: an exception, SIGKILL of a real child process, and, through the engine
(``isolation="process"``), ``RecoverableError``, SIGKILL and SIGTERM.

Run as a script (``python test_keras.py child URL ...``) it is the child process of the SIGKILL
test.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")
# One intra-op thread: deterministic and fast on 2 cores, and safe to fork (isolation="process"
# forks; libgomp deadlocks in a child forked from a parent that already ran a parallel region).
torch.set_num_threads(1)

import taskpoint  # noqa: E402
from taskpoint import Checkpoint, CheckpointError, RecoverableError, current_context, task  # noqa: E402
from taskpoint.integrations.keras import KerasCheckpointer  # noqa: E402

pytestmark = pytest.mark.filterwarnings(  # Keras' own np.array(tensor) calls, not ours
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)
EPOCHS, BATCHES, BATCH_SIZE = 3, 25, 16  # 75 training steps
SAVE_EVERY = 5


@pytest.fixture(autouse=True)
def tp_home(tp_home: Path) -> Path:
    """This suite runs the engine in every test: the shared private home (tests/conftest.py)."""
    return tp_home


class Interrupt(Exception):
    pass


class Recorder(keras.callbacks.Callback):
    """Logs every batch the optimizer really stepped on; fails at ``fault_at`` (epoch, batch)."""

    def __init__(self, log: Path | None, fault: str | None, fault_at: tuple[int, int]) -> None:
        super().__init__()
        self.log, self.fault, self.fault_at = log, fault, fault_at
        self.trained: list[tuple[int, int]] = []
        self.epoch, self.iterations = 0, 0

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.epoch = epoch

    def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
        if self.fault and (self.epoch, batch) == self.fault_at:
            if self.fault == "raise":
                raise Interrupt(f"interrupted at {self.fault_at}")
            if self.fault == "recoverable":
                raise RecoverableError(f"interrupted at {self.fault_at}")
            if self.fault == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if self.fault == "term":  # preemption: the callback saves after this batch and stops
                os.kill(os.getpid(), signal.SIGTERM)
        self.iterations = int(self.model.optimizer.iterations)

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        if int(self.model.optimizer.iterations) == self.iterations + 1:
            self.trained.append((self.epoch, batch))
            if self.log is not None:
                with open(self.log, "a") as f:
                    f.write(f"{self.epoch} {batch}\n")


class UnseededNoise(keras.layers.Layer):
    """Draws from Keras' global SeedGenerator (``seed=None``) while training."""

    def call(self, inputs: Any, training: bool = False) -> Any:
        if not training:
            return inputs
        return inputs + keras.random.normal(keras.ops.shape(inputs), stddev=0.05)


def data() -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(BATCHES * BATCH_SIZE, 8)).astype("float32")
    y = (x[:, :4].sum(1, keepdims=True) > x[:, 4:].sum(1, keepdims=True)).astype("float32")
    return x, y, x[:64], y[:64]


def train(
    checkpoint: Checkpoint | None = None,
    *,
    fault: str | None = None,
    fault_at: tuple[int, int] = (1, 10),
    log: Path | None = None,
    callback: bool = False,
    epochs: int = EPOCHS,
) -> dict[str, Any]:
    """Build, compile and fit the test model, with a KerasCheckpointer if ``callback`` or a
    ``checkpoint`` is given (``checkpoint=None``: the running task's)."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dropout(0.3),  # unseeded: torch's global generator
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dropout(0.2, seed=3),  # a Keras SeedGenerator variable
            UnseededNoise(),  # Keras' global SeedGenerator
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-2, decay_steps=10, decay_rate=0.9)
    model.compile(keras.optimizers.Adam(schedule), "binary_crossentropy", metrics=["accuracy"])
    x, y, vx, vy = data()
    recorder = Recorder(log, fault, fault_at)
    callbacks: list[Any] = [recorder]
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
        "weights": [keras.ops.convert_to_numpy(v.value).copy() for v in model.variables],
        "trained": recorder.trained,
        "history": history.history,
        "resumed": tp.resumed if tp else None,
        "resumed_step": tp.resumed_step if tp else None,
        "skipped": tp.skipped_batches if tp else 0,
    }


def assert_bitwise(weights: list[np.ndarray], expected: list[np.ndarray]) -> None:
    assert len(weights) == len(expected)
    for got, want in zip(weights, expected, strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape
        assert np.array_equal(got, want), float(np.abs(got - want).max())


def read_log(log: Path) -> list[tuple[int, int]]:
    return [tuple(map(int, line.split())) for line in log.read_text().split("\n") if line]


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    """The uninterrupted run, without KerasCheckpointer at all."""
    ref = train()
    assert len(ref["trained"]) == EPOCHS * BATCHES
    return ref


def test_resumed_fit_after_an_exception_is_bitwise_equal_and_trains_no_batch_twice(
    tmp_path, reference
):
    url = tmp_path / "cp"
    first = Checkpoint.open(url, attempt=1)
    with pytest.raises(Interrupt):
        train(first, fault="raise", fault_at=(1, 10))
    first.wait()  # what the engine does when an attempt ends: pending async saves commit
    cp = Checkpoint.open(url, attempt=2)
    # The interruption came right after the save at step 35 (25 + 10): nothing is lost.
    assert cp.latest().step == BATCHES + 10
    resumed = train(cp)

    assert resumed["resumed"] == {"epoch": 1, "batch": 10, "step": 35}
    assert resumed["resumed_step"] == 35
    assert resumed["skipped"] == 10
    assert resumed["trained"] == reference["trained"][35:]  # each remaining batch once, in order
    assert_bitwise(resumed["weights"], reference["weights"])
    # The resumed epoch reports the same loss and metrics as an unbroken one (restored metrics).
    for key, values in reference["history"].items():
        assert resumed["history"][key] == values[1:], key


@pytest.mark.timeout(180)
def test_sigkill_of_a_child_process_resumes_bitwise_equal(tmp_path, reference):
    url, log = tmp_path / "cp", tmp_path / "trained.log"
    child = subprocess.run(
        [sys.executable, __file__, "child", str(url), str(log)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]
    first = read_log(log)
    assert first == reference["trained"][:58]  # killed at the start of (2, 8)

    resumed = train(Checkpoint.open(url, attempt=2))
    step = resumed["resumed_step"]
    # The saves are async: on a loaded machine the kill may come before several of them
    # committed; the resume point is then an earlier save and the batches after it train again.
    assert 0 < step <= 55 and step % SAVE_EVERY == 0
    assert resumed["skipped"] == step % BATCHES  # batches already trained in that epoch
    assert resumed["trained"] == reference["trained"][step:]
    assert_bitwise(resumed["weights"], reference["weights"])


def test_a_finished_fit_is_not_trained_again(tmp_path, reference):
    url = tmp_path / "cp"
    first = train(Checkpoint.open(url, attempt=1))
    assert_bitwise(first["weights"], reference["weights"])
    again = train(Checkpoint.open(url, attempt=2))  # e.g. the task failed after fit()
    assert again["trained"] == []
    assert again["resumed"] == {"epoch": EPOCHS, "batch": 0, "step": 75}
    assert_bitwise(again["weights"], reference["weights"])
    more = train(Checkpoint.open(url, attempt=3), epochs=EPOCHS + 1)  # asked for one more epoch
    assert more["trained"] == [(EPOCHS, b) for b in range(BATCHES)]


def test_a_fit_stopped_early_is_not_continued_on_retry(tmp_path):
    class StopAfterOneEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            self.model.stop_training = True

    x, y, _, _ = data()
    epochs_run = []
    for attempt in (1, 2):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)])
        model.compile("sgd", "mse")
        callback = KerasCheckpointer(checkpoint=Checkpoint.open(tmp_path / "cp", attempt=attempt))
        history = model.fit(x, y, epochs=3, verbose=0, callbacks=[callback, StopAfterOneEpoch()])
        epochs_run.append(history.epoch)
    assert epochs_run == [[0], []]


def engine_body(fault: str, log: str) -> dict:
    attempt = current_context().attempt
    return train(
        fault=fault if attempt == 1 else None, fault_at=(1, 12), log=Path(log), callback=True
    )


# Importable by name, and torch is loaded: the engine *spawns* its attempts (fresh interpreter,
# the default a user with a module-level task gets).
@task(retries=1, system_retries=2, isolation="process")
def keras_task(fault: str, log: str) -> dict:
    return engine_body(fault, log)


def forked_keras_task() -> Any:
    """Not importable by name: the engine *forks* (safe here: one torch thread, see the top)."""

    @task(retries=1, system_retries=2, isolation="process")
    def keras_task_forked(fault: str, log: str) -> dict:
        return engine_body(fault, log)

    return keras_task_forked


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("fault", "first_status", "start"),
    [
        ("recoverable", "recoverable", "fork"),
        ("kill", "lost", "spawn"),
        ("term", "preempted", "fork"),
    ],
)
def test_engine_task_resumes_bitwise_equal(tmp_path, reference, fault, first_status, start):
    target = keras_task if start == "spawn" else forked_keras_task()
    log = tmp_path / "trained.log"
    execution = taskpoint.run(target, fault=fault, log=str(log))
    assert execution.status == "succeeded", execution.error
    first, second = execution.nodes[0].attempts
    assert (first.status, second.status) == (first_status, "succeeded")

    result = execution.result
    step = result["resumed_step"]
    trained = read_log(log)
    attempt1 = trained[: len(trained) - len(result["trained"])]
    assert attempt1 == reference["trained"][: len(attempt1)]
    if fault == "term":  # preemption saves the batch in flight: nothing is trained again
        assert step == len(attempt1) == BATCHES + 13
    else:  # failure at the start of (1, 12), step 37: the last save was at step 35
        assert len(attempt1) == 37
        # The engine waits for the async save after a RecoverableError. A SIGKILL may beat any
        # number of async saves on a loaded machine: the resume point is then an earlier save
        # (every SAVE_EVERY batches), and the work after it is trained again, identically.
        if fault == "recoverable":
            assert step == 35
        else:
            assert 0 < step <= 35 and step % SAVE_EVERY == 0
    assert result["trained"] == reference["trained"][step:]
    assert_bitwise(result["weights"], reference["weights"])


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    url = tmp_path / "cp"
    train(Checkpoint.open(url, attempt=1), fault=None)
    keras.utils.set_random_seed(0)
    other = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3), keras.layers.Dense(1)])
    other.compile("adam", "mse")
    x, y, _, _ = data()
    callback = KerasCheckpointer(checkpoint=Checkpoint.open(url, attempt=2))
    with pytest.raises(CheckpointError, match=r"different model|shape"):
        other.fit(x, y, epochs=1, verbose=0, callbacks=[callback])


def test_a_foreign_checkpoint_is_refused(tmp_path):
    cp = Checkpoint.open(tmp_path / "cp")
    cp.write(b"\x80\x04not a keras state")
    x, y, _, _ = data()
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    with pytest.raises(CheckpointError, match="not a Keras training state"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[KerasCheckpointer(checkpoint=cp)])


def test_arguments_and_context_are_checked(tmp_path):
    with pytest.raises(ValueError, match="every_n_steps"):
        KerasCheckpointer(every_n_steps=0)
    callback = KerasCheckpointer()
    with pytest.raises(taskpoint.TaskpointError, match="outside a task"):
        callback.checkpoint  # noqa: B018


def test_steps_per_execution_other_than_one_is_refused(tmp_path):
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse", steps_per_execution=2)  # one call would train two batches
    callback = KerasCheckpointer(checkpoint=Checkpoint.open(tmp_path / "cp"))
    # Keras on torch refuses such a model in fit() itself; on JAX fit() reaches the callback,
    # so the callback's own check is called directly here, as fit() calls it.
    callback.set_model(model)
    with pytest.raises(taskpoint.TaskpointError, match="steps_per_execution=1"):
        callback.on_train_begin()


def test_missing_keras_names_the_extra_to_install():
    code = (
        "import sys; sys.modules['keras'] = None\n"
        "try:\n    import taskpoint.integrations.keras\n"
        "except Exception as exc:\n    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "TaskpointError" in out.stdout and "pip install 'taskpoint[keras]'" in out.stdout


def _child(url: str, log: str) -> None:
    train(Checkpoint.open(url, attempt=1), fault="kill", fault_at=(2, 8), log=Path(log))
    print(json.dumps({"error": "not killed"}))


if __name__ == "__main__" and sys.argv[1:2] == ["child"]:
    _child(*sys.argv[2:4])
