"""Retry policy: small composable pieces over one attempt-state object (tenacity style).

An attempt ends with a status; ``classify`` maps its exception to one. The policy then asks its
``retry`` predicates (all must agree) and its ``wait`` strategy for the delay, and sleeps with an
injectable ``sleep`` (tests pass a recorder instead of ``time.sleep``).

Budgets: ``recoverable`` spends the user's ``retries``; ``preempted`` and ``lost`` spend
``system_retries`` so spot interruptions never eat the user's retries; ``failed`` and ``aborted``
are never retried.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from taskpoint.errors import AttemptLost, Preempted, RecoverableError
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
    if isinstance(exc, AttemptLost):
        return AttemptStatus.LOST
    if isinstance(exc, RecoverableError) or (retry_on and isinstance(exc, retry_on)):
        return AttemptStatus.RECOVERABLE
    if isinstance(exc, KeyboardInterrupt):
        return AttemptStatus.ABORTED
    return AttemptStatus.FAILED


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
        retry_delay: float,
        sleep: Callable[[float], None] | None = None,
    ) -> RetryPolicy:
        return cls(
            retry=(retry_if_retryable(), stop_after_budget(retries, system_retries)),
            wait=wait_fixed(retry_delay),
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
