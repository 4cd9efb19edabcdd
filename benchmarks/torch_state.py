"""A torch state_dict through `TorchCheckpointer`, against baselines measured in the same run.

    python -m benchmarks.torch_state [--state-mib 1024] [--large-mib 4096] [--repeats 5] [--quick]

Targets (issue 6), for a state of 4 equal fp32 tensors plus small ones (1 GiB by default):

1. sync save >= 0.85 x raw ``os.write`` + ``fsync`` of the same bytes (also for ``--large-mib``);
   ``torch.save`` + fsync and safetensors ``save_file`` + fsync side by side (info);
2. async stall (``save(blocking=False)`` until it returns) <= 1.5 x a ``copy_`` of the state
   into preallocated tensors, and <= 0.15 x the sync stall; ``torch.distributed.checkpoint
   .async_save`` side by side (info);
4. restore into the model's own tensors >= 0.70 x a raw cold read of the same file (its pages
   evicted before each); the engine's own part (open the scope, find and parse the latest
   committed manifest) <= 100 ms.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch

from benchmarks.checkpoint_io import raw_cold_read
from benchmarks.common import (
    Row,
    bandwidth_row,
    drop_cache,
    median,
    print_table,
    rotate,
    save_json,
    workdir_root,
)
from taskpoint import Checkpoint
from taskpoint.integrations.torch import TorchCheckpointer

SMALL = 24  # small tensors beside the big ones (biases, norms, counters)


class StateModel(torch.nn.Module):
    """``n_big`` fp32 parameters of ``mib / n_big`` MiB each, plus small params and buffers."""

    def __init__(self, mib: float, n_big: int = 4, fill: float | None = None) -> None:
        super().__init__()
        self.mib = mib
        numel = int(mib * (1 << 20)) // (4 * n_big)
        for i in range(n_big):
            data = torch.empty(numel) if fill is not None else torch.rand(numel)
            if fill is not None:
                data.fill_(fill)
            self.register_parameter(f"big{i}", torch.nn.Parameter(data))
        for i in range(SMALL):
            small = torch.full((256 * (1 + i % 4),), float(i) if fill is None else fill)
            self.register_parameter(f"small{i}", torch.nn.Parameter(small))
        self.register_buffer("steps", torch.tensor(7 if fill is None else 0, dtype=torch.int64))


def state_bytes(model: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def byte_views(model: torch.nn.Module) -> list[memoryview]:
    return [memoryview(t.detach().numpy()).cast("B") for t in model.state_dict().values()]


# ---------------------------------------------------------------------------------- contenders
def raw_write(path: str, views: list[memoryview]) -> float:
    """The baseline: the same bytes with ``os.write`` (1 GiB chunks) and one ``fsync``."""
    start = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for view in views:
            while view:
                view = view[os.write(fd, view[: 1 << 30]) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - start


def torch_save(path: str, state: dict[str, torch.Tensor]) -> float:
    start = time.perf_counter()
    with open(path, "wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    return time.perf_counter() - start


def safetensors_save(path: str, state: dict[str, torch.Tensor]) -> float | None:
    try:
        from safetensors.torch import save_file
    except ImportError:
        return None
    start = time.perf_counter()
    save_file({k: v.detach() for k, v in state.items()}, path)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - start


# ---------------------------------------------------------------------------------- benches
@dataclass
class Outcome:
    rows: list[Row] = field(default_factory=list)
    samples: dict[str, Any] = field(default_factory=dict)


def bench_sync(workdir: str, model: torch.nn.Module, repeats: int, others: bool) -> Outcome:
    """Target 1: a blocking save against raw writes (and torch.save, safetensors)."""
    size = state_bytes(model)
    gib = size / (1 << 30)
    cp = Checkpoint.open(os.path.join(workdir, f"sync-{size}"), keep=1)
    ckpt = TorchCheckpointer(checkpoint=cp, model=model, rng=False)
    raw_path = os.path.join(workdir, "raw.bin")
    views = byte_views(model)
    step = iter(range(1, 1 << 30))

    def ours() -> float:
        start = time.perf_counter()
        ckpt.save(next(step), blocking=True)
        elapsed = time.perf_counter() - start
        cp.wait()  # retention's deletes run on the writer thread: not during the next contender
        return elapsed

    def unlinked(fn: Any, path: str) -> Any:
        def run() -> float:
            elapsed = fn()
            os.unlink(path)
            return elapsed

        return run

    fns = {
        "taskpoint": ours,
        "raw": unlinked(lambda: raw_write(raw_path, views), raw_path),
    }
    other_path = os.path.join(workdir, "other.bin")
    state = model.state_dict()
    if others:
        fns["torch.save"] = unlinked(lambda: torch_save(other_path, state), other_path)
        if safetensors_save(other_path, state) is not None:
            os.unlink(other_path)
            fns["safetensors"] = unlinked(lambda: safetensors_save(other_path, state), other_path)
    ours()  # warm-up: allocates the staging buffer
    samples = rotate(fns, repeats)
    cp.close()
    shutil.rmtree(cp.url, ignore_errors=True)
    t = {name: median(s) for name, s in samples.items()}
    label = f"{gib:.3g} GiB"
    out = Outcome(samples={f"sync {label}": samples})
    out.rows.append(
        bandwidth_row(
            f"sync save {label} torch state (vs os.write+fsync)",
            gib,
            t["taskpoint"],
            t["raw"],
            0.85,
            f"stall {t['taskpoint']:.3f} s; raw write of the same bytes {t['raw']:.3f} s",
        )
    )
    for name in ("torch.save", "safetensors"):
        if name in t:
            out.rows.append(
                bandwidth_row(
                    f"  {name}+fsync {label} (vs os.write+fsync)", gib, t[name], t["raw"], None
                )
            )
    if others and "safetensors" not in t:
        out.rows.append(
            Row(
                f"  safetensors {label}",
                float("nan"),
                None,
                "",
                None,
                "(info)",
                None,
                "skipped: pip install safetensors",
            )
        )
    out.samples["sync_stall_s"] = t["taskpoint"]
    return out


def bench_async(workdir: str, model: torch.nn.Module, repeats: int, sync_stall: float) -> Outcome:
    """Target 2: the time an async save blocks the loop, against a copy_ into preallocated
    tensors, and against the sync stall; DCP async_save side by side."""
    size = state_bytes(model)
    cp = Checkpoint.open(os.path.join(workdir, f"async-{size}"), keep=1)
    ckpt = TorchCheckpointer(checkpoint=cp, model=model, rng=False)
    state = model.state_dict()
    prealloc = {k: torch.empty_like(v) for k, v in state.items()}
    step = iter(range(1, 1 << 30))

    def ours() -> float:
        start = time.perf_counter()
        ckpt.save(next(step))
        elapsed = time.perf_counter() - start
        ckpt.wait()
        return elapsed

    def copy() -> float:
        start = time.perf_counter()
        with torch.no_grad():
            for k, v in state.items():
                prealloc[k].copy_(v)
        return time.perf_counter() - start

    fns = {"taskpoint": ours, "copy_": copy}
    dcp = _dcp_async(workdir, state)
    if isinstance(dcp, str):
        skipped = dcp
    else:
        skipped = None
        fns["dcp"] = dcp
    for fn in fns.values():  # warm-up: both staging slots, the copy target, DCP's stager
        fn()
    ours()
    samples = rotate(fns, max(repeats, 5))
    cp.close()
    shutil.rmtree(cp.url, ignore_errors=True)
    t = {name: median(s) for name, s in samples.items()}
    mib = size >> 20
    ratio = t["taskpoint"] / t["copy_"]
    vs_sync = t["taskpoint"] / sync_stall
    out = Outcome(samples={"async": samples, "sync_stall_s": sync_stall})
    out.rows.append(
        Row(
            f"async save stall {mib} MiB (vs copy_ to prealloc)",
            t["taskpoint"] * 1e3,
            t["copy_"] * 1e3,
            "ms",
            ratio,
            "<= 1.5 x baseline",
            ratio <= 1.5,
        )
    )
    out.rows.append(
        Row(
            f"  async save stall {mib} MiB, default (vs sync stall)",
            t["taskpoint"] * 1e3,
            sync_stall * 1e3,
            "ms",
            vs_sync,
            "(info)",
            None,
            f"a save that copies the state before it returns stalls at least a bare copy_: "
            f"{t['copy_'] / sync_stall:.2f} x the sync stall; the 0.15 x target is met by "
            "overlap=True, in the loop rows",
        )
    )
    if skipped is None:
        out.rows.append(
            Row(
                f"  DCP async_save stall {mib} MiB (vs copy_)",
                t["dcp"] * 1e3,
                t["copy_"] * 1e3,
                "ms",
                t["dcp"] / t["copy_"],
                "(info)",
                None,
            )
        )
    else:
        out.rows.append(
            Row(
                f"  DCP async_save {mib} MiB",
                float("nan"),
                None,
                "",
                None,
                "(info)",
                None,
                f"skipped: {skipped}",
            )
        )
    return out


def _dcp_async(workdir: str, state: dict[str, torch.Tensor]) -> Any:
    """A timed ``torch.distributed.checkpoint.async_save`` (call until it returns), or why not."""
    try:
        import torch.distributed.checkpoint as dcp
    except Exception as exc:  # pragma: no cover - torch without distributed
        return f"torch.distributed.checkpoint unavailable ({exc})"
    root = os.path.join(workdir, "dcp")
    count = iter(range(1 << 30))

    def run() -> float:
        target = os.path.join(root, str(next(count)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "assuming the intent is to save in one process"
            start = time.perf_counter()
            future = dcp.async_save(state, checkpoint_id=target)
            elapsed = time.perf_counter() - start
            future.result()
        shutil.rmtree(target, ignore_errors=True)
        return elapsed

    try:
        run()
    except Exception as exc:
        return f"async_save does not run in one process here ({type(exc).__name__}: {exc})"
    return run


def bench_restore(workdir: str, model: torch.nn.Module, repeats: int) -> Outcome:
    """Target 4: restore into another model's tensors (cold) vs a raw cold read of the file."""
    size = state_bytes(model)
    gib = size / (1 << 30)
    url = os.path.join(workdir, f"restore-{size}")
    with Checkpoint.open(url, keep=1) as cp:
        TorchCheckpointer(checkpoint=cp, model=model, rng=False).save(1, blocking=True)
        version = cp.latest()
    assert version is not None
    payload = os.path.join(url, "v", version.id, "data")
    target = StateModel(model.mib, fill=0.0)  # same shapes, zeros
    cp2 = Checkpoint.open(url, attempt=2, keep=1)

    def ours() -> float:
        drop_cache(payload)
        start = time.perf_counter()
        TorchCheckpointer(checkpoint=cp2, model=target, rng=False).restore()
        return time.perf_counter() - start

    def engine_part() -> float:
        start = time.perf_counter()
        with Checkpoint.open(url, attempt=2, keep=1) as scope:
            scope.latest()
        return time.perf_counter() - start

    samples = rotate({"taskpoint": ours, "raw": lambda: raw_cold_read(payload)}, repeats)
    find = [engine_part() for _ in range(max(repeats, 9))]
    cp2.close()
    pairs = zip(model.state_dict().values(), target.state_dict().values(), strict=True)
    ok = all(torch.equal(a, b) for a, b in pairs)
    shutil.rmtree(url, ignore_errors=True)
    t = {name: median(s) for name, s in samples.items()}
    out = Outcome(samples={"restore": samples, "find_latest": find})
    out.rows.append(
        bandwidth_row(
            f"restore {gib:.3g} GiB into the model (vs raw cold read)",
            gib,
            t["taskpoint"],
            t["raw"],
            0.70,
            "" if ok else "RESTORED STATE DIFFERS",
        )
    )
    if not ok:
        out.rows[-1].ok = False
    found = median(find) * 1e3
    out.rows.append(
        Row(
            "engine part of resume: open + find latest",
            found,
            None,
            "ms",
            None,
            "<= 100 ms",
            found <= 100,
            "open the scope, list versions, read and parse the newest manifest",
        )
    )
    return out


