"""The circuit breaker on its own, on a clock that moves only when told."""

from __future__ import annotations

from cached_tei.breaker import CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, threshold: int = 3, cooldown: float = 10.0) -> CircuitBreaker:
    return CircuitBreaker(threshold, cooldown, clock=clock)


def test_it_stays_closed_below_the_threshold() -> None:
    b = breaker(Clock())
    b.record_failure()
    b.record_failure()
    assert b.state == "closed" and b.allow()


def test_it_opens_at_the_threshold_and_refuses() -> None:
    b = breaker(Clock())
    for _ in range(3):
        b.record_failure()
    assert b.state == "open"
    assert not b.allow()


def test_a_success_resets_the_consecutive_failures() -> None:
    b = breaker(Clock())
    b.record_failure()
    b.record_failure()
    b.record_success()
    b.record_failure()
    b.record_failure()
    assert b.state == "closed"


def test_after_the_cooldown_one_trial_goes_through() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.record_failure()
    clock.now += 10.0
    assert b.state == "half-open"
    assert b.allow()  # the trial
    assert not b.allow()  # everyone else waits for another cooldown
    assert b.state == "open"


def test_a_successful_trial_closes_it() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.record_failure()
    clock.now += 10.0
    assert b.allow()
    b.record_success()
    assert b.state == "closed" and b.allow()


def test_a_failed_trial_opens_it_for_another_cooldown() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.record_failure()
    clock.now += 10.0
    assert b.allow()
    b.record_failure()
    clock.now += 9.9
    assert b.state == "open"
    clock.now += 0.1
    assert b.state == "half-open"
