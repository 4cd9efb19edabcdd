"""Engine overhead against baselines measured side by side in the same run.

    python -m benchmarks.engine_overhead [--calls 2000] [--repeats 15] [--flytekit-python PY]

Targets (issue: engine): per task call of a trivial task inside a workflow, inline, attempts
recorded: p50 <= 0.3 ms and >= 3x faster than flytekit's local execution of the same workflow;
per attempt with isolation="process": p50 <= 100 ms; `python -c "import taskpoint"` median
<= 150 ms. flytekit is a comparison, not a dependency: pass an interpreter that has it with
--flytekit-python (e.g. a separate venv's python); without one its rows print "skipped".
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

from benchmarks.common import Row, percentile, print_table, save_json

CHAIN = 50  # task calls per workflow in the like-for-like comparison with flytekit

TASKPOINT_CHAIN = f"""
import os, statistics, sys, tempfile, time
os.environ["TASKPOINT_HOME"] = tempfile.mkdtemp(prefix="tp-bench-")
from taskpoint import task, workflow

@task
def inc(x: int) -> int:
    return x + 1

@workflow
def chain(x: int) -> int:
    for _ in range({CHAIN}):
        x = inc(x=x)
    return x

samples = []
for _ in range(int(sys.argv[1])):
    start = time.perf_counter()
    chain(x=0)
    samples.append((time.perf_counter() - start) / {CHAIN})
print(statistics.median(samples))
"""

FLYTEKIT_CHAIN = f"""
import logging, statistics, sys, time
logging.disable(logging.WARNING)
from flytekit import task, workflow

@task
def inc(x: int) -> int:
    return x + 1

@workflow
def chain(x: int) -> int:
    for _ in range({CHAIN}):
        x = inc(x=x)
    return x

chain(x=0)  # warm-up: first run compiles and imports lazily
samples = []
for _ in range(int(sys.argv[1])):
    start = time.perf_counter()
    chain(x=0)
    samples.append((time.perf_counter() - start) / {CHAIN})
print(statistics.median(samples))
"""


def inline_call_samples(calls: int) -> tuple[list[float], list[float]]:
    """Per-call times of a trivial task inside one workflow, and of the bare function."""
    from taskpoint import run, task, workflow

    def bare(x: int) -> int:
        return x + 1

    inc = task(bare)
    samples: list[float] = []
    base: list[float] = []

    @workflow
    def loop(n: int) -> int:
        for i in range(n):
            start = time.perf_counter()
            inc(x=i)
            samples.append(time.perf_counter() - start)
            start = time.perf_counter()
            bare(x=i)
            base.append(time.perf_counter() - start)
        return n

    assert run(loop, n=calls).status == "succeeded"
    return samples, base


def process_samples(attempts: int) -> tuple[list[float], list[float]]:
    """Per-attempt time with isolation="process", and a bare fork + join + pipe round trip."""
    from taskpoint import run, task, workflow

    @task(isolation="process")
    def ident(x: int) -> int:
        return x

    samples: list[float] = []

    @workflow
    def loop(n: int) -> int:
        for i in range(n):
            start = time.perf_counter()
            ident(x=i)
            samples.append(time.perf_counter() - start)
        return n

    assert run(loop, n=attempts).status == "succeeded"
    mp = multiprocessing.get_context("fork")
    base = []
    for _ in range(attempts):
        start = time.perf_counter()
        receiver, sender = mp.Pipe(duplex=False)
        child = mp.Process(target=sender.send, args=(1,))
        child.start()
        receiver.recv()
        child.join()
        base.append(time.perf_counter() - start)
    return samples, base


def startup_medians(python: str, code: str, repeats: int) -> tuple[float, float]:
    """Median wall time of `python -c code` and of `python -c pass`, alternated.

    With bytecode, as an installed package has it (pip compiles it): a shell that sets
    ``PYTHONDONTWRITEBYTECODE`` would otherwise time compiling every module from source. One
    untimed run of each writes the bytecode first."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    for warm_up in (code, "pass"):
        subprocess.run([python, "-c", warm_up], check=True, env=env)
    ours, base = [], []
    for i in range(repeats):
        for which in ((code, ours), ("pass", base)) if i % 2 else (("pass", base), (code, ours)):
            start = time.perf_counter()
            subprocess.run([python, "-c", which[0]], check=True, env=env)
            which[1].append(time.perf_counter() - start)
    return statistics.median(ours), statistics.median(base)


