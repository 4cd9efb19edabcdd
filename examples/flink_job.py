"""A PyFlink job in a task: keyed running counts, preempted mid-run, resumed from a savepoint.

    pip install 'taskpoint[flink]'        # apache-flink 2.x, in its own virtual environment
    taskpoint run examples/flink_job.py pipeline --preempt-at 1500
    taskpoint run examples/flink_job.py pipeline --preempt-at -1     # never preempted

``running_counts`` counts records per key in Flink keyed state over a bounded, slowed-down
sequence and appends every ``(key, count, record)`` it emits to CSV files. ``--preempt-at N``
sends SIGTERM to the first attempt once N records reached the sink, as a spot/preemptible
machine would: `FlinkCheckpointer` stops the job with a savepoint, commits it into the task's
checkpoint, and the engine starts attempt 2, which restores it. ``check`` shows that each key's
final count equals its number of records and that, thanks to the savepoint, no record reached
the sink twice. (A crash instead of a preemption resumes from the newest Flink checkpoint saved;
the records after it reach a plain sink again: at-least-once.)
"""

import os
import signal
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

from taskpoint import current_context, task, workflow

KEYS = 10


def slowly(value: int) -> int:
    time.sleep(0.002)
    return value


def running_count_function():
    from pyflink.common import Types
    from pyflink.datastream import KeyedProcessFunction
    from pyflink.datastream.state import ValueStateDescriptor

    class CountPerKey(KeyedProcessFunction):
        def open(self, runtime_context):
            self.count = runtime_context.get_state(ValueStateDescriptor("count", Types.LONG()))

        def process_element(self, value, ctx):
            n = (self.count.value() or 0) + 1
            self.count.update(n)
            yield f"{value % KEYS},{n},{value}"

    return CountPerKey()


@task(isolation="process", system_retries=3)
def running_counts(records: int, out: str, preempt_at: int) -> str:
    from pyflink.common import Types, WatermarkStrategy
    from pyflink.datastream.connectors.number_seq import NumberSequenceSource

    from taskpoint.integrations.flink import FlinkCheckpointer

    attempt = current_context().attempt
    Path(out).mkdir(parents=True, exist_ok=True)
    with FlinkCheckpointer(every_ms=500) as flink:
        print(f"attempt {attempt}: resumed {flink.resumed} (step {flink.resumed_step})", flush=True)
        env = flink.environment({"parallelism.default": "2"})
        numbers = env.from_source(
            NumberSequenceSource(0, records - 1), WatermarkStrategy.no_watermarks(), "numbers"
        )
        lines = (
            numbers.map(slowly, output_type=Types.LONG())
            .key_by(lambda i: i % KEYS, key_type=Types.LONG())
            .process(running_count_function(), output_type=Types.STRING())
        )
        path = os.path.join(out, f"attempt-{attempt}")

        def append(line: str) -> str:
            with open(f"{path}-{os.getpid()}.csv", "a") as sink:
                sink.write(line + "\n")
            return line

        lines.map(append, output_type=Types.STRING())
        if attempt == 1 and preempt_at >= 0:
            threading.Thread(target=preempt_when, args=(out, preempt_at), daemon=True).start()
        flink.execute(env, "running counts")
    return out


def preempt_when(out: str, lines: int) -> None:
    """Play the cloud: SIGTERM this attempt once ``lines`` records reached the sink."""
    while sum(len(p.read_text().splitlines()) for p in Path(out).glob("*.csv")) < lines:
        time.sleep(0.2)
    print(f"preempting attempt 1 (SIGTERM) after {lines} records", flush=True)
    os.kill(os.getpid(), signal.SIGTERM)


@task
def check(out: str, records: int) -> dict:
    final: dict[int, int] = defaultdict(int)
    seen = Counter()
    for path in Path(out).glob("*.csv"):
        for line in path.read_text().splitlines():
            key, count, record = map(int, line.split(","))
            final[key] = max(final[key], count)
            seen[record] += 1
    expected = Counter(i % KEYS for i in range(records))
    return {
        "counts_exact": dict(final) == dict(expected),
        "records_seen": len(seen),
        "records_twice": sum(1 for n in seen.values() if n > 1),
    }


@workflow
def pipeline(
    records: int = 6000, preempt_at: int = 1500, root: str = ".taskpoint/examples/flink"
) -> dict:
    out = str(Path(root).absolute() / "out")
    done = running_counts(records=records, out=out, preempt_at=preempt_at)
    return check(out=done, records=records)
