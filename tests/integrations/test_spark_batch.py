"""Spark batch and iterative jobs: save_dataframe / restore_dataframe through task checkpoints.

One local[2] session for the module (attempts run inline, in this process): the iterative job is
interrupted by a failure after some iterations, retried by the engine, and must end with exactly
the result of an uninterrupted run.
"""

from __future__ import annotations

import datetime as dt
import decimal
import os
import random
from pathlib import Path

import pytest

pytest.importorskip("pyspark")

from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from spark_support import local_session

import taskpoint
from taskpoint import Checkpoint, RecoverableError, current_context, task
from taskpoint.errors import CheckpointError
from taskpoint.integrations.spark import restore_dataframe, save_dataframe

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

N_NODES, N_EDGES, ITERATIONS, SAVE_EVERY = 300, 260, 6, 2


@pytest.fixture(scope="module")
def spark():
    session = local_session("taskpoint-test-batch")
    yield session
    session.stop()


@pytest.fixture(autouse=True)
def tp_home(tp_home: Path) -> Path:
    """This suite runs the engine in every test: the shared private home (tests/conftest.py)."""
    return tp_home


def graph_edges(spark: SparkSession):
    rng = random.Random(11)
    edges = [(rng.randrange(N_NODES), rng.randrange(N_NODES)) for _ in range(N_EDGES)]
    both = edges + [(b, a) for a, b in edges]
    return spark.createDataFrame(both, "src long, dst long")


def propagate(labels, edges):
    """One label-propagation step of connected components: each node takes the smallest label
    among itself and its neighbours (integers: exact whatever the partitioning)."""
    offers = edges.join(labels, edges.src == labels.node).select(
        edges.dst.alias("node"), labels.label
    )
    return (labels.unionByName(offers).groupBy("node").agg(F.min("label").alias("label"))).select(
        "node", "label"
    )


def components(spark: SparkSession, iterations: int, fail_after: int | None, log: list) -> list:
    edges = graph_edges(spark).cache()
    restored = restore_dataframe(spark)
    if restored is None:
        step, labels = 0, spark.range(N_NODES).select(F.col("id").alias("node"), "id")
        labels = labels.withColumnRenamed("id", "label")
    else:
        step, labels = restored
    log.append(("start", current_context().attempt, step))
    for i in range(step, iterations):
        labels = propagate(labels, edges)
        if (i + 1) % SAVE_EVERY == 0:
            labels = save_dataframe(labels, i + 1)
        if fail_after is not None and i + 1 == fail_after and current_context().attempt == 1:
            raise RecoverableError(f"simulated failure after iteration {i + 1}")
    return sorted(tuple(r) for r in labels.collect())


def test_interrupted_iterative_job_resumes_to_the_identical_result(spark) -> None:
    log: list = []

    @task(retries=0)
    def uninterrupted() -> list:
        return components(spark, ITERATIONS, None, log)

    @task(retries=2)
    def interrupted() -> list:
        return components(spark, ITERATIONS, 5, log)

    expected = taskpoint.run(uninterrupted).unwrap()
    execution = taskpoint.run(interrupted)
    assert execution.status == "succeeded", execution.error
    assert [a.status for a in execution.nodes[0].attempts] == ["recoverable", "succeeded"]
    assert log[1:] == [("start", 1, 0), ("start", 2, 4)]  # resumed at the last save
    assert execution.result == expected
    assert len({label for _, label in expected}) < N_NODES  # the job did merge components


def test_round_trip_keeps_schema_rows_and_step(spark, tmp_path: Path) -> None:
    rows = [
        (1, "a", decimal.Decimal("1.25"), dt.date(2024, 1, 2), [1, 2], {"k": 1.5}, None),
        (2, None, decimal.Decimal("-3.50"), None, [], {}, (7, "x")),
    ]
    schema = (
        "id long, name string, amount decimal(10,2), day date, xs array<int>, "
        "m map<string,double>, s struct<n:int,t:string>"
    )
    df = spark.createDataFrame(rows, schema)
    with Checkpoint.open(tmp_path / "ckpt") as cp:
        assert restore_dataframe(spark, checkpoint=cp) is None
        back = save_dataframe(df, 3, checkpoint=cp, blocking=True)
        assert back.schema == df.schema
        assert back.rdd.toDebugString() != df.rdd.toDebugString()
        save_dataframe(df.where("id = 2"), 5, checkpoint=cp)
        cp.wait()
        version = cp.latest()
        assert version is not None and version.step == 5 and version.kind == "dir"
    with Checkpoint.open(tmp_path / "ckpt", attempt=2) as cp:  # a later attempt, new session
        step, restored = restore_dataframe(spark, checkpoint=cp)
        assert step == 5
        assert restored.schema == df.schema
        assert restored.collect() == df.where("id = 2").collect()


def test_a_checkpoint_that_is_no_dataframe_is_refused(spark, tmp_path: Path) -> None:
    with Checkpoint.open(tmp_path / "ckpt") as cp:
        cp.write(b"not a dataframe")
        with pytest.raises(CheckpointError, match="not a DataFrame saved by save_dataframe"):
            restore_dataframe(spark, checkpoint=cp)


