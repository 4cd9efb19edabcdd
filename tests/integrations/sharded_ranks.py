"""Rank processes for the sharded `TorchCheckpointer` tests, and the launcher that starts them.

`launch` starts ``world`` copies of this file as a torchrun would (``RANK``, ``LOCAL_RANK``,
``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT`` on a free port), gloo on
CPU. Like torchrun, once one rank fails it ends the others after a short grace (they would wait
in a collective for the dead one), and every teardown is bounded: a rank still alive at the
deadline is killed. Each rank runs one scenario (a function below) with the JSON arguments it is
given, opening the checkpoint scope as a user of torchrun would
(``Checkpoint.open(url, attempt=...)``), and writes what the test checks under ``out``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
FAULT_EXIT = 3  # a rank that raised RecoverableError exits with this code


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch(
    scenario: str, world: int, args: dict[str, Any], timeout: float = 120, grace: float = 5
) -> list[int]:
    """Run ``scenario`` in ``world`` rank processes; return their exit codes (-9: killed)."""
    port = free_port()
    procs = []
    for rank in range(world):
        env = dict(os.environ)
        env.update(
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE=str(world),
            LOCAL_WORLD_SIZE=str(world),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            OMP_NUM_THREADS="1",
        )
        command = [sys.executable, str(HERE), scenario, json.dumps(args)]
        procs.append(subprocess.Popen(command, env=env))
    deadline = time.monotonic() + timeout
    failed_at: float | None = None
    try:
        while any(p.poll() is None for p in procs):
            now = time.monotonic()
            if failed_at is None and any(p.returncode not in (None, 0) for p in procs):
                failed_at = now  # like torchrun: a failed rank ends the group
            if now > deadline or (failed_at is not None and now > failed_at + grace):
                break
            time.sleep(0.05)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=30)
    return [p.returncode for p in procs]


# ------------------------------------------------------------------------------ in a rank
def _init() -> int:
    import torch.distributed as dist

    dist.init_process_group("gloo")
    return dist.get_rank()


def _teardown() -> None:
    """The end of a rank, in the order that avoids gloo's teardown hang: the caller closed its
    checkpointer (which destroys the checkpoint's own groups) and dropped its model; collect it,
    then destroy the default group (torch 2.13 on CPU may hang there while a DDP model lives;
    the launcher bounds it anyway)."""
    import gc

    import torch.distributed as dist

    gc.collect()
    if dist.is_initialized():
        dist.destroy_process_group()


def _data(n: int = 64) -> Any:
    import torch

    gen = torch.Generator().manual_seed(1234)
    x = torch.randn(n, 8, generator=gen)
    y = (x.sum(dim=1, keepdim=True) > 0).float()
    return torch.utils.data.TensorDataset(x, y)


def _model() -> Any:
    import torch

    torch.manual_seed(0)  # the same initial weights on every rank
    return torch.nn.Sequential(
        torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(32, 1)
    )


def _params(model: Any) -> dict[str, Any]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def scenario_train(args: dict[str, Any]) -> None:
    """DDP training with a `ResumableSampler`, saving every ``every`` steps; an optional fault
    (``kill``: SIGKILL, ``raise``: RecoverableError) on ``fault_rank`` at ``fault_step``."""
    import torch
    from torch.nn.parallel import DistributedDataParallel as DDP

    from taskpoint import RecoverableError
    from taskpoint.checkpoint import Checkpoint
    from taskpoint.integrations.torch import ResumableSampler, TorchCheckpointer

    rank = _init()
    dataset = _data()
    model = DDP(_model())
    torch.manual_seed(100 + rank)  # each rank's own dropout stream
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    sampler = ResumableSampler(dataset, seed=7)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=4, sampler=sampler, generator=torch.Generator()
    )
    cp = Checkpoint.open(args["url"], attempt=args["attempt"])
    ckpt = TorchCheckpointer(
        checkpoint=cp, model=model, optimizer=opt, objects={"sampler": sampler}, every_n_steps=3
    )
    step = ckpt.restore() or 0
    out = Path(args["out"])
    (out / f"resumed-{args['attempt']}-{rank}.json").write_text(json.dumps(step))
    for epoch in range(sampler.epoch, args["epochs"]):
        sampler.set_epoch(epoch)
        for x, y in loader:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step == args.get("fault_step") and rank == args.get("fault_rank"):
                if args["fault"] == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                raise RecoverableError(f"rank {rank} fails at step {step}")
            ckpt.maybe_save(step, blocking=args.get("blocking", False))
    ckpt.wait()
    if rank == 0:
        torch.save(_params(model.module), out / f"final-{args['attempt']}.pt")
    ckpt.close()
    del ckpt, model, opt
    _teardown()


def scenario_save(args: dict[str, Any]) -> None:
    """Train a few steps (DDP, FSDP2 ``fully_shard`` or a plain model: ``wrap``), save
    ``saves`` versions; rank 0 writes the full parameters of the last one to ``out``."""
    import torch
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    from taskpoint.checkpoint import Checkpoint
    from taskpoint.integrations.torch import TorchCheckpointer

    rank = _init()
    model, opt = _wrapped(args["wrap"])
    cp = Checkpoint.open(args["url"], attempt=args.get("attempt", 1))
    ckpt = TorchCheckpointer(checkpoint=cp, model=model, optimizer=opt, sharded=args.get("sharded"))
    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(rank))
    for step in range(1, args["saves"] + 1):
        model(x).square().mean().backward()
        opt.step()
        opt.zero_grad()
        if step == args.get("die_at") and rank == args.get("die_rank"):
            _die_before_commit(ckpt)
        ckpt.save(step, blocking=args.get("blocking", True))
    ckpt.wait()
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    if rank == 0:
        torch.save({k: v.detach().clone() for k, v in full.items()}, Path(args["out"]) / "saved.pt")
        versions = [v.id for v in cp.versions()]
        (Path(args["out"]) / "versions.json").write_text(json.dumps(versions))
    ckpt.close()
    del ckpt, model, opt
    _teardown()


def scenario_load(args: dict[str, Any]) -> None:
    """Restore into ``wrap`` (any world size); rank 0 writes the full parameters it got."""
    import torch
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    from taskpoint.checkpoint import Checkpoint
    from taskpoint.integrations.torch import TorchCheckpointer

    rank = _init()
    model, opt = _wrapped(args["wrap"])
    cp = Checkpoint.open(args["url"], attempt=args.get("attempt", 2))
    ckpt = TorchCheckpointer(checkpoint=cp, model=model, optimizer=opt)
    step = ckpt.restore()
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    out = Path(args["out"])
    (out / f"loaded-step-{rank}.json").write_text(json.dumps(step))
    if rank == 0:
        torch.save({k: v.detach().clone() for k, v in full.items()}, out / "loaded.pt")
    ckpt.close()
    del ckpt, model, opt
    _teardown()


def _wrapped(wrap: str) -> tuple[Any, Any]:
    import torch

    model = _model()
    if wrap == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model)
    elif wrap == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for layer in model:
            if isinstance(layer, torch.nn.Linear):
                fully_shard(layer)
        fully_shard(model)
    return model, torch.optim.AdamW(model.parameters(), lr=0.01)


def _die_before_commit(ckpt: Any) -> None:
    """This rank writes its files of the next save, then is SIGKILLed before the commit."""
    io = ckpt._sharded
    write_files = io._write_files

    def then_die(staged: Any) -> Any:
        write_files(staged)
        os.kill(os.getpid(), signal.SIGKILL)

    io._write_files = then_die


def main() -> None:
    scenario, raw = sys.argv[1], sys.argv[2]
    from taskpoint.errors import RecoverableError

    try:
        globals()[f"scenario_{scenario}"](json.loads(raw))
    except RecoverableError:
        sys.stdout.flush()
        os._exit(FAULT_EXIT)


if __name__ == "__main__":
    main()
