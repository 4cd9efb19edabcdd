"""``every_n_steps="auto"``: each integration asks ``Checkpoint.due()`` after every step and saves
when it says (the interval model itself is tested in tests/checkpoint/test_interval.py). The
pacer's bounds pin the interval here: ``max_interval=0`` makes every step due, a minimum of an
hour none, so what is checked is who asks, how often, and what is saved; and that a preemption
is due at once through the engine. Explicit cadences keep working; a wrong one is refused with
the accepted values named."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

import taskpoint
from taskpoint import Checkpoint, current_context, task

NEVER = {"min_interval": 3600.0, "max_interval": 3600.0}
ALWAYS = {"max_interval": 0.0}


@pytest.fixture(autouse=True)
def tp_home(tp_home: Path) -> Path:
    """The preemption test runs the engine: the shared private home (tests/conftest.py)."""
    return tp_home


def scope(tmp_path: Path, **bounds: float) -> Checkpoint:
    cp = Checkpoint.open(tmp_path / "ckpt", keep=50)
    cp.pacer.configure(**bounds)
    return cp


# ---------------------------------------------------------------------------------------- torch
@task(isolation="process", system_retries=1)
def preempted_torch(steps: int) -> list:
    """Nothing is due for an hour, but a SIGTERM at step 5 is due at once: attempt 2 resumes
    from step 5 and ends with the weights of an uninterrupted run."""
    import torch

    from taskpoint.integrations.torch import TorchCheckpointer

    ctx = current_context()
    ctx.checkpoint.pacer.configure(**NEVER)
    model = torch.nn.Linear(4, 2)
    with torch.no_grad():
        model.weight.zero_()
    ckpt = TorchCheckpointer(model=model, every_n_steps="auto", rng=False)
    start = ckpt.restore() or 0
    for step in range(start, steps):
        with torch.no_grad():
            model.weight += 1.0
        if ctx.attempt == 1 and step + 1 == 5:
            os.kill(os.getpid(), signal.SIGTERM)
        ckpt.maybe_save(step + 1)
    ckpt.wait()
    return [start, ctx.attempt, float(model.weight[0, 0]), ctx.checkpoint.stats.dues]


def test_torch_auto_saves_at_once_on_preemption_and_resumes_there():
    pytest.importorskip("torch")
    execution = taskpoint.run(preempted_torch, steps=9)
    assert execution.status == "succeeded", execution.error
    first, second = execution.nodes[0].attempts
    assert (first.status, second.status) == ("preempted", "succeeded")
    assert first.checkpoint_at_end == "0001-000001"  # its one save: the preemption's
    assert execution.result == [5, 2, 9.0, 4]  # resumed at 5; steps 6..9 asked due()


def test_torch_auto_asks_due_after_every_step(tmp_path):
    torch = pytest.importorskip("torch")
    from taskpoint.integrations.torch import TorchCheckpointer

    model = torch.nn.Linear(4, 2)
    with scope(tmp_path, **ALWAYS) as cp:
        ckpt = TorchCheckpointer(checkpoint=cp, model=model, every_n_steps="auto", rng=False)
        saved = [ckpt.maybe_save(step) is not None for step in range(1, 7)]
        ckpt.wait()
        assert saved == [True] * 6 and cp.stats.dues == 6
        cp.pacer.configure(**NEVER)
        assert [ckpt.maybe_save(step) for step in range(7, 10)] == [None] * 3
        assert cp.stats.dues == 9 and cp.stats.saves == 6
        assert cp.latest().step == 6
        every_third = TorchCheckpointer(checkpoint=cp, model=model, every_n_steps=3, rng=False)
        saved = [every_third.maybe_save(step) is not None for step in range(1, 7)]
        assert saved == [False, False, True] * 2 and cp.stats.dues == 9  # explicit: no due()
        every_third.wait()


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "Auto", "sometimes", None])
def test_a_wrong_cadence_names_the_accepted_values(tmp_path, bad):
    torch = pytest.importorskip("torch")
    from taskpoint.integrations.torch import TorchCheckpointer

    if bad is None:  # allowed: save() only; maybe_save() then says what it needs
        ckpt = TorchCheckpointer(checkpoint=scope(tmp_path), model=torch.nn.Linear(1, 1))
        with pytest.raises(ValueError, match='every_n_steps=N or "auto"'):
            ckpt.maybe_save(1)
        return
    with pytest.raises(ValueError, match=r'every_n_steps must be an integer >= 1 .* or "auto"'):
        TorchCheckpointer(checkpoint=scope(tmp_path), every_n_steps=bad)


# ----------------------------------------------------------------------------------- lightning
def test_lightning_auto_asks_due_after_every_optimizer_step(tmp_path):
    torch = pytest.importorskip("torch")
    pl = pytest.importorskip("lightning.pytorch")
    from taskpoint.integrations.lightning import LightningCheckpointer

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(4, 2)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(48, 4), torch.randint(0, 2, (48,)))
    with pytest.raises(ValueError, match='"auto"'):
        LightningCheckpointer(every_n_steps="often")
    for bounds, saves in ((ALWAYS, 12), (NEVER, 0)):
        with scope(tmp_path / str(saves), **bounds) as cp:
            trainer = pl.Trainer(
                max_epochs=2,
                accelerator="cpu",
                logger=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                default_root_dir=tmp_path,
                callbacks=[LightningCheckpointer(checkpoint=cp, every_n_steps="auto")],
            )
            trainer.fit(Tiny(), torch.utils.data.DataLoader(data, batch_size=8))
            assert (cp.stats.dues, cp.stats.saves) == (12, saves)
            if saves:
                assert cp.latest().step == 12


# -------------------------------------------------------------------------------------- keras
@pytest.mark.filterwarnings(  # Keras' own np.array(tensor) calls, not ours
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)
def test_keras_auto_asks_due_after_every_trained_batch(tmp_path):
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    np = pytest.importorskip("numpy")
    pytest.importorskip("torch")
    from taskpoint.integrations.keras import KerasCheckpointer

    with pytest.raises(ValueError, match='"auto"'):
        KerasCheckpointer(every_n_steps=0)
    x = np.random.default_rng(1).normal(size=(40, 4)).astype("float32")
    y = (x.sum(axis=1, keepdims=True) > 0).astype("float32")
    # Every batch due (5 per epoch, 2 epochs), or none; both also save at each epoch's end and
    # at the end of training.
    for bounds, saves in ((ALWAYS, 10 + 2 + 1), (NEVER, 2 + 1)):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
        model.compile("sgd", "binary_crossentropy")
        with scope(tmp_path / str(saves), **bounds) as cp:
            callback = KerasCheckpointer(checkpoint=cp, every_n_steps="auto")
            model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[callback])
            assert (cp.stats.dues, cp.stats.saves) == (10, saves)


# ------------------------------------------------------------------------------------ sklearn
def test_sklearn_fit_incremental_auto_asks_due_after_every_batch(tmp_path):
    np = pytest.importorskip("numpy")
    pytest.importorskip("sklearn")
    pytest.importorskip("skops")
    from sklearn.linear_model import SGDClassifier

    from taskpoint.integrations.sklearn import fit_incremental

    rng = np.random.default_rng(0)
    batches = [(rng.normal(size=(10, 3)), rng.integers(0, 2, size=10)) for _ in range(6)]
    with pytest.raises(ValueError, match='"auto"'):
        fit_incremental(SGDClassifier(), batches, every_n_steps="never", checkpoint=scope(tmp_path))
    for bounds, saves in ((ALWAYS, 12 + 2), (NEVER, 2)):  # 2 epochs of 6, plus the epoch ends
        with scope(tmp_path / str(saves), **bounds) as cp:
            fit_incremental(
                SGDClassifier(random_state=0),
                batches,
                epochs=2,
                classes=[0, 1],
                every_n_steps="auto",
                checkpoint=cp,
            )
            assert (cp.stats.dues, cp.stats.saves) == (12, saves)
