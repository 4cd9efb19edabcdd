"""Data-parallel training in two rank processes (DDP over gloo, on CPU) that survives the loss of
a rank and resumes from the latest checkpoint.

    taskpoint run examples/torch_ddp.py pipeline --epochs 3 --kill-at-step 30

``@task(nproc=2, isolation="process")`` runs each attempt as two rank processes with torchrun's
environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``, ...), so
``dist.init_process_group("gloo")`` needs no arguments. In the first attempt rank 1 is killed
with SIGKILL at step ``--kill-at-step`` (a lost machine, an OOM kill): the engine ends rank 0,
which waits for it in the next all-reduce, records the attempt ``lost`` and starts both ranks
again; they resume from the latest committed checkpoint, every rank from the same version. The
output is rank 0's return value: a digest of the final weights. Needs
``pip install 'taskpoint[torch]'``.
"""

from __future__ import annotations

import hashlib
import os
import signal

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, TensorDataset

from taskpoint import current_context, task, workflow
from taskpoint.integrations.torch import ResumableSampler, TorchCheckpointer


def make_data(n: int = 800) -> TensorDataset:
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(n, 16, generator=g)
    y = (x @ torch.randn(16, 4, generator=g)).argmax(1)
    return TensorDataset(x, y)


@task(isolation="process", nproc=2, system_retries=2)
def train(epochs: int, kill_at_step: int, every_n_steps: int = 10) -> str:
    ctx = current_context()
    dist.init_process_group("gloo")  # the engine set torchrun's environment for this rank
    torch.manual_seed(0)
    data = make_data()
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    # This rank's share of each epoch, in an order that resumes mid-epoch.
    sampler = ResumableSampler(data, seed=0, num_replicas=ctx.world_size, rank=ctx.rank)
    loader = DataLoader(data, batch_size=16, sampler=sampler, generator=torch.Generator())
    # Every rank builds it and calls restore/save together (the process group is initialised).
    ckpt = TorchCheckpointer(
        model=model, optimizer=optimizer, objects={"sampler": sampler}, every_n_steps=every_n_steps
    )
    step = ckpt.restore() or 0
    ddp = DistributedDataParallel(model)  # after restore: every rank holds the same weights
    if ctx.rank == 0:
        print(f"attempt {ctx.attempt}: {ctx.world_size} ranks start at step {step}")
    for epoch in range(sampler.epoch, epochs):
        sampler.set_epoch(epoch)
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(ddp(x), y)
            optimizer.zero_grad()
            loss.backward()  # DDP averages the gradients across the ranks
            optimizer.step()
            step += 1
            ckpt.maybe_save(step)  # every every_n_steps steps, and at once after SIGTERM
            if ctx.attempt == 1 and ctx.rank == 1 and step == kill_at_step:
                os.kill(os.getpid(), signal.SIGKILL)  # rank 1's machine goes away
        if ctx.rank == 0:
            print(f"epoch {epoch}: loss {loss.item():.4f}")
    ckpt.wait()
    ckpt.close()
    digest = hashlib.sha256()
    for value in model.state_dict().values():
        digest.update(value.numpy().tobytes())
    # The DDP model first, then the group: gloo's teardown can hang while a DDP model exists.
    del ddp
    dist.destroy_process_group()
    return digest.hexdigest()[:16]


@workflow
def pipeline(epochs: int = 3, kill_at_step: int = 30) -> str:
    return train(epochs=epochs, kill_at_step=kill_at_step)


if __name__ == "__main__":
    print(pipeline(epochs=3, kill_at_step=30))
