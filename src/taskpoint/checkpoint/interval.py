"""When to take the next checkpoint: the interval `Checkpoint.due()` answers from, chosen from what
the scope measures and what the task's failure history says.

The model (Young 1974, Daly 2006), with what each input is here:

- **C**, what one save costs the *loop*: how much longer the loop's steps took from the save until
  its commit than steps without a save in flight (the stall of ``write()``/``save()``, the
  integration's staging copy and the slowdown while the async writer runs, all at once), timed
  from the intervals between ``due()`` calls, which the loop makes once per step. The median of
  the last saves, so that one step hit by something else does not move it much (the cheapest
  of the first two: a process's first saves allocate what later ones reuse). Until a save is
  measured: what loading the version took, when one was loaded (a save moves the same bytes; an
  async one costs the loop less, so this errs towards saving less often), else 0.1 s.
- **M**, the mean time between failures that lose work: attempts that were ``lost`` (SIGKILL,
  OOM kill, a dead worker or driver) or ``recoverable``, over the time the task's attempts ran,
  this one so far included (`FailureHistory`, from the records). A preemption loses no work:
  ``due()`` is true at once on SIGTERM, so the next save commits before the attempt stops.
- **T** = Daly's higher-order optimum for C and M (about sqrt(2 C M)). With no failure seen, T
  = C / budget (1 % of the loop by default, so at most 2 % even when C is measured at half its
  real value), or Daly's T for M = the time run without failure, when that is longer (having run
  that long without one, M is at least of that order). Then bounded by the user's minimum and
  maximum (default 30 minutes), and estimated again at every ``due()``.
- **R**, restart and restore: measured and reported (`Estimate.restart`), but it does not move
  the optimum: in Daly's model it multiplies the expected run time by a constant, e^(R/M).

Nothing here touches storage or the engine: the engine hands a `Pacer` its history and its
preemption flag; a scope used outside a task gets one with neither.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from taskpoint.checkpoint.stats import ScopeStats

DEFAULT_BUDGET = 0.01  # share of the loop spent on saves while no failure has been seen
DEFAULT_MAX_INTERVAL = 1800.0  # never more than 30 minutes of work at stake, unless asked
UNMEASURED_COST = 0.1  # seconds a save is assumed to cost before one is measured or loaded
WRITER_SHARE = 0.5  # of a commit's time, charged to the loop when its steps cannot be compared
COST_SAMPLES = 8  # the save cost is the median of this many newest saves
MIN_COST_SAMPLES = 3  # (with fewer, the cheapest of them)
BASE_STEPS = 32  # a step's usual duration is the median of this many newest clean steps
MIN_BASE_STEPS = 3
MAX_WINDOW_STEPS = 1024  # a commit not seen finishing after this many steps is not measured


@dataclass(frozen=True)
class FailureHistory:
    """What the records say about a task's earlier attempts: plain data, pickled to wherever the
    attempt runs. ``run_s``: seconds they ran; ``failures``: how many of them ended losing work
    (lost or recoverable); ``restart_s``: the median time from such an end to the next
    attempt's start, when one was seen."""

    run_s: float = 0.0
    failures: int = 0
    attempts: int = 0
    restart_s: float | None = None

    def __add__(self, other: FailureHistory) -> FailureHistory:
        return FailureHistory(
            self.run_s + other.run_s,
            self.failures + other.failures,
            self.attempts + other.attempts,
            self.restart_s if self.restart_s is not None else other.restart_s,
        )


@dataclass(frozen=True)
class Estimate:
    """One decision's inputs and result (`Pacer.last`): all times in seconds."""

    interval: float  # T: time between saves chosen now
    cost: float  # C: what a save costs the loop, as used
    measured: bool  # whether C was measured in this attempt (else assumed)
    mtbf: float | None  # M: mean time between failures that lose work; None when none was seen
    failures: int
    run_s: float  # time the failure rate is taken over (this attempt so far included)
    restart: float | None  # R: a failed attempt's end to the next one's first step
    basis: str  # which rule chose T: "daly", "budget", "min" or "max"

    def waste(self) -> float:
        """The expected share of time lost at this interval: saves (C/T) and, per failure, half
        an interval of work plus the restart."""
        share = self.cost / self.interval if self.interval > 0 else 1.0
        if self.mtbf:
            share += (self.interval / 2 + (self.restart or 0.0)) / self.mtbf
        return share


