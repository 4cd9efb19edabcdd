"""TorchCheckpointer: exact round trips of every kind of state, the raw (non-pickle) format,
snapshot semantics of async saves and reuse of the staging buffers."""

from __future__ import annotations

import json
import math
import random
import struct
from collections import OrderedDict

import pytest

torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")

from taskpoint import Checkpoint, TaskpointError  # noqa: E402
from taskpoint.errors import CheckpointError  # noqa: E402
from taskpoint.integrations._lazy import require  # noqa: E402
from taskpoint.integrations.torch import ResumableSampler, TorchCheckpointer  # noqa: E402
from taskpoint.integrations.torch import _format as fmt  # noqa: E402

torch.set_num_threads(1)


class Holder:
    """Any object with state_dict()/load_state_dict()."""

    def __init__(self, state=None) -> None:
        self.state = state

    def state_dict(self):
        return self.state

    def load_state_dict(self, state) -> None:
        self.state = state


def roundtrip(tmp_path, state):
    with Checkpoint.open(tmp_path / "ckpt") as cp:
        TorchCheckpointer(checkpoint=cp, objects={"x": Holder(state)}, rng=False).save(
            1, blocking=True
        )
        target = Holder()
        assert TorchCheckpointer(checkpoint=cp, objects={"x": target}, rng=False).restore() == 1
    return target.state


def same(a, b) -> bool:
    """Structural equality that also checks types, tensor dtypes and bits."""
    if type(a) is not type(b):
        return False
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


DTYPES = [
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.int8,
    torch.uint8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.bool,
    torch.complex64,
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_tensors_of_every_dtype_and_shape_roundtrip_bitwise(tmp_path, dtype):
    g = torch.Generator().manual_seed(0)
    base = (torch.randn(7, 5, generator=g) * 100).to(dtype)
    state = {
        "matrix": base,
        "transposed": base.t(),  # not contiguous
        "strided": base[::2, 1:4],
        "scalar": base[0, 0].clone(),  # 0-dim
        "empty": base[:0],
        "big": torch.arange(300_000).to(dtype),
    }
    assert same(roundtrip(tmp_path, state), {k: v.contiguous() for k, v in state.items()})


def test_non_finite_floats_and_nan_payloads_roundtrip(tmp_path):
    t = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, 1e-45])
    back = roundtrip(tmp_path, {"t": t, "nan": float("nan"), "inf": float("-inf")})
    assert torch.equal(back["t"].view(torch.int32), t.view(torch.int32))  # same bits
    assert math.isnan(back["nan"]) and back["inf"] == float("-inf")


def test_python_structures_keep_their_types(tmp_path):
    od = OrderedDict([("b", 1), ("a", 2)])
    od._metadata = {"": {"version": 1}}
    state = {
        "tuple": (1, 2.5, "x", None, True),
        "int_keys": {0: {"step": torch.tensor(3.0)}, 1: {}},
        "dollar": {"$t": 5, "plain": [1, [2, (3,)]]},
        "ordered": od,
        "bytes": b"\x00\xffraw",
        "np_array": np.arange(12, dtype=np.uint32).reshape(3, 4),
        "np_scalar": np.int64(7),
        "np_float": np.float32(0.1),
        "dtype": torch.bfloat16,
        "big_int": 2**80,
        "float": 0.1 + 0.2,
    }
    back = roundtrip(tmp_path, state)
    assert same(back, state)
    assert back["ordered"]._metadata == od._metadata


def test_unsupported_values_are_refused_at_save_naming_where(tmp_path):
    with Checkpoint.open(tmp_path / "ckpt") as cp:
        ckpt = TorchCheckpointer(
            checkpoint=cp, objects={"x": Holder({"fn": [lambda: 1]})}, rng=False
        )
        with pytest.raises(TypeError, match=r"state\['objects'\]\['x'\]\['fn'\]\[0\]"):
            ckpt.save(1)
        sparse = Holder({"s": torch.eye(3).to_sparse()})
        with pytest.raises(TypeError, match="dense"):
            TorchCheckpointer(checkpoint=cp, objects={"x": sparse}, rng=False).save(1)
        assert cp.latest() is None  # nothing half-written


