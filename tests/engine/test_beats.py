"""The driver's judgement of an attempt process's heartbeats (backends/_beats.py), against a
scripted clock: frozen only after ``timeout`` without a beat, with an allowance before the
first one, never with ``None``."""

from __future__ import annotations

from taskpoint.backends._beats import FIRST_BEAT_ALLOWANCE, BeatWatch


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_frozen_after_the_timeout_without_a_beat_and_not_before():
    clock = Clock()
    watch = BeatWatch(5.0, clock)
    watch.beat()
    clock.now += 4.9
    assert not watch.frozen()
    watch.beat()  # a beat restarts the count
    clock.now += 4.9
    assert not watch.frozen()
    clock.now += 0.2
    assert watch.frozen() and round(watch.silent_for(), 1) == 5.1


def test_a_child_that_has_not_beaten_yet_gets_the_start_allowance():
    clock = Clock()
    watch = BeatWatch(5.0, clock)
    clock.now += FIRST_BEAT_ALLOWANCE - 1
    assert not watch.frozen()
    clock.now += 2
    assert watch.frozen()


def test_no_timeout_never_freezes():
    clock = Clock()
    watch = BeatWatch(None, clock)
    clock.now += 1e9
    assert not watch.frozen()
