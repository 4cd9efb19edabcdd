"""Sharded checkpoints of a group of ranks against DCP's own (``--only sharded``, issue 19).

Two rank processes (gloo on CPU, started as torchrun would) hold the same replicated state of
``--sharded-mib`` (a model of 64 MiB parameters, as DDP keeps it); every figure is the slowest
rank's, measured between two barriers, taskpoint and DCP alternated, medians:

- sync save: `TorchCheckpointer.save(blocking=True)` (DCP's planner deduplicates the replicas:
  each rank writes half, with checksums, one manifest commits) vs ``dcp.save`` (its
  ``FileSystemWriter``, fsync on) to the same disk; target >= 1.0 x (time ratio DCP / ours);
- async stall: ``save(blocking=False)`` until it returns vs ``dcp.async_save`` until it returns
  (with its own gloo group, as DCP documents); target <= 0.5 x (ours / DCP's);
- restore into 2 ranks: `TorchCheckpointer.restore()` (checks every item's checksum) vs
  ``dcp.load``, each of its latest checkpoint (the one its async save just wrote); target
  >= 1.0 x (DCP / ours). Both read from the disk: before each load the
  files it reads are dropped from the page cache (``posix_fadvise(DONTNEED)``; the pages are
  clean after the saves' fsyncs). Each round loads in the order A B B A (A and B alternating
  between rounds) and each side's figure is the mean of its two loads. A detail row gives the
  restore of the same version again, from the cache its first read filled, against DCP's load
  from its cache.

Before the loads, both sides' files are read once and dropped again. A virtual disk is more than
the guest's page cache: on the machine this was written on, a file read for the first time since
it was written comes at about 0.5 GiB/s once a burst of about 1 GiB is spent, and one read before
at about 2 GiB/s, from the host's cache, which no ``posix_fadvise`` in the guest empties. The
load that came first after the saves read at the first speed and every later one at the second,
so the order, not the code, decided the row (taskpoint's restore took 1.2-1.5 s in first place,
0.5-0.6 s in any other; 2026-12-05). Read once each, both sides meet the same device: the row
compares the read paths, not places in the queue.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Row

WORLD = 2
_PARAM_MIB = 64


def run(state_mib: int, repeats: int, workdir: str) -> list[Row]:
    """Start the ranks, collect rank 0's medians, and make the rows."""
    root = Path(workdir) / "sharded"
    root.mkdir(parents=True, exist_ok=True)
    out = root / "result.json"
    args = {"mib": state_mib, "repeats": repeats, "root": str(root), "out": str(out)}
    procs = _launch(args)
    codes = [p.wait(timeout=1800) for p in procs]
    if codes != [0] * WORLD or not out.exists():
        return [Row("sharded save over 2 ranks", float("nan"), None, "", None, ">= 1.0 x", None,
                    f"failed: rank exit codes {codes}")]  # fmt: skip
    t = json.loads(out.read_text())
    shutil.rmtree(root, ignore_errors=True)
    gib = f"{state_mib / 1024:g} GiB"
    save, stall, load, cached = t["save"], t["stall"], t["load"], t["cached"]
    return [
        Row(f"sharded sync save {gib} over 2 ranks (vs DCP save)", save["ours"], save["dcp"],
            "s", save["dcp"] / save["ours"], ">= 1.0 x", save["dcp"] / save["ours"] >= 1.0,
            "time ratio: DCP / taskpoint"),
        Row(f"sharded async save stall {gib} (vs DCP async_save stall)", stall["ours"] * 1e3,
            stall["dcp"] * 1e3, "ms", stall["ours"] / stall["dcp"], "<= 0.5 x",
            stall["ours"] / stall["dcp"] <= 0.5),
        Row(f"sharded restore {gib} into 2 ranks (vs DCP load)", load["ours"], load["dcp"], "s",
            load["dcp"] / load["ours"], ">= 1.0 x", load["dcp"] / load["ours"] >= 1.0,
            "time ratio: DCP / taskpoint; both from the disk; taskpoint checks every item's "
            "checksum"),
        Row("  same restore again, from the page cache (vs DCP load, cached)", cached["ours"],
            cached["dcp"], "s", cached["dcp"] / cached["ours"], "(info)", None,
            "the version a first restore read; DCP's checkpoint as its save left it"),
    ]  # fmt: skip


