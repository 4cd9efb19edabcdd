"""Spark Structured Streaming in a task: a word count that crashes mid-run and resumes exactly.

    pip install 'taskpoint[spark]'        # PySpark 4; needs Java 17 (java -version)
    taskpoint run examples/spark_streaming.py pipeline --crash-at-batch 4
    taskpoint run examples/spark_streaming.py pipeline --crash-at-batch -1   # never crashes

``make_inbox`` writes text files; ``count_words`` runs a streaming aggregation over them, one file
per micro-batch, writing each batch's updated counts with ``idempotent_foreach_batch``. Its first
attempt kills its own process with SIGKILL in the middle of batch ``--crash-at-batch`` (a crash,
not an exception: nothing gets to clean up). The engine retries it in a new process;
`SparkStreamCheckpointer` restores the query's checkpoint from the last micro-batch it saved, the
batches after it run again (their output replaces the first run's), and the final counts equal a
plain Python count of the files. Files go under ``--root`` (default
``.taskpoint/examples/spark-streaming`` in the current directory).
"""

import os
import random
import signal
import sys
from collections import Counter
from pathlib import Path

from taskpoint import current_context, task, workflow

WORDS = [f"w{i:02d}" for i in range(30)]


def spark_session():
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master("local[2]")
        .appName("taskpoint-spark-streaming-example")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


@task
def make_inbox(root: str, files: int) -> str:
    inbox = Path(root) / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    for i in range(files):
        lines = [" ".join(rng.choices(WORDS, k=8)) for _ in range(50)]
        (inbox / f"part-{i:04d}.txt").write_text("\n".join(lines) + "\n")
        os.utime(inbox / f"part-{i:04d}.txt", (1_700_000_000 + i,) * 2)  # one order for all runs
    return str(inbox)


@task(isolation="process", system_retries=3)
def count_words(inbox: str, outbox: str, crash_at_batch: int) -> dict:
    from pyspark.sql import functions as F

    from taskpoint.integrations.spark import SparkStreamCheckpointer, idempotent_foreach_batch

    spark = spark_session()  # inside the task: every attempt has its own JVM
    attempt = current_context().attempt
    write = idempotent_foreach_batch(outbox)

    def each_batch(df, batch_id: int) -> None:
        write(df, batch_id)
        if attempt == 1 and batch_id == crash_at_batch:
            print(f"attempt 1: crashing (SIGKILL) in batch {batch_id}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    with SparkStreamCheckpointer(spark) as stream:
        print(f"attempt {attempt}: resuming after batch {stream.resumed_step}", flush=True)
        words = (
            spark.readStream.option("maxFilesPerTrigger", 1)
            .text(inbox)
            .select(F.explode(F.split("value", " ")).alias("word"))
        )
        stream.start(
            words.groupBy("word")
            .count()
            .writeStream.outputMode("update")
            .foreachBatch(each_batch)
            .trigger(availableNow=True)
        )
        stream.await_termination()

    latest: dict[str, tuple[int, int]] = {}  # newest update of each word
    for row in spark.read.parquet(outbox).collect():
        if row.word not in latest or row.batch_id > latest[row.word][0]:
            latest[row.word] = (row.batch_id, row["count"])
    return {word: count for word, (_, count) in sorted(latest.items())}


@task
def check(inbox: str, counts: dict) -> dict:
    expected = Counter(w for p in Path(inbox).iterdir() for w in p.read_text().split())
    return {"words": len(counts), "total": sum(counts.values()), "exact": counts == expected}


@workflow
def pipeline(
    files: int = 12, crash_at_batch: int = 4, root: str = ".taskpoint/examples/spark-streaming"
) -> dict:
    base = str(Path(root).absolute())
    inbox = make_inbox(root=base, files=files)
    counts = count_words(inbox=inbox, outbox=f"{base}/counts", crash_at_batch=crash_at_batch)
    return check(inbox=inbox, counts=counts)