def test_the_blob_is_a_json_header_and_raw_bytes_not_a_pickle(tmp_path):
    weights = torch.arange(6, dtype=torch.float32)
    with Checkpoint.open(tmp_path / "ckpt") as cp:
        TorchCheckpointer(checkpoint=cp, objects={"x": Holder({"w": weights})}, rng=False).save(
            3, blocking=True
        )
        blob = cp.read()
    magic, size = struct.unpack_from("<8sQ", blob)
    assert magic == b"TPTORCH1"
    header = json.loads(blob[16 : 16 + size])
    (dtype, shape, offset, nbytes), *_ = header["tensors"]
    start = fmt.align(16 + size)
    assert (dtype, shape, nbytes) == ("float32", [6], 24)
    assert blob[start + offset : start + offset + nbytes] == weights.numpy().tobytes()
    assert b"\x80\x04" not in blob[:16] and b"torch._utils" not in blob  # no pickle stream


def test_model_optimizer_scheduler_scaler_and_rng_are_restored_exactly(tmp_path):
    def build(seed):
        torch.manual_seed(seed)
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8))
        opt = torch.optim.AdamW(model.parameters(), lr=0.01, betas=(0.8, 0.9))
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=50)
        scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
        return model, opt, sched, scaler

    model, opt, sched, scaler = build(0)
    for _ in range(3):
        model(torch.randn(5, 4)).pow(2).mean().backward()
        opt.step()
        sched.step()
        opt.zero_grad()
    gen = torch.Generator().manual_seed(11)
    torch.rand(3, generator=gen)  # not at its initial state
    with Checkpoint.open(tmp_path / "ckpt") as cp:
        TorchCheckpointer(
            checkpoint=cp,
            model=model,
            optimizer=opt,
            scheduler=sched,
            scaler=scaler,
            objects={"g": gen},
        ).save(3, blocking=True)
        expected_draws = (
            torch.rand(4),
            np.random.rand(3),
            random.random(),
            torch.rand(2, generator=gen),
        )

        model2, opt2, sched2, scaler2 = build(1)
        gen2 = torch.Generator()
        torch.manual_seed(99), np.random.seed(99), random.seed(99)
        ckpt = TorchCheckpointer(
            checkpoint=cp,
            model=model2,
            optimizer=opt2,
            scheduler=sched2,
            scaler=scaler2,
            objects={"g": gen2},
        )
        params_before = [p.data_ptr() for p in model2.parameters()]
        assert ckpt.restore() == 3

    assert [p.data_ptr() for p in model2.parameters()] == params_before  # loaded in place
    assert same(model2.state_dict(), model.state_dict())
    assert same(opt2.state_dict(), opt.state_dict())
    assert same(sched2.state_dict(), sched.state_dict())
    assert same(scaler2.state_dict(), scaler.state_dict())
    draws = (torch.rand(4), np.random.rand(3), random.random(), torch.rand(2, generator=gen2))
    assert torch.equal(draws[0], expected_draws[0])
    assert np.array_equal(draws[1], expected_draws[1])
    assert draws[2] == expected_draws[2] and torch.equal(draws[3], expected_draws[3])
    # optimizer state tensors are owned copies, not views of the read-only checkpoint bytes
    exp_avg = opt2.state_dict()["state"][0]["exp_avg"]
    exp_avg.add_(1.0)


def test_async_save_is_a_snapshot_taken_before_it_returns(tmp_path):
    model = torch.nn.Linear(2048, 2048)  # 16 MiB: the write is still running when we edit
    with Checkpoint.open(tmp_path / "ckpt") as cp:
        ckpt = TorchCheckpointer(checkpoint=cp, model=model, rng=False)
        expected = model.weight.detach().clone()
        future = ckpt.save(1)
        with torch.no_grad():
            model.weight.add_(1.0)  # at once, while the write may be in flight
        assert future.result().step == 1
        model2 = torch.nn.Linear(2048, 2048)
        TorchCheckpointer(checkpoint=cp, model=model2, rng=False).restore()
    assert torch.equal(model2.weight, expected)


def test_rapid_async_saves_reuse_two_buffers_and_the_latest_wins(tmp_path):
    model = torch.nn.Linear(512, 512)
    with Checkpoint.open(tmp_path / "ckpt", keep=3) as cp:
        ckpt = TorchCheckpointer(checkpoint=cp, model=model, rng=False)
        futures = []
        for step in range(1, 21):
            with torch.no_grad():
                model.weight.fill_(step)
            futures.append(ckpt.save(step))
        ckpt.wait()
        buffers = {slot.buffer.data_ptr() for slot in ckpt._writer.slots}
        results = [f.result() for f in futures]
        assert results[-1] is not None and results[-1].step == 20
        committed = [r.step for r in results if r is not None]
        assert committed == sorted(committed)  # superseded ones resolve to None, order kept
        assert len(buffers) == 2
        for step in range(21, 25):  # later saves of the same size allocate nothing
            ckpt.save(step)
        assert {slot.buffer.data_ptr() for slot in ckpt._writer.slots} == buffers
        ckpt.wait()
        model2 = torch.nn.Linear(512, 512)
        assert TorchCheckpointer(checkpoint=cp, model=model2, rng=False).restore() == 24
    assert bool((model2.weight == 20).all())


