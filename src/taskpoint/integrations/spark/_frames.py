"""`save_dataframe` / `restore_dataframe`: a DataFrame as a directory checkpoint (parquet).

The version holds Spark's parquet output as written (``part-*`` files, ``_SUCCESS`` and Hadoop's
``.crc`` files) plus ``_taskpoint_dataframe.json`` (step and schema; parquet readers ignore files
starting with ``_``). Restoring checks ``_SUCCESS`` and reads the files with the saved schema, so
the DataFrame has the same schema and rows as the one saved.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import threading
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StructType

from taskpoint.errors import CheckpointError, TaskpointError
from taskpoint.integrations._jvm_workdir import AttemptDir
from taskpoint.integrations._toolkit import task_checkpoint

if TYPE_CHECKING:
    from taskpoint.checkpoint import Checkpoint

FRAME_META = "_taskpoint_dataframe.json"

_frame_dirs: dict[str, AttemptDir] = {}
_frame_lock = threading.Lock()


def _frames_dir(checkpoint: Checkpoint, spark: SparkSession, work_dir: Any) -> Path:
    if work_dir is None and not spark.sparkContext.master.startswith("local"):  # type: ignore[union-attr]  # pyspark stub: a live context has a master
        raise TaskpointError(
            "save_dataframe/restore_dataframe with a cluster master need work_dir=: a directory "
            "that the driver and every executor see at the same path (a shared POSIX mount)"
        )
    key = f"{checkpoint.url}\0{work_dir}"
    with _frame_lock:
        found = _frame_dirs.get(key)
        if found is None:
            base = os.fspath(work_dir) if work_dir is not None else None
            found = AttemptDir(checkpoint.url, checkpoint.attempt, "spark-frames", base)
            found.retire_previous(0.0)
            _frame_dirs[key] = found
    return found.path


@atexit.register
def _remove_frame_dirs() -> None:
    for directory in list(_frame_dirs.values()):
        directory.remove()


def save_dataframe(
    df: DataFrame,
    step: int,
    *,
    checkpoint: Checkpoint | None = None,
    work_dir: str | os.PathLike[str] | None = None,
    blocking: bool = False,
    keep_local: int = 2,
) -> DataFrame:
    """Write ``df`` as parquet and save it as a directory checkpoint tagged ``step``.

    Returns the DataFrame read back from the written files (same schema and rows, lineage cut
    like ``df.checkpoint()``): keep computing from it. The files live in a local work directory
    (``work_dir``, default a temp dir; required for a cluster master), of which the newest
    ``keep_local`` are kept for DataFrames still in use. ``blocking=False`` returns once the
    files are staged; the commit finishes in the background (the engine waits for it).

    Examples:
        An iterative job that saves every 5 iterations and keeps computing from the DataFrame
        read back (its lineage cut there); the lines that need a Spark session are not run here:

        >>> import tempfile
        >>> from pyspark.sql import SparkSession
        >>> from taskpoint import Checkpoint
        >>> from taskpoint.integrations.spark import save_dataframe
        >>> cp = Checkpoint.open(tempfile.mkdtemp())        # inside a task: the task's own
        >>> spark = SparkSession.builder.master("local[2]").getOrCreate()  # doctest: +SKIP
        >>> df = spark.range(100)  # doctest: +SKIP
        >>> for i in range(10):  # doctest: +SKIP
        ...     df = df.withColumn("id", df.id + 1)
        ...     if (i + 1) % 5 == 0:
        ...         df = save_dataframe(df, i + 1, checkpoint=cp)
        >>> cp.wait()  # doctest: +SKIP
        >>> cp.latest().step  # doctest: +SKIP
        10

        The step is checked before anything is written:

        >>> save_dataframe(None, "10", checkpoint=cp)
        Traceback (most recent call last):
            ...
        TypeError: step must be an int, got str
        >>> cp.close()
    """
    checkpoint, _ = task_checkpoint(checkpoint, "save_dataframe()")
    if isinstance(step, bool) or not isinstance(step, int):
        raise TypeError(f"step must be an int, got {type(step).__name__}")
    spark = df.sparkSession
    frames = _frames_dir(checkpoint, spark, work_dir)
    path = frames / f"{step:012d}-{uuid.uuid4().hex[:8]}"
    df.write.parquet(str(path))
    if not (path / "_SUCCESS").exists():
        raise CheckpointError(
            f"Spark wrote {path} without a _SUCCESS marker; set the Hadoop option "
            "mapreduce.fileoutputcommitter.marksuccessfuljobs=true so complete writes are marked"
        )
    meta = {"format": 1, "step": step, "schema": df.schema.json()}
    (path / FRAME_META).write_text(json.dumps(meta))
    checkpoint.save(path, step=step, metadata={"taskpoint.spark": "dataframe"}, blocking=blocking)
    _prune(frames, keep_local)
    return spark.read.schema(df.schema).parquet(str(path))


def restore_dataframe(
    spark: SparkSession,
    *,
    checkpoint: Checkpoint | None = None,
    work_dir: str | os.PathLike[str] | None = None,
) -> tuple[int, DataFrame] | None:
    """``(step, df)`` from the latest checkpoint written by `save_dataframe`, or ``None``.

    The files are restored into the local work directory and read lazily from there; they are
    kept until the process exits.

    Examples:
        At the start of an iterative task: the saved step and DataFrame, else a fresh start.
        With no checkpoint committed yet it returns ``None`` (the session is not run here):

        >>> import tempfile
        >>> from pyspark.sql import SparkSession
        >>> from taskpoint import Checkpoint
        >>> from taskpoint.integrations.spark import restore_dataframe
        >>> cp = Checkpoint.open(tempfile.mkdtemp())        # inside a task: the task's own
        >>> spark = SparkSession.builder.master("local[2]").getOrCreate()  # doctest: +SKIP
        >>> print(restore_dataframe(spark, checkpoint=cp))  # doctest: +SKIP
        None
        >>> step, df = (  # doctest: +SKIP
        ...     restore_dataframe(spark, checkpoint=cp) or (0, spark.range(100)))

        Outside a task it needs the scope:

        >>> restore_dataframe(None)
        Traceback (most recent call last):
            ...
        taskpoint.errors.TaskpointError: restore_dataframe() was used outside a task ...
        >>> cp.close()
    """
    checkpoint, _ = task_checkpoint(checkpoint, "restore_dataframe()")
    frames = _frames_dir(checkpoint, spark, work_dir)
    target = frames / f"restored-{uuid.uuid4().hex[:8]}"
    restored = checkpoint.restore(target)
    if restored is None:
        return None
    try:
        meta = json.loads((restored / FRAME_META).read_text())
        schema = StructType.fromJson(json.loads(meta["schema"]))
        step = int(meta["step"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"the task's latest checkpoint is not a DataFrame saved by save_dataframe "
            f"({type(exc).__name__}: {exc}); restored into {restored}"
        ) from None
    if not (restored / "_SUCCESS").exists():
        raise CheckpointError(f"the DataFrame checkpoint restored into {restored} has no _SUCCESS")
    return step, spark.read.schema(schema).parquet(str(restored))


def _prune(frames: Path, keep: int) -> None:
    saved = sorted(p for p in frames.iterdir() if p.is_dir() and p.name[:1].isdigit())
    for old in saved[: max(len(saved) - max(keep, 1), 0)]:
        shutil.rmtree(old, ignore_errors=True)