def chain_per_call(python: str, source: str, repeats: int) -> float | None:
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as handle:
        handle.write(textwrap.dedent(source))
    try:
        done = subprocess.run(
            [python, handle.name, str(repeats)], capture_output=True, text=True, timeout=900
        )
    finally:
        os.unlink(handle.name)
    if done.returncode != 0:
        print(f"  ({python} failed: {done.stderr.strip().splitlines()[-1:]})")
        return None
    return float(done.stdout.strip().splitlines()[-1])


def has_flytekit(python: str) -> bool:
    return subprocess.run([python, "-c", "import flytekit"], capture_output=True).returncode == 0


def run(calls: int, attempts: int, repeats: int, flytekit_python: str | None) -> list[Row]:
    """Every row of this benchmark (records go to a fresh temporary TASKPOINT_HOME)."""
    previous = os.environ.get("TASKPOINT_HOME")
    os.environ["TASKPOINT_HOME"] = tempfile.mkdtemp(prefix="tp-bench-")
    try:
        return _rows(calls, attempts, repeats, flytekit_python)
    finally:
        if previous is None:
            os.environ.pop("TASKPOINT_HOME", None)
        else:
            os.environ["TASKPOINT_HOME"] = previous


def _rows(calls: int, attempts: int, repeats: int, flytekit_python: str | None) -> list[Row]:
    rows: list[Row] = []
    ms = 1e3

    samples, base = inline_call_samples(calls)
    p50, b50 = percentile(samples, 0.5) * ms, percentile(base, 0.5) * ms
    rows.append(
        Row(
            "inline task call p50 (vs bare call)",
            p50,
            b50,
            "ms",
            p50 / b50,
            "<= 0.3 ms",
            p50 <= 0.3,
        )
    )
    p99 = percentile(samples, 0.99) * ms
    rows.append(Row("inline task call p99", p99, None, "ms", None, "", None))

    samples, base = process_samples(attempts)
    p50, b50 = percentile(samples, 0.5) * ms, percentile(base, 0.5) * ms
    rows.append(
        Row(
            "process attempt p50 (vs bare fork+pipe)",
            p50,
            b50,
            "ms",
            p50 / b50,
            "<= 100 ms",
            p50 <= 100,
        )
    )

    ours, base = startup_medians(sys.executable, "import taskpoint", repeats)
    rows.append(
        Row(
            "python -c 'import taskpoint' median (vs pass)",
            ours * ms,
            base * ms,
            "ms",
            ours / base,
            "<= 150 ms",
            ours * ms <= 150,
        )
    )

    chain = chain_per_call(sys.executable, TASKPOINT_CHAIN, repeats)
    flyte = flytekit_python or sys.executable
    if chain is not None and has_flytekit(flyte):
        theirs = chain_per_call(flyte, FLYTEKIT_CHAIN, repeats)
        if theirs is not None:
            rows.append(
                Row(
                    f"{CHAIN}-call workflow, per call (vs flytekit)",
                    chain * ms,
                    theirs * ms,
                    "ms",
                    theirs / chain,
                    ">= 3x faster",
                    theirs / chain >= 3,
                )
            )
            fl_import, fl_base = startup_medians(flyte, "import flytekit", max(5, repeats // 3))
            rows.append(
                Row(
                    "python -c 'import flytekit' median (vs pass)",
                    fl_import * ms,
                    fl_base * ms,
                    "ms",
                    fl_import / fl_base,
                    "(reference)",
                    None,
                )
            )
    else:
        print("flytekit comparison: skipped (no interpreter with flytekit; see --flytekit-python)")
        if chain is not None:
            rows.append(
                Row(
                    f"{CHAIN}-call workflow, per call",
                    chain * ms,
                    None,
                    "ms",
                    None,
                    "(flytekit skipped)",
                    None,
                )
            )

    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--attempts", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--flytekit-python", default=os.environ.get("FLYTEKIT_PYTHON"))
    args = parser.parse_args()
    rows = run(args.calls, args.attempts, args.repeats, args.flytekit_python)
    print_table(
        "taskpoint engine overhead (ratio = taskpoint / baseline; vs flytekit: speed-up)", rows
    )
    path = save_json("engine_overhead", rows, vars(args))
    print(f"\nsaved {os.path.relpath(path)}")


if __name__ == "__main__":
    main()