def daly_interval(cost: float, mtbf: float) -> float:
    """Daly's (2006) higher-order estimate of the optimum time between checkpoints of cost
    ``cost`` under failures at mean interval ``mtbf``: sqrt(2 C M) for C << M, refined."""
    if cost <= 0 or mtbf <= 0:
        return 0.0
    if cost >= 2 * mtbf:
        return mtbf
    x = cost / (2 * mtbf)
    return math.sqrt(2 * cost * mtbf) * (1 + math.sqrt(x) / 3 + x / 9) - cost


def choose_interval(
    cost: float,
    failures: int,
    run_s: float,
    *,
    budget: float = DEFAULT_BUDGET,
    min_interval: float = 0.0,
    max_interval: float = DEFAULT_MAX_INTERVAL,
) -> tuple[float, str]:
    """The interval for a save cost ``cost`` after ``failures`` in ``run_s`` seconds, and which
    rule chose it (the module docstring gives the model)."""
    if failures > 0:
        interval, basis = daly_interval(cost, run_s / failures), "daly"
    else:
        interval, basis = cost / budget, "budget"
        grown = daly_interval(cost, run_s)
        if grown > interval:
            interval, basis = grown, "daly"
    if interval < min_interval:
        return min_interval, "min"
    if interval > max_interval:
        return max_interval, "max"
    return interval, basis