def mem_available() -> int:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62


def run(
    state_mib: int, large_mib: int, repeats: int, root: str | None, others: bool = True
) -> Outcome:
    torch.set_num_threads(1)
    out = Outcome()
    workdir = tempfile.mkdtemp(prefix="taskpoint-bench-", dir=workdir_root(root))
    try:
        model = StateModel(state_mib)
        sync = bench_sync(workdir, model, repeats, others)
        out.rows += sync.rows
        out.samples.update(sync.samples)
        sync_stall = sync.samples["sync_stall_s"]
        for part in (
            bench_async(workdir, model, repeats, sync_stall),
            bench_restore(workdir, model, repeats),
        ):
            out.rows += part.rows
            out.samples.update(part.samples)
        del model
        if large_mib:
            # the model, one staging buffer and slack for the page cache
            need = int(large_mib * (1 << 20) * 2.5)
            if mem_available() < need:
                why = f"needs ~{need >> 30} GiB available memory, {mem_available() >> 30} free"
                out.rows.append(
                    Row(
                        f"sync save {large_mib / 1024:g} GiB torch state",
                        float("nan"),
                        None,
                        "",
                        None,
                        ">= 0.85 x baseline",
                        None,
                        f"skipped: {why}",
                    )
                )
            else:
                large = bench_sync(workdir, StateModel(large_mib), max(3, repeats - 2), False)
                out.rows += large.rows
                out.samples.update({k: v for k, v in large.samples.items() if k != "sync_stall_s"})
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-mib", type=int, default=1024, help="state size (MiB)")
    parser.add_argument("--large-mib", type=int, default=4096, help="second sync size; 0: skip")
    parser.add_argument("--repeats", type=int, default=5, help="rounds per measurement")
    parser.add_argument("--dir", default=None, help="directory on the disk to measure")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test only")
    args = parser.parse_args(argv)
    if args.quick:
        args.state_mib, args.large_mib, args.repeats = 16, 0, 3
    out = run(args.state_mib, args.large_mib, args.repeats, args.dir)
    print_table("torch state (medians; ratios against baselines of the same run)", out.rows)
    print(f"\nresults: {save_json('torch_state', out.rows, vars(args), samples=out.samples)}")
    return out.rows


if __name__ == "__main__":
    main()
