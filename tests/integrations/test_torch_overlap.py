"""TorchCheckpointer(overlap=True): the optimizer's tensors are copied in the background, the
optimizer's next step waits for that copy, and an in-place change outside the optimizer during
the copy fails the save instead of committing a state that never existed.

The background copy is held on an event (a wrapper around the real copy) so that each test
decides what the loop does while it runs.
"""

from __future__ import annotations

import threading
import time

import pytest

torch = pytest.importorskip("torch")

from taskpoint import Checkpoint  # noqa: E402
from taskpoint.errors import CheckpointError, Preempted  # noqa: E402
from taskpoint.integrations.torch import TorchCheckpointer  # noqa: E402
from taskpoint.integrations.torch import _state as torch_state  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def held_copy(monkeypatch):
    """Holds every background copy chunk until ``release`` is set; records the bytes copied.
    Also pretends a core is free (the CI machine may have one core)."""
    release = threading.Event()
    copied: list[int] = []
    real = torch_state._copy_chunk

    def held(dst, src, nbytes):
        assert release.wait(30), "test never released the background copy"
        real(dst, src, nbytes)
        copied.append(nbytes)

    monkeypatch.setattr(torch_state, "_copy_chunk", held)
    monkeypatch.setattr("taskpoint.integrations.torch.checkpointer.spare_core", lambda: True)
    release.copied = copied  # type: ignore[attr-defined]
    return release


def nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def trained(seed: int = 0, batchnorm: bool = False):
    torch.manual_seed(seed)
    layers = [torch.nn.Linear(64, 64)]
    if batchnorm:
        layers.append(torch.nn.BatchNorm1d(64))
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return model, opt


def train_step(model, opt, x) -> None:
    model(x).square().mean().backward()
    opt.step()
    opt.zero_grad()


def snapshot(model, opt):
    state = {k: v.clone() for k, v in model.state_dict().items()}
    momentum = [opt.state[p]["momentum_buffer"].clone() for p in model.parameters()]
    return state, momentum


def restored(cp, batchnorm: bool = False):
    """(step, state) restored from ``cp`` into a freshly built model and optimizer."""
    model, opt = trained(seed=1, batchnorm=batchnorm)
    step = TorchCheckpointer(checkpoint=cp, model=model, optimizer=opt, rng=False).restore()
    return step, snapshot(model, opt)


def equal(a, b) -> bool:
    (sa, ma), (sb, mb) = a, b
    return (
        sa.keys() == sb.keys()
        and all(torch.equal(sa[k], sb[k]) for k in sa)
        and all(torch.equal(x, y) for x, y in zip(ma, mb, strict=True))
    )


def test_next_step_waits_for_the_copy_and_the_saved_state_is_the_one_at_save(
    tmp_path, held_copy
) -> None:
    model, opt = trained()
    x = torch.randn(16, 64)
    train_step(model, opt, x)  # momentum buffers exist from here on
    with Checkpoint.open(tmp_path / "ckpt") as cp:
        ckpt = TorchCheckpointer(checkpoint=cp, model=model, optimizer=opt, rng=False, overlap=True)
        at_save = snapshot(model, opt)
        future = ckpt.save(7)
        assert not future.done()  # returned while the optimizer's tensors are not copied yet
        model(x).square().mean().backward()  # forward and backward run beside the copy
        threading.Timer(0.3, held_copy.set).start()
        started = time.perf_counter()
        opt.step()  # must wait for the copy: it changes every parameter and momentum buffer
        waited = time.perf_counter() - started
        assert waited >= 0.2, f"optimizer.step() ran after {waited:.3f} s, before the copy"
        ckpt.wait()
        assert future.result().step == 7
        # Parameters (shared with the model's state) and both momentum buffers went through
        # the background copy.
        assert sum(held_copy.copied) == 2 * nbytes(model.parameters())
        assert not equal(snapshot(model, opt), at_save)  # the step did change them
        step, state = restored(cp)
    assert step == 7
    assert equal(state, at_save)


