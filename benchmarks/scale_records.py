"""Records at scale (part of ``benchmarks.scale``): ``taskpoint list --limit 50``, ``taskpoint
show``, the web view's API and ``resume``, in one home grown from 100 to 100,000 executions; and
``show`` / ``resume`` of one execution of 10,000 nodes against one of 100, per node.

The home is grown by writing synthetic executions (two nodes, one attempt each, as a short
workflow leaves them) through the records layer in batches (`taskpoint.records.bulk`); the
executions that are shown and resumed are real ones, run by the engine from a task file. The CLI
runs in this process (``run_cli``, output captured) so an interpreter's start-up is not in the
figures; the web view is a real server on a free loopback port, asked over HTTP.
"""

from __future__ import annotations

import contextlib
import io
import pickle
import statistics
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks.common import rotate
from taskpoint.engine.events import Listener

TASK_FILE = """
from taskpoint import task, workflow

@task
def inc(x: int) -> int:
    return x + 1

@task
def refuse(x: int) -> int:
    raise ValueError(f"refused {x}")

@workflow
def short(x: int) -> int:
    return refuse(x=inc(x=inc(x=x)))

@workflow
def wide(n: int) -> int:
    total = 0
    for i in range(n):
        total += inc(x=i)
    return refuse(x=total)
"""

BATCH = 10_000  # synthetic executions per transaction
METRICS = ("list", "show", "show prefix", "api list", "api list first", "api execution", "resume")


class Quiet(Listener):
    """A listener of its own, so ``run`` prints no how-to-resume line per execution."""


def synthetic(first: int, count: int, now: float) -> tuple[list, list, list]:
    """Executions ``first .. first+count-1`` (older than any real one), each with two nodes of
    one attempt: most succeeded, some failed or were preempted."""
    from taskpoint.records import AttemptRecord, ExecutionRecord, NodeRecord
    from taskpoint.records.preview import inputs_preview, make_preview

    execs, nodes, attempts = [], [], []
    for i in range(first, first + count):
        eid = f"5ca1e{i:07x}"
        created = now - 30 * 86400 + i * 0.01
        status = "failed" if i % 50 == 7 else "preempted" if i % 50 == 9 else "succeeded"
        execs.append(
            ExecutionRecord(
                eid, "synthetic", "workflow", "synthetic_tasks", None, "synthetic",
                inputs_preview({"x": i}), None, "unused://", status, None,
                "ValueError" if status == "failed" else None, None, None,
                "inc#2" if status == "failed" else None, created, created, created + 1.0,
                None, None, None, make_preview(i + 2) if status == "succeeded" else None,
            )
        )  # fmt: skip
        for k in (1, 2):
            key = f"inc#{k}"
            ok = status == "succeeded" or k == 1
            node_status = "succeeded" if ok else status
            nodes.append(
                NodeRecord(
                    eid, key, "inc", node_status, 1, 1, pickle.dumps(i + k) if ok else None,
                    None, None, None, created + k * 0.1, created + k * 0.1 + 0.05,
                    make_preview(i + k) if ok else None,
                )
            )  # fmt: skip
            attempts.append(
                AttemptRecord(
                    eid, key, 1, node_status, None, None, None, created + k * 0.1,
                    created + k * 0.1 + 0.05, 1234, None, None, 1,
                )
            )  # fmt: skip
    return execs, nodes, attempts


