"""The goodput ledger: what each attempt cost, and how much of a node's time was productive.

Built from the records alone (``taskpoint show``, ``--json``, ``taskpoint goodput`` and the web
view), over what each attempt measured of itself (``engine/meter.py``). Definitions:

- An attempt's **time** runs from its recorded start to its end (`Attempt.duration`).
- Its **set-up** is its time to first step (start latency, its own set-up and the restore) when
  it measured one, else its start latency plus its restore time.
- Its **save stall** is the time its saves blocked it (async writes waited for at its end
  included); its **work lost**, for an attempt that did not succeed, the time from the state of
  its last committed save (from its first step when it committed nothing) to its end. An
  attempt whose process died could not report: its work lost comes from its record, from its
  last own commit (else its start) to its end, and nothing else is known of it.
- Its **productive** time is its time less set-up, save stall and work lost (at least 0).
- A node's **time** spans its first attempt's start to its last attempt's end within each driver
  run (the gaps between driver runs, a resume days later, are left out): its attempts and the
  waits between them (noticing a failure, backoff, starting the next attempt).
- **ETTR** (effective training time ratio) is productive time over that time: per node, and for
  an execution its nodes' productive time over their time (nodes that ran side by side each
  count their own time).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from taskpoint.checkpoint.version import parse_version_id
from taskpoint.engine.execution import Attempt, Execution, Node
from taskpoint.records.status import AttemptStatus, ExecutionStatus

DIGITS = 6  # of seconds in JSON: a small restore takes well under a millisecond

# How an attempt can end without succeeding, in the order the ledger lists them.
FAILURE_KINDS = (
    AttemptStatus.FAILED,
    AttemptStatus.RECOVERABLE,
    AttemptStatus.PREEMPTED,
    AttemptStatus.LOST,
    AttemptStatus.ABORTED,
    ExecutionStatus.INTERRUPTED,
)


@dataclass
class AttemptLedger:
    n: int
    status: str
    time_s: float
    productive_s: float
    setup_s: float
    work_lost_s: float | None  # None while it runs
    start_s: float | None  # None: the attempt could not report (``measured`` false)
    restore_s: float | None
    first_step_s: float | None
    stall_s: float | None
    loaded_version: str | None
    loaded_step: int | None
    resume_warning: str | None
    measured: bool

    def as_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        del doc["n"], doc["status"]
        return {k: round(v, DIGITS) if isinstance(v, float) else v for k, v in doc.items()}


@dataclass
class Totals:
    """Sums over attempts (of one node, one execution, or one task across executions)."""

    time_s: float = 0.0  # node time (see the module docstring)
    productive_s: float = 0.0
    setup_s: float = 0.0
    start_s: float = 0.0
    restore_s: float = 0.0
    stall_s: float = 0.0
    work_lost_s: float = 0.0
    wait_s: float = 0.0  # between attempts
    attempts: int = 0
    failures: dict[str, int] = field(default_factory=dict)  # by how the attempts ended
    restarted: int = 0  # attempts that restarted from scratch (resume guard)

    @property
    def ettr(self) -> float | None:
        return min(1.0, self.productive_s / self.time_s) if self.time_s > 0 else None

    def add(self, other: Totals) -> None:
        for name, value in asdict(other).items():
            if name.endswith("_s"):
                setattr(self, name, getattr(self, name) + value)
        self.attempts += other.attempts
        self.restarted += other.restarted
        for kind, count in other.failures.items():
            self.failures[kind] = self.failures.get(kind, 0) + count

    def as_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            k: round(v, DIGITS) for k, v in asdict(self).items() if k.endswith("_s")
        }
        ettr = self.ettr
        doc.update(
            ettr=None if ettr is None else round(ettr, 4),
            attempts=self.attempts,
            failures={kind: self.failures[kind] for kind in FAILURE_KINDS if kind in self.failures},
            restarted_from_scratch=self.restarted,
        )
        return doc


def attempt_ledger(a: Attempt, now: float) -> AttemptLedger:
    time_s = a.duration(now)
    measured = a.start_s is not None
    setup = a.first_step_s
    if setup is None:
        setup = (a.start_s or 0.0) + (a.restore_s or 0.0)
    lost = work_lost(a, now)
    productive = max(0.0, time_s - min(setup, time_s) - (a.stall_s or 0.0) - (lost or 0.0))
    return AttemptLedger(
        n=a.n,
        status=a.status,
        time_s=time_s,
        productive_s=productive,
        setup_s=min(setup, time_s),
        work_lost_s=lost,
        start_s=a.start_s,
        restore_s=a.restore_s,
        first_step_s=a.first_step_s,
        stall_s=a.stall_s,
        loaded_version=a.loaded_version,
        loaded_step=a.loaded_step,
        resume_warning=resume_warning(a),
        measured=measured,
    )


def work_lost(a: Attempt, now: float) -> float | None:
    """What the attempt measured, else (it could not report) from its record: the time from
    its last own commit, or from its start, to its end. 0 for a success, None while it runs."""
    if a.status == AttemptStatus.SUCCEEDED:
        return 0.0
    if a.status == AttemptStatus.RUNNING:
        return None
    if a.work_lost_s is not None:
        return a.work_lost_s
    since = a.last_commit if a.last_commit is not None and _own(a.checkpoint_at_end, a.n) else None
    return max(0.0, a.until(now) - (since if since is not None else a.started))


def resume_warning(a: Attempt) -> str | None:
    """Why the attempt restarted from scratch: as it reported, or, for one that could not
    report, when its last own commit has a lower step than the version it started from."""
    if a.resume_warning is not None or a.start_s is not None:
        return a.resume_warning
    if (
        a.step_at_start is not None
        and a.step_at_end is not None
        and _own(a.checkpoint_at_end, a.n)
        and a.step_at_end < a.step_at_start
    ):
        return (
            f"its last commit is step {a.step_at_end}, below step {a.step_at_start} of "
            f"checkpoint {a.checkpoint_at_start} available at its start"
        )
    return None


def node_ledger(node: Node, now: float) -> tuple[list[AttemptLedger], Totals]:
    ledgers = [attempt_ledger(a, now) for a in node.attempts]
    totals = Totals(attempts=len(ledgers))
    for a, led in zip(node.attempts, ledgers, strict=True):
        totals.productive_s += led.productive_s
        totals.setup_s += led.setup_s
        totals.start_s += led.start_s or 0.0
        totals.restore_s += led.restore_s or 0.0
        totals.stall_s += led.stall_s or 0.0
        totals.work_lost_s += led.work_lost_s or 0.0
        if a.status in FAILURE_KINDS:
            totals.failures[a.status] = totals.failures.get(a.status, 0) + 1
        totals.restarted += led.resume_warning is not None
    totals.time_s = node_time(node.attempts, now)
    totals.wait_s = max(0.0, totals.time_s - sum(led.time_s for led in ledgers))
    return ledgers, totals


def node_time(attempts: list[Attempt], now: float) -> float:
    """From the first attempt's start to the last one's end, per driver run, summed."""
    runs: dict[int, tuple[float, float]] = {}
    for a in attempts:
        start, end = a.started, a.until(now)
        first, last = runs.get(a.run or 1, (start, end))
        runs[a.run or 1] = (min(first, start), max(last, end))
    return sum(max(0.0, end - start) for start, end in runs.values())


def execution_totals(execution: Execution, now: float) -> Totals:
    totals = Totals()
    for node in execution.nodes:
        totals.add(node_ledger(node, now)[1])
    return totals


def _own(version_id: str | None, attempt: int) -> bool:
    parsed = parse_version_id(version_id) if version_id else None
    return parsed is not None and parsed[0] == attempt
