"""PyFlink inside a task: a keyed running count preempted (SIGTERM) and killed (SIGKILL) resumes
exactly: final counts equal an uninterrupted run's, no record lost or counted twice in state.

Needs apache-flink 2.x and Java 17. PyFlink pins pyarrow/grpcio/numpy below what PySpark and the
rest of the test environment use, so it lives in its own virtual environment; where it is not
installed these tests are skipped and say so.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

pytest.importorskip(
    "pyflink",
    reason="apache-flink (PyFlink 2.x) is not installed here; it needs its own virtual "
    "environment: pip install 'taskpoint[flink]' pytest pytest-timeout",
)

from pyflink.common import Types, WatermarkStrategy
from pyflink.datastream import KeyedProcessFunction, MapFunction, RuntimeContext
from pyflink.datastream.connectors.number_seq import NumberSequenceSource
from pyflink.datastream.state import ValueStateDescriptor

import taskpoint
from taskpoint import Checkpoint, current_context, task
from taskpoint.engine import configure
from taskpoint.errors import TaskpointError
from taskpoint.integrations.flink import FlinkCheckpointer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

N, KEYS = 4000, 13
JOB_SETTINGS = {
    "parallelism.default": "2",
    # Small Python bundles keep the source close to the slow map chained to it, so few records
    # are in flight when a checkpoint or the stop-with-savepoint barrier passes.
    "execution.checkpointing.unaligned.enabled": "true",
    "python.fn-execution.bundle.size": "50",
    "python.fn-execution.bundle.time": "100",
}


class CountPerKey(KeyedProcessFunction):
    """Running count per key in Flink keyed state; emits (key, count, record)."""

    def open(self, runtime_context: RuntimeContext) -> None:
        self.count = runtime_context.get_state(ValueStateDescriptor("count", Types.LONG()))

    def process_element(self, value, ctx):
        n = (self.count.value() or 0) + 1
        self.count.update(n)
        yield value % KEYS, n, value


def slowly(value: int) -> int:
    time.sleep(0.003)  # about 650 records/s over two subtasks: slow enough to interrupt
    return value


class AppendLines(MapFunction):
    """A plain (at-least-once) sink: one CSV file per attempt and worker process."""

    def __init__(self, out: str, attempt: int) -> None:
        self.out, self.attempt = out, attempt

    def open(self, runtime_context: RuntimeContext) -> None:
        path = os.path.join(self.out, f"{self.attempt}-{os.getpid()}.csv")
        self.file = open(path, "a")  # noqa: SIM115 - closed in close()

    def map(self, value):
        self.file.write(f"{value[0]},{value[1]},{value[2]}\n")
        self.file.flush()
        return value[0]

    def close(self) -> None:
        self.file.close()


def note(path: str, line: str) -> None:
    with open(path, "a") as out:
        out.write(line + "\n")


@task(isolation="spawn", system_retries=3)
def running_counts(out: str, log: str) -> str:
    attempt = current_context().attempt
    note(log, f"start {attempt} {os.getpid()}")
    with FlinkCheckpointer(every_ms=300) as flink:
        note(log, f"restored {attempt} {(flink.resumed or {}).get('kind')}")
        env = flink.environment(JOB_SETTINGS)
        numbers = env.from_source(
            NumberSequenceSource(0, N - 1), WatermarkStrategy.no_watermarks(), "numbers"
        )
        numbers = numbers.map(slowly, output_type=Types.LONG())
        counts = numbers.key_by(lambda i: i % KEYS, key_type=Types.LONG()).process(
            CountPerKey(), output_type=Types.TUPLE([Types.LONG(), Types.LONG(), Types.LONG()])
        )
        counts.map(AppendLines(out, attempt), output_type=Types.LONG())
        flink.execute(env, "running counts")
    return "finished"


@pytest.fixture(autouse=True)
def tp_home(tp_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The shared private home (tests/conftest.py), with a 90 s grace period."""
    configure(grace=90.0)
    return tp_home


def read_rows(out: Path) -> dict[int, list[tuple[int, int, int]]]:
    """Sink rows by attempt: (key, count, record)."""
    rows: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
    for path in out.glob("*.csv"):
        attempt = int(path.name.split("-")[0])
        for line in path.read_text().splitlines():
            parts = line.split(",")
            if len(parts) == 3 and all(p.isdigit() for p in parts):  # a SIGKILL may cut a line
                rows[attempt].append(tuple(map(int, parts)))  # type: ignore[arg-type]
    return rows


def pid_of(log: Path, attempt: int) -> int | None:
    if not log.exists():
        return None
    for row in log.read_text().splitlines():
        parts = row.split()
        if parts[:2] == ["start", str(attempt)]:
            return int(parts[2])
    return None


