"""Lightning: an interrupted ``Trainer.fit`` resumed by LightningCheckpointer (no ckpt_path) ends
with weights bitwise equal to an uninterrupted fit and trains no batch twice."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")
pl = pytest.importorskip("lightning.pytorch")

import taskpoint  # noqa: E402
from support.datasets import indexed_linear_classes  # noqa: E402
from taskpoint import Checkpoint, RecoverableError, current_context, task  # noqa: E402
from taskpoint.integrations.lightning import LightningCheckpointer  # noqa: E402
from taskpoint.integrations.torch import ResumableSampler  # noqa: E402

torch.set_num_threads(1)
warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*GPU available but not used.*")

N_SAMPLES, BATCH, EPOCHS, SAVE_EVERY = 800, 16, 3, 4  # 50 steps per epoch, 150 in all
STEPS = N_SAMPLES // BATCH * EPOCHS


@pytest.fixture(autouse=True)
def tp_home(tp_home: Path) -> Path:
    """This suite runs the engine in every test: the shared private home (tests/conftest.py)."""
    return tp_home


class MLP(pl.LightningModule):
    """Dropout MLP; draws from the torch, NumPy and Python RNGs; logs each trained batch."""

    def __init__(self, log_path: str) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(16, 32),
            torch.nn.ReLU(),
            torch.nn.Dropout(0.2),
            torch.nn.Linear(32, 4),
        )
        self.after_step: Callable[[int], None] = lambda step: None

    def training_step(self, batch, batch_idx):
        x, y, idx = batch
        with open(self.hparams.log_path, "a") as log:
            log.write(f"{self.global_step + 1} {' '.join(map(str, idx.tolist()))}\n")
        jitter = torch.from_numpy(np.random.standard_normal(x.shape).astype(np.float32))
        sign = -1.0 if random.random() < 0.1 else 1.0
        return torch.nn.functional.cross_entropy(self.net(sign * x + 0.05 * jitter), y)

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.parameters(), lr=3e-3)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=30, gamma=0.5)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.after_step(self.global_step)  # runs after the callbacks' hook: after the save


RESUMED: list[int | None] = []  # each fit's LightningCheckpointer.resumed_step


def fit(
    checkpoint, log_path: str, after_step=lambda step: None, num_workers: int = 0
) -> dict[str, bytes]:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    data = indexed_linear_classes(N_SAMPLES)
    model = MLP(log_path)
    model.after_step = after_step
    loader = torch.utils.data.DataLoader(
        data,
        batch_size=BATCH,
        sampler=ResumableSampler(data, seed=7),
        generator=torch.Generator(),
        num_workers=num_workers,
        multiprocessing_context="fork" if num_workers else None,
    )
    callback = LightningCheckpointer(checkpoint=checkpoint, every_n_steps=SAVE_EVERY)
    trainer = pl.Trainer(
        max_epochs=EPOCHS,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
        callbacks=[callback],
    )
    trainer.fit(model, loader)
    RESUMED.append(callback.resumed_step)
    assert trainer.global_step == STEPS
    return {k: v.numpy().tobytes() for k, v in model.state_dict().items()}


def read_log(path) -> list[tuple[int, str]]:
    rows = [line.split(" ", 1) for line in Path(path).read_text().splitlines()]
    return [(int(step), batch) for step, batch in rows]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    with Checkpoint.open(root / "ckpt") as cp:
        params = fit(cp, str(root / "batches.log"))
    assert RESUMED[-1] is None  # nothing to resume from
    batches = read_log(root / "batches.log")
    assert [s for s, _ in batches] == list(range(1, STEPS + 1))
    return params, batches


def assert_same_as_reference(params, log_path, reference) -> None:
    ref_params, ref_batches = reference
    assert params.keys() == ref_params.keys()
    for name in params:
        assert params[name] == ref_params[name], f"{name} differs from the uninterrupted fit"
    assert read_log(log_path) == ref_batches  # every batch once, in the same order


@pytest.mark.parametrize(
    ("stop_at", "num_workers"),
    [(72, 0), (100, 0), (72, 2)],
    ids=["mid-epoch", "last-batch-of-epoch", "mid-epoch-2-workers"],
)
def test_fit_resumed_in_process_is_bitwise_equal(tmp_path, reference, stop_at, num_workers):
    """Attempt 1 raises right after the save of step ``stop_at``; attempt 2 is a fresh Trainer
    and module given no ckpt_path."""
    url, log = tmp_path / "ckpt", str(tmp_path / "batches.log")

    def stop(step: int) -> None:
        if step == stop_at:
            raise RecoverableError("test interruption")

    with Checkpoint.open(url, attempt=1) as cp, pytest.raises(RecoverableError):
        fit(cp, log, after_step=stop, num_workers=num_workers)
    with Checkpoint.open(url, attempt=2) as cp:
        assert cp.latest().step == stop_at
        params = fit(cp, log, num_workers=num_workers)
    assert RESUMED[-1] == stop_at
    assert_same_as_reference(params, log, reference)


@task(isolation="process", retries=1, system_retries=2)
def fit_task(log_path: str, interrupt: str, marker: str) -> dict:
    ctx = current_context()

    def after_step(step: int) -> None:
        if ctx.attempt != 1:
            return
        if interrupt == "sigterm" and step == 70:
            # Between two periodic saves; the callback saves step 71 because the attempt is
            # preempted, and that write raises Preempted.
            Path(marker).write_text(str(os.getpid()))
            deadline = time.monotonic() + 30
            while not ctx.preempted and time.monotonic() < deadline:
                time.sleep(0.005)
            return
        if step != 72:
            return
        ctx.checkpoint.wait()  # step 72's save is committed: nothing will be retrained
        if interrupt == "recoverable":
            raise RecoverableError("test: interrupt after a committed checkpoint")
        Path(marker).write_text(str(os.getpid()))
        time.sleep(60)  # SIGKILLed here by the test

    return fit(None, log_path, after_step=after_step)


def kill_when_announced(marker: Path, sig: int) -> threading.Thread:
    def killer() -> None:
        deadline = time.monotonic() + 60
        while not (marker.exists() and marker.read_text().strip()):
            if time.monotonic() > deadline:
                return
            time.sleep(0.005)
        os.kill(int(marker.read_text()), sig)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize(
    ("interrupt", "status"),
    # SIGKILL of an attempt is covered by the torch tests; it adds nothing Lightning-specific.
    [("recoverable", "recoverable"), ("sigterm", "preempted")],
)
def test_engine_retry_resumes_fit_bitwise_equal(tmp_path, reference, interrupt, status):
    log, marker = tmp_path / "batches.log", tmp_path / "pid"
    sig = {"sigkill": signal.SIGKILL, "sigterm": signal.SIGTERM}.get(interrupt)
    killer = kill_when_announced(marker, sig) if sig else None
    execution = taskpoint.run(fit_task, log_path=str(log), interrupt=interrupt, marker=str(marker))
    if killer is not None:
        killer.join(5)
    assert execution.status == "succeeded", execution.error
    first, second = execution.nodes[0].attempts
    assert (first.status, second.status) == (status, "succeeded")
    assert second.checkpoint_at_start is not None
    assert_same_as_reference(execution.result, log, reference)