def test_restore_without_a_checkpoint_returns_none_and_changes_nothing(tmp_path):
    model = torch.nn.Linear(3, 3)
    before = model.weight.detach().clone()
    state = random.getstate()
    with Checkpoint.open(tmp_path / "ckpt") as cp:
        assert TorchCheckpointer(checkpoint=cp, model=model).restore() is None
    assert torch.equal(model.weight, before) and random.getstate() == state


def test_foreign_or_mismatched_checkpoints_are_refused(tmp_path):
    with Checkpoint.open(tmp_path / "foreign") as cp:
        cp.write(b"12")
        with pytest.raises(
            CheckpointError, match="not a torch training state written by TorchCheckpointer"
        ):
            TorchCheckpointer(checkpoint=cp, model=torch.nn.Linear(2, 2)).restore()
    with Checkpoint.open(tmp_path / "ckpt") as cp:
        TorchCheckpointer(checkpoint=cp, model=torch.nn.Linear(2, 2)).save(1, blocking=True)
        opt_model = torch.nn.Linear(2, 2)
        opt = torch.optim.SGD(opt_model.parameters(), lr=0.1)
        with pytest.raises(CheckpointError, match="no state for optimizer"):
            TorchCheckpointer(checkpoint=cp, model=opt_model, optimizer=opt).restore()
        with pytest.raises(RuntimeError, match="size mismatch"):
            TorchCheckpointer(checkpoint=cp, model=torch.nn.Linear(2, 3)).restore()


def test_truncated_blobs_are_refused():
    encoded = fmt.encode({"w": torch.ones(100)})
    layout = fmt.plan(encoded)
    blob = bytearray(layout.total)
    fmt.write_header(memoryview(blob), layout)
    _, start = fmt.parse(bytes(blob), "here")
    assert start == layout.data_start
    with pytest.raises(CheckpointError, match="outside the blob"):
        fmt.parse(bytes(blob[: layout.total - 1]), "here")


def test_objects_must_have_state_dict(tmp_path):
    with Checkpoint.open(tmp_path / "ckpt") as cp, pytest.raises(TypeError, match="state_dict"):
        TorchCheckpointer(checkpoint=cp, objects={"bad": object()})


def test_default_checkpoint_needs_a_running_task():
    with pytest.raises(TaskpointError, match="outside a task"):
        TorchCheckpointer(model=torch.nn.Linear(1, 1))


def test_sampler_in_objects_roundtrips(tmp_path):
    sampler = ResumableSampler(10, seed=3)
    it = iter(sampler)
    taken = [next(it) for _ in range(4)]
    assert len(taken) == 4
    with Checkpoint.open(tmp_path / "ckpt") as cp:
        TorchCheckpointer(checkpoint=cp, objects={"s": sampler}).save(4, blocking=True)
        fresh = ResumableSampler(10, seed=3)
        TorchCheckpointer(checkpoint=cp, objects={"s": fresh}).restore()
    assert list(fresh) == list(it)


def test_require_names_the_extra_to_install():
    with pytest.raises(TaskpointError, match=r"pip install 'taskpoint\[torch\]'"):
        require("taskpoint_no_such_module", "torch")


@pytest.mark.parametrize(
    ("blocked", "module", "extra"),
    [
        ("torch", "taskpoint.integrations.torch", "torch"),
        ("lightning", "taskpoint.integrations.lightning", "lightning"),
    ],
)
def test_a_missing_framework_names_the_pip_install(blocked, module, extra):
    """Importing an integration without its framework fails with the extra to install, and the
    integrations package itself imports no framework."""
    import subprocess
    import sys

    code = (
        f"import sys; sys.modules[{blocked!r}] = None\n"
        "import taskpoint.integrations\n"
        "assert 'torch' not in sys.modules or sys.modules['torch'] is None\n"
        f"import {module}\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode != 0
    assert "TaskpointError" in result.stderr
    assert f"pip install 'taskpoint[{extra}]'" in result.stderr
