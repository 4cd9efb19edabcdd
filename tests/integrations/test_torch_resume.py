"""Acceptance: an MLP training loop interrupted mid-epoch and resumed from its TorchCheckpointer
checkpoint ends with parameters bitwise equal to an uninterrupted run, and trains no batch twice.

Interruptions are real: a RecoverableError, SIGKILL of the attempt's process and SIGTERM
preemption, each driven by the engine (``isolation="process"``), plus a hand-rolled attempt loop
over ``Checkpoint.open(url, attempt=k)`` with a forked child SIGKILLed between two saves.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")

import taskpoint  # noqa: E402
from support.datasets import indexed_linear_classes  # noqa: E402
from taskpoint import Checkpoint, RecoverableError, current_context, task  # noqa: E402
from taskpoint.integrations.torch import ResumableSampler, TorchCheckpointer  # noqa: E402

torch.set_num_threads(1)  # deterministic, fast on 2 cores, and safe to fork

N_SAMPLES, BATCH, EPOCHS, SAVE_EVERY = 800, 16, 3, 4  # 50 steps per epoch, 150 in all
STEPS = N_SAMPLES // BATCH * EPOCHS


@pytest.fixture(autouse=True)
def tp_home(tp_home: Path) -> Path:
    """This suite runs the engine in every test: the shared private home (tests/conftest.py)."""
    return tp_home


# ------------------------------------------------------------------------------ the training job
def train(
    checkpoint,
    log_path: str,
    *,
    after_step: Callable[[int, TorchCheckpointer], None] = lambda step, ckpt: None,
    overlap: bool = False,
) -> dict[str, bytes]:
    """3 epochs of a dropout MLP with Adam + StepLR on a shuffled, resumable loader.

    Uses the torch (dropout), NumPy (input jitter) and Python (sign flips) global RNGs, so all
    three must be restored for a bitwise-equal resume. Appends ``step idx...`` per trained batch.
    """
    torch.set_num_threads(1)
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    data = indexed_linear_classes(N_SAMPLES)  # items carry their index: batches are logged
    model = torch.nn.Sequential(
        torch.nn.Linear(16, 32),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.2),
        torch.nn.Linear(32, 32),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.2),
        torch.nn.Linear(32, 4),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=30, gamma=0.5)
    sampler = ResumableSampler(data, seed=7)
    loader = torch.utils.data.DataLoader(
        data, batch_size=BATCH, sampler=sampler, generator=torch.Generator()
    )
    ckpt = TorchCheckpointer(
        checkpoint=checkpoint,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        objects={"sampler": sampler},
        overlap=overlap,
    )
    step = ckpt.restore() or 0
    model.train()
    for epoch in range(sampler.epoch, EPOCHS):
        sampler.set_epoch(epoch)
        for x, y, idx in loader:
            jitter = torch.from_numpy(np.random.standard_normal(x.shape).astype(np.float32))
            sign = -1.0 if random.random() < 0.1 else 1.0
            loss = torch.nn.functional.cross_entropy(model(sign * x + 0.05 * jitter), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            with open(log_path, "a") as log:
                log.write(f"{step} {' '.join(map(str, idx.tolist()))}\n")
            if step % SAVE_EVERY == 0 or ckpt.preempted:
                ckpt.save(step)
            after_step(step, ckpt)
    ckpt.wait()
    assert step == STEPS
    return {k: v.numpy().tobytes() for k, v in model.state_dict().items()}


def read_log(path: str | Path) -> list[tuple[int, str]]:
    lines = Path(path).read_text().splitlines()
    return [(int(line.split(" ", 1)[0]), line.split(" ", 1)[1]) for line in lines]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[dict[str, bytes], list[tuple[int, str]]]:
    """The uninterrupted run: final parameters and the batches it trained, in order."""
    root = tmp_path_factory.mktemp("reference")
    log = root / "batches.log"
    with Checkpoint.open(root / "ckpt") as cp:
        params = train(cp, str(log))
    batches = read_log(log)
    assert len(batches) == STEPS
    assert all(len(b.split()) == BATCH for _, b in batches)
    return params, batches


def assert_same_as_reference(params, log_path, reference) -> None:
    ref_params, ref_batches = reference
    assert params.keys() == ref_params.keys()
    for name in params:  # bitwise: the raw bytes of every parameter and buffer
        assert params[name] == ref_params[name], f"{name} differs from the uninterrupted run"
    batches = read_log(log_path)
    assert Counter(b for _, b in batches) == Counter(b for _, b in ref_batches), (
        "a batch was trained twice or skipped"
    )
    assert batches == ref_batches  # same batches in the same order, too


# ------------------------------------------------------------------------------ engine-driven
INTERRUPT_AT = 72  # a save step in the middle of epoch 2 (its 22nd batch)


def announce_and_wait(marker: str, until: Callable[[], bool] = lambda: False) -> None:
    Path(marker).write_text(str(os.getpid()))
    deadline = time.monotonic() + 30
    while not until() and time.monotonic() < deadline:
        time.sleep(0.005)


@task(isolation="process", retries=1, system_retries=2)
def train_task(log_path: str, interrupt: str, marker: str, overlap: bool = False) -> dict:
    ctx = current_context()

    def after_step(step: int, ckpt: TorchCheckpointer) -> None:
        if ctx.attempt != 1:
            return
        if interrupt == "recoverable" and step == INTERRUPT_AT:
            ckpt.wait()  # the version of this step is committed: nothing will be retrained
            raise RecoverableError("test: interrupt after a committed checkpoint")
        if interrupt == "sigkill" and step == INTERRUPT_AT:
            ckpt.wait()
            announce_and_wait(marker)  # killed here by the test
        if interrupt == "sigterm" and step == INTERRUPT_AT - 2:
            # Between two periodic saves: the loop saves at the next step because it sees
            # ctx.preempted; that write commits and raises Preempted.
            announce_and_wait(marker, until=lambda: ctx.preempted)

    return train(None, log_path, after_step=after_step, overlap=overlap)


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
    ("interrupt", "status", "overlap"),
    [
        ("recoverable", "recoverable", False),
        ("sigkill", "lost", False),
        ("sigterm", "preempted", False),
        # Saves that copy Adam's tensors beside the next forward/backward: the same result.
        ("sigkill", "lost", True),
        ("sigterm", "preempted", True),
    ],
)
def test_engine_resume_is_bitwise_equal_to_uninterrupted(
    tmp_path, reference, interrupt, status, overlap
):
    log, marker = tmp_path / "batches.log", tmp_path / "pid"
    sig = {"sigkill": signal.SIGKILL, "sigterm": signal.SIGTERM}.get(interrupt)
    killer = kill_when_announced(marker, sig) if sig else None
    execution = taskpoint.run(
        train_task, log_path=str(log), interrupt=interrupt, marker=str(marker), overlap=overlap
    )
    if killer is not None:
        killer.join(5)

    assert execution.status == "succeeded", execution.error
    first, second = execution.nodes[0].attempts
    assert (first.status, second.status) == (status, "succeeded")
    assert first.pid != second.pid  # two real processes
    assert_same_as_reference(execution.result, log, reference)
    resumed_at = INTERRUPT_AT - 1 if interrupt == "sigterm" else INTERRUPT_AT
    assert [s for s, _ in read_log(log)][resumed_at : resumed_at + 1] == [resumed_at + 1]


# ------------------------------------------------------------------------------ hand-rolled
def _attempt_child(url: str, log_path: str, marker: str, kill_at: int) -> None:
    def after_step(step: int, ckpt: TorchCheckpointer) -> None:
        if step == kill_at:
            announce_and_wait(marker)  # an async save may still be in flight: killed anyway

    with Checkpoint.open(url, attempt=1) as cp:
        train(cp, log_path, after_step=after_step)


def test_sigkill_between_saves_replays_the_lost_steps_identically(tmp_path, reference):
    """Without the engine: attempt 1 runs in a forked child and is SIGKILLed 3 steps after a
    save; attempt 2 resumes from the checkpoint. The 3 lost steps are trained again (they were
    never committed) on exactly the same batches, and the result is still bitwise equal."""
    url, log, marker = str(tmp_path / "ckpt"), tmp_path / "batches.log", tmp_path / "pid"
    kill_at = INTERRUPT_AT + 3
    child = multiprocessing.get_context("fork").Process(
        target=_attempt_child, args=(url, str(log), str(marker), kill_at)
    )
    child.start()
    deadline = time.monotonic() + 60
    while not marker.exists() and child.is_alive() and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    assert child.exitcode == -signal.SIGKILL

    with Checkpoint.open(url, attempt=2) as cp:
        # Step 72, or an earlier save if the async writes had not caught up (the writer keeps
        # only the newest queued save: it lags on a slow disk, it does not fall behind forever).
        resumed = cp.latest().step
        assert resumed % SAVE_EVERY == 0 and 0 < resumed <= INTERRUPT_AT
        params = train(cp, str(log))

    batches = read_log(log)
    lost = kill_at - resumed
    replayed = batches[resumed:kill_at]
    assert [s for s, _ in replayed] == list(range(resumed + 1, kill_at + 1))
    assert batches[kill_at : kill_at + lost] == replayed  # same steps, same batches, again
    deduplicated = batches[:kill_at] + batches[kill_at + lost :]
    log.write_text("".join(f"{s} {b}\n" for s, b in deduplicated))
    assert_same_as_reference(params, log, reference)
