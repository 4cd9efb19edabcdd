"""Lightning in a group of ranks: ``Trainer.fit`` with ``strategy="ddp"`` or FSDP2
(``ModelParallelStrategy`` + ``fully_shard``) in a ``@task(nproc=2)``, gloo on CPU, saved as
sharded taskpoint versions and resumed by the engine's retry after a rank is SIGKILLed.

Lightning's ``FSDPStrategy`` (FSDP1) refuses a CPU accelerator ("The strategy `fsdp` requires a
GPU accelerator"); ``ModelParallelStrategy`` runs FSDP2 on CPU, so it stands for FSDP here.
"""

from __future__ import annotations

import json
import os
import signal
import warnings
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pl = pytest.importorskip("lightning.pytorch")
pytest.importorskip("torch.distributed.checkpoint")

import taskpoint  # noqa: E402
from taskpoint import Checkpoint, current_context, task  # noqa: E402
from taskpoint.integrations.lightning import LightningCheckpointer  # noqa: E402
from taskpoint.integrations.torch import ResumableSampler, TorchCheckpointer  # noqa: E402
from taskpoint.integrations.torch._dcp import value_of  # noqa: E402

STEPS, EVERY, KILL_AT = 12, 3, 7  # 8 steps per epoch on each rank: the resume crosses an epoch
FORMAT = "taskpoint.torch.sharded/1"


class Net(pl.LightningModule):
    """A dropout MLP (each rank its own random stream); ``fsdp``: FSDP2 ``fully_shard``."""

    def __init__(self, fsdp: bool = False, kill: bool = False) -> None:
        super().__init__()
        self.fsdp, self.kill = fsdp, kill
        torch.manual_seed(0)  # the same initial weights on every rank
        self.net = torch.nn.Sequential(
            torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(16, 1)
        )

    def setup(self, stage: str) -> None:
        torch.manual_seed(100 + self.global_rank)  # restored from the checkpoint on resume

    def configure_model(self) -> None:
        if not self.fsdp:
            return
        from torch.distributed.fsdp import fully_shard

        mesh = self.device_mesh["data_parallel"]
        for layer in self.net:
            if isinstance(layer, torch.nn.Linear):
                fully_shard(layer, mesh=mesh)
        fully_shard(self.net, mesh=mesh)

    def train_dataloader(self) -> Any:
        gen = torch.Generator().manual_seed(1234)
        x = torch.randn(64, 8, generator=gen)
        data = torch.utils.data.TensorDataset(x, (x.sum(dim=1, keepdim=True) > 0).float())
        # Made once the process group exists: the sampler takes this rank's share by itself.
        sampler = ResumableSampler(data, seed=7)
        return torch.utils.data.DataLoader(
            data, batch_size=4, sampler=sampler, generator=torch.Generator()
        )

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        x, y = batch
        return torch.nn.functional.binary_cross_entropy_with_logits(self.net(x), y)

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.parameters(), lr=0.01)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.5)
        schedule = {"scheduler": scheduler, "interval": "step"}
        return {"optimizer": optimizer, "lr_scheduler": schedule}

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # After the callbacks' hook, so after the save of this step (if one is due).
        ctx = current_context()
        if self.kill and ctx.attempt == 1 and self.global_rank == 1 and self.global_step == KILL_AT:
            ctx.checkpoint.wait()  # the save of step 6 is committed (both ranks joined it)
            os.kill(os.getpid(), signal.SIGKILL)


def _strategy(name: str) -> Any:
    if name == "fsdp":
        from lightning.pytorch.strategies import ModelParallelStrategy

        return ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1)
    return name


@task(isolation="process", nproc=2, system_retries=1)
def fit_ranks(strategy: str, kill: bool) -> dict[str, Any]:
    """One fit of two ranks; rank 0 returns the full parameters, as bytes."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    ctx = current_context()
    module = Net(fsdp=strategy == "fsdp", kill=kill)
    callback = LightningCheckpointer(every_n_steps=EVERY)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy=_strategy(strategy),
        max_steps=STEPS,
        use_distributed_sampler=False,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module)
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    full = get_model_state_dict(trainer.strategy.model, options=options)  # every rank joins
    return {
        "params": {k: v.numpy().tobytes() for k, v in full.items()},
        "resumed": callback.resumed_step,
        "step": trainer.global_step,
        "scope": ctx.checkpoint.url,
    }


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One engine home for the module (the references are shared by several tests)."""
    from taskpoint.engine.config import Engine, set_default_engine

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TASKPOINT_HOME", str(tmp_path_factory.mktemp("home")))
        patch.delenv("TASKPOINT_STORAGE", raising=False)
        previous = set_default_engine(Engine())
        try:
            yield
        finally:
            set_default_engine(previous)


def _run(strategy: str, kill: bool) -> Any:
    execution = taskpoint.run(fit_ranks, strategy=strategy, kill=kill)
    assert execution.status == "succeeded", execution.error
    return execution


