"""Dispatch overhead of the Dask backend against a bare ``client.submit`` round trip, measured
side by side on the same local cluster in the same run.

    python -m benchmarks.dask_dispatch [--attempts 60] [--workers 2] [--no-save]

Per attempt: one trivial task called from a workflow (records written, the task shipped from a
file like ``taskpoint run`` does, the attempt claimed on the worker, the outcome sent back)
versus ``client.submit(fn, pure=False).result()`` of the same trivial function. Also a fan-out:
``t.map`` over N items versus ``client.map`` + ``client.gather``. Checkpoints and blobs go to a
local temporary folder (the workers share this disk), so storage latency is not in the figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from benchmarks.common import Row, percentile, print_table, save_json

TASK_FILE = """
from taskpoint import task

@task
def noop(x: int) -> int:
    return x + 1
"""


def bare(x: int) -> int:
    return x + 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=60, help="sequential attempts per side")
    parser.add_argument("--workers", type=int, default=2, help="local cluster worker processes")
    parser.add_argument("--no-save", action="store_true", help="do not write results/*.json")
    args = parser.parse_args()

    import distributed

    import taskpoint
    from taskpoint.backends.dask import DaskBackend
    from taskpoint.engine import configure
    from taskpoint.engine.loader import load_file

    scratch = Path(tempfile.mkdtemp(prefix="tp-dask-bench-"))
    (scratch / "bench_tasks.py").write_text(textwrap.dedent(TASK_FILE))
    noop = load_file(scratch / "bench_tasks.py").noop
    configure(home=str(scratch / "home"), storage=str(scratch / "blobs"))

    with (
        distributed.LocalCluster(
            n_workers=args.workers, processes=True, threads_per_worker=1, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        configure(backend=DaskBackend(client=client))
        warm(client, noop, taskpoint)
        rows = measure(client, noop, taskpoint, args.attempts)

    print_table(
        f"dask backend dispatch ({args.workers} workers; ratio = taskpoint / bare Dask)", rows
    )
    if not args.no_save:
        path = save_json("dask_dispatch", rows, vars(args))
        print(f"\nsaved {os.path.relpath(path)}")


def warm(client, noop, taskpoint) -> None:
    """First calls import modules on each worker: keep them out of both sides' figures."""
    client.gather(client.map(bare, range(8), pure=False))
    taskpoint.run(chain_of(noop, 8, []))
    taskpoint.run(fan_of(noop, 8))


def chain_of(noop, n: int, samples: list[float]):
    from taskpoint import workflow

    @workflow
    def chain() -> int:
        for i in range(n):
            start = time.perf_counter()
            noop(x=i)
            samples.append(time.perf_counter() - start)
        return n

    return chain


def fan_of(noop, n: int):
    from taskpoint import workflow

    @workflow
    def fan() -> list:
        return noop.map(x=list(range(n)))

    return fan


def measure(client, noop, taskpoint, attempts: int) -> list[Row]:
    ours: list[float] = []
    base: list[float] = []
    # Alternate blocks so background noise on a shared machine hits both sides alike.
    block = max(1, attempts // 6)
    while len(ours) < attempts:
        taskpoint.run(chain_of(noop, block, ours))
        for i in range(block):
            start = time.perf_counter()
            client.submit(bare, i, pure=False).result()
            base.append(time.perf_counter() - start)
    ms = 1000
    p50, b50 = statistics.median(ours), statistics.median(base)
    rows = [
        Row("per attempt, sequential, p50", p50 * ms, b50 * ms, "ms", p50 / b50, "(report)", None),
        Row(
            "per attempt, sequential, p90",
            percentile(ours, 0.9) * ms,
            percentile(base, 0.9) * ms,
            "ms",
            percentile(ours, 0.9) / percentile(base, 0.9),
            "(report)",
            None,
        ),
        Row("overhead per attempt, p50", (p50 - b50) * ms, None, "ms", None, "(report)", None),
    ]
    n = max(8, attempts)
    fan = min(timed(lambda: taskpoint.run(fan_of(noop, n))) for _ in range(3))
    bare_fan = min(
        timed(lambda: client.gather(client.map(bare, range(n), pure=False))) for _ in range(3)
    )
    rows.append(
        Row(
            f"map of {n}, per item (best of 3)",
            fan / n * ms,
            bare_fan / n * ms,
            "ms",
            fan / bare_fan,
            "(report)",
            None,
        )
    )
    return rows


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    sys.exit(main())
