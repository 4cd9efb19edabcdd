"""Group restart after one rank is SIGKILLed (``--only ranks``): a rank group taken apart.

A two-rank DDP job on CPU (gloo; a model of ``state_mib`` MiB, plain SGD; ``TorchCheckpointer``
saving every few steps) runs under the engine (``@task(nproc=2)``) in this process, which has
torch imported as a training driver does, so ranks come from the fork server. Rank 1 of an
attempt is killed with SIGKILL a few steps after that attempt restored, ``kills`` times; for
each kill, on every rank's own marks (the slowest rank counts: the group steps together):

- detect: kill -> the driver saw the rank die (its warning's time);
- end the others: -> every rank of the attempt ended (rank 0, waiting for rank 1 in DDP's
  all-reduce, is killed; every rank reaped);
- start: -> every rank of the next attempt is through ``init_process_group`` (the attempt
  recorded lost, the retry planned, the forks, the rendezvous on a new port);
- restore: -> every rank restored the latest checkpoint;
- first step: -> every rank finished its first step.

Baseline (informative, no target): what a launcher that starts fresh interpreters pays before
any restore, two ``python -c`` that import torch and rendezvous over gloo (median of 3).
"""

from __future__ import annotations

import logging
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from benchmarks.common import Row
from taskpoint import current_context, task

FRESH_GROUP = """
import time
start = time.time()
import torch.distributed as dist
dist.init_process_group("gloo")
dist.barrier()
dist.destroy_process_group()
print(time.time() - start)
"""
WIDTH = 1024  # the model is square Linear layers of this width (4 MiB of float32 each)


def _mark(progress: str, what: str, step: int = 0) -> None:
    ctx = current_context()
    line = f"{time.time():.6f} {ctx.attempt} {ctx.rank} {os.getpid()} {what} {step}\n"
    fd = os.open(progress, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())  # one small append: lines of the two ranks never mix
    finally:
        os.close(fd)