def test_outside_a_task_without_a_checkpoint_says_so(spark) -> None:
    with pytest.raises(taskpoint.TaskpointError, match="outside a task"):
        restore_dataframe(spark)


ROCKSDB = "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"
STORE_CONF = {
    "hdfs": {},
    "rocksdb": {"spark.sql.streaming.stateStore.providerClass": ROCKSDB},
    "rocksdb-changelog": {
        "spark.sql.streaming.stateStore.providerClass": ROCKSDB,
        "spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled": "true",
    },
}


@pytest.fixture(params=sorted(STORE_CONF))
def state_store(request, spark):
    """The streaming state store provider (a SQL conf read when a query starts)."""
    conf = STORE_CONF[request.param]
    for key, value in conf.items():
        spark.conf.set(key, value)
    yield request.param
    for key in conf:
        spark.conf.unset(key)


def test_failed_query_is_recoverable_and_the_next_attempt_continues(
    spark, tmp_path, state_store
) -> None:
    """In-process: batch 2 fails, await_termination raises RecoverableError after saving the cut
    of batch 1; a second attempt on the same scope restores it (into another directory) and ends
    with exact counts, with the default (HDFS-backed) and the RocksDB state stores."""
    from pyspark.sql.streaming import StreamingQueryException

    from taskpoint.integrations.spark import SparkStreamCheckpointer, idempotent_foreach_batch

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for i in range(4):
        (inbox / f"f{i}.txt").write_text("a b\n" * (i + 1))
        os.utime(inbox / f"f{i}.txt", (1_700_000_000 + i,) * 2)
    write = idempotent_foreach_batch(tmp_path / "out")

    def run(attempt: int) -> SparkStreamCheckpointer:
        def each(df, batch_id: int) -> None:
            if attempt == 1 and batch_id == 2:
                raise ValueError("boom in batch 2")
            write(df, batch_id)

        with Checkpoint.open(tmp_path / "ckpt", attempt=attempt) as cp:
            with SparkStreamCheckpointer(
                spark, checkpoint=cp, work_dir=tmp_path / "work"
            ) as stream:
                words = spark.readStream.option("maxFilesPerTrigger", 1).text(str(inbox))
                words = words.select(F.explode(F.split("value", " ")).alias("w"))
                stream.start(
                    words.groupBy("w")
                    .count()
                    .writeStream.outputMode("update")
                    .foreachBatch(each)
                    .trigger(availableNow=True)
                )
                stream.await_termination()
            return stream

    with pytest.raises(RecoverableError, match="streaming query failed") as failure:
        run(1)
    assert isinstance(failure.value.__cause__, StreamingQueryException)
    with Checkpoint.open(tmp_path / "ckpt") as cp:  # which state store wrote the snapshot
        saved = {p.suffix for p in cp.restore(tmp_path / "look").rglob("state/0/0/*")}
    assert {"hdfs": ".delta", "rocksdb": ".zip", "rocksdb-changelog": ".changelog"}[
        state_store
    ] in saved
    stream = run(2)
    assert stream.resumed_step == 1 and stream.last_batch == 3
    rows = spark.read.parquet(str(tmp_path / "out")).collect()
    final = {r.w: r["count"] for r in rows if r.batch_id == 3}
    assert final == {"a": 10, "b": 10}
    assert sorted({r.batch_id for r in rows}) == [0, 1, 2, 3]


def test_a_forked_attempt_refuses_the_parents_jvm(spark, tmp_path) -> None:
    """Killing a forked attempt would not stop a JVM it inherited: the integration says so."""
    from taskpoint.integrations.spark import SparkStreamCheckpointer

    @task(isolation="process", system_retries=0)
    def forked() -> None:
        SparkStreamCheckpointer(spark, work_dir=tmp_path / "work")

    execution = taskpoint.run(forked)
    assert execution.status == "failed"
    assert "already ran Spark" in execution.error and "isolation='spawn'" in execution.error


def test_a_batch_written_again_replaces_its_output_in_one_step(tmp_path: Path, monkeypatch) -> None:
    """A re-run batch's output takes the old one's place by an exchange of names: no moment
    (no crash point) leaves ``batch_id=N`` missing, as moving the old output away first did."""
    from taskpoint.integrations.spark import checkpointer, idempotent_foreach_batch

    if checkpointer._renameat2() is None:
        pytest.skip("no renameat2 on this platform: two renames are the fallback")

    def write(text: str, path: str) -> None:
        os.makedirs(path)
        Path(path, "part-0").write_text(text)

    write_batch = idempotent_foreach_batch(tmp_path / "out", write)
    write_batch("first run", 3)  # no output yet: a plain rename
    renamed: list[tuple[str, str]] = []
    real_rename = os.rename

    def rename(src: str, dst: str) -> None:
        renamed.append((str(src), str(dst)))
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    write_batch("run again", 3)
    assert renamed == []
    assert (tmp_path / "out" / "batch_id=3" / "part-0").read_text() == "run again"
    assert os.listdir(tmp_path / "out" / "_staging") == []  # the old output is deleted
