"""Exponential backoff with jitter between recoverable attempts (``retry_delay=Backoff(...)``)."""

from __future__ import annotations

import random

import pytest

import taskpoint.engine.driver as driver
from taskpoint import Backoff, Preempted, RecoverableError, task
from taskpoint.engine.retry import AttemptState, RetryPolicy


def test_delays_grow_exponentially_up_to_the_cap():
    backoff = Backoff(initial=0.5, maximum=5.0, multiplier=3.0, jitter=0.0)
    assert [backoff.delay(k, draw=0.9) for k in range(1, 6)] == [0.5, 1.5, 4.5, 5.0, 5.0]
    assert Backoff(initial=2, maximum=10**6).delay(10_000, draw=0.0) == 10**6  # no overflow


def test_jitter_takes_off_at_most_its_share():
    backoff = Backoff(initial=4.0, maximum=100.0, multiplier=2.0, jitter=0.25)
    assert backoff.delay(1, draw=0.0) == 4.0
    assert backoff.delay(1, draw=0.5) == 3.5
    rng = random.Random(7)
    delays = [backoff.delay(3, draw=rng.random()) for _ in range(200)]
    assert all(12.0 <= d <= 16.0 for d in delays)
    assert len(set(delays)) > 100  # really spread, not one value


def test_policy_backs_off_recoverable_and_retries_preempted_at_once():
    draws = iter([0.0, 0.0, 0.0])
    policy = RetryPolicy.for_task(
        retries=3,
        system_retries=2,
        retry_delay=Backoff(initial=1.0, maximum=60.0, multiplier=2.0, jitter=0.5),
        sleep=lambda _s: None,
        draw=lambda: next(draws),
    )
    state = AttemptState()
    state.ended(1, "recoverable", RecoverableError())
    assert policy.spend(state) == 1.0
    state.ended(2, "preempted", Preempted())
    assert policy.spend(state) == 0.0  # a spot interruption does not wait, nor count
    state.ended(3, "recoverable", RecoverableError())
    assert policy.spend(state) == 2.0
    state.ended(4, "recoverable", RecoverableError())
    assert policy.spend(state) == 4.0


def test_engine_sleeps_the_backoff_between_attempts(monkeypatch):
    slept: list[float] = []
    real_init = driver.Run.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        self.sleep = slept.append

    monkeypatch.setattr(driver.Run, "__init__", init)
    calls = iter(range(10))

    @task(retries=3, retry_delay=Backoff(initial=3.0, maximum=10.0, jitter=0.0))
    def flaky() -> int:
        if next(calls) < 3:
            raise RecoverableError("not yet")
        return 7

    assert flaky() == 7
    assert slept == [3.0, 6.0, 10.0]


@pytest.mark.parametrize(
    ("make", "error", "words"),
    [
        (lambda: Backoff(multiplier=0.5), ValueError, ["multiplier", ">= 1"]),
        (lambda: Backoff(jitter=1.5), ValueError, ["jitter", "0 to 1"]),
        (lambda: Backoff(initial=10, maximum=1), ValueError, ["maximum", "initial"]),
        (lambda: Backoff(initial=float("nan")), ValueError, ["initial", "finite"]),
        (lambda: Backoff(initial="1"), TypeError, ["initial", "number"]),
        (lambda: task(retry_delay="exp")(len), TypeError, ["retry_delay", "Backoff"]),
        (lambda: task(retry_delay=float("inf"))(len), ValueError, ["retry_delay", "finite"]),
        (lambda: task(retry_delay=-1)(len), ValueError, ["retry_delay", ">= 0"]),
    ],
)
def test_bad_backoff_options_say_what_is_wrong(make, error, words):
    with pytest.raises(error) as info:
        make()
    for word in words:
        assert word in str(info.value)