def _launch(args: dict[str, Any]) -> list[subprocess.Popen[bytes]]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    procs = []
    for rank in range(WORLD):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD))
        env.update(LOCAL_WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        command = [sys.executable, "-m", "benchmarks.sharded", json.dumps(args)]
        procs.append(subprocess.Popen(command, env=env, cwd=Path(__file__).parents[1]))
    return procs


# ------------------------------------------------------------------------------ in a rank
def _timed(fn: Any) -> float:
    """The slowest rank's time of ``fn``, started together (a barrier)."""
    import torch.distributed as dist

    dist.barrier()
    start = time.perf_counter()
    fn()
    mine = time.perf_counter() - start
    every = [0.0] * dist.get_world_size()
    dist.all_gather_object(every, mine)
    return max(every)


def _round(
    i: int, ckpt: Any, state: dict[str, Any], target: str, group: Any, ours: str
) -> dict[str, Any]:
    """One round of each pair, the order alternated between rounds; ``{kind: {who: s}}``."""
    import torch.distributed.checkpoint as dcp

    def first(pairs: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        return pairs if i % 2 == 0 else pairs[::-1]

    times: dict[str, dict[str, float]] = {"save": {}, "stall": {}, "load": {}}
    saves = [
        ("ours", lambda: ckpt.save(2 * i + 1, blocking=True)),
        ("dcp", lambda: dcp.save(state, checkpoint_id=target)),
    ]
    for who, fn in first(saves):
        times["save"][who] = _timed(fn)
    pending: list[Any] = []
    stalls = [
        ("ours", lambda: pending.append(ckpt.save(2 * i + 2, blocking=False))),
        ("dcp", lambda: pending.append(
            dcp.async_save(state, checkpoint_id=target + "a", process_group=group))),
    ]  # fmt: skip
    for who, fn in first(stalls):
        times["stall"][who] = _timed(fn)
        for future in pending:
            future.result()  # the write itself is not part of the stall
        pending.clear()

    # Each side loads its latest checkpoint: the one its async save just wrote (taskpoint's
    # restore takes its latest version; DCP's load is pointed at its own latest).
    latest = target + "a"

    def dcp_load() -> None:
        dcp.load(state, checkpoint_id=latest)

    loads = [("ours", ckpt.restore, ours), ("dcp", dcp_load, latest)]
    _read_once([_newest_version(ours), latest])  # see the module's doc: the device's cache
    cold: dict[str, list[float]] = {"ours": [], "dcp": []}
    for who, fn, files in first(loads) + first(loads)[::-1]:  # A B B A (see the module's doc)
        _drop_cached(files)
        cold[who].append(_timed(fn))
    times["load"] = {who: statistics.mean(seconds) for who, seconds in cold.items()}
    cached = [("ours", ckpt.restore), ("dcp", dcp_load)]
    times["cached"] = {who: _timed(fn) for who, fn in first(cached)}
    return times


def _newest_version(scope: str) -> str:
    """The folder of the newest version in a taskpoint scope (ids sort in commit order)."""
    folders = [
        os.path.join(parent, name)
        for parent, dirs, _files in os.walk(scope)
        if os.path.basename(parent) == "v"
        for name in dirs
    ]
    return max(folders, key=os.path.basename)


def _read_once(roots: list[str]) -> None:
    """Read every file under ``roots`` once (the ranks share them out), so that what the loads
    then read from the disk has been through the device once, for both sides alike."""
    import torch.distributed as dist

    files = sorted(os.path.join(d, n) for root in roots for d, _, names in os.walk(root)
                   for n in names)  # fmt: skip
    for path in files[dist.get_rank() :: dist.get_world_size()]:
        with open(path, "rb", buffering=0) as handle:
            while handle.read(16 << 20):
                pass
    dist.barrier()


def _drop_cached(root: str) -> None:
    """Drop this checkpoint's (clean, fsynced) pages from the page cache: the next read is a
    disk read. Each rank drops them; dropping twice is harmless."""
    for folder, _dirs, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def _rank(args: dict[str, Any]) -> None:
    import torch
    import torch.distributed as dist

    from taskpoint.checkpoint import Checkpoint
    from taskpoint.integrations.torch import TorchCheckpointer

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.set_num_threads(1)
    count = max(1, args["mib"] // _PARAM_MIB)
    numel = (min(args["mib"], _PARAM_MIB) << 20) // 4
    model = torch.nn.ParameterList(
        [torch.nn.Parameter(torch.full((numel,), float(i))) for i in range(count)]
    )
    root = Path(args["root"])
    cp = Checkpoint.open(root / "taskpoint", attempt=1)
    ckpt = TorchCheckpointer(checkpoint=cp, model=model, rng=False)
    group = dist.new_group(backend="gloo")  # DCP's async_save wants its own, as documented
    state = {"model": model.state_dict()}
    samples: dict[str, dict[str, list[float]]] = {}
    for i in range(args["repeats"]):
        target = str(root / f"dcp-{i}")
        for kind, by in _round(i, ckpt, state, target, group, str(root / "taskpoint")).items():
            for who, seconds in by.items():
                samples.setdefault(kind, {}).setdefault(who, []).append(seconds)
        dist.barrier()
        if rank == 0:
            shutil.rmtree(target, ignore_errors=True)
            shutil.rmtree(target + "a", ignore_errors=True)
    ckpt.close()
    dist.destroy_process_group(group)
    del ckpt, model, state
    if rank == 0:
        medians = {k: {w: statistics.median(v) for w, v in d.items()} for k, d in samples.items()}
        Path(args["out"]).write_text(json.dumps(medians))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    _rank(json.loads(sys.argv[1]))