class RecordsBench:
    """One home, grown in steps; the real executions it shows and resumes."""

    def __init__(self, workdir: str, repeats: int, wide_nodes: int, narrow_nodes: int) -> None:
        from taskpoint.engine.config import Engine
        from taskpoint.engine.loader import load_file

        root = Path(workdir) / "records"
        root.mkdir(parents=True)
        (root / "scale_tasks.py").write_text(TASK_FILE)
        self.tasks = load_file(root / "scale_tasks.py")
        self.home = str(root / "home")
        self.engine = Engine(home=self.home, backend="inline", listener=Quiet())
        self.repeats = repeats
        self.size = 0
        self.now = time.time()
        self.short_id = self._run(self.tasks.short, x=1)
        # Resumed in every round: each resume adds an attempt, so the execution that is shown
        # must be another one (else a bigger home would also mean a longer one to show).
        self.resumed_id = self._run(self.tasks.short, x=2)
        self.wide_id = self._run(self.tasks.wide, n=wide_nodes)
        self.narrow_id = self._run(self.tasks.wide, n=narrow_nodes)
        self.wide_nodes, self.narrow_nodes = wide_nodes, narrow_nodes

    def _run(self, fn: Any, **kwargs: Any) -> str:
        execution = self.engine.run(fn, **kwargs)
        if execution.status != "failed":
            raise RuntimeError(f"{fn.name} ended {execution.status}, expected failed")
        return execution.id

    def grow(self, size: int) -> float:
        """Add synthetic executions up to ``size`` in all; seconds it took."""
        from taskpoint.records.bulk import insert_records

        records = self.engine.records()
        start = time.perf_counter()
        while self.size < size:
            count = min(BATCH, size - self.size)
            insert_records(records, *synthetic(self.size, count, self.now))
            self.size += count
        return time.perf_counter() - start

    # -- what is measured ------------------------------------------------------------------------

    def cli(self, *args: str) -> float:
        from taskpoint.cli.app import run_cli

        out = io.StringIO()
        start = time.perf_counter()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = run_cli(["--home", self.home, *args])
        elapsed = time.perf_counter() - start
        if code != 0:
            raise RuntimeError(f"taskpoint {' '.join(args)} exited {code}: {out.getvalue()[-800:]}")
        return elapsed

    def resume(self, execution_id: str) -> float:
        start = time.perf_counter()
        execution = self.engine.resume(execution_id)
        elapsed = time.perf_counter() - start
        if execution.status != "failed":
            raise RuntimeError(f"resume of {execution_id} ended {execution.status}")
        return elapsed

    def measure(self) -> dict[str, float]:
        """Median milliseconds of each metric at the current size."""
        with WebView(self.engine) as web:
            first = web.get("/api/executions?limit=50")  # the status counts computed anew
            samples = rounds(
                {
                    "list": lambda: self.cli("list", "--limit", "50"),
                    "show": lambda: self.cli("show", self.short_id),
                    "show prefix": lambda: self.cli("show", self.short_id[:8]),
                    "api list": lambda: web.get("/api/executions?limit=50"),
                    "api execution": lambda: web.get(f"/api/executions/{self.short_id}"),
                },
                self.repeats,
            )
        samples["api list first"] = [first]
        # Last: a resume adds an attempt (a write), which the web view's count cache notices.
        samples["resume"] = [self.resume(self.resumed_id) for _ in range(self.repeats)]
        return {name: statistics.median(values) * 1e3 for name, values in samples.items()}

    def measure_wide(self) -> dict[str, float]:
        """``show`` and ``resume`` of the wide and the narrow execution: milliseconds per node."""
        out: dict[str, float] = {}
        for label, eid, nodes in (
            ("wide", self.wide_id, self.wide_nodes),
            ("narrow", self.narrow_id, self.narrow_nodes),
        ):
            shows = [self.cli("show", eid) for _ in range(max(2, self.repeats // 2))]
            resumes = [self.resume(eid) for _ in range(max(2, self.repeats // 2))]
            out[f"show {label}"] = statistics.median(shows) * 1e3 / nodes
            out[f"resume {label}"] = statistics.median(resumes) * 1e3 / nodes
        return out


def rounds(fns: dict[str, Any], repeats: int) -> dict[str, list[float]]:
    """Each function once per round, the order rotated each round; one warm-up call each."""
    for fn in fns.values():
        fn()
    return rotate(fns, repeats)


class WebView:
    """The web view's server on a free loopback port, in a thread of this process."""

    def __init__(self, engine: Any) -> None:
        from taskpoint.ui.server import make_server

        self.server = make_server(engine, port=0)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        # No proxy from the environment: the request must reach this server.
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def __enter__(self) -> WebView:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()

    def get(self, path: str) -> float:
        start = time.perf_counter()
        with self.opener.open(f"http://127.0.0.1:{self.server.port}{path}") as response:
            response.read()
            if response.status != 200:
                raise RuntimeError(f"GET {path}: HTTP {response.status}")
        return time.perf_counter() - start


def run(workdir: str, sizes: list[int], repeats: int, wide: int, narrow: int) -> dict[str, Any]:
    bench = RecordsBench(workdir, repeats, wide, narrow)
    by_size: dict[str, list[float]] = {name: [] for name in METRICS}
    grow_s = []
    for size in sizes:
        grow_s.append(bench.grow(size))
        print(f"   records: {size} executions", flush=True)
        for name, value in bench.measure().items():
            by_size[name].append(value)
    return {
        "sizes": sizes,
        "ms": by_size,
        "grow_s": grow_s,
        "per_node_ms": bench.measure_wide(),
        "wide_nodes": wide,
        "narrow_nodes": narrow,
    }
