"""Fan-out at scale (part of ``benchmarks.scale``): ``t.map`` over 100, 1,000 and 10,000 items
with the inline, process and Dask backends; per item, and on Dask against ``client.map`` +
``client.gather`` of the same plain function on the same local cluster.

Each size runs in a fresh home, so a bigger map does not also read a bigger database. A map of
many items runs once (it takes long), a small one several times (median): the figure is the
run's wall time divided by its items. The Dask cluster (2 worker processes, one thread each) is
started once and warmed up on both sides before anything is timed.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.scale_records import Quiet

TASK_FILE = """
from taskpoint import task, workflow

@task
def inc(x: int) -> int:
    return x + 1

@workflow
def fan(n: int) -> list:
    return inc.map(x=list(range(n)))
"""


def bare(x: int) -> int:
    return x + 1


def runs_for(n: int) -> int:
    """How many times a map of ``n`` items runs: small ones several times, big ones once."""
    return 5 if n <= 100 else 3 if n <= 1000 else 1


class FanoutBench:
    def __init__(self, workdir: str) -> None:
        from taskpoint.engine.loader import load_file

        self.root = Path(workdir) / "fanout"
        self.root.mkdir(parents=True)
        (self.root / "scale_fan_tasks.py").write_text(TASK_FILE)
        self.tasks = load_file(self.root / "scale_fan_tasks.py")

    def map_seconds(self, backend: Any, n: int, most_runs: int = 5) -> float:
        """Median seconds of a whole map of ``n`` items (a fresh home per run)."""
        from taskpoint.engine.config import Engine

        samples = []
        for _ in range(min(most_runs, runs_for(n))):
            home = tempfile.mkdtemp(prefix="home-", dir=self.root)
            engine = Engine(home=home, backend=backend, listener=Quiet())
            start = time.perf_counter()
            execution = engine.run(self.tasks.fan, n=n)
            samples.append(time.perf_counter() - start)
            if execution.status != "succeeded" or len(execution.result) != n:
                raise RuntimeError(f"map of {n} on {backend}: {execution.status} {execution.error}")
        return statistics.median(samples)


def bare_map_seconds(client: Any, n: int) -> float:
    samples = []
    for _ in range(runs_for(n)):
        start = time.perf_counter()
        results = client.gather(client.map(bare, range(n), pure=False))
        samples.append(time.perf_counter() - start)
        if len(results) != n:
            raise RuntimeError(f"client.map of {n} returned {len(results)} results")
    return statistics.median(samples)


def run(
    workdir: str, sizes: list[int], process_sizes: list[int], dask_workers: int
) -> dict[str, Any]:
    """Milliseconds per item, by backend and size (``dask bare``: ``client.map`` itself)."""
    bench = FanoutBench(workdir)
    per_item: dict[str, dict[int, float]] = {}
    for backend, chosen in (("inline", sizes), ("process", process_sizes)):
        bench.map_seconds(backend, min(chosen))  # warm-up: imports, the first fork
        per_item[backend] = {}
        for n in chosen:
            # A process attempt forks the driver (~30 ms each on 2 busy cores): big maps once.
            runs = 1 if backend == "process" and n > 100 else 5
            per_item[backend][n] = bench.map_seconds(backend, n, runs) / n * 1e3
            print(
                f"   fan-out: {backend} map of {n}: {per_item[backend][n]:.3g} ms/item", flush=True
            )
    per_item["dask"], per_item["dask bare"] = _dask(bench, sizes, dask_workers)
    return {"per_item_ms": {k: {str(n): v for n, v in d.items()} for k, d in per_item.items()}}


def _dask(
    bench: FanoutBench, sizes: list[int], workers: int
) -> tuple[dict[int, float], dict[int, float]]:
    import distributed

    from taskpoint.backends.dask import DaskBackend

    ours: dict[int, float] = {}
    base: dict[int, float] = {}
    with (
        distributed.LocalCluster(
            n_workers=workers, processes=True, threads_per_worker=1, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        backend = DaskBackend(client=client)
        bare_map_seconds(client, min(sizes))  # warm-up on both sides
        bench.map_seconds(backend, min(sizes))
        for n in sizes:
            # Alternated: the side measured first must not get a quieter machine.
            base[n] = bare_map_seconds(client, n) / n * 1e3
            ours[n] = bench.map_seconds(backend, n) / n * 1e3
            print(
                f"   fan-out: dask map of {n}: {ours[n]:.3g} ms/item, client.map {base[n]:.3g}",
                flush=True,
            )
        backend.close()
    return ours, base
