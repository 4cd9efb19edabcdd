"""Spark Structured Streaming inside a task: a query SIGKILLed mid-run resumes exactly.

Each attempt runs in a spawned child (``isolation="spawn"``: the test process may hold a JVM of
its own, and a forked child must not share it) with its own local[2] Spark. The test kills the
attempt's process with SIGKILL in the middle of a micro-batch; the engine retries it (system
budget) and the next attempt restores the query's checkpoint from the task checkpoint.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("pyspark")

from spark_support import local_session

import taskpoint
from taskpoint import task
from taskpoint.engine import configure

N_FILES = 12
WORDS = [f"w{i:02d}" for i in range(23)]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def session():
    """The session shared by the tasks and the test."""
    return local_session("taskpoint-test")


def note(path: str, line: str) -> None:
    with open(path, "a") as out:
        out.write(f"{line} {time.time():.2f}\n")
        out.flush()
        os.fsync(out.fileno())


@task(isolation="spawn", system_retries=3)
def count_words(inbox: str, outbox: str, log: str) -> list:
    """Running word counts (update mode) written per batch through idempotent_foreach_batch."""
    from pyspark.sql import functions as F

    from taskpoint import current_context
    from taskpoint.integrations.spark import SparkStreamCheckpointer, idempotent_foreach_batch

    spark = session()
    attempt = current_context().attempt
    write = idempotent_foreach_batch(outbox)

    def each_batch(df, batch_id: int) -> None:
        note(log, f"start {attempt} {batch_id} {os.getpid()}")
        write(df, batch_id)
        note(log, f"done {attempt} {batch_id}")

    with SparkStreamCheckpointer(spark) as stream:
        note(log, f"restored {attempt} {stream.resumed_step} {os.getpid()}")
        words = (
            spark.readStream.option("maxFilesPerTrigger", 1)
            .text(inbox)
            .select(F.explode(F.split("value", " ")).alias("word"))
        )
        counts = words.groupBy("word").count()
        stream.start(
            counts.writeStream.outputMode("update")
            .foreachBatch(each_batch)
            .trigger(availableNow=True)
        )
        stream.await_termination()
    rows = spark.read.parquet(outbox).collect()
    return [(r.batch_id, r.word, r["count"]) for r in rows]


@task(isolation="spawn", system_retries=2)
def copy_lines(inbox: str, sink: str, log: str) -> list:
    """Append-mode query into a parquet file sink (exactly-once through _spark_metadata)."""
    from pyspark.sql import functions as F

    from taskpoint import current_context
    from taskpoint.integrations.spark import SparkStreamCheckpointer

    spark = session()
    attempt = current_context().attempt

    with SparkStreamCheckpointer(spark, sinks=[sink]) as stream:
        note(log, f"restored {attempt} {stream.resumed_step} {os.getpid()}")
        lines = (
            spark.readStream.option("maxFilesPerTrigger", 1)
            .text(inbox)
            .select(F.input_file_name().alias("file"), "value")
        )
        stream.start(
            lines.writeStream.format("parquet").option("path", sink).trigger(availableNow=True)
        )
        stream.await_termination()
    rows = spark.read.parquet(sink).collect()
    return [(r.file.rsplit("/", 1)[-1], r.value) for r in rows]


@pytest.fixture(autouse=True)
def tp_home(tp_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The shared private home (tests/conftest.py), with a 60 s grace period."""
    configure(grace=60.0)
    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)
    return tp_home


def write_inbox(inbox: Path, seed: int) -> list[str]:
    rng = random.Random(seed)
    inbox.mkdir(parents=True)
    lines = []
    for i in range(N_FILES):
        text = [" ".join(rng.choices(WORDS, k=rng.randint(3, 9))) for _ in range(12)]
        (inbox / f"part-{i:03d}.txt").write_text("\n".join(text) + "\n")
        os.utime(inbox / f"part-{i:03d}.txt", (1_700_000_000 + i, 1_700_000_000 + i))
        lines += text
    return lines


def signal_when(log: Path, steps) -> threading.Thread:
    """For each ``(attempt, ready, delay, signal)``: once ``ready()`` holds, wait ``delay``
    seconds and send ``signal`` to that attempt's process."""

    def pid_of(attempt: int) -> int:
        rows = [r.split() for r in log.read_text().splitlines()]
        return next(int(r[3]) for r in rows if r[0] == "restored" and r[1] == str(attempt))

    def watch() -> None:
        deadline = time.monotonic() + 250
        for attempt, ready, delay, sig in steps:
            while time.monotonic() < deadline and not ready():
                time.sleep(0.02)
            time.sleep(delay)
            os.kill(pid_of(attempt), sig)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def started_batches(log: Path, attempt: int) -> int:
    if not log.exists():
        return 0
    return sum(1 for r in log.read_text().splitlines() if r.startswith(f"start {attempt} "))


