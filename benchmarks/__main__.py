"""The performance suite of issue 6: every target, one table, JSON and PNG plots.

    python -m benchmarks [--quick] [--only io,torch,loop,small,goodput,engine]
                         [--state-mib 1024] [--large-mib 4096] [--repeats 5] ...
                         [--flytekit-python PATH] [--dir DIR]

Each figure is a ratio against a baseline measured side by side in the same run (pairs
alternated, medians). ``--quick`` runs tiny sizes in well under a minute and asserts nothing
about time: a smoke test. Results: ``benchmarks/results/benchmarks.json`` and ``*.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks import scale
from benchmarks.common import (
    RESULTS,
    Row,
    format_baselines,
    machine_baselines,
    print_table,
    tmpfs_dir,
    workdir_root,
)

SECTIONS = ("io", "torch", "loop", "small", "goodput", "engine", "scale", "sharded", "ranks")
# What runs without --only: all but "scale" (~8 minutes, a moto server and a Dask cluster),
# "sharded" (two rank processes writing a 1 GiB state a dozen times) and "ranks" (a rank group
# killed and restarted).
DEFAULT_SECTIONS = tuple(name for name in SECTIONS if name not in ("scale", "sharded", "ranks"))


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, seconds: a smoke test")
    p.add_argument(
        "--only", default=",".join(DEFAULT_SECTIONS), help=f"sections to run: {','.join(SECTIONS)}"
    )
    p.add_argument("--dir", default=None, help="directory on the disk to measure (default: cwd)")
    p.add_argument("--out", default=str(RESULTS), help="where JSON and plots go")
    p.add_argument(
        "--flytekit-python",
        default=os.environ.get("FLYTEKIT_PYTHON"),
        help="an interpreter with flytekit, for the flytekit comparisons",
    )
    g = p.add_argument_group("targets 1, 2, 4 (torch state, bytes API)")
    g.add_argument("--state-mib", type=int, default=1024, help="torch state size")
    g.add_argument("--large-mib", type=int, default=4096, help="second sync size; 0: skip")
    g.add_argument("--io-mib", type=int, default=1024, help="bytes API payload")
    g.add_argument(
        "--write-mib", default="64,512,1024", help="sync write vs raw buffered/O_DIRECT sizes"
    )
    g.add_argument("--tmpfs", default=None, help="tmpfs dir for those too (default /dev/shm)")
    g.add_argument("--baseline-mib", type=int, default=256, help="raw baselines' write size")
    g.add_argument("--async-mib", type=int, default=64, help="bytes API async payload")
    g.add_argument("--repeats", type=int, default=5, help="rounds per measurement")
    g = p.add_argument_group("target 3 (training loop)")
    g.add_argument("--interval", type=float, default=5.0, help="seconds between saves")
    g.add_argument("--block-s", type=float, default=20.0, help="seconds per block")
    g.add_argument("--loop-repeats", type=int, default=5, help="blocks of each kind")
    g = p.add_argument_group("target 5 (small checkpoints)")
    g.add_argument("--small-count", type=int, default=300, help="16 B writes to time")
    g = p.add_argument_group("target 6 (goodput)")
    g.add_argument("--job-s", type=float, default=120.0, help="failure-free job length")
    g.add_argument("--every", type=float, default=20.0, help="seconds between kills")
    g.add_argument("--goodput-state-mib", type=int, default=256)
    g.add_argument("--ckpt-every", type=float, default=5.0)
    g.add_argument("--cap", type=float, default=1.5, help="no-checkpoint run stops at x t0")
    g = p.add_argument_group("target 7 (engine)")
    g.add_argument("--engine-calls", type=int, default=2000)
    g.add_argument("--engine-attempts", type=int, default=60)
    g.add_argument("--engine-repeats", type=int, default=15)
    scale.add_arguments(p)
    g = p.add_argument_group("issue 19 (sharded checkpoints over 2 ranks, --only sharded)")
    g.add_argument("--sharded-mib", type=int, default=1024, help="replicated state size")
    g.add_argument("--ranks-state-mib", type=int, default=64, help="DDP state, --only ranks")
    g.add_argument("--ranks-kills", type=int, default=3, help="SIGKILLs of rank 1, --only ranks")
    args = p.parse_args(argv)
    if args.quick:
        args.state_mib, args.large_mib, args.io_mib, args.async_mib, args.repeats = 16, 0, 16, 8, 3
        args.write_mib, args.baseline_mib = "16", 16
        args.interval, args.block_s, args.loop_repeats, args.small_count = 0.5, 1.5, 2, 30
        args.job_s, args.every, args.goodput_state_mib, args.ckpt_every = 4.0, 3.0, 8, 0.5
        args.engine_calls, args.engine_attempts, args.engine_repeats = 200, 5, 3
        args.ranks_state_mib, args.ranks_kills = 8, 1
    return args


def tag(number: int, rows: list[Row]) -> list[Row]:
    for row in rows:
        row.metric = f"{number} {row.metric}"
    return rows


class Suite:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rows: dict[int, list[Row]] = {n: [] for n in range(1, 10)}
        self.extra: dict[str, Any] = {}
        self.timings: dict[str, float] = {}

    def section(self, name: str, fn: Any) -> None:
        start = time.perf_counter()
        print(f"== {name}", flush=True)
        fn()
        self.timings[name] = time.perf_counter() - start

    def io(self, workdir: str) -> None:
        from benchmarks import checkpoint_io as io

        a = self.args
        locations = {"disk": workdir}
        shm = tmpfs_dir(a.tmpfs)
        if shm:
            locations["tmpfs"] = shm
        sizes = [int(x) for x in a.write_mib.split(",") if x]
        self.rows[1] += tag(1, io.bench_write_modes(locations, sizes, a.repeats))
        large = io.bench_large(workdir, a.io_mib << 20, a.repeats)  # sync write, restore, read
        large[0].metric = large[0].metric.replace("sync write", "bytes API sync write")
        self.rows[1] += tag(1, large[:1])
        large[1].note = "Checkpoint.restore() writes a new file; the baseline only reads"
        self.rows[4] += tag(4, large[1:])
        from benchmarks import local_copy  # a retry's restore from S3, with the local copy or not

        self.rows[4] += tag(4, local_copy.bench(workdir, 16 if a.quick else 256, a.repeats))
        self.rows[2] += tag(2, io.bench_async_large(workdir, a.async_mib << 20, a.repeats))

    def torch(self, workdir: str) -> None:
        from benchmarks import loop_stall as ls
        from benchmarks import torch_state as ts

        a = self.args
        ts.torch.set_num_threads(1)
        model = ts.StateModel(a.state_mib)
        sync = ts.bench_sync(workdir, model, a.repeats, others=True)
        stall = sync.samples["sync_stall_s"]
        asyn = ts.bench_async(workdir, model, a.repeats, stall)
        in_loop = ls.bench_loop_stall(workdir, model, a.repeats, steps=2 if a.quick else 10)
        ts.torch.set_num_threads(1)
        rest = ts.bench_restore(workdir, model, a.repeats)
        self.rows[1] += tag(1, sync.rows)
        self.rows[2] += tag(2, asyn.rows + in_loop.rows)
        self.rows[4] += tag(4, rest.rows)
        samples = {**sync.samples, **asyn.samples, **in_loop.samples, **rest.samples}
        gib = ts.state_bytes(model) / (1 << 30)
        self.extra["torch_samples"] = samples
        self.extra["torch_sync_key"], self.extra["torch_gib"] = f"sync {gib:.3g} GiB", gib
        del model
        if a.large_mib:
            need = int(a.large_mib * (1 << 20) * 2.5)
            if ts.mem_available() < need:
                why = (
                    f"needs ~{need >> 30} GiB of available memory, {ts.mem_available() >> 30} free"
                )
                self.rows[1] += tag(
                    1,
                    [
                        Row(
                            f"sync save {a.large_mib / 1024:g} GiB torch state",
                            float("nan"),
                            None,
                            "",
                            None,
                            ">= 0.85 x baseline",
                            None,
                            f"skipped: {why}",
                        )
                    ],
                )
            else:
                big = ts.bench_sync(
                    workdir, ts.StateModel(a.large_mib), max(3, a.repeats - 2), False
                )
                self.rows[1] += tag(1, big.rows)
                self.extra["torch_large_samples"] = big.samples

    def loop(self, workdir: str) -> None:
        from benchmarks import training_loop as tl

        a = self.args
        rows, trace = tl.run(
            a.state_mib, a.interval, a.block_s, a.loop_repeats, workdir, helper=not a.quick
        )
        self.rows[3] += tag(3, rows)
        self.extra["loop_trace"] = trace

    def small(self, workdir: str) -> None:
        from benchmarks import checkpoint_io as io
        from benchmarks import small_writes

        a = self.args
        rows = small_writes.bench_small_writes(workdir, a.small_count)
        flyte = io.flytekit_small(a.flytekit_python, workdir, a.small_count)
        ours = rows[0].taskpoint
        if isinstance(flyte, float):
            rows.append(
                Row(
                    "  durable 16 B sync write p50 (vs flytekit SyncCheckpoint.write)",
                    ours,
                    flyte * 1e3,
                    "ms",
                    ours / (flyte * 1e3),
                    "(info)",
                    None,
                    "flytekit's write copies to a local directory without fsync: not durable",
                )
            )
        else:
            rows.append(
                Row(
                    "  flytekit SyncCheckpoint.write 16 B p50",
                    float("nan"),
                    None,
                    "ms",
                    None,
                    "(info)",
                    None,
                    flyte,
                )
            )
        self.rows[5] += tag(5, rows)

    def goodput(self, workdir: str) -> None:
        from benchmarks import goodput as gp

        a = self.args
        which = frozenset({"kill"}) if a.quick else gp.ALL
        rows, outcomes = gp.run(
            a.job_s,
            a.every,
            a.goodput_state_mib,
            a.ckpt_every,
            0.1 if not a.quick else 0.05,
            a.cap,
            5.0 if not a.quick else 2.0,
            a.flytekit_python,
            workdir,
            which,
        )
        self.rows[6] += tag(6, rows)
        self.extra["goodput"] = [asdict(o) for o in outcomes]
        self.extra["goodput_steps"] = outcomes[0].final_step() if outcomes else 0

    def engine(self, workdir: str) -> None:
        from benchmarks import engine_overhead as eo

        a = self.args
        flyte = None if a.quick else a.flytekit_python
        self.rows[7] += tag(7, eo.run(a.engine_calls, a.engine_attempts, a.engine_repeats, flyte))

    def scale(self, workdir: str) -> None:
        rows, self.extra["scale"] = scale.run(self.args, workdir)
        self.rows[8] += tag(8, rows)

    def sharded(self, workdir: str) -> None:
        from benchmarks import sharded

        a = self.args
        mib = 16 if a.quick else a.sharded_mib
        self.rows[9] += tag(9, sharded.run(mib, a.repeats, workdir))

    def ranks(self, workdir: str) -> None:
        from benchmarks import ranks

        a = self.args
        self.rows[9] += tag(9, ranks.run(workdir, a.ranks_state_mib, a.ranks_kills, a.quick))

    def all_rows(self) -> list[Row]:
        return [row for n in sorted(self.rows) for row in self.rows[n]]


def machine(workdir: str) -> dict[str, Any]:
    """What the numbers were measured on (no host names)."""
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as handle:
            info["memory_gib"] = round(int(handle.readline().split()[1]) / (1 << 20), 1)
        best = ("", "", "")
        with open("/proc/mounts") as handle:
            for line in handle:
                dev, mount, fstype = line.split()[:3]
                real = os.path.realpath(workdir)
                if (real + "/").startswith(mount.rstrip("/") + "/") and len(mount) >= len(best[1]):
                    best = (dev, mount, fstype)
        info["filesystem"] = best[2]
        name = os.path.basename(best[0])
        rotational = Path(f"/sys/block/{name}/queue/rotational")
        if rotational.exists():
            info["disk"] = f"{name} (rotational={rotational.read_text().strip()})"
        usage = shutil.disk_usage(workdir)
        info["disk_size_gib"] = round(usage.total / (1 << 30))
    except OSError:
        pass
    try:
        load = os.getloadavg()
        info["load_at_start"] = [round(x, 2) for x in load]
    except OSError:
        pass
    return info


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    only = [s for s in args.only.split(",") if s]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        print(f"unknown sections: {', '.join(sorted(unknown))}; known: {', '.join(SECTIONS)}")
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suite = Suite(args)
    workdir = tempfile.mkdtemp(prefix="taskpoint-bench-", dir=workdir_root(args.dir))
    info = machine(workdir)
    start = time.perf_counter()
    try:
        baselines = raw_baselines(args, workdir)
        info["baselines"] = baselines
        for name in SECTIONS:
            if name in only:
                suite.section(name, lambda n=name: getattr(suite, n)(workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    rows = suite.all_rows()
    title = (
        "taskpoint performance (medians of alternated runs; ratio against the same-run baseline)"
    )
    print(f"\nthis machine, without taskpoint (load at start {info.get('load_at_start')}):")
    for line in baselines.values():
        print(f"  {line['text']}")
    print_table(title, rows)
    failed = [r.metric for r in rows if r.ok is False]
    passed = sum(1 for r in rows if r.ok)
    print(f"\n{passed} targets pass, {len(failed)} do not" + (f": {failed}" if failed else ""))
    plots = make_plots(suite, out)
    info["load_at_end"] = [round(x, 2) for x in os.getloadavg()]
    payload = {
        "params": vars(args),
        "machine": info,
        "seconds": {**suite.timings, "total": time.perf_counter() - start},
        "rows": [asdict(r) for r in rows],
        **suite.extra,
    }
    path = out / "benchmarks.json"
    path.write_text(json.dumps(payload, indent=1, default=str))
    print(f"results: {path}" + "".join(f"\nplot: {p}" for p in plots))
    return 0


def raw_baselines(args: argparse.Namespace, workdir: str) -> dict[str, dict[str, Any]]:
    """The disk's (and tmpfs's) own write figures, printed first so that a slow disk is told
    from a slow taskpoint: buffered and O_DIRECT MiB/s, 16 B write+fsync p50, probe choice."""
    locations = {"disk": workdir}
    shm = tmpfs_dir(args.tmpfs)
    if shm:
        locations["tmpfs"] = shm
    out: dict[str, dict[str, Any]] = {}
    for label, directory in locations.items():
        base = machine_baselines(
            directory, args.baseline_mib << 20, 1 if args.quick else 3, 30 if args.quick else 100
        )
        base["text"] = format_baselines(label, base)
        print(base["text"], flush=True)
        out[label] = base
    return out


def make_plots(suite: Suite, out: Path) -> list[Path]:
    try:
        from benchmarks import plots
    except ImportError as exc:  # pragma: no cover - matplotlib missing
        print(f"plots skipped: {exc} (pip install matplotlib)")
        return []
    made: list[Path | None] = []
    extra = suite.extra
    try:
        if "torch_samples" in extra:
            made.append(
                plots.checkpoint(
                    extra["torch_samples"], extra["torch_sync_key"], extra["torch_gib"], out
                )
            )
        if "loop_trace" in extra:
            made.append(plots.training_loop(extra["loop_trace"], out))
        if extra.get("goodput"):
            made.append(plots.goodput(extra["goodput"], int(extra["goodput_steps"]), out))
            made.append(plots.interval(extra["goodput"], out))
        if "scale" in extra:
            made.append(scale.plot(extra["scale"], out))
    except ImportError as exc:
        print(f"plots skipped: {exc} (pip install matplotlib)")
    return [p for p in made if p is not None]


if __name__ == "__main__":
    sys.exit(main())
