"""Retry policy: small composable pieces over one attempt-state object (tenacity style).

An attempt ends with a status; ``classify`` maps its exception to one. The policy then asks its
``retry`` predicates (all must agree) and its ``wait`` strategy for the delay, and sleeps with an
injectable ``sleep`` (tests pass a recorder instead of ``time.sleep``).

Budgets: ``recoverable`` spends the user's ``retries``; ``preempted`` and ``lost`` spend
``system_retries`` so spot interruptions never eat the user's retries; ``failed`` and ``aborted``
are never retried. A checkpoint request past its storage timeout (`CheckpointTimeoutError`) is
``lost`` too: a stalled or unreachable store is the infrastructure's failure, like a lost worker,
and the work since the last commit is lost with it; the next attempt resumes from that commit.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from taskpoint.errors import (
    AttemptLost,
    CheckpointError,
    CheckpointTimeoutError,
    Preempted,
    RecoverableError,
)
from taskpoint.records.status import AttemptStatus

USER_BUDGET = "user"
SYSTEM_BUDGET = "system"
BUDGET_OF_STATUS: dict[str, str] = {
    AttemptStatus.RECOVERABLE: USER_BUDGET,
    AttemptStatus.PREEMPTED: SYSTEM_BUDGET,
    AttemptStatus.LOST: SYSTEM_BUDGET,
}


def classify(exc: BaseException, retry_on: tuple[type[BaseException], ...] = ()) -> str:
    """The attempt status an exception stands for."""
    if isinstance(exc, Preempted):
        return AttemptStatus.PREEMPTED
    if isinstance(exc, AttemptLost) or _storage_timed_out(exc):
        return AttemptStatus.LOST
    if isinstance(exc, RecoverableError) or (retry_on and isinstance(exc, retry_on)):
        return AttemptStatus.RECOVERABLE
    if isinstance(exc, KeyboardInterrupt):
        return AttemptStatus.ABORTED
    return AttemptStatus.FAILED


def _storage_timed_out(exc: BaseException) -> bool:
    """A `CheckpointTimeoutError`, or a checkpoint error caused by one (an async write that
    timed out surfaces at the next write as "an earlier async checkpoint write failed")."""
    seen = 0
    error: BaseException | None = exc
    while isinstance(error, CheckpointError) and seen < 8:
        if isinstance(error, CheckpointTimeoutError):
            return True
        error, seen = error.__cause__, seen + 1
    return False


@dataclass
class AttemptState:
    """Where a node's attempt loop stands after an attempt ended (this driver run only)."""

    attempt: int = 0
    status: str = ""
    error: BaseException | None = None
    spent: dict[str, int] = field(default_factory=lambda: {USER_BUDGET: 0, SYSTEM_BUDGET: 0})
    started: float = field(default_factory=time.monotonic)

    def ended(self, attempt: int, status: str, error: BaseException | None) -> None:
        self.attempt, self.status, self.error = attempt, status, error

    @property
    def budget(self) -> str | None:
        return BUDGET_OF_STATUS.get(self.status)


RetryPredicate = Callable[[AttemptState], bool]
WaitStrategy = Callable[[AttemptState], float]


def retry_if_retryable() -> RetryPredicate:
    """Only statuses that have a budget are retried."""
    return lambda state: state.budget is not None


def stop_after_budget(retries: int, system_retries: int) -> RetryPredicate:
    """Allow a retry while the budget of the ended attempt's kind is not spent."""
    limits = {USER_BUDGET: retries, SYSTEM_BUDGET: system_retries}
    return lambda state: (
        state.budget is not None and state.spent[state.budget] < limits[state.budget]
    )


def wait_fixed(
    seconds: float, statuses: tuple[str, ...] = (AttemptStatus.RECOVERABLE,)
) -> WaitStrategy:
    """``seconds`` before retrying the given statuses; preempted/lost attempts go again at once."""
    return lambda state: seconds if state.status in statuses else 0.0


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter, for ``@task(retry_delay=Backoff(...))``.

    The k-th retry of a recoverable failure waits ``initial * multiplier ** (k - 1)`` seconds,
    capped at ``maximum``, minus a random share of up to ``jitter`` of it (``jitter=0.5``: between
    half and all of it), so that many nodes failing together on one outage do not all come back
    at the same instant. Preempted and lost attempts still go again at once.

    Examples:
        >>> from taskpoint import Backoff, task
        >>> backoff = Backoff(initial=1, maximum=60, multiplier=2, jitter=0.5)
        >>> [backoff.delay(k, draw=0.0) for k in (1, 2, 3, 7)]   # draw=0: no jitter taken off
        [1.0, 2.0, 4.0, 60.0]
        >>> backoff.delay(3, draw=0.5)                           # a quarter taken off
        3.0
        >>> @task(retries=5, retry_delay=backoff)
        ... def fetch() -> None: ...
    """

    initial: float = 1.0
    maximum: float = 60.0
    multiplier: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        for name in ("initial", "maximum", "multiplier", "jitter"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"Backoff: {name} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"Backoff: {name} must be a finite number >= 0, got {value!r}")
        if self.multiplier < 1:
            raise ValueError(f"Backoff: multiplier must be >= 1, got {self.multiplier!r}")
        if self.jitter > 1:
            raise ValueError(f"Backoff: jitter is a share of the delay (0 to 1), got {self.jitter}")
        if self.maximum < self.initial:
            raise ValueError(
                f"Backoff: maximum ({self.maximum}) must be >= initial ({self.initial})"
            )

    def delay(self, retry: int, draw: float) -> float:
        """Seconds before retry number ``retry`` (1-based), ``draw`` uniform in [0, 1)."""
        exponent = min(retry - 1, 1024)  # 2.0 ** 1024 overflows; the cap applies long before
        try:
            base = min(self.maximum, self.initial * self.multiplier**exponent)
        except OverflowError:
            base = self.maximum
        return base * (1.0 - self.jitter * draw)


def wait_exponential_jitter(
    backoff: Backoff,
    statuses: tuple[str, ...] = (AttemptStatus.RECOVERABLE,),
    draw: Callable[[], float] = random.random,
) -> WaitStrategy:
    """``backoff``'s delay for the n-th spent retry of the user budget; others go at once.

    Called after ``RetryPolicy.spend`` counted the retry, so the first retry sees 1."""

    def wait(state: AttemptState) -> float:
        if state.status not in statuses:
            return 0.0
        return backoff.delay(max(1, state.spent[USER_BUDGET]), draw())

    return wait


RetryDelay = float | Backoff


@dataclass
class RetryPolicy:
    retry: tuple[RetryPredicate, ...]
    wait: WaitStrategy
    sleep: Callable[[float], None] = time.sleep

    @classmethod
    def for_task(
        cls,
        retries: int,
        system_retries: int,
        retry_delay: RetryDelay,
        sleep: Callable[[float], None] | None = None,
        draw: Callable[[], float] = random.random,
    ) -> RetryPolicy:
        wait = (
            wait_exponential_jitter(retry_delay, draw=draw)
            if isinstance(retry_delay, Backoff)
            else wait_fixed(retry_delay)
        )
        return cls(
            retry=(retry_if_retryable(), stop_after_budget(retries, system_retries)),
            wait=wait,
            sleep=sleep or time.sleep,
        )

    def should_retry(self, state: AttemptState) -> bool:
        return all(predicate(state) for predicate in self.retry)

    def spend(self, state: AttemptState) -> float:
        """Record the retry against its budget and return the delay before the next attempt."""
        budget = state.budget
        if budget is not None:
            state.spent[budget] += 1
        return self.wait(state)
