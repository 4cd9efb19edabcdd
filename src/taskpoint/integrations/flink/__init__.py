"""Apache Flink (PyFlink 2.x): a DataStream job that resumes inside a task.

```python
from taskpoint import task
from taskpoint.integrations.flink import FlinkCheckpointer

@task(isolation="process", system_retries=5)
def running_counts(n: int, out: str) -> None:
    with FlinkCheckpointer(every_ms=500) as flink:
        env = flink.environment({"parallelism.default": "2"})
        (env.from_source(NumberSequenceSource(0, n - 1), WatermarkStrategy.no_watermarks(), "seq")
            .key_by(lambda i: i % 10).process(CountPerKey())   # keyed state
            .sink_to(...))
        flink.execute(env, "running counts")   # returns when the job finishes
```

`FlinkCheckpointer` restores the task's latest checkpoint (``checkpoint=``, default
``current_context().checkpoint``) into a local per-attempt directory, and `environment` makes a
``StreamExecutionEnvironment`` whose configuration:

- checkpoints every ``every_ms`` milliseconds into that directory (Flink checkpoints on a
  timer, not per step, so the cadence is a time), retained on cancellation
  (``execution.checkpointing.externalized-checkpoint-retention: RETAIN_ON_CANCELLATION``, the two
  newest kept);
- restarts nothing itself (``restart-strategy.type: none`` by default, ``restart_attempts=N`` for
  a fixed-delay strategy): a failing job, or one that cannot restore its state, fails at once and
  the engine's retry policy decides, instead of Flink restarting it forever;
- sets ``execution.state-recovery.path`` to the restored state (``NO_CLAIM``: Flink never
  deletes it) when there is one;
- runs Python functions with this interpreter (``python.executable``) unless you set one.

`execute` submits the job and, while it runs, saves each newly completed Flink checkpoint (the
newest ``chk-N``) into the task's checkpoint asynchronously (``step`` = N). When the attempt is
preempted (SIGTERM, the context's ``on_preempt``) it stops the job with a canonical savepoint
(through the Java ``JobClient.stopWithSavepoint(boolean, String, SavepointFormatType)``:
PyFlink's own wrapper still calls a two-argument signature that Flink 2 no longer has), commits
it, and raises `~taskpoint.Preempted`.

**What is exact:** Flink state (keyed and operator state, source positions) resumes exactly from
the restored checkpoint or savepoint: no record is lost or counted twice in state. After a
savepoint nothing was processed past it, so even plain sinks see every record once across a
preemption. After a crash (SIGKILL, lost machine) the records processed since the newest saved
checkpoint are processed again: sinks are at-least-once unless they are transactional
(Flink's two-phase-commit sinks) or idempotent.

**Not movable, refused:** RocksDB incremental checkpoints and checkpoint file merging reference
shared files by absolute path; `environment` refuses those settings, and a checkpoint whose
``_metadata`` names existing files by absolute path is refused with an error instead of being
saved. Each attempt must have its own JVM: create the environment inside the task, and use
``isolation="spawn"`` if the driver process itself ran PyFlink.
"""

from __future__ import annotations

from taskpoint.integrations._lazy import require

require("pyflink", "flink")

from taskpoint.integrations import _toolkit as kit  # noqa: E402
from taskpoint.integrations.flink.checkpointer import FlinkCheckpointer  # noqa: E402

__all__ = ["FlinkCheckpointer"]

kit.publish(__name__, FlinkCheckpointer)