def test_in_place_change_outside_the_optimizer_fails_the_save(tmp_path, held_copy) -> None:
    model, opt = trained()
    x = torch.randn(16, 64)
    train_step(model, opt, x)
    with Checkpoint.open(tmp_path / "ckpt") as cp:
        ckpt = TorchCheckpointer(checkpoint=cp, model=model, optimizer=opt, rng=False, overlap=True)
        held_copy.set()
        ckpt.save(1, blocking=False)
        ckpt.wait()
        good = snapshot(model, opt)
        held_copy.clear()
        future = ckpt.save(2)
        with torch.no_grad():
            model[0].weight.mul_(2.0)  # not through the optimizer, while the copy is held
        held_copy.set()
        with pytest.raises(CheckpointError, match="changed in place while they were being copied"):
            ckpt.wait()
        assert isinstance(future.exception(), CheckpointError)
        ckpt.wait()  # reported once; the checkpointer goes on working
        assert cp.latest().step == 1  # nothing from the torn save was committed
        step, state = restored(cp)
        assert step == 1 and equal(state, good)
        ckpt.save(3, blocking=False)
        ckpt.wait()
        assert cp.latest().step == 3


def test_tensors_the_optimizer_does_not_own_are_copied_before_save_returns(
    tmp_path, held_copy
) -> None:
    """BatchNorm's running statistics change in every training forward: they cannot wait for
    the optimizer's step, so they are staged at once and a forward during the copy is fine."""
    model, opt = trained(batchnorm=True)
    x = torch.randn(16, 64)
    train_step(model, opt, x)
    with Checkpoint.open(tmp_path / "ckpt") as cp:
        ckpt = TorchCheckpointer(checkpoint=cp, model=model, optimizer=opt, rng=False, overlap=True)
        at_save = snapshot(model, opt)
        ckpt.save(4)
        model(x)  # changes running_mean, running_var, num_batches_tracked
        assert not torch.equal(model[1].running_mean, at_save[0]["1.running_mean"])
        held_copy.set()
        ckpt.wait()
        step, state = restored(cp, batchnorm=True)
    assert step == 4 and equal(state, at_save)
    # Linear and BatchNorm parameters with their momentum went through the background copy;
    # the three BatchNorm buffers did not.
    assert sum(held_copy.copied) == 2 * nbytes(model.parameters())


def test_a_blocking_save_copies_everything_before_returning(tmp_path) -> None:
    model, opt = trained()
    train_step(model, opt, torch.randn(16, 64))
    with Checkpoint.open(tmp_path / "ckpt") as cp:
        ckpt = TorchCheckpointer(checkpoint=cp, model=model, optimizer=opt, rng=False, overlap=True)
        version = ckpt.save(5, blocking=True)
        assert version.step == 5
        assert ckpt._writer._staging is None  # nothing went to the background


def test_overlap_needs_an_optimizer(tmp_path) -> None:
    model, _ = trained()
    with (
        Checkpoint.open(tmp_path / "ckpt") as cp,
        pytest.raises(ValueError, match="needs the optimizer"),
    ):
        TorchCheckpointer(checkpoint=cp, model=model, overlap=True)


def test_the_step_hook_does_not_keep_the_checkpointer_alive(tmp_path) -> None:
    import gc
    import weakref

    model, opt = trained()
    with Checkpoint.open(tmp_path / "ckpt") as cp:
        ckpt = TorchCheckpointer(checkpoint=cp, model=model, optimizer=opt, rng=False, overlap=True)
        ref = weakref.ref(ckpt)
        del ckpt
        gc.collect()
        assert ref() is None
        train_step(model, opt, torch.randn(16, 64))  # the orphaned hook is harmless


