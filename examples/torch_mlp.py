"""A PyTorch training loop that survives failures and resumes mid-epoch, exactly.

    taskpoint run examples/torch_mlp.py pipeline --epochs 3 --fail-at-step 70

The first attempt raises a RecoverableError at step 70 (mid-epoch 2); the engine retries the task
and the second attempt continues from the latest checkpoint: same model, optimizer, scheduler,
RNG states and data order as a run that never failed, so the final weights are bitwise equal
(compare with ``--fail-at-step 0``: the printed digest is the same). Needs
``pip install 'taskpoint[torch]'``.
"""

from __future__ import annotations

import hashlib

import torch
from torch.utils.data import DataLoader, TensorDataset

from taskpoint import RecoverableError, current_context, task, workflow
from taskpoint.integrations.torch import ResumableSampler, TorchCheckpointer


def make_data(n: int = 800) -> TensorDataset:
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(n, 16, generator=g)
    y = (x @ torch.randn(16, 4, generator=g)).argmax(1)
    return TensorDataset(x, y)


@task(retries=2)
def train(epochs: int, fail_at_step: int, every_n_steps: int = 10) -> str:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    ctx = current_context()
    data = make_data()
    model = torch.nn.Sequential(
        torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(64, 4)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=40, gamma=0.5)
    sampler = ResumableSampler(data, seed=0)
    # The loader gets its own generator so iter(loader) does not draw from the global RNG.
    loader = DataLoader(data, batch_size=16, sampler=sampler, generator=torch.Generator())
    ckpt = TorchCheckpointer(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        objects={"sampler": sampler},
        every_n_steps=every_n_steps,
    )

    step = ckpt.restore() or 0
    print(f"attempt {ctx.attempt}: starting at step {step} (epoch {sampler.epoch})")
    for epoch in range(sampler.epoch, epochs):
        sampler.set_epoch(epoch)
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            # Every every_n_steps steps, and at once after SIGTERM (that save commits, then
            # raises Preempted); async.
            ckpt.maybe_save(step)
            if ctx.attempt == 1 and step == fail_at_step:
                raise RecoverableError(f"simulated failure at step {step}")
        print(f"epoch {epoch}: loss {loss.item():.4f}")
    ckpt.wait()
    digest = hashlib.sha256()
    for value in model.state_dict().values():
        digest.update(value.numpy().tobytes())
    return digest.hexdigest()[:16]


@workflow
def pipeline(epochs: int = 3, fail_at_step: int = 70) -> str:
    return train(epochs=epochs, fail_at_step=fail_at_step)


if __name__ == "__main__":
    print(pipeline(epochs=3, fail_at_step=70))
