"""The checkpoint interval (``checkpoint/interval.py``) against a scripted clock and a scripted
failure history: a loop of small callables over one state object, no sleeps.

`Loop` is that state: a clock, the scope's `ScopeStats` written on that clock, the async
writer's commit in flight, and the `Pacer` under test. ``loop.run(seconds)`` steps it, saving
whenever ``due()`` says, with the save costs given: the stall of ``write()``, the time the
commit takes on the writer thread and how much slower the loop's steps run meanwhile.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import pytest

from taskpoint import Checkpoint
from taskpoint.checkpoint.interval import (
    DEFAULT_BUDGET,
    FailureHistory,
    Pacer,
    choose_interval,
    daly_interval,
)
from taskpoint.checkpoint.stats import ScopeStats


@dataclass
class Loop:
    step_s: float = 0.1  # a step with no save in flight
    stall_s: float = 0.02  # write() blocks the loop this long
    commit_s: float = 0.3  # then the writer commits for this long
    slowdown: float = 0.2  # steps run this much slower while it does
    staging_s: float = 0.0  # an integration's copy before write(): blocks, not in write()'s stall
    jitter: float = 0.0  # each step takes up to this share more or less (a noisy machine)
    now: float = 1000.0
    preempted: bool = False
    stats: ScopeStats = field(default_factory=ScopeStats)
    commit_done_at: float | None = None
    saves_at: list[float] = field(default_factory=list)
    busy_s: float = 0.0  # time the loop did not step: stalls and slowed steps' extra time
    pacer: Pacer = field(init=False)
    rng: random.Random = field(default_factory=lambda: random.Random(7))

    def __post_init__(self) -> None:
        self.stats.opened = self.now

    def clock(self) -> float:
        return self.now

    def with_pacer(self, history: FailureHistory | None = None, **options) -> Loop:
        self.pacer = Pacer(self.stats, history, lambda: self.preempted, clock=self.clock, **options)
        return self

    # -- the small callables -------------------------------------------------------------------
    def step(self) -> bool:
        """One step of work (slower while a commit runs), then ``due()``."""
        took = self.step_s * (1 + self.jitter * self.rng.uniform(-1, 1))
        if self.commit_done_at is not None and self.now < self.commit_done_at:
            took *= 1 + self.slowdown
        self.busy_s += took - self.step_s
        self.now += took
        self.finish_commit()
        return self.pacer.due()

    def save(self) -> None:
        """An async save: the stall on the loop, then a commit on the writer thread."""
        self.now += self.staging_s + self.stall_s
        self.busy_s += self.staging_s + self.stall_s
        self.stats.saves += 1
        self.stats.stall_s += self.stall_s
        self.stats.last_stall_s = self.stall_s
        self.stats.last_save_at = self.now
        self.saves_at.append(self.now)
        self.commit_done_at = self.now + self.commit_s

    def finish_commit(self) -> None:
        if self.commit_done_at is not None and self.now >= self.commit_done_at:
            self.stats.commits += 1
            self.stats.commit_s += self.commit_s
            self.stats.last_commit_s = self.commit_s
            self.stats.last_commit_at = self.commit_done_at
            self.commit_done_at = None

    def run(self, seconds: float) -> Loop:
        end = self.now + seconds
        while self.now < end:
            if self.step():
                self.save()
        return self

    # -- what the tests read -------------------------------------------------------------------
    @property
    def cost(self) -> float:
        """What one save really cost this loop: its stall plus the slowdown of the steps that
        ran while the commit did (the steps are whole, so count them)."""
        slowed = math.ceil(self.commit_s / (self.step_s * (1 + self.slowdown)))
        return self.stall_s + slowed * self.step_s * self.slowdown

    def interval(self) -> float:
        return self.pacer.estimate(self.now).interval


def test_daly_is_young_for_cheap_saves_and_the_mtbf_for_dear_ones():
    assert daly_interval(0.1, 20) == pytest.approx(math.sqrt(2 * 0.1 * 20), rel=0.05)
    assert daly_interval(0.001, 3600) == pytest.approx(math.sqrt(2 * 0.001 * 3600), rel=0.01)
    assert daly_interval(50, 20) == 20  # a save dearer than two MTBFs: once per MTBF
    assert daly_interval(0, 20) == 0


def test_without_a_failure_saves_take_at_most_two_percent_of_the_loop():
    loop = Loop().with_pacer().run(300)
    overhead = loop.busy_s / (loop.now - 1000 - loop.busy_s)
    assert 0.002 < overhead <= 0.02  # it does save, and within the budget
    assert loop.pacer.meter.cost == pytest.approx(loop.cost, rel=0.1)  # the slowdown counted
    estimate = loop.pacer.estimate(loop.now)
    assert (estimate.basis, estimate.failures, estimate.mtbf) == ("budget", 0, None)
    assert estimate.interval == pytest.approx(loop.cost / DEFAULT_BUDGET, rel=0.1)
    gaps = [b - a for a, b in zip(loop.saves_at[1:], loop.saves_at[2:], strict=False)]
    assert min(gaps) >= estimate.interval * 0.9


def test_the_first_save_waits_for_the_default_and_a_restored_scope_for_its_load_time():
    loop = Loop().with_pacer()
    assert not loop.step()
    first = loop.pacer.estimate(loop.now)
    assert (first.measured, first.interval) == (False, pytest.approx(10.0))
    loop.run(12)
    assert len(loop.saves_at) == 1 and 10 <= loop.saves_at[0] - 1000 <= 10.5
    restored = Loop()
    restored.stats.loads, restored.stats.load_s = 1, 0.4  # a 0.4 s restore: assumed save cost
    restored.with_pacer(FailureHistory(run_s=20, failures=1))
    assert restored.interval() == pytest.approx(daly_interval(0.4, 20), rel=0.01)


def test_mtbf_20s_and_saves_costing_0_1s_give_about_2s():
    # Sync saves of 0.1 s: the whole cost is the stall.
    loop = Loop(stall_s=0.1, commit_s=0.0, slowdown=0.0)
    loop.with_pacer(FailureHistory(run_s=200.0, failures=10, attempts=11, restart_s=0.5))
    loop.run(30)
    estimate = loop.pacer.estimate(loop.now)
    assert estimate.measured and estimate.cost == pytest.approx(0.1, rel=0.05)
    assert estimate.mtbf == pytest.approx(23.0, rel=0.01)  # (200 s + 30 s of this one) / 10
    assert estimate.basis == "daly"
    assert 1.9 <= estimate.interval <= 2.2
    gaps = [b - a for a, b in zip(loop.saves_at[2:], loop.saves_at[3:], strict=False)]
    assert all(1.9 <= gap <= 2.4 for gap in gaps)  # the interval plus less than a step
    assert estimate.restart == pytest.approx(0.5 + 0.1)  # the gap, then one step to the first
    assert 0.05 < estimate.waste() < 0.15


def test_more_failures_shorten_the_interval_and_none_lengthen_it():
    costs = 0.05
    frequent, _ = choose_interval(costs, 20, 200.0)  # MTBF 10 s
    rare, _ = choose_interval(costs, 1, 2000.0)  # MTBF 2000 s
    calm, basis = choose_interval(costs, 0, 60.0)
    assert frequent < rare and frequent < calm
    assert (calm, basis) == (pytest.approx(5.0), "budget")  # 1 % of the loop
    # Hours without a failure: the time run is a floor for the MTBF, Daly's interval for it.
    long, basis = choose_interval(costs, 0, 36_000.0)
    assert basis == "daly" and long == pytest.approx(daly_interval(costs, 36_000.0))


def test_user_bounds_are_respected():
    many = FailureHistory(run_s=100.0, failures=50)  # MTBF 2 s: Daly wants ~0.4 s
    loop = Loop(stall_s=0.05, commit_s=0.0).with_pacer(many, min_interval=3.0)
    loop.run(20)
    assert loop.pacer.estimate(loop.now).basis == "min"
    gaps = [b - a for a, b in zip(loop.saves_at, loop.saves_at[1:], strict=False)]
    assert gaps and min(gaps) >= 3.0
    slow = Loop(stall_s=5.0, commit_s=0.0).with_pacer(max_interval=60.0)
    slow.run(200)  # 5 s saves would want 500 s at 1 %: the maximum wins
    estimate = slow.pacer.estimate(slow.now)
    assert (estimate.interval, estimate.basis) == (60.0, "max")
    slow.pacer.configure(max_interval=1000.0, budget=0.02)
    assert slow.interval() == pytest.approx(250.0, rel=0.05)  # the cost / 2 %
    for bad in ({"budget": 0}, {"budget": 1.5}, {"min_interval": -1}, {"max_interval": math.nan}):
        with pytest.raises(ValueError, match=r"budget|interval"):
            slow.pacer.configure(**bad)
    with pytest.raises(ValueError, match="min_interval"):
        slow.pacer.configure(min_interval=2000.0)  # above the maximum


def test_preempted_is_due_at_once():
    loop = Loop().with_pacer(max_interval=3600.0).run(15)
    loop.save()  # just saved: nothing is due for a while
    assert not loop.step()
    loop.preempted = True
    assert loop.step()
    assert loop.step()  # and stays due while preempted


def test_the_cost_is_estimated_again_as_saves_get_dearer():
    history = FailureHistory(run_s=10_000.0, failures=100)  # an MTBF of ~100 s
    loop = Loop(stall_s=0.01, commit_s=0.0, slowdown=0.0).with_pacer(history).run(60)
    assert loop.pacer.meter.cost == pytest.approx(0.01, rel=0.05)
    cheap = loop.interval()
    loop.stall_s = 0.05  # the store got slower
    loop.run(120)
    assert loop.pacer.meter.cost == pytest.approx(0.05, rel=0.05)
    assert loop.interval() == pytest.approx(cheap * math.sqrt(5), rel=0.05)  # sqrt(2 C M)
    loop.stall_s = 0.01
    loop.run(60)  # the median of the newest saves follows it back down
    assert loop.pacer.meter.cost == pytest.approx(0.01, rel=0.05)
    assert loop.interval() == pytest.approx(cheap, rel=0.05)


def test_one_slow_step_does_not_move_the_cost():
    loop = Loop(stall_s=0.02, commit_s=0.0, slowdown=0.0).with_pacer().run(30)
    loop.step_s = 1.0  # one hiccup of the machine right after a save
    loop.save()
    loop.step()
    loop.step_s = 0.1
    loop.run(30)
    assert loop.pacer.meter.cost == pytest.approx(0.02, rel=0.05)


def test_a_staging_copy_counts_and_a_noisy_machine_moves_the_cost_within_bounds():
    loop = Loop(stall_s=0.0005, staging_s=0.03, commit_s=0.2, slowdown=0.1, jitter=0.3)
    loop.with_pacer(FailureHistory(run_s=200.0, failures=10)).run(120)
    samples = loop.pacer.meter.samples
    assert len(samples) == 8
    # Never below what the save blocked the loop (the copy before write() included), never
    # above that plus the writer's time and one step.
    assert all(0.0305 - 1e-9 <= cost <= 0.0305 + 0.2 + 0.1 + 1e-9 for cost in samples)
    truth = 0.0305 + 2 * 0.1 * 0.1  # two steps slowed by 10 % while the commit ran
    assert truth / 2 <= loop.pacer.meter.cost <= truth * 2


def test_without_steps_to_compare_a_share_of_the_commit_is_charged():
    loop = Loop(stall_s=0.01, commit_s=0.4).with_pacer()
    loop.step()
    loop.save()  # saved at the first step: no clean step to compare with yet
    for _ in range(6):
        loop.step()
    assert loop.pacer.meter.cost == pytest.approx(0.01 + 0.5 * (0.4 - 0.01))


def test_checkpoint_due_outside_a_task(tmp_path):
    with Checkpoint.open(tmp_path / "s") as cp:
        assert cp.due() is False  # the first step: 10 s to the first save
        assert cp.stats.dues == 1 and cp.pacer.history == FailureHistory()
        cp.pacer.configure(max_interval=0.0)
        assert cp.due() is True
        cp.write(b"x")
        assert cp.due() is True  # an interval of 0: every step
        cp.pacer.configure(min_interval=3600.0, max_interval=3600.0)
        assert cp.due() is False
        assert cp.stats.dues == 4


def test_failure_histories_add_up():
    own = FailureHistory(run_s=10.0, failures=1, attempts=2, restart_s=0.5)
    prior = FailureHistory(run_s=90.0, failures=2, attempts=5, restart_s=2.0)
    assert own + prior == FailureHistory(100.0, 3, 7, 0.5)
    assert FailureHistory() + prior == prior
