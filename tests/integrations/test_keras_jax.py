"""Keras 3 on JAX: an interrupted ``model.fit`` resumed by `KerasCheckpointer` ends with weights
bitwise equal to an uninterrupted ``fit`` and trains no batch twice; a checkpoint written on one
backend restores on the other (or is refused, saying so).

Keras picks its backend once per process: the JAX runs are child processes started with
``KERAS_BACKEND=jax`` (``keras_support.py``), two of them at once, while this process (torch)
writes and reads the other side of the cross-backend checkpoints. Interruptions on JAX, through
the engine (``isolation="process"``, one execution): a ``RecoverableError``, a SIGKILL of the
attempt's process and a SIGTERM, one per attempt, each resumed by the next attempt.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

if importlib.util.find_spec("jax") is None:
    pytest.skip("JAX is not installed: pip install 'taskpoint[keras-jax]'", allow_module_level=True)
keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")
if keras.backend.backend() != "torch":
    pytest.skip("this process must run Keras on torch", allow_module_level=True)
torch.set_num_threads(1)

import keras_support as ks  # noqa: E402

from taskpoint import Checkpoint, CheckpointError  # noqa: E402

pytestmark = pytest.mark.filterwarnings(  # Keras' own np.array(tensor) calls, not ours
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)
SUPPORT = Path(ks.__file__)
STEPS = ks.EPOCHS * ks.BATCHES


@pytest.fixture(autouse=True)
def tp_home(tp_home: Path) -> Path:
    """The torch side writes checkpoints here: the shared private home (tests/conftest.py)."""
    return tp_home


def _start(scenario: str, out: Path, *args: Path, env: dict[str, str]) -> subprocess.Popen:
    out.mkdir()
    # JAX's persistent compilation cache, one per child (its writes are not atomic): the second
    # fit of the same model, and each attempt after the first, load the step XLA compiled
    # instead of compiling it again (the same executable: results are unchanged).
    env = {
        **env,
        "JAX_COMPILATION_CACHE_DIR": str(out.parent / f"jax-cache-{scenario}"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1",
    }
    cmd = [sys.executable, str(SUPPORT), scenario, str(out), *map(str, args)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _finish(child: subprocess.Popen, out: Path) -> dict[str, Any]:
    output, _ = child.communicate(timeout=240)
    text = output.decode(errors="replace")[-4000:]
    assert child.returncode == 0, text
    return json.loads((out / "result.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Both JAX children, run at once, and the torch side's first checkpoint they read."""
    base = tmp_path_factory.mktemp("keras-jax")
    torch_cp = base / "cp-torch"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TASKPOINT_HOME", str(base / "home"))
        torch_run = ks.train(keras, Checkpoint.open(torch_cp, attempt=1), epochs=1)
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "KERAS_HOME": str(base / "keras-home"),  # Keras writes its keras.json there
        "TASKPOINT_HOME": str(base / "home"),
        "JAX_PLATFORMS": "cpu",
    }
    env.pop("TASKPOINT_STORAGE", None)
    local = _start("local", base / "local", torch_cp, env=env)
    engine = _start("engine", base / "engine", base / "trained.log", env=env)
    try:
        results = {
            "local": _finish(local, base / "local"),
            "engine": _finish(engine, base / "engine"),
        }
    finally:
        for child in (local, engine):
            if child.poll() is None:
                child.kill()
                child.wait()
    return {**results, "base": base, "torch": torch_run}


def npz(runs: dict[str, Any], where: str, name: str) -> dict[str, np.ndarray]:
    with np.load(runs["base"] / where / f"{name}.npz") as arrays:
        return dict(arrays)


