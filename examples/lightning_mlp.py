"""Lightning ``Trainer.fit`` that survives failures and resumes mid-epoch, exactly.

    taskpoint run examples/lightning_mlp.py pipeline --epochs 3 --fail-at-step 70

The first attempt raises a RecoverableError at step 70 (mid-epoch 2). The engine retries the task;
`LightningCheckpointer` finds the latest checkpoint and ``fit`` continues from step 70 without a
``ckpt_path``: same weights, optimizer, scheduler, loop counters, RNG states and data order as an
uninterrupted fit, so the printed digest equals the one of ``--fail-at-step 0``.
Needs ``pip install 'taskpoint[lightning]'``.
"""

from __future__ import annotations

import hashlib

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from taskpoint import RecoverableError, current_context, task, workflow
from taskpoint.integrations.lightning import LightningCheckpointer
from taskpoint.integrations.torch import ResumableSampler


class MLP(pl.LightningModule):
    def __init__(self, fail_at_step: int) -> None:
        super().__init__()
        self.fail_at_step = fail_at_step
        self.net = torch.nn.Sequential(
            torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(64, 4)
        )

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self.net(x), y)
        self.log("loss", loss, prog_bar=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        # Runs after LightningCheckpointer saved this step's checkpoint.
        if current_context().attempt == 1 and self.global_step == self.fail_at_step:
            raise RecoverableError(f"simulated failure at step {self.global_step}")

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.parameters(), lr=3e-3)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=40, gamma=0.5)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


@task(retries=2)
def fit(epochs: int, fail_at_step: int, every_n_steps: int = 10) -> str:
    torch.set_num_threads(1)
    pl.seed_everything(0, verbose=False)
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(800, 16, generator=g)
    data = TensorDataset(x, (x @ torch.randn(16, 4, generator=g)).argmax(1))
    loader = DataLoader(
        data, batch_size=16, sampler=ResumableSampler(data, seed=0), generator=torch.Generator()
    )
    model = MLP(fail_at_step)
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        deterministic=True,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[LightningCheckpointer(every_n_steps=every_n_steps)],
    )
    trainer.fit(model, loader)
    digest = hashlib.sha256()
    for value in model.state_dict().values():
        digest.update(value.numpy().tobytes())
    return digest.hexdigest()[:16]


@workflow
def pipeline(epochs: int = 3, fail_at_step: int = 70) -> str:
    return fit(epochs=epochs, fail_at_step=fail_at_step)


if __name__ == "__main__":
    print(pipeline(epochs=3, fail_at_step=70))
