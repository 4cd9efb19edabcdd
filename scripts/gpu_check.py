"""CUDA checks for taskpoint.integrations.torch (run on a machine with a GPU, < 3 minutes).

    PYTHONPATH=src python scripts/gpu_check.py            # exit status 0 = every check passed

Checks, each printed as a PASS/FAIL line:

1. pinned staging: the staging buffers of a CUDA state are page-locked;
2. snapshot: ``save()`` (async) of CUDA tensors returns only once they are staged, so editing the
   parameters right after it returns does not leak into the checkpoint;
3. round trip: model, Adam state (CUDA tensors) and the CUDA RNG state restored bit for bit;
4. resume: a deterministic CUDA training run with dropout, interrupted and restored into fresh
   objects, ends bitwise equal to an uninterrupted run;
5. sharded: DDP ranks (NCCL, one GPU each: 2 ranks when the machine has 2 GPUs, else 1; gloo on
   ``--device cpu``) save through DCP into one taskpoint version (async, from pinned staging
   buffers), edit their parameters right after ``save()`` returns, and restore the version into
   fresh models bitwise; a single process then loads the same version into a plain model.

Then PERF lines: the time ``save()`` blocks the caller (the "stall") for a 256 MiB CUDA state,
next to a plain ``copy_`` of the same tensors into preallocated pinned memory, medians of 9, and
the ratio (issue 6 target: <= 1.5); and a blocking save for scale. PERF lines never change the exit
status. ``--device cpu`` runs the same checks on the CPU (to test this script without a GPU);
``--no-perf`` leaves the PERF lines out.

Needs torch (with CUDA), numpy and crc32c; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Deterministic cuBLAS must be configured before CUDA initialises.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

FAILURES: list[str] = []


def report(ok: bool, name: str, detail: str = "") -> None:
    print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)
    if not ok:
        FAILURES.append(name)


def imports():
    missing = []
    for module in ("torch", "numpy", "crc32c"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        print(f"FAIL imports: missing {', '.join(missing)}; run: pip install {' '.join(missing)}")
        sys.exit(2)
    import torch

    from taskpoint import Checkpoint
    from taskpoint.integrations.torch import TorchCheckpointer

    return torch, Checkpoint, TorchCheckpointer


def build(torch, device, seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 256),
        torch.nn.BatchNorm1d(256),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.3),
        torch.nn.Linear(256, 10),
    ).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.5)
    return model, optimizer, scheduler


def train_steps(torch, model, optimizer, scheduler, data, start: int, stop: int) -> None:
    x_all, y_all = data
    model.train()
    for step in range(start, stop):
        x, y = x_all[step % len(x_all)], y_all[step % len(y_all)]
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()


def tensors_equal(torch, a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a.cpu(), b.cpu())
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(tensors_equal(torch, a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(
            tensors_equal(torch, x, y) for x, y in zip(a, b, strict=True)
        )
    return a == b


def check_round_trip(torch, Checkpoint, TorchCheckpointer, device, root: Path) -> None:
    g = torch.Generator(device="cpu").manual_seed(1)
    data = (
        torch.randn(8, 32, 64, generator=g).to(device),
        torch.randint(0, 10, (8, 32), generator=g).to(device),
    )
    model, optimizer, scheduler = build(torch, device, 0)
    train_steps(torch, model, optimizer, scheduler, data, 0, 5)
    with Checkpoint.open(root / "roundtrip") as cp:
        ckpt = TorchCheckpointer(
            checkpoint=cp, model=model, optimizer=optimizer, scheduler=scheduler
        )
        expected_model = {k: v.clone() for k, v in model.state_dict().items()}
        expected_opt = optimizer.state_dict()
        expected_opt = {
            "state": {
                i: {k: v.clone() for k, v in s.items()} for i, s in expected_opt["state"].items()
            },
            "param_groups": expected_opt["param_groups"],
        }
        future = ckpt.save(5)
        with torch.no_grad():  # edit at once: the snapshot must already be staged
            for p in model.parameters():
                p.add_(1.0)
        future.result()
        if device.type == "cuda":
            pinned = all(s.buffer is None or s.buffer.is_pinned() for s in ckpt._writer.slots)
            report(pinned, "pinned staging buffers", "page-locked" if pinned else "not pinned")
        expected_draw = torch.rand(16, device=device)

        fresh, fresh_opt, fresh_sched = build(torch, device, 123)
        torch.rand(99, device=device)  # move the RNG on: restore must put it back
        step = TorchCheckpointer(
            checkpoint=cp, model=fresh, optimizer=fresh_opt, scheduler=fresh_sched
        ).restore()
        draw = torch.rand(16, device=device)
    report(step == 5, "restore returns the saved step", f"{step}")
    report(
        tensors_equal(torch, fresh.state_dict(), expected_model),
        "snapshot + model round trip (bitwise)",
        "parameters edited right after save() did not leak into the checkpoint",
    )
    report(
        tensors_equal(torch, fresh_opt.state_dict()["state"], expected_opt["state"])
        and fresh_opt.state_dict()["param_groups"] == expected_opt["param_groups"],
        "optimizer state round trip (bitwise)",
    )
    on_device = all(
        v.device.type == device.type
        for s in fresh_opt.state.values()
        for k, v in s.items()
        if k != "step"
    )
    report(on_device, "optimizer state restored onto the parameters' device")
    report(torch.equal(draw.cpu(), expected_draw.cpu()), f"{device.type} RNG state restored")


def check_resume(torch, Checkpoint, TorchCheckpointer, device, root: Path) -> None:
    torch.use_deterministic_algorithms(True, warn_only=True)
    g = torch.Generator(device="cpu").manual_seed(2)
    data = (
        torch.randn(16, 64, 64, generator=g).to(device),
        torch.randint(0, 10, (16, 64), generator=g).to(device),
    )
    total, stop_at = 60, 37

    torch.manual_seed(7)
    model, optimizer, scheduler = build(torch, device, 0)
    torch.manual_seed(7)
    train_steps(torch, model, optimizer, scheduler, data, 0, total)
    reference = {k: v.clone() for k, v in model.state_dict().items()}

    with Checkpoint.open(root / "resume") as cp:
        model, optimizer, scheduler = build(torch, device, 0)
        torch.manual_seed(7)
        ckpt = TorchCheckpointer(
            checkpoint=cp, model=model, optimizer=optimizer, scheduler=scheduler
        )
        for step in range(0, stop_at):
            train_steps(torch, model, optimizer, scheduler, data, step, step + 1)
            if (step + 1) % 5 == 0:
                ckpt.save(step + 1)
        ckpt.wait()
        del model, optimizer, scheduler, ckpt  # "crash": everything in memory is lost

        model, optimizer, scheduler = build(torch, device, 999)
        torch.rand(1000, device=device)
        start = TorchCheckpointer(
            checkpoint=cp, model=model, optimizer=optimizer, scheduler=scheduler
        ).restore()
        train_steps(torch, model, optimizer, scheduler, data, start, total)
    torch.use_deterministic_algorithms(False)
    report(
        start == 35 and tensors_equal(torch, model.state_dict(), reference),
        "interrupted + resumed training is bitwise equal to uninterrupted",
        f"resumed at step {start} of {total}",
    )


def _sharded_rank(rank: int, world: int, port: int, root: str, device_type: str) -> None:
    """One DDP rank of `check_sharded` (a spawned process); writes its findings to JSON."""
    import json

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
    )  # fmt: skip
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from taskpoint import Checkpoint
    from taskpoint.integrations.torch import TorchCheckpointer

    cuda = device_type == "cuda"
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo", device_id=device if cuda else None)
    found: dict[str, object] = {}
    try:
        model, optimizer, scheduler = build(torch, device, 0)
        ddp = DistributedDataParallel(model, device_ids=[rank] if cuda else None)
        g = torch.Generator(device="cpu").manual_seed(100 + rank)
        data = (
            torch.randn(4, 32, 64, generator=g).to(device),
            torch.randint(0, 10, (4, 32), generator=g).to(device),
        )
        train_steps(torch, ddp, optimizer, scheduler, data, 0, 4)
        # Parameters: DCP keeps one copy of what is replicated, and BatchNorm's running
        # statistics differ between DDP ranks until the next forward broadcasts rank 0's.
        expected = {k: v.detach().cpu().clone() for k, v in model.named_parameters()}
        cp = Checkpoint.open(root, attempt=1)
        ckpt = TorchCheckpointer(checkpoint=cp, model=ddp, optimizer=optimizer, sharded=True)
        future = ckpt.save(4)  # async: returns once staged
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
        future.result()
        io = ckpt._sharded
        found["pinned"] = all(s.buffer is None or s.buffer.is_pinned() for s in io.slots)
        ckpt.close()
        fresh, fresh_opt, _ = build(torch, device, 123)
        fresh_ddp = DistributedDataParallel(fresh, device_ids=[rank] if cuda else None)
        cp2 = Checkpoint.open(root, attempt=2)
        again = TorchCheckpointer(checkpoint=cp2, model=fresh_ddp, optimizer=fresh_opt)
        found["step"] = again.restore()
        got = {k: v.detach().cpu() for k, v in fresh.named_parameters()}
        found["equal"] = tensors_equal(torch, got, expected)
        found["versions"] = len(list(cp2.versions()))
        again.close()
        cp.close()
        cp2.close()
        del ddp, fresh_ddp  # before the group goes: gloo's teardown can hang on a live DDP
    finally:
        dist.destroy_process_group()
    with open(os.path.join(root, f"rank{rank}.json"), "w") as out:
        json.dump(found, out)


def check_sharded(torch, Checkpoint, TorchCheckpointer, device, root: Path) -> None:
    import json
    import socket

    import torch.multiprocessing as mp

    world = 2 if device.type == "cpu" else min(2, torch.cuda.device_count())
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    where = root / "sharded"
    where.mkdir()
    mp.spawn(_sharded_rank, args=(world, port, str(where), device.type), nprocs=world)
    ranks = [json.loads((where / f"rank{r}.json").read_text()) for r in range(world)]
    label = f"{world} rank{'s' if world > 1 else ''}, {'nccl' if device.type == 'cuda' else 'gloo'}"
    if device.type == "cuda":
        report(all(r["pinned"] for r in ranks), f"sharded: pinned staging buffers ({label})")
    report(
        all(r["step"] == 4 and r["versions"] == 1 for r in ranks),
        f"sharded: one version, restored by every rank ({label})",
        f"steps {[r['step'] for r in ranks]}, versions {[r['versions'] for r in ranks]}",
    )
    report(
        all(r["equal"] for r in ranks),
        f"sharded: snapshot + restore of the parameters bitwise on every rank ({label})",
        "parameters edited right after save() did not leak into the checkpoint",
    )
    plain, _, _ = build(torch, torch.device("cpu"), 7)
    with Checkpoint.open(where, attempt=3) as cp:
        step = TorchCheckpointer(checkpoint=cp, model=plain).restore()
    report(step == 4, "sharded: a single process loads the version into a plain model", f"{step}")


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def measure(torch, Checkpoint, TorchCheckpointer, device, root: Path) -> None:
    state = {f"w{i}": torch.randn(16 << 20, device=device) for i in range(4)}  # 4 x 64 MiB
    state["bias"] = torch.randn(1000, device=device)

    class Holder:
        def state_dict(self):
            return state

        def load_state_dict(self, s):
            pass

    nbytes = sum(t.numel() * t.element_size() for t in state.values())
    pin = device.type == "cuda"
    staging = {k: torch.empty_like(v, device="cpu", pin_memory=pin) for k, v in state.items()}

    def plain_copy():
        for k, v in state.items():
            staging[k].copy_(v, non_blocking=pin)
        if pin:
            torch.cuda.synchronize()

    with Checkpoint.open(root / "perf", keep=1) as cp:
        ckpt = TorchCheckpointer(checkpoint=cp, objects={"state": Holder()}, rng=False)
        ckpt.save(0)  # allocate the staging buffers once
        ckpt.wait()
        stalls, copies = [], []
        for i in range(9):  # alternate the pair: this machine may be shared and noisy
            copies += timed(plain_copy, 1)
            stalls += timed(lambda i=i: ckpt.save(i + 1), 1)
            ckpt.wait()  # measure the stall with free buffers (steady state)
        sync = timed(lambda: ckpt.save(100, blocking=True), 2)
    copy_s, stall_s = statistics.median(copies), statistics.median(stalls)
    ratio, sync_s = stall_s / copy_s, statistics.median(sync)
    gib = nbytes / (1 << 30)
    print(
        f"PERF state {nbytes / (1 << 20):.0f} MiB on {device}: plain copy_ into preallocated "
        f"{'pinned ' if pin else ''}memory {copy_s * 1e3:.1f} ms ({gib / copy_s:.1f} GiB/s); "
        f"async save stall {stall_s * 1e3:.1f} ms; ratio {ratio:.2f} "
        f"({'PASS' if ratio <= 1.5 else 'FAIL'} target <= 1.5)",
        flush=True,
    )
    print(
        f"PERF blocking save (stage + write + fsync + commit) median {sync_s:.2f} s "
        f"({gib / sync_s:.2f} GiB/s); async stall / sync = {stall_s / sync_s:.3f} "
        "(target <= 0.15)",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--no-perf", action="store_true", help="only the PASS/FAIL checks")
    args = parser.parse_args()
    torch, Checkpoint, TorchCheckpointer = imports()
    torch.backends.cudnn.benchmark = False
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            f"FAIL cuda: torch.cuda.is_available() is False (torch {torch.__version__}, "
            f"built for CUDA {torch.version.cuda}); run on a GPU machine or pass --device cpu"
        )
        return 2
    device = torch.device(args.device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        print(f"INFO {name}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="taskpoint-gpu-check-") as tmp:
        root = Path(tmp)
        checks = [check_round_trip, check_resume, check_sharded]
        for check in checks if args.no_perf else [*checks, measure]:
            try:
                check(torch, Checkpoint, TorchCheckpointer, device, root)
            except Exception as exc:  # report and go on with the other checks
                import traceback

                traceback.print_exc()
                report(False, check.__name__, f"{type(exc).__name__}: {exc}")
    print(f"INFO done in {time.perf_counter() - started:.1f} s; {len(FAILURES)} failed")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
