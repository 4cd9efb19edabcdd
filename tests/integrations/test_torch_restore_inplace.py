"""TorchCheckpointer.restore reads model tensors from disk straight into the model's own memory:
same values as a copy would give, damage still falls back to the previous version, a refused
checkpoint leaves the model untouched."""

from __future__ import annotations

import os
import warnings

import pytest

torch = pytest.importorskip("torch")

from taskpoint import Checkpoint  # noqa: E402
from taskpoint.checkpoint import CheckpointWarning  # noqa: E402
from taskpoint.errors import CheckpointError  # noqa: E402
from taskpoint.integrations.torch import TorchCheckpointer  # noqa: E402

torch.set_num_threads(1)


class Net(torch.nn.Module):
    def __init__(self, fill: float | None = None) -> None:
        super().__init__()
        self.a = torch.nn.Linear(64, 32)
        self.b = torch.nn.Linear(32, 64)
        self.b.weight = torch.nn.Parameter(self.a.weight.T.contiguous())  # different shape
        self.tied = self.a  # the same parameters under two names
        self.register_buffer("count", torch.tensor(3, dtype=torch.int64))
        self.register_buffer("bf16", torch.randn(5, dtype=torch.bfloat16))
        self.register_buffer("strided", torch.randn(8, 6).T)  # not contiguous
        if fill is not None:
            with torch.no_grad():
                for t in self.state_dict().values():
                    t.fill_(fill)


def _same(m1: torch.nn.Module, m2: torch.nn.Module) -> bool:
    s1, s2 = m1.state_dict(), m2.state_dict()
    return list(s1) == list(s2) and all(torch.equal(s1[k], s2[k]) for k in s1)


def test_restore_fills_the_models_own_tensors(tmp_path):
    src, dst = Net(), Net(fill=0.0)
    pointers = {k: t.data_ptr() for k, t in dst.state_dict().items()}
    with Checkpoint.open(tmp_path / "c") as cp:
        TorchCheckpointer(checkpoint=cp, model=src, rng=False).save(5, blocking=True)
        assert TorchCheckpointer(checkpoint=cp, model=dst, rng=False).restore() == 5
    assert _same(src, dst)
    assert {k: t.data_ptr() for k, t in dst.state_dict().items()} == pointers
    assert dst.tied.weight is dst.a.weight


def test_restore_converts_where_dtypes_differ(tmp_path):
    src = torch.nn.Linear(4, 4)
    dst = torch.nn.Linear(4, 4).double()
    with Checkpoint.open(tmp_path / "c") as cp:
        TorchCheckpointer(checkpoint=cp, model=src, rng=False).save(1, blocking=True)
        TorchCheckpointer(checkpoint=cp, model=dst, rng=False).restore()
    assert dst.weight.dtype == torch.float64
    assert torch.equal(dst.weight, src.weight.double())


@pytest.mark.usefixtures("payload_files")  # damages the payload file
def test_a_damaged_latest_version_restores_the_previous_one(tmp_path):
    model = Net()
    with Checkpoint.open(tmp_path / "c") as cp:
        ckpt = TorchCheckpointer(checkpoint=cp, model=model, rng=False)
        ckpt.save(1, blocking=True)
        expected = {k: t.clone() for k, t in model.state_dict().items()}
        with torch.no_grad():
            model.a.weight.add_(1.0)
        bad = ckpt.save(2, blocking=True)
    path = tmp_path / "c" / "v" / bad.id / "data"
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # inside the last tensor: only the checksum can tell
    path.write_bytes(bytes(data))
    dst = Net(fill=0.0)
    with Checkpoint.open(tmp_path / "c", attempt=2) as cp, pytest.warns(CheckpointWarning):
        assert TorchCheckpointer(checkpoint=cp, model=dst, rng=False).restore() == 1
    assert all(torch.equal(dst.state_dict()[k], v) for k, v in expected.items())


def test_a_checkpoint_lacking_a_component_leaves_the_model_untouched(tmp_path):
    with Checkpoint.open(tmp_path / "c") as cp:
        TorchCheckpointer(checkpoint=cp, model=Net(), rng=False).save(1, blocking=True)
        dst = Net(fill=7.0)
        opt = torch.optim.SGD(dst.parameters(), lr=0.1)
        with pytest.raises(CheckpointError, match="no state for optimizer"):
            TorchCheckpointer(checkpoint=cp, model=dst, optimizer=opt, rng=False).restore()
    assert all(bool((t == 7).all()) for t in dst.state_dict().values())


def test_optimizer_state_tensors_are_owned_and_distinct(tmp_path):
    model = torch.nn.Linear(8, 8)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 8)).sum().backward()
    opt.step()
    with Checkpoint.open(tmp_path / "c") as cp:
        TorchCheckpointer(checkpoint=cp, model=model, optimizer=opt, rng=False).save(
            1, blocking=True
        )
        model2 = torch.nn.Linear(8, 8)
        opt2 = torch.optim.Adam(model2.parameters())
        TorchCheckpointer(checkpoint=cp, model=model2, optimizer=opt2, rng=False).restore()
    state = opt2.state_dict()["state"]
    tensors = [t for s in state.values() for t in s.values() if isinstance(t, torch.Tensor)]
    assert len({t.data_ptr() for t in tensors if t.numel()}) == len(
        [t for t in tensors if t.numel()]
    )
    for t in tensors:
        t.add_(1)  # writable, and not the model's memory
    assert torch.equal(model2.weight, model.weight)


def test_staging_buffers_are_page_aligned_and_blocking_saves_reuse_one(tmp_path):
    model = torch.nn.Linear(1024, 1024)  # 4 MiB: big enough for the O_DIRECT path
    with Checkpoint.open(tmp_path / "c") as cp:
        ckpt = TorchCheckpointer(checkpoint=cp, model=model, rng=False)
        for step in range(3):
            ckpt.save(step, blocking=True)
        buffers = [s.buffer for s in ckpt._writer.slots if s.buffer is not None]
        assert len(buffers) == 1 and buffers[0].data_ptr() % 4096 == 0
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            dst = torch.nn.Linear(1024, 1024)
            TorchCheckpointer(checkpoint=cp, model=dst, rng=False).restore()
    assert torch.equal(dst.weight, model.weight)
    assert os.path.getsize(tmp_path / "c" / "v" / cp.latest().id / "data") > 4 << 20
