"""An iterative Spark job (connected components) that fails mid-way and resumes to the same result.

    pip install 'taskpoint[spark]'        # PySpark 4; needs Java 17 (java -version)
    taskpoint run examples/spark_iterative.py components --fail-at 5
    taskpoint run examples/spark_iterative.py components --fail-at -1     # never fails

Label propagation over a random graph: every iteration each node takes the smallest label among
itself and its neighbours. Every ``--save-every`` iterations ``save_dataframe`` writes the labels as
parquet into the task's checkpoint (and cuts the lineage: the loop goes on from the saved files,
which ``df.checkpoint()`` would do too, but only within one Spark session). The first attempt
fails at iteration ``--fail-at``; the retry starts with ``restore_dataframe`` at the last saved
iteration. The printed digest is the same with or without the failure.
"""

import hashlib
import os
import random
import sys

from taskpoint import RecoverableError, current_context, task

NODES, EDGES = 2000, 1800


def spark_session():
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master("local[2]")
        .appName("taskpoint-spark-iterative-example")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


@task(retries=2)
def components(iterations: int = 10, save_every: int = 2, fail_at: int = 5) -> dict:
    from pyspark.sql import functions as F

    from taskpoint.integrations.spark import restore_dataframe, save_dataframe

    spark = spark_session()
    rng = random.Random(1)
    pairs = [(rng.randrange(NODES), rng.randrange(NODES)) for _ in range(EDGES)]
    edges = spark.createDataFrame(pairs + [(b, a) for a, b in pairs], "src long, dst long")
    edges = edges.cache()

    restored = restore_dataframe(spark)  # (step, DataFrame) of the last save, or None
    if restored is None:
        start = 0
        labels = spark.range(NODES).select(F.col("id").alias("node"), F.col("id").alias("label"))
    else:
        start, labels = restored
    print(f"attempt {current_context().attempt}: starting at iteration {start}", flush=True)

    for i in range(start, iterations):
        offers = edges.join(labels, edges.src == labels.node).select(
            edges.dst.alias("node"), labels.label
        )
        labels = labels.unionByName(offers).groupBy("node").agg(F.min("label").alias("label"))
        if (i + 1) % save_every == 0:
            labels = save_dataframe(labels, i + 1)
        if current_context().attempt == 1 and i + 1 == fail_at:
            raise RecoverableError(f"simulated failure after iteration {fail_at}")

    rows = sorted(tuple(r) for r in labels.collect())
    digest = hashlib.sha256(repr(rows).encode()).hexdigest()[:16]
    return {"components": len({label for _, label in rows}), "digest": digest}