def committed(home: Path, attempt: int) -> bool:
    """Has ``attempt`` committed a checkpoint version yet (a manifest exists)?"""
    for scope in (home / "blobs").glob("*/nodes/*/checkpoints/v"):
        try:
            if any(
                n.startswith(f"{attempt:04d}-") and n.endswith(".json") for n in os.listdir(scope)
            ):
                return True
        except FileNotFoundError:
            continue
    return False


def attempts(execution) -> list[str]:
    return [a.status for a in execution.nodes[0].attempts]


def why(execution) -> str:
    """The execution's error, and for a preempted one what that means here: the tests signal
    attempts' processes only, so the driver (this pytest process) itself got SIGTERM. If the
    query's JVM got it too ("stopping the preempted streaming query failed"), the whole process
    group did: an outer ``timeout`` (which signals its process group) expired, or the machine
    is stopping. Not a failure of the code under test."""
    if execution.status != "preempted":
        return str(execution.error)
    return (
        f"{execution.error} -- the pytest process received SIGTERM from outside the test (an "
        "outer `timeout` expiring signals the whole process group; use a longer one, or "
        "`timeout --foreground`)"
    )


def resumed_stepes(log: Path) -> list[str]:
    return [r.split()[2] for r in log.read_text().splitlines() if r.startswith("restored")]


def test_word_counts_preempted_then_killed_end_exactly_like_an_uninterrupted_run(
    tmp_path: Path, tp_home: Path
) -> None:
    lines = write_inbox(tmp_path / "inbox", seed=1)
    expected = Counter(word for line in lines for word in line.split())

    log = tmp_path / "batches.log"
    rng = random.Random(7)
    interrupter = signal_when(
        log,
        [  # SIGTERM in attempt 1's fourth batch, SIGKILL in attempt 2's third
            (1, lambda: started_batches(log, 1) >= 4, rng.uniform(0.05, 0.3), signal.SIGTERM),
            (
                2,
                lambda: started_batches(log, 2) >= 3 and committed(tp_home, 2),
                rng.uniform(0.05, 0.3),
                signal.SIGKILL,
            ),
        ],
    )
    execution = taskpoint.run(
        count_words, inbox=str(tmp_path / "inbox"), outbox=str(tmp_path / "out"), log=str(log)
    )
    interrupter.join(1)
    assert execution.status == "succeeded", why(execution)
    assert attempts(execution) == ["preempted", "lost", "succeeded"]
    restored = resumed_stepes(log)
    assert restored[0] == "None" and int(restored[1]) >= 1, restored  # resumed, not restarted
    assert int(restored[2]) > int(restored[1]), restored

    # The final counts: the newest update of each word over all batch directories.
    rows = execution.result
    latest: dict[str, tuple[int, int]] = {}
    for batch_id, word, count in rows:
        if word not in latest or batch_id > latest[word][0]:
            latest[word] = (batch_id, count)
    assert {w: c for w, (_, c) in latest.items()} == dict(expected)
    # Each batch's output is there once: re-run batches replaced what their first run wrote.
    assert sorted({b for b, _, _ in rows}) == list(range(N_FILES))
    assert len(rows) == len({(b, w) for b, w, _ in rows})


def test_file_sink_killed_mid_run_holds_every_line_exactly_once(
    tmp_path: Path, tp_home: Path
) -> None:
    lines = write_inbox(tmp_path / "inbox", seed=2)
    sink = tmp_path / "sink"
    log = tmp_path / "batches.log"

    def sink_has(n: int) -> bool:
        return (sink / "_spark_metadata" / str(n - 1)).exists()

    killer = signal_when(
        log,
        [
            (
                1,
                lambda: sink_has(4) and committed(tp_home, 1),
                random.Random(3).uniform(0.0, 0.3),
                signal.SIGKILL,
            )
        ],
    )
    execution = taskpoint.run(
        copy_lines, inbox=str(tmp_path / "inbox"), sink=str(sink), log=str(log)
    )
    killer.join(1)
    assert execution.status == "succeeded", why(execution)
    assert attempts(execution) == ["lost", "succeeded"]
    restored = resumed_stepes(log)
    assert restored[0] == "None" and int(restored[1]) >= 1, restored

    got = sorted(value for _, value in execution.result)
    assert got == sorted(lines)  # every line once: none lost, none duplicated
    per_file = Counter(name for name, _ in execution.result)
    assert per_file == {f"part-{i:03d}.txt": 12 for i in range(N_FILES)}
