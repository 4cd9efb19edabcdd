"""PyTorch integration: exact resume of a training loop from a taskpoint checkpoint.

```python
from taskpoint.integrations.torch import ResumableSampler, TorchCheckpointer

sampler = ResumableSampler(dataset, seed=0)
loader = DataLoader(dataset, batch_size=32, sampler=sampler, generator=torch.Generator())
ckpt = TorchCheckpointer(model=model, optimizer=opt, scheduler=sched,
                         objects={"sampler": sampler}, every_n_steps=50)
step = ckpt.restore() or 0        # also ckpt.resumed_step: the step resumed from, or None
for epoch in range(sampler.epoch, epochs):
    sampler.set_epoch(epoch)
    for x, y in loader:
        ...train one batch...
        step += 1
        ckpt.maybe_save(step)     # every 50 steps, and at once when preempted; async
ckpt.wait()
```

What is exact: after ``restore()`` the model's parameters and buffers, the optimizer (state and
param groups), the LR scheduler, the AMP grad scaler, every object in ``objects`` and the Python
``random``, NumPy global and torch CPU and CUDA RNG states are those of the moment ``save`` was
called, bit for bit; with a `ResumableSampler` the next batch is the one the uninterrupted run
trained next. So a deterministic loop (CPU, or CUDA with deterministic kernels) resumed from any
save produces bitwise the same parameters as a run that never stopped, and no batch is trained
twice or skipped.

Two rules keep the random streams aligned:

- Give the ``DataLoader`` its own ``generator=torch.Generator()``. Without one, every
  ``iter(loader)`` draws a number from the global torch RNG (the workers' base seed), so
  resuming mid-epoch (one extra ``iter``) shifts every later random number, e.g. dropout masks.
- Worker-side randomness is not resumed: with ``num_workers > 0`` random transforms inside
  workers are seeded per epoch from the loader's generator, not from the checkpoint. Use
  ``num_workers=0`` or per-index deterministic transforms when that matters, and build the
  sampler with ``auto_advance=False`` (see `ResumableSampler`).

Storage: a JSON header plus raw tensor bytes (see ``_format``); nothing is pickled, so a
checkpoint in shared storage cannot run code when loaded.

In a group of ranks (DDP, FSDP2; an initialised ``torch.distributed`` process group) every rank
builds the same `TorchCheckpointer` and saves and restores at the same steps: the state goes
through DCP's planners into one version per save that rank 0 commits once every rank's files are
durable, and restores into any number of ranks, or one plain process (``_sharded``). Use
`ResumableSampler` in place of ``DistributedSampler`` (it reads rank and world size from the
group); outside taskpoint (torchrun, SLURM) pass ``checkpoint=Checkpoint.open(url,
attempt=restart + 1)`` on storage every rank sees. Call ``ckpt.close()`` before
``destroy_process_group()``.
"""

from __future__ import annotations

from taskpoint.integrations._lazy import require

require("torch", "torch")
require("numpy", "torch")

from taskpoint.integrations import _toolkit as kit  # noqa: E402
from taskpoint.integrations.torch._sampler import ResumableSampler  # noqa: E402
from taskpoint.integrations.torch.checkpointer import TorchCheckpointer  # noqa: E402

__all__ = ["ResumableSampler", "TorchCheckpointer"]

kit.publish(__name__, ResumableSampler, TorchCheckpointer)