def assert_bitwise(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert got.keys() == want.keys()
    for key, value in got.items():
        assert value.dtype == want[key].dtype and value.shape == want[key].shape, key
        assert np.array_equal(value, want[key]), (key, value, want[key])


def assert_same_state(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    """Across backends: floats bitwise; integers as the same 32-bit patterns (a seed state is
    int32 on torch and uint32 on JAX, the optimizer's step count int64 or int32)."""
    assert got.keys() == want.keys()
    for key, value in got.items():
        other = want[key]
        assert value.shape == other.shape, key
        if value.dtype.kind == "f":
            assert value.dtype == other.dtype and np.array_equal(value, other), key
        else:
            bits = value.astype(np.int64) % 2**32, other.astype(np.int64) % 2**32
            assert np.array_equal(*bits), (key, value, other)


def test_runs_on_jax(runs):
    assert runs["local"]["backend"] == "jax"
    assert len(runs["local"]["reference"]["trained"]) == STEPS


def test_a_finished_fit_is_not_trained_again(runs):
    again = runs["local"]["again"]
    assert again["trained"] == []
    assert again["resumed"] == {"epoch": ks.EPOCHS, "batch": 0, "step": STEPS}
    reference = npz(runs, "local", "reference")
    assert_bitwise(npz(runs, "local", "finished"), reference)
    assert_bitwise(npz(runs, "local", "again"), reference)


def _attempts(log: Path) -> list[list[list[int]]]:
    """The trained batches of each attempt, from the log every attempt appends to."""
    attempts: list[list[list[int]]] = []
    for line in log.read_text().splitlines():
        if line.startswith("attempt "):
            attempts.append([])
        elif line:
            attempts[-1].append([int(n) for n in line.split()])
    return attempts


def test_an_inline_task_retried_after_a_recoverable_error_resumes_bitwise_equal(runs):
    inline = runs["local"]["inline"]
    assert inline["status"] == "succeeded", inline["error"]
    assert inline["attempts"] == ["recoverable", "succeeded"]
    reference = runs["local"]["reference"]
    first, second = _attempts(runs["base"] / "local" / "inline.log")
    assert first == reference["trained"][:37]  # RecoverableError at the start of (1, 12)
    final = inline["final"]
    # The engine waits for the async save at step 35 before retrying: nothing is lost.
    assert final["resumed"] == {"epoch": 1, "batch": 10, "step": 35}
    assert final["skipped"] == 10
    assert second == final["trained"] == reference["trained"][35:]  # each batch once, in order
    assert_bitwise(npz(runs, "local", "inline"), npz(runs, "local", "reference"))
    # The resumed epoch reports the same loss and metrics as an unbroken one (restored metrics).
    for key, values in reference["history"].items():
        assert final["history"][key] == values[1:], key


def test_attempts_killed_and_preempted_in_their_processes_resume_bitwise_equal(runs):
    engine = runs["engine"]
    assert engine["status"] == "succeeded", engine["error"]
    assert engine["attempts"] == ["lost", "preempted", "succeeded"]
    reference = runs["local"]["reference"]["trained"]
    first, second, third = _attempts(runs["base"] / "trained.log")
    assert first == reference[:37]  # SIGKILL at the start of (1, 12), step 38
    # A SIGKILL may beat any number of async saves: the second attempt resumes from the latest
    # that committed (every 5 steps, and each epoch's end), and trains the batches after it
    # again, identically.
    start = 66 - len(second)  # the second attempt ends with (2, 15), step 66
    assert 0 < start <= 35 and start % ks.SAVE_EVERY == 0
    assert second == reference[start:66]  # SIGTERM at (2, 15): saves after that batch, stops
    final = engine["final"]
    assert final["resumed"] == {"epoch": 2, "batch": 16, "step": 66}  # nothing trained twice
    assert final["skipped"] == 16
    assert third == final["trained"] == reference[66:]
    assert_bitwise(npz(runs, "engine", "engine"), npz(runs, "local", "reference"))
    assert final["history"]["loss"] == runs["local"]["reference"]["history"]["loss"][2:]


def test_a_torch_checkpoint_restores_on_jax_and_another_model_is_refused(runs):
    restored = runs["local"]["from_torch"]
    assert restored["trained"] == []  # the torch fit finished: restored, not trained again
    assert restored["resumed"] == {"epoch": 1, "batch": 0, "step": ks.BATCHES}
    assert_same_state(npz(runs, "local", "from_torch"), runs["torch"]["weights"])
    refused = runs["local"]["torch_refused"]
    assert refused is not None and "written on the torch backend" in refused
    assert "this model runs on jax" in refused and "different model" in refused


def test_a_jax_checkpoint_restores_on_torch_and_another_model_is_refused(runs):
    url = runs["base"] / "local" / "cp-finished"  # the JAX run's, finished after 3 epochs
    # First, while the latest version is the JAX run's (a torch fit saves one when it ends).
    with pytest.raises(CheckpointError, match="written on the jax backend, this model runs on"):
        ks.train(keras, Checkpoint.open(url, attempt=3), wider=True)
    restored = ks.train(keras, Checkpoint.open(url, attempt=4))
    assert restored["trained"] == []
    assert restored["resumed"] == {"epoch": ks.EPOCHS, "batch": 0, "step": STEPS}
    assert_same_state(restored["weights"], npz(runs, "local", "again"))
    # Training goes on from there on torch.
    more = ks.train(keras, Checkpoint.open(url, attempt=5), epochs=ks.EPOCHS + 1)
    assert more["trained"] == [[ks.EPOCHS, b] for b in range(ks.BATCHES)]
