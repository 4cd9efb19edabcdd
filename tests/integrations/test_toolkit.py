"""The integrations' shared toolkit and their one vocabulary (names, checkpoint=, resumed_step)."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import random
import subprocess
import sys
import warnings

import pytest

from support.polling import wait_until
from taskpoint import Checkpoint
from taskpoint.errors import CheckpointError, TaskpointError
from taskpoint.integrations import _toolkit as kit

MODULES = {
    "torch": ("TorchCheckpointer",),
    "lightning": ("LightningCheckpointer",),
    "keras": ("KerasCheckpointer",),
    "spark": ("SparkStreamCheckpointer",),
    "flink": ("FlinkCheckpointer",),
}
OLD_NAMES = (
    "TaskpointCheckpoint",
    "TaskpointCallback",
    "StreamingCheckpoint",
    "FlinkCheckpointing",
)


def _import(name: str):
    if name == "keras":
        os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        return importlib.import_module(f"taskpoint.integrations.{name}")
    except TaskpointError as exc:  # the framework is not installed here
        pytest.skip(str(exc))


@pytest.mark.parametrize("module", sorted(MODULES))
def test_one_vocabulary(module):
    mod = _import(module)
    for old in OLD_NAMES:
        assert not hasattr(mod, old), f"{module}.{old} should be gone"
    for name in MODULES[module]:
        cls = getattr(mod, name)
        assert name in mod.__all__
        parameter = inspect.signature(cls.__init__).parameters["checkpoint"]
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY
        assert parameter.default is None
        names = inspect.signature(cls.__init__).parameters
        assert not {"every_n_train_steps", "save_every_n_batches", "interval_ms"} & set(names)
        if module in ("torch", "lightning", "keras"):
            assert "every_n_steps" in names


def test_sklearn_cadence_is_every_n_steps():
    mod = _import("sklearn")
    params = inspect.signature(mod.fit_incremental).parameters
    assert "every_n_steps" in params and "save_every" not in params
    for function in (mod.fit_incremental, mod.fit_warm_start):
        checkpoint = inspect.signature(function).parameters["checkpoint"]
        assert checkpoint.kind is inspect.Parameter.KEYWORD_ONLY


def test_task_checkpoint_outside_a_task(tmp_path):
    with pytest.raises(TaskpointError, match=r"TorchCheckpointer was used outside a task"):
        kit.task_checkpoint(None, "TorchCheckpointer")
    with Checkpoint.open(tmp_path / "cp") as cp:
        assert kit.task_checkpoint(cp, "x") == (cp, None)


def test_envelope_round_trip_and_refusals():
    blob = kit.pack(b"TPTEST01", kit.dump_header({"a": [1, 2.5, "x"]})) + b"body"
    assert blob[:8] == b"TPTEST01"
    assert int.from_bytes(blob[8:16], "little") == len(blob) - 16 - 4
    header, end = kit.unpack(blob, b"TPTEST01", "a test state", "here")
    assert header == {"a": [1, 2.5, "x"]} and blob[end:] == b"body"
    with pytest.raises(CheckpointError, match=r"not a test state.*TPOTHER1"):
        kit.unpack(blob, b"TPOTHER1", "a test state", "here")
    with pytest.raises(CheckpointError, match="outside the blob"):
        kit.unpack(blob[:20], b"TPTEST01", "a test state", "here")
    with pytest.raises(CheckpointError, match="not a JSON object"):
        kit.unpack(kit.pack(b"TPTEST01", b"[1]"), b"TPTEST01", "a test state", "here")
    with pytest.raises(CheckpointError, match="has 3 bytes"):
        kit.unpack(b"TPT", b"TPTEST01", "a test state", "here")
    with pytest.raises(ValueError):
        kit.dump_header({"x": float("nan")})


def test_rng_round_trip_python_and_numpy():
    np = pytest.importorskip("numpy")
    state = kit.capture_rng()
    expected = (random.random(), float(np.random.random()))
    random.random(), np.random.random()
    kit.restore_rng(state)
    assert (random.random(), float(np.random.random())) == expected


def test_rng_cuda_device_count_mismatch_restores_cpu_and_warns_once(monkeypatch):
    torch = pytest.importorskip("torch")
    state = kit.capture_rng(torch=True)
    state["cuda"] = [torch.zeros(8, dtype=torch.uint8)] * 3  # saved on 3 devices
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    restored = []
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    monkeypatch.setattr(kit, "_cuda_warned", False)
    expected = float(torch.rand(1))
    with pytest.warns(RuntimeWarning, match="3 devices, this process sees 1"):
        kit.restore_rng(state)
    assert float(torch.rand(1)) == expected  # the CPU generator was restored
    assert restored == []  # CUDA states were not
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kit.restore_rng(state)  # warned once per process
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    kit.restore_rng(state)
    assert len(restored) == 1 and len(restored[0]) == 3


def test_link_or_copy(tmp_path):
    (tmp_path / "a").write_text("x")
    assert kit.link_or_copy(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "b").read_text() == "x"
    assert not kit.link_or_copy(tmp_path / "gone", tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_rng_parts_and_whole_round_trip_through_json():
    """The split the Keras and scikit-learn formats store: JSON scalars, arrays apart."""
    np = pytest.importorskip("numpy")
    random.seed(5), np.random.seed(5), random.gauss(0, 1), np.random.standard_normal()
    scalars, bulk = kit.rng_parts(kit.capture_rng())
    assert bulk["python"].dtype == np.uint64 and bulk["numpy"].dtype == np.uint32
    assert "torch" not in bulk
    scalars = json.loads(json.dumps(scalars))
    lists = {name: array.tolist() for name, array in bulk.items()}
    expected = (random.random(), random.gauss(0, 1), float(np.random.standard_normal()))
    random.random(), np.random.standard_normal()
    kit.restore_rng(kit.rng_whole(scalars, lists))
    assert (random.random(), random.gauss(0, 1), float(np.random.standard_normal())) == expected


def test_rng_parts_keep_torch_states_apart():
    torch = pytest.importorskip("torch")
    scalars, bulk = kit.rng_parts(kit.capture_rng(torch=True))
    assert torch.equal(bulk["torch"], torch.get_rng_state()) and isinstance(bulk["cuda"], list)
    expected = float(torch.rand(1))
    kit.restore_rng(kit.rng_whole(scalars, bulk))
    assert float(torch.rand(1)) == expected


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_proc_parsing():
    """The toolkit uses the one /proc parser, taskpoint._process."""
    from taskpoint import _process

    assert kit.parent_pid is _process.parent_pid and kit.process_token is _process.process_token
    assert kit.parent_pid(os.getpid()) == os.getppid()
    assert kit.process_token(os.getpid()) is not None
    assert kit.process_token(2**22 + 12345) is None
    assert kit.parent_pid(2**22 + 12345) is None


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_a_zombie_has_no_start_time_and_is_not_alive():
    from taskpoint._process import proc_stat, process_alive

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        wait_until(lambda: (proc_stat(child.pid) or ["X"])[0] == "Z", timeout=30)
        assert kit.process_token(child.pid) is None
        assert not process_alive(child.pid)
    finally:
        child.wait()


def test_publish_names_the_public_module():
    def helper() -> None:
        pass

    kit.publish("taskpoint.integrations.example", helper)
    assert helper.__module__ == "taskpoint.integrations.example"
