"""`SparkStreamCheckpointer` and `idempotent_foreach_batch`: a streaming query whose
``checkpointLocation`` survives the attempt (see the package docs; the cut itself is
``_snapshot``, DataFrames as checkpoints are ``_frames``)."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import hashlib
import logging
import os
import shutil
import sys
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import (
    DataStreamWriter,
    StreamingQuery,
    StreamingQueryListener,
)

from taskpoint.errors import (
    Preempted,
    RecoverableError,
    TaskpointError,
)
from taskpoint.integrations import _toolkit as kit
from taskpoint.integrations._jvm_workdir import AttemptDir, jvm_pid
from taskpoint.integrations.spark import _snapshot as cut

if TYPE_CHECKING:
    from taskpoint.checkpoint import Checkpoint

__all__ = ["SparkStreamCheckpointer", "idempotent_foreach_batch"]

log = logging.getLogger("taskpoint.integrations.spark")


def _local_path(path: str | os.PathLike[str], what: str) -> Path:
    text = os.fspath(path)
    if text.startswith("file://"):
        text = text[len("file://") :]
    elif "://" in text:
        raise TaskpointError(
            f"{what} {text!r} is not a local path; the Spark integration snapshots and restores "
            "local (or POSIX-mounted) directories only"
        )
    return Path(text).absolute()


def _check_own_jvm(spark: SparkSession) -> None:
    """Refuse a session whose JVM belongs to another process (inherited through fork)."""
    proc = getattr(spark.sparkContext._gateway, "proc", None)
    if proc is None:
        return
    ppid = kit.parent_pid(proc.pid)
    if ppid is not None and ppid != os.getpid():
        raise TaskpointError(
            f"this Spark session's JVM (pid {proc.pid}) was started by process {ppid}, not by "
            "this attempt: the attempt was forked from a process that already ran Spark. Create "
            "the session inside the task and use @task(isolation='spawn') (or no Spark in the "
            "driver), so each attempt has its own JVM"
        )


# ------------------------------------------------------------------------------------ streaming
class SparkStreamCheckpointer:
    """Give one streaming query a ``checkpointLocation`` that survives the attempt.

    Construction restores the task's latest checkpoint (``checkpoint=``, default
    ``current_context().checkpoint``) into a local per-attempt directory, `location`, and puts
    back the logs of the file sinks listed in ``sinks`` (their output paths); `start` passes
    `location` to the query. Use one `SparkStreamCheckpointer` (one query) per task. After each
    completed micro-batch a listener saves a consistent cut into the checkpoint
    (``blocking=False``; ``step`` = the batch id). `resumed_step` is the batch id the attempt
    resumed after, ``None`` on a fresh start. There is no cadence option: Spark counts
    micro-batches, not steps, and every completed micro-batch is saved.

    `await_termination` waits for the query while watching for preemption: on SIGTERM it stops
    the query, commits a last cut and raises `~taskpoint.Preempted`.

    Examples:
        A word count that resumes from its last micro-batch. The session is created inside the
        task, so each attempt has its own JVM; defining the task needs no Spark:

        >>> from pyspark.sql import SparkSession
        >>> from taskpoint import task
        >>> from taskpoint.integrations.spark import (
        ...     SparkStreamCheckpointer, idempotent_foreach_batch)
        >>> @task(isolation="process", system_retries=5, retries=3)
        ... def word_counts(inbox: str, outbox: str) -> None:
        ...     spark = SparkSession.builder.master("local[2]").getOrCreate()
        ...     counts = spark.readStream.text(inbox).groupBy("value").count()
        ...     with SparkStreamCheckpointer(spark) as stream:    # restores the latest cut
        ...         stream.start(counts.writeStream.outputMode("update")
        ...                      .foreachBatch(idempotent_foreach_batch(outbox)))
        ...         stream.await_termination()                    # a cut after every batch
        >>> word_counts.isolation, word_counts.system_retries
        ('process', 5)

        Outside a task, pass the scope; these lines start a JVM and are not run here:

        >>> from taskpoint import Checkpoint
        >>> spark = SparkSession.builder.master("local[2]").getOrCreate()  # doctest: +SKIP
        >>> stream = SparkStreamCheckpointer(  # doctest: +SKIP
        ...     spark, checkpoint=Checkpoint.open("state/word-counts"))
        >>> stream.resumed_step is None  # a fresh start  # doctest: +SKIP
        True
        >>> stream.close()  # doctest: +SKIP
    """

    def __init__(
        self,
        spark: SparkSession,
        *,
        sinks: list[str | os.PathLike[str]] | tuple[str | os.PathLike[str], ...] = (),
        checkpoint: Checkpoint | None = None,
        work_dir: str | os.PathLike[str] | None = None,
        poll_interval: float = 0.5,
        jvm_exit_timeout: float = 30.0,
    ) -> None:
        _check_own_jvm(spark)
        self.spark = spark
        self.checkpoint, self._ctx = kit.task_checkpoint(checkpoint, "SparkStreamCheckpointer")
        self.sinks = [_local_path(s, "file sink") for s in sinks]
        self.poll_interval = poll_interval
        self.query: StreamingQuery | None = None
        self.location: Path
        self.resumed_step: int | None
        self._lock = threading.Lock()
        self._preempt = threading.Event()
        self._error: BaseException | None = None
        base = os.fspath(work_dir) if work_dir is not None else None
        self._dir = AttemptDir(self.checkpoint.url, self.checkpoint.attempt, "spark", base)
        try:
            self._dir.record_jvm(_session_jvm_pid(spark))
            self._dir.retire_previous(jvm_exit_timeout)  # the killed attempt's JVM must be gone
            self.location, self.resumed_step = self._restore()
        except BaseException:
            self._dir.remove()
            raise
        self._batch = self.resumed_step
        self._listener = _SnapshotListener(self)
        spark.streams.addListener(self._listener)
        if self._ctx is not None:
            self._ctx.on_preempt(self._preempt.set)

    def _restore(self) -> tuple[Path, int | None]:
        owner = hashlib.sha256(self.checkpoint.url.encode()).hexdigest()
        restored = self.checkpoint.restore(self._dir.path / "restored")
        if restored is None:
            cut.start_fresh(self.sinks, owner)
            return self._dir.path / "query", None
        batch = int(cut.read_meta(restored)["batch"])
        return cut.install(restored, self.sinks, owner), batch

    @property
    def last_batch(self) -> int | None:
        """The batch id of the newest cut saved (or restored) so far."""
        return self._batch

    def start(self, writer: DataStreamWriter, path: str | None = None) -> StreamingQuery:
        """Start ``writer`` with ``checkpointLocation`` set to `location`; returns the query."""
        if self.query is not None:
            raise TaskpointError(
                "this SparkStreamCheckpointer already started a query; use one each"
            )
        self.query = writer.option("checkpointLocation", str(self.location)).start(path)
        return self.query

    def track(self, query: StreamingQuery) -> StreamingQuery:
        """Adopt a query started by hand with ``checkpointLocation=str(stream.location)``."""
        self.query = query
        return query

    def await_termination(self, timeout: float | None = None) -> bool:
        """Wait for the query to end; save the final cut and wait for every pending save.

        Returns False if ``timeout`` seconds passed first (the query keeps running). A failed
        query raises `~taskpoint.RecoverableError` chained to Spark's exception (after saving
        the cut), so ``@task(retries=N)`` resumes it; preemption stops the query, commits its
        cut and raises `~taskpoint.Preempted`.
        """
        query = self._require_query()
        waited = 0.0
        while True:
            if self._preempt.is_set():
                self._stop_preempted(query)
            if self._error is not None:
                query.stop()
                raise self._error
            try:
                done = query.awaitTermination(self.poll_interval)  # type: ignore[arg-type]  # pyspark stub: seconds may be a float
            except Exception as exc:
                self._snapshot(quiet=True)
                self.checkpoint.wait()
                raise RecoverableError(
                    f"streaming query failed: {str(exc).strip().splitlines()[0]}; with "
                    "@task(retries=N) the next attempt resumes after the last saved batch "
                    f"({self._batch})"
                ) from exc
            if done:
                break
            waited += self.poll_interval
            if timeout is not None and waited >= timeout:
                return False
        self._snapshot()
        self.checkpoint.wait()
        return True

    def close(self) -> None:
        """Stop the query if it still runs, remove the listener and the local directory."""
        try:
            if self.query is not None and self.query.isActive:
                self.query.stop()
        except Exception as exc:  # a dead JVM must not hide the error that brought us here
            log.warning("taskpoint: could not stop the streaming query: %s", exc)
        finally:
            with contextlib.suppress(Exception):
                self.spark.streams.removeListener(self._listener)
            with self._lock:
                self._dir.remove()  # pending saves hold their own staged copies

    def __enter__(self) -> SparkStreamCheckpointer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------------------- internals
    def _require_query(self) -> StreamingQuery:
        if self.query is None:
            raise TaskpointError("no query yet: call start(writer) or track(query) first")
        return self.query

    def _snapshot(self, quiet: bool = False) -> Future[Any] | None:
        """Save a cut newer than the last one, if any (thread-safe)."""
        with self._lock:
            staging = self._dir.path / f"snapshot-{uuid.uuid4().hex}"
            try:
                batch = cut.take(self.location, self.sinks, staging, after=self._batch)
                if batch is None:
                    return None
                meta = {"taskpoint.spark": "streaming", "batch": batch}
                try:
                    future = self.checkpoint.save(
                        staging, step=batch, metadata=meta, blocking=False
                    )
                except Preempted:
                    self._batch = batch  # that save committed before Preempted was raised
                    raise
                self._batch = batch
                return future  # type: ignore[return-value]
            except Preempted:
                raise
            except Exception as exc:
                if not quiet:
                    raise
                log.warning("taskpoint: could not save the streaming snapshot: %s", exc)
                return None
            finally:
                shutil.rmtree(staging, ignore_errors=True)

    def _on_progress(self) -> None:
        """Listener thread: snapshot; keep errors for the waiting thread."""
        try:
            self._snapshot()
        except Preempted:
            self._preempt.set()
        except Exception as exc:
            log.error("taskpoint: streaming snapshot failed: %s", exc)
            self._error = exc

    def _stop_preempted(self, query: StreamingQuery) -> None:
        try:
            query.stop()
        except Exception as exc:
            log.warning("taskpoint: stopping the preempted streaming query failed: %s", exc)
        self._snapshot()  # through the task's checkpoint: commits, then raises Preempted
        self.checkpoint.wait()
        ctx = self._ctx
        raise Preempted(
            f"streaming query stopped on preemption after batch {self._batch}; the next attempt "
            "resumes from there",
            execution_id=ctx.execution_id if ctx else None,
            node=ctx.node if ctx else None,
        )


class _SnapshotListener(StreamingQueryListener):
    def __init__(self, owner: SparkStreamCheckpointer) -> None:
        self._owner = owner

    def onQueryStarted(self, event: Any) -> None:
        pass

    def onQueryProgress(self, event: Any) -> None:
        query = self._owner.query
        if query is not None and str(event.progress.id) != str(query.id):
            return  # another query of this session
        self._owner._on_progress()

    def onQueryIdle(self, event: Any) -> None:
        pass

    def onQueryTerminated(self, event: Any) -> None:
        pass


def _session_jvm_pid(spark: SparkSession) -> int | None:
    proc = getattr(spark.sparkContext._gateway, "proc", None)
    return proc.pid if proc is not None else jvm_pid(spark.sparkContext._gateway)


def idempotent_foreach_batch(
    root: str | os.PathLike[str],
    write: Callable[[DataFrame, str], None] | None = None,
) -> Callable[[DataFrame, int], None]:
    """A ``foreachBatch`` function whose output for a batch id is replaced, never duplicated.

    Batch ``N`` is written (by ``write(df, path)``, default parquet) into a staging directory
    under ``root/_staging`` and then renamed to ``root/batch_id=N``, replacing what an earlier
    run of the same batch wrote. So a micro-batch re-run after a resume leaves one copy of its
    output, and readers of ``root`` (``spark.read.parquet(root)``, partition column
    ``batch_id``) never see a half-written batch. ``root`` must be a local or POSIX-mounted path.

    Examples:
        In a query: ``writeStream.foreachBatch(idempotent_foreach_batch("out/counts"))``. The
        function can be called by hand too; here a ``write`` that needs no Spark stands for
        ``df.write.json(path)``, and the same batch id written twice (a batch re-run after a
        resume) leaves one copy:

        >>> import os
        >>> from taskpoint.integrations.spark import idempotent_foreach_batch
        >>> def write(df, path):
        ...     os.makedirs(path)
        ...     with open(os.path.join(path, "part-0"), "w") as f:
        ...         f.write(df)
        >>> write_batch = idempotent_foreach_batch("out", write)
        >>> write_batch("counts of batch 3, first run", 3)
        >>> write_batch("counts of batch 3, run again", 3)
        >>> sorted(name for name in os.listdir("out") if not name.startswith("_"))
        ['batch_id=3']
        >>> open("out/batch_id=3/part-0").read()
        'counts of batch 3, run again'
    """
    base = _local_path(root, "foreachBatch output")

    def write_batch(df: DataFrame, batch_id: int) -> None:
        staging = base / "_staging" / f"{batch_id}-{uuid.uuid4().hex}"
        staging.parent.mkdir(parents=True, exist_ok=True)
        if write is None:
            df.write.parquet(str(staging))
        else:
            write(df, str(staging))
        _replace_dir(staging, base / f"batch_id={batch_id}")

    return write_batch


def _replace_dir(new: Path, final: Path) -> None:
    """Put the directory ``new`` at ``final``, replacing what is there.

    Where Linux can (``renameat2`` with ``RENAME_EXCHANGE``) the two swap names in one step, so
    ``final`` always holds one whole output; the old one, now at ``new``, is deleted after.
    Elsewhere two renames: a crash between them leaves no ``final`` (the batch was not
    committed in Spark's log, so it runs again and writes it)."""
    if _exchange(new, final):
        shutil.rmtree(new, ignore_errors=True)
        return
    old = new.parent / f"replaced-{uuid.uuid4().hex}"
    try:
        os.rename(final, old)
    except FileNotFoundError:
        old = None  # type: ignore[assignment]
    os.rename(new, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


_AT_FDCWD = -100  # <fcntl.h>: paths relative to the working directory
_RENAME_EXCHANGE = 2  # <linux/fs.h>
# The filesystem or kernel cannot exchange: fall back to two renames.
_NO_EXCHANGE = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOENT)


def _exchange(a: Path, b: Path) -> bool:
    """Swap the names ``a`` and ``b`` atomically; False where that cannot be done (not Linux,
    a filesystem without exchange, or ``b`` does not exist yet)."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in _NO_EXCHANGE:
        return False
    raise OSError(err, os.strerror(err), str(b))


@functools.cache
def _renameat2() -> Any:
    """glibc's ``renameat2`` (2.28 and later), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    function.restype = ctypes.c_int
    return function