def interrupter(home: Path, out: Path, log: Path) -> threading.Thread:
    """SIGTERM attempt 1 a fifth of the way in; SIGKILL attempt 2 after it saved checkpoints."""

    def saved(attempt: int) -> int:
        """Versions committed by ``attempt`` so far (their seq numbers count up from 1)."""
        seqs = [0]
        for v in (home / "blobs").glob("*/nodes/*/checkpoints/v"):
            try:
                names = os.listdir(v)
            except FileNotFoundError:
                continue
            seqs += [
                int(n[5:11])
                for n in names
                if n.startswith(f"{attempt:04d}-") and n.endswith(".manifest.json")
            ]
        return max(seqs)

    def wait_then(attempt: int, ready, sig: signal.Signals) -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            pid = pid_of(log, attempt)
            if pid is not None and ready():
                os.kill(pid, sig)
                return
            time.sleep(0.05)

    def run() -> None:
        wait_then(1, lambda: len(read_rows(out)[1]) >= N // 5, signal.SIGTERM)
        wait_then(2, lambda: saved(2) >= 3 and len(read_rows(out)[2]) >= N // 5, signal.SIGKILL)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_preempted_then_killed_job_ends_with_exact_counts(tmp_path: Path, tp_home: Path) -> None:
    out, log = tmp_path / "out", tmp_path / "attempts.log"
    out.mkdir()
    thread = interrupter(tp_home, out, log)
    execution = taskpoint.run(running_counts, out=str(out), log=str(log))
    thread.join(1)
    assert execution.status == "succeeded", execution.error
    assert [a.status for a in execution.nodes[0].attempts] == ["preempted", "lost", "succeeded"]
    restored = [r.split()[2] for r in log.read_text().splitlines() if r.startswith("restored")]
    assert restored == ["None", "savepoint", "checkpoint"]

    rows = read_rows(out)
    # An uninterrupted run ends with these counts (each key's count = its number of records).
    expected = Counter(i % KEYS for i in range(N))
    final: dict[int, int] = defaultdict(int)
    for attempt_rows in rows.values():
        for key, count, _ in attempt_rows:
            final[key] = max(final[key], count)
    assert dict(final) == dict(expected)
    # State never skipped or double-counted a record: the counts of each key are exactly 1..n.
    pairs = {(key, count) for attempt_rows in rows.values() for key, count, _ in attempt_rows}
    assert pairs == {(k, c) for k, n in expected.items() for c in range(1, n + 1)}
    # Every record reached the sink; a replayed record got the same count again.
    by_record: dict[int, set[tuple[int, int]]] = defaultdict(set)
    for attempt_rows in rows.values():
        for key, count, record in attempt_rows:
            by_record[record].add((key, count))
    assert set(by_record) == set(range(N))
    # The savepoint stopped the job exactly: attempt 2 started where attempt 1's output ended.
    first, second = {r for *_, r in rows[1]}, {r for *_, r in rows[2]}
    assert first and second and not (first & second)
    assert len(rows[1]) == len(first)  # nothing replayed inside attempt 1


def test_unmovable_state_settings_are_refused(tmp_path: Path) -> None:
    with Checkpoint.open(tmp_path / "ckpt") as cp:
        flink = FlinkCheckpointer(checkpoint=cp, every_ms=200, work_dir=tmp_path / "work")
        conf = flink.settings({"parallelism.default": "1"})
        assert conf["execution.checkpointing.externalized-checkpoint-retention"] == (
            "RETAIN_ON_CANCELLATION"
        )
        assert conf["restart-strategy.type"] == "none"
        assert conf["execution.checkpointing.interval"] == "200ms"
        assert conf["python.executable"] == sys.executable
        assert "execution.state-recovery.path" not in conf
        for key in ("execution.checkpointing.incremental", "state.backend.incremental"):
            with pytest.raises(TaskpointError, match="absolute path"):
                flink.settings({key: "true"})
        flink.close()


def test_a_forked_attempt_refuses_the_parents_jvm(tmp_path: Path) -> None:
    """Killing a forked attempt would not stop a JVM it inherited: the integration says so."""
    from pyflink.java_gateway import get_gateway

    get_gateway()  # this (the driver) process now runs a PyFlink JVM

    @task(isolation="process", system_retries=0)
    def forked() -> None:
        FlinkCheckpointer(work_dir=str(tmp_path / "work"))

    execution = taskpoint.run(forked)
    assert execution.status == "failed"
    assert "already runs a PyFlink JVM" in execution.error
    assert "isolation='spawn'" in execution.error


def test_outside_a_task_without_a_checkpoint_says_so() -> None:
    with pytest.raises(TaskpointError, match="outside a task"):
        FlinkCheckpointer()


def test_missing_pyflink_names_the_extra_to_install() -> None:
    code = (
        "import sys; sys.modules['pyflink'] = None\n"
        "import taskpoint.integrations\n"
        "try:\n    import taskpoint.integrations.flink\n"
        "except Exception as exc:\n    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "TaskpointError" in out.stdout and "pip install 'taskpoint[flink]'" in out.stdout