def test_the_loop_helps_with_the_copy_it_waits_for(tmp_path, monkeypatch) -> None:
    """A 12 MiB parameter is copied in 8 MiB chunks; with the staging thread stuck on its first
    chunk, the optimizer's step copies the rest itself and then waits only for that one."""
    monkeypatch.setattr("taskpoint.integrations.torch.checkpointer.spare_core", lambda: True)
    real = torch_state._copy_chunk
    main = threading.current_thread()
    by_thread: list[tuple[bool, int]] = []
    release = threading.Event()

    def copy(dst, src, nbytes):
        on_main = threading.current_thread() is main
        if not on_main:
            assert release.wait(30)
        real(dst, src, nbytes)
        by_thread.append((on_main, nbytes))

    monkeypatch.setattr(torch_state, "_copy_chunk", copy)
    big = torch.nn.Parameter(torch.randn(3 << 20))  # 12 MiB
    opt = torch.optim.SGD([big], lr=0.5)
    with Checkpoint.open(tmp_path / "ckpt") as cp:
        ckpt = TorchCheckpointer(
            checkpoint=cp, objects={"p": _Holder(big)}, optimizer=opt, overlap=True
        )
        at_save = big.detach().clone()
        ckpt.save(1)
        big.grad = torch.ones_like(big)
        threading.Timer(0.3, release.set).start()
        opt.step()
        ckpt.wait()
        assert sorted(by_thread) == [(False, 8 << 20), (True, 4 << 20)]
        fresh = _Holder(torch.zeros(3 << 20))
        assert TorchCheckpointer(checkpoint=cp, objects={"p": fresh}, rng=False).restore() == 1
    assert torch.equal(fresh.tensor, at_save)
    assert not torch.equal(big.detach(), at_save)


class _Holder:
    """An object whose state is one tensor (shared, not copied, by state_dict)."""

    def __init__(self, tensor) -> None:
        self.tensor = tensor

    def state_dict(self):
        return {"t": self.tensor.detach()}

    def load_state_dict(self, state) -> None:
        with torch.no_grad():
            self.tensor.copy_(state["t"])


def test_without_a_spare_core_everything_is_copied_before_save_returns(
    tmp_path, held_copy, monkeypatch
) -> None:
    monkeypatch.setattr("taskpoint.integrations.torch.checkpointer.spare_core", lambda: False)
    model, opt = trained()
    train_step(model, opt, torch.randn(16, 64))
    with Checkpoint.open(tmp_path / "ckpt") as cp:
        ckpt = TorchCheckpointer(checkpoint=cp, model=model, optimizer=opt, rng=False, overlap=True)
        at_save = snapshot(model, opt)
        ckpt.save(2)
        with torch.no_grad():
            model[0].weight.mul_(2.0)  # allowed: nothing is left to copy
        ckpt.wait()
        assert held_copy.copied == []
        step, state = restored(cp)
    assert step == 2 and equal(state, at_save)


class _PreemptedAfterCommit:
    """A checkpoint that, once ``preempted`` is set, commits each write and then raises
    `Preempted`, as a task's checkpoint does after SIGTERM."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.preempted = False

    def write(self, data, **options):
        result = self.inner.write(data, **options)
        if self.preempted:
            if not options.get("blocking", True):
                result.result()
            raise Preempted("test: preempted after committing")
        return result

    def wait(self, timeout=None) -> None:
        self.inner.wait(timeout)


def test_a_preemption_during_the_background_copy_still_commits_the_next_save(
    tmp_path, held_copy
) -> None:
    """SIGTERM lands while an overlapped save is copying: its write commits and raises
    Preempted on the staging thread. The loop's next save (the one it makes on seeing the
    preemption) must still commit, and Preempted must reach the loop."""
    model, opt = trained()
    x = torch.randn(16, 64)
    train_step(model, opt, x)
    with Checkpoint.open(tmp_path / "ckpt") as cp:
        preempting = _PreemptedAfterCommit(cp)
        ckpt = TorchCheckpointer(
            checkpoint=preempting, model=model, optimizer=opt, rng=False, overlap=True
        )
        ckpt.save(1)
        preempting.preempted = True  # SIGTERM while step 1 is still being copied
        held_copy.set()
        train_step(model, opt, x)
        at_second = snapshot(model, opt)
        with pytest.raises(Preempted):
            ckpt.save(2, blocking=True)
        assert [v.step for v in cp.versions()][-2:] == [1, 2]
        step, state = restored(cp)
    assert step == 2 and equal(state, at_second)