def _median(values: deque[float] | list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


class SaveCostMeter:
    """What each save costs the loop, from the durations of its steps (the intervals between
    ``due()`` calls): the steps from the one that called ``save()`` to the one in which the
    commit finished, less as many usual steps (the median of recent steps with no save in
    flight); when there are too few clean steps to compare with, the stall plus `WRITER_SHARE`
    of the commit's time on the writer thread.

    Bounded, so that a noisy machine cannot make one save look free or absurdly dear: at least
    what the save blocked the loop (from the ``due()`` that said to save to the end of the
    save's stall, so an integration's staging copy before ``write()`` counts), at most that
    plus the time the writer thread ran and one usual step (a writer cannot take more of the
    loop's time than it ran; the step allows for an overlapped copy's wait)."""

    def __init__(self) -> None:
        self._last: float | None = None
        self._clean: deque[float] = deque(maxlen=BASE_STEPS)
        self._costs: deque[float] = deque(maxlen=COST_SAMPLES)
        self._cost: float | None = None
        self._saves = 0  # the scope's counters as the previous step saw them
        self._stall = self._commit = 0.0
        self._open_at: float | None = None  # when the save being measured started
        self._open_saves = 0
        self._open_steps = 0
        self._excess = 0.0
        self._marks = (0.0, 0.0)  # stall_s and commit_s before the save being measured
        self._blocked = 0.0  # from the due() that said to save to the end of its stall
        self._base = 0.0
        self.answered = False  # what the previous due() said

    @property
    def cost(self) -> float | None:
        """Seconds one save costs the loop (median of the newest), ``None`` before any."""
        return self._cost

    @property
    def samples(self) -> list[float]:
        return list(self._costs)

    def step(self, now: float, stats: ScopeStats) -> None:
        """A step ended at ``now`` (a ``due()`` call): account for its duration."""
        last, self._last = self._last, now
        new_saves = stats.saves - self._saves
        before = (self._stall, self._commit)
        self._saves, self._stall, self._commit = stats.saves, stats.stall_s, stats.commit_s
        if last is None:
            return  # the loop's first step: nothing to time yet
        duration = now - last
        if new_saves > 0 and self._open_at is None:
            # The save started (this step's) after its stall began: last_save_at is its end.
            self._open_at = (stats.last_save_at or now) - stats.last_stall_s
            self._open_saves, self._open_steps, self._excess = 0, 0, 0.0
            self._marks = before
            saved_at = stats.last_save_at
            asked = self.answered and saved_at is not None and saved_at >= last
            self._blocked = saved_at - last if asked and saved_at is not None else 0.0
        self._open_saves += max(0, int(new_saves))
        if self._open_at is None:
            self._clean.append(duration)
            return
        self._open_steps += 1
        base = _median(self._clean) if len(self._clean) >= MIN_BASE_STEPS else None
        self._excess = math.nan if base is None else self._excess + duration - base
        self._base = base or 0.0
        committed = stats.last_commit_at is not None and stats.last_commit_at >= self._open_at
        if committed:
            self._close(stats)
        elif self._open_steps >= MAX_WINDOW_STEPS:
            self._open_at = None  # the commit never showed: measure the next save instead

    def _close(self, stats: ScopeStats) -> None:
        stall = stats.stall_s - self._marks[0]
        commit = stats.commit_s - self._marks[1]
        blocked = max(stall, self._blocked)
        # A sync commit ran inside the stall: only what ran on the writer thread, beside the
        # loop, may have slowed it further.
        writer = max(0.0, commit - stall)
        if math.isnan(self._excess):
            cost = blocked + WRITER_SHARE * writer
        else:
            cost = min(max(self._excess, blocked), blocked + writer + self._base)
        self._costs.append(cost / max(1, self._open_saves))
        # The first saves of a process pay once for what later ones reuse (staging buffers
        # allocated and faulted in): until three are measured the cheapest stands for them.
        few = len(self._costs) < MIN_COST_SAMPLES
        self._cost = min(self._costs) if few else _median(self._costs)
        self._open_at = None


def _never() -> bool:
    return False


class Pacer:
    """Answers `Checkpoint.due()`: true once the time since the last save reaches the interval
    chosen now (`Estimate`), and at once when ``preempted()`` is true.

    ``stats`` is the scope's `ScopeStats` (saves, stalls, commits, loads), ``history`` the
    task's earlier attempts, ``clock`` the clock of both (``time.monotonic``). The bounds and the
    budget can be changed with `configure`.
    """

    def __init__(
        self,
        stats: ScopeStats,
        history: FailureHistory | None = None,
        preempted: Callable[[], bool] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        budget: float = DEFAULT_BUDGET,
        min_interval: float = 0.0,
        max_interval: float = DEFAULT_MAX_INTERVAL,
    ) -> None:
        self.stats = stats
        self.history = history or FailureHistory()
        self._preempted = preempted or _never
        self._clock = clock
        self._born = clock()
        self._first_due: float | None = None
        self.meter = SaveCostMeter()
        self.budget, self.min_interval, self.max_interval = budget, min_interval, max_interval
        self.configure(budget=budget, min_interval=min_interval, max_interval=max_interval)
        self.last: Estimate | None = None  # the newest decision's inputs and interval

    def configure(
        self,
        *,
        budget: float | None = None,
        min_interval: float | None = None,
        max_interval: float | None = None,
    ) -> None:
        """Change the share of the loop saves may take while no failure is seen (``budget``,
        0 < budget < 1) or the bounds of the interval, in seconds."""
        budget = self.budget if budget is None else budget
        low = self.min_interval if min_interval is None else min_interval
        high = self.max_interval if max_interval is None else max_interval
        if not _number(budget) or not 0 < budget < 1:
            raise ValueError(f"budget must be a share of the loop in (0, 1), got {budget!r}")
        if not _number(low) or not (_number(high) or high == math.inf) or not 0 <= low <= high:
            raise ValueError(
                "min_interval and max_interval must be seconds with 0 <= min_interval <= "
                f"max_interval, got {low!r} and {high!r}"
            )
        self.budget, self.min_interval, self.max_interval = float(budget), float(low), float(high)

    def due(self) -> bool:
        """Whether to save now (call it once per step: it also times the steps)."""
        now = self._clock()
        if self._first_due is None:
            self._first_due = now
        self.meter.step(now, self.stats)
        answer = self._preempted() or now - self._anchor() >= self.estimate(now).interval
        self.meter.answered = answer
        return answer

    def _anchor(self) -> float:
        """The last save, or the loop's first step when it has not saved since."""
        start = self._first_due if self._first_due is not None else self._born
        saved = self.stats.last_save_at if self.stats.saves else None
        return start if saved is None else max(saved, start)

    def estimate(self, now: float | None = None) -> Estimate:
        """The interval as chosen at ``now`` (default: the clock's now), with its inputs."""
        now = self._clock() if now is None else now
        cost, measured = self.meter.cost, True
        if cost is None:
            measured = False
            loaded = self.stats.load_s if self.stats.loads else 0.0
            cost = loaded if loaded > 0 else UNMEASURED_COST
        history = self.history
        run_s = history.run_s + max(0.0, now - self._born)
        interval, basis = choose_interval(
            cost,
            history.failures,
            run_s,
            budget=self.budget,
            min_interval=self.min_interval,
            max_interval=self.max_interval,
        )
        restart = None
        if history.restart_s is not None or self._first_due is not None:
            setup = (self._first_due - self._born) if self._first_due is not None else 0.0
            restart = (history.restart_s or 0.0) + setup
        self.last = Estimate(
            interval=interval,
            cost=cost,
            measured=measured,
            mtbf=run_s / history.failures if history.failures else None,
            failures=history.failures,
            run_s=run_s,
            restart=restart,
            basis=basis,
        )
        return self.last


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


__all__ = [
    "Estimate",
    "FailureHistory",
    "Pacer",
    "SaveCostMeter",
    "choose_interval",
    "daly_interval",
]
