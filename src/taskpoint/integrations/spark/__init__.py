"""Apache Spark (PySpark 4): streaming queries and iterative jobs that resume inside a task.

```python
from taskpoint import task
from taskpoint.integrations.spark import (
    SparkStreamCheckpointer, idempotent_foreach_batch, restore_dataframe, save_dataframe)

@task(isolation="process", system_retries=5)
def word_counts(inbox: str, outbox: str) -> None:
    spark = SparkSession.builder.master("local[2]").getOrCreate()   # inside the task
    counts = spark.readStream.text(inbox).groupBy("value").count()
    with SparkStreamCheckpointer(spark) as stream:                      # restores the latest cut
        stream.start(counts.writeStream.outputMode("update")
                     .foreachBatch(idempotent_foreach_batch(outbox))
                     .trigger(availableNow=True))
        stream.await_termination()                                  # snapshots every batch

@task(retries=3)
def iterate(n: int) -> int:
    spark = SparkSession.builder.getOrCreate()
    step, df = restore_dataframe(spark) or (0, initial(spark))
    for i in range(step, n):
        df = one_iteration(df)
        if (i + 1) % 5 == 0:
            df = save_dataframe(df, i + 1)       # parquet -> checkpoint; lineage cut here
    return df.count()
```

**Streaming** (`SparkStreamCheckpointer`): before the query starts, the task's latest checkpoint is
restored into a local directory that becomes the query's ``checkpointLocation``, and the logs
(``_spark_metadata``) of the file sinks named in ``sinks=`` are put back to match it. After each
micro-batch a ``StreamingQueryListener`` copies a consistent cut of that directory (see
``_snapshot``: offsets, commits, state store versions, source logs and the sinks' logs, cut
at the newest committed batch) and saves it into the task's checkpoint asynchronously. What is
exact: a retried attempt continues from the committed offsets and the state after the last
snapshotted batch ``C``; no input record is counted twice or lost in the state. What is not: the
micro-batches after ``C`` (normally one, more if snapshots lag) run again. File sinks stay
exactly-once (their log is rolled back with the query and Spark skips or rewrites those batches);
other sinks get those batches again (at-least-once) unless the writes are idempotent by
``batch_id``, which `idempotent_foreach_batch` does for ``foreachBatch``. A re-run batch
``C + 1`` has the same offsets as its first run; later re-run batches are planned again from the
same data (the same input for sources that plan deterministically: files, Kafka offsets).

**Batch and iterative jobs** (`save_dataframe` / `restore_dataframe`): a DataFrame is written as
parquet (with Spark's ``_SUCCESS`` marker) and saved as a directory checkpoint; restoring reads it
back with the same schema, rows and step. ``df.checkpoint()`` / ``localCheckpoint()`` are *not*
restore points: they truncate lineage inside one SparkContext, and the files they write cannot be
read back by a new session (after a retry or on another machine). `save_dataframe` returns the
DataFrame read back from the saved parquet, so it cuts lineage the same way and the uninterrupted
run computes from exactly what a resumed run restores.

Paths are local (or a POSIX mount every executor sees, for a cluster). The Spark session must be
created inside the task (each attempt its own JVM): a forked attempt that inherited its parent's
JVM is refused, since killing it would not stop that JVM.
"""

from __future__ import annotations

from taskpoint.integrations._lazy import require

require("pyspark", "spark")

from taskpoint.integrations import _toolkit as kit  # noqa: E402
from taskpoint.integrations.spark._frames import restore_dataframe, save_dataframe  # noqa: E402
from taskpoint.integrations.spark.checkpointer import (  # noqa: E402
    SparkStreamCheckpointer,
    idempotent_foreach_batch,
)

__all__ = [
    "SparkStreamCheckpointer",
    "idempotent_foreach_batch",
    "restore_dataframe",
    "save_dataframe",
]

kit.publish(
    __name__, SparkStreamCheckpointer, idempotent_foreach_batch, restore_dataframe, save_dataframe
)