@pytest.fixture(scope="module")
def references(home: Any) -> dict[str, dict[str, Any]]:
    """Uninterrupted two-rank fits, saved every 3 steps like the interrupted ones."""
    return {name: _run(name, kill=False).result for name in ("ddp", "fsdp")}


def _path(scope: str) -> Path:
    return Path(scope.removeprefix("file://"))


def assert_same_params(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert got.keys() == want.keys()
    for name in want:
        assert got[name] == want[name], f"{name} differs from the uninterrupted fit"


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_a_rank_killed_mid_epoch_resumes_bitwise(references, strategy):
    execution = _run(strategy, kill=True)
    first, second = execution.nodes[0].attempts
    assert (first.status, second.status) == ("lost", "succeeded")
    assert "SIGKILL" in first.error
    result = execution.result
    assert result["resumed"] == 6 and result["step"] == STEPS  # the save before the kill
    reference = references[strategy]
    assert reference["resumed"] is None and reference["step"] == STEPS
    assert_same_params(result["params"], reference["params"])


@pytest.mark.slow
def test_a_ddp_save_is_one_version_with_every_rank_s_files(references):
    scope = references["ddp"]["scope"]
    with Checkpoint.open(scope, readonly=True) as cp:
        latest = cp.latest()
    assert latest is not None and latest.step == STEPS and latest.kind == "dir"
    assert latest.metadata == {"format": FORMAT, "world_size": 2}
    root = _path(scope) / "v"
    manifest = json.loads((root / f"{latest.id}.manifest.json").read_text())
    paths = {f["path"] for f in manifest["files"]}
    assert paths == {"dcp/r00000.bin", "dcp/r00001.bin", "dcp/index.json", "ranks/00000.tpt",
                     "ranks/00001.tpt"}  # fmt: skip
    # Each rank's own part: Lightning's checkpoint less the tensors DCP holds, its own sampler.
    for rank in (0, 1):
        own = value_of((root / latest.id / f"ranks/{rank:05d}.tpt").read_bytes(), latest.id)
        lightning = own["lightning"]
        assert own["step"] == lightning["global_step"] == STEPS
        assert "state_dict" not in lightning and "optimizer_states" not in lightning
        assert lightning["lr_schedulers"][0]["last_epoch"] == STEPS
        ours = lightning["callbacks"]["LightningCheckpointer"]
        (sampler,) = ours["samplers"]
        assert sampler["num_replicas"] == 2 and sampler["epoch"] == 1
        assert sampler["position"] == (STEPS - 8) * 4  # this rank's share of epoch 1


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_one_process_loads_the_two_rank_version_into_a_plain_model(references, strategy):
    reference = references[strategy]
    plain = Net()
    with Checkpoint.open(reference["scope"], readonly=True) as cp:
        assert TorchCheckpointer(checkpoint=cp, model=plain).restore() == STEPS
    params = {k: v.numpy().tobytes() for k, v in plain.state_dict().items()}
    assert_same_params(params, reference["params"])


@pytest.mark.slow
def test_a_single_process_fit_resumes_from_the_two_rank_version(references, tmp_path):
    module = Net()
    reference = references["ddp"]
    with Checkpoint.open(reference["scope"], readonly=True) as cp:
        callback = LightningCheckpointer(checkpoint=cp, every_n_steps=EVERY)
        trainer = pl.Trainer(
            accelerator="cpu", devices=1, max_steps=STEPS, logger=False,
            enable_progress_bar=False, enable_model_summary=False, callbacks=[callback],
        )  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.fit(module)
    assert callback.resumed_step == STEPS and trainer.global_step == STEPS
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == STEPS
    params = {k: v.numpy().tobytes() for k, v in module.state_dict().items()}
    assert_same_params(params, reference["params"])


def test_a_resumable_sampler_wrapped_by_lightning_is_refused():
    from lightning.fabric.utilities.distributed import DistributedSamplerWrapper

    from taskpoint.errors import TaskpointError
    from taskpoint.integrations.lightning import _refuse_wrapped

    wrapped = DistributedSamplerWrapper(ResumableSampler(16), num_replicas=2, rank=0)
    with pytest.raises(TaskpointError, match="use_distributed_sampler=False"):
        _refuse_wrapped(wrapped)
    _refuse_wrapped(ResumableSampler(16))  # given as it is: fine


def test_fsdp1_and_deepspeed_are_refused_ddp_and_fsdp2_accepted():
    from lightning.pytorch import strategies

    from taskpoint.errors import TaskpointError
    from taskpoint.integrations._lightning_ranks import check_strategy

    with pytest.raises(TaskpointError, match="FSDPStrategy"):
        check_strategy(strategies.FSDPStrategy())
    with pytest.raises(TaskpointError, match="DeepSpeedStrategy"):
        check_strategy(strategies.DeepSpeedStrategy.__new__(strategies.DeepSpeedStrategy))
    check_strategy(strategies.DDPStrategy())
    check_strategy(strategies.ModelParallelStrategy())