@task(isolation="process", nproc=2, system_retries=8)
def ddp_job(progress: str, state_mib: int, stop: str, every: int) -> int:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from taskpoint.integrations.torch import TorchCheckpointer

    dist.init_process_group("gloo")
    _mark(progress, "rendezvous")
    torch.manual_seed(0)
    layers = max(1, state_mib // 4)
    model = torch.nn.Sequential(*(torch.nn.Linear(WIDTH, WIDTH) for _ in range(layers)))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
    ckpt = TorchCheckpointer(model=model, optimizer=optimizer, every_n_steps=every)
    step = ckpt.restore() or 0
    _mark(progress, "restored", step)
    ddp = DistributedDataParallel(model)
    batch = torch.randn(8, WIDTH)
    while True:
        # The ranks agree on when to stop (a rank that stopped alone would leave its peer
        # waiting in the next all-reduce): the benchmark creates ``stop`` once it measured.
        flag = torch.tensor([float(os.path.exists(stop))])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() > 0:
            break
        loss = ddp(batch).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
        _mark(progress, "step", step)
        ckpt.maybe_save(step)
    ckpt.close()
    del ddp  # before the group: gloo's teardown can hang while a DDP model exists
    dist.destroy_process_group()
    return step


@dataclass
class Mark:
    at: float
    attempt: int
    rank: int
    pid: int
    what: str
    step: int


def _marks(progress: str) -> list[Mark]:
    try:
        with open(progress) as handle:
            rows = [line.split() for line in handle]
    except FileNotFoundError:
        return []
    return [Mark(float(r[0]), int(r[1]), int(r[2]), int(r[3]), r[4], int(r[5])) for r in rows]


def _every_rank(marks: list[Mark], attempt: int, what: str) -> float | None:
    """When both ranks of ``attempt`` had reached ``what`` (each one's first such mark)."""
    first: dict[int, float] = {}
    for m in marks:
        if m.attempt == attempt and m.what == what:
            first.setdefault(m.rank, m.at)
    return max(first.values()) if len(first) == 2 else None


class _Driver(logging.Handler):
    """What the driver saw, from the rank group's log: when a rank died, when all had ended."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.deaths: list[float] = []
        self.ended: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "ended without reporting" in message:
            self.deaths.append(record.created)
        elif "ranks ended" in message:
            self.ended.append(record.created)


class _Killer:
    """Beside the job (a thread): kill rank 1 of attempts 1..kills, each ``after`` steps past
    its restore (``times``: when), then, once the next attempt stepped, tell the job to stop."""

    def __init__(self, progress: str, stop: str, kills: int, after: int) -> None:
        self.progress, self.stop_file, self.kills, self.after = progress, stop, kills, after
        self.times: list[float] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="rank-killer", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.done.set()
        self.thread.join(5)

    def _run(self) -> None:
        for attempt in range(1, self.kills + 1):
            while not self.done.is_set() and not self._killed(attempt):
                time.sleep(0.005)
        last = self.kills + 1
        while not self.done.is_set() and _every_rank(_marks(self.progress), last, "step") is None:
            time.sleep(0.02)
        with open(self.stop_file, "w"):
            pass

    def _killed(self, attempt: int) -> bool:
        marks = [m for m in _marks(self.progress) if m.attempt == attempt]
        restored = [m.step for m in marks if m.what == "restored"]
        stepped = [m for m in marks if m.what == "step"]
        target = next((m for m in stepped if m.rank == 1), None)
        if len(restored) < 2 or target is None:
            return False
        if max(m.step for m in stepped) - max(restored) < self.after:
            return False
        self.times.append(time.time())
        os.kill(target.pid, signal.SIGKILL)
        return True


def fresh_group_s(repeats: int) -> float:
    """Median time two fresh interpreters take to import torch and rendezvous over gloo."""
    from taskpoint.backends._rank_child import free_port

    samples = []
    for _ in range(repeats):
        port = str(free_port())
        procs = []
        start = time.perf_counter()
        for rank in range(2):
            env = dict(
                os.environ,
                RANK=str(rank),
                WORLD_SIZE="2",
                MASTER_ADDR="127.0.0.1",
                MASTER_PORT=port,
                OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 1) // 2)),
            )
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", FRESH_GROUP], env=env, stdout=subprocess.DEVNULL
                )
            )
        for proc in procs:
            proc.wait(120)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def run(workdir: str, state_mib: int, kills: int, quick: bool) -> list[Row]:
    # In the driver, as in a training script: the ranks come from the fork server.
    import torch  # noqa: F401

    from taskpoint import Engine

    baseline = fresh_group_s(1 if quick else 3)
    print(f"  fresh interpreters: import torch + rendezvous of 2 ranks in {baseline:.2f} s")
    progress = os.path.join(workdir, "ranks.progress")
    stop = os.path.join(workdir, "ranks.stop")
    driver = _Driver()
    logger = logging.getLogger("taskpoint")
    level = logger.level
    logger.setLevel(logging.INFO)  # the group's "all ranks ended" line (nothing prints it)
    logger.addHandler(driver)
    # Saves every 5 steps, kills 8 steps after each restore: every restart has a save to load.
    every, after = 5, 8
    killer = _Killer(progress, stop, kills, after)
    engine = Engine(home=os.path.join(workdir, "home-ranks"))
    try:
        execution = engine.run(
            ddp_job, progress=progress, state_mib=state_mib, stop=stop, every=every
        )
    finally:
        killer.stop()
        logger.removeHandler(driver)
        logger.setLevel(level)
    note = "" if execution.status == "succeeded" else f"job {execution.status}: {execution.error}"
    return [_row(_phases(killer.times, driver, _marks(progress)), baseline, state_mib, note)]


def _phases(kills: list[float], driver: _Driver, marks: list[Mark]) -> list[dict[str, float]]:
    """Each kill's phases, in seconds."""
    out = []
    for n, kill in enumerate(kills, start=1):
        seen = next((t for t in driver.deaths if t >= kill), None)
        ended = next((t for t in driver.ended if seen is not None and t >= seen), None)
        met = _every_rank(marks, n + 1, "rendezvous")
        restored = _every_rank(marks, n + 1, "restored")
        stepped = _every_rank(marks, n + 1, "step")
        if seen is None or ended is None or met is None or restored is None or stepped is None:
            continue
        out.append(
            {
                "total": stepped - kill,
                "detect": seen - kill,
                "end the others": ended - seen,
                "start": met - ended,
                "restore": restored - met,
                "first step": stepped - restored,
            }
        )
    return out


def _row(phases: list[dict[str, float]], baseline: float, state_mib: int, note: str) -> Row:
    metric = "group restart, SIGKILL of 1 of 2 ranks: kill -> every rank's first step"
    if not phases:
        why = note or "no kill landed"
        return Row(metric, float("nan"), baseline, "s", None, "(info)", None, why)
    medians = {k: statistics.median(p[k] for p in phases) for k in phases[0]}
    parts = ", ".join(f"{k} {v * 1e3:.0f}" for k, v in medians.items() if k != "total")
    text = (
        f"{len(phases)} SIGKILLs, {state_mib} MiB DDP state, medians: {parts} ms; baseline: two "
        "fresh interpreters import torch and rendezvous (no restore)"
    )
    total = medians["total"]
    text += f"; {note}" if note else ""
    return Row(metric, total, baseline, "s", total / baseline, "(info)", None, text)
