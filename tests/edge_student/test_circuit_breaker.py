"""The circuit breaker's states on a hand-driven clock (fast; the breaker on real failures: test_faults.py)."""

from __future__ import annotations

from edge_student.circuit_breaker import CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def breaker(threshold: int = 3, reset: float = 10.0) -> tuple[CircuitBreaker, Clock]:
    clock = Clock()
    return CircuitBreaker(threshold, reset, clock=clock), clock


def test_consecutive_failures_open_it_and_a_success_in_between_resets_the_count() -> None:
    b, _ = breaker()
    b.record_failure()
    b.record_failure()
    b.record_success()
    b.record_failure()
    b.record_failure()
    assert b.state == "closed" and b.allow()
    b.record_failure()
    assert b.state == "open" and not b.allow()


def test_after_the_reset_time_one_trial_call_goes_through() -> None:
    b, clock = breaker(threshold=1)
    b.record_failure()
    clock.now += 9.9
    assert b.state == "open" and not b.allow()
    clock.now += 0.1
    assert b.state == "half_open"
    assert b.allow() and not b.allow(), "only one trial at a time"
    b.record_success()
    assert b.state == "closed" and b.allow()


def test_a_failed_trial_opens_it_again_for_a_full_period() -> None:
    b, clock = breaker(threshold=1)
    b.record_failure()
    clock.now += 10
    assert b.allow()
    b.record_failure()
    assert b.state == "open"
    clock.now += 9
    assert not b.allow()
    clock.now += 1
    assert b.allow()


def test_a_trial_whose_caller_vanished_does_not_block_it_forever() -> None:
    b, clock = breaker(threshold=1)
    b.record_failure()
    clock.now += 10
    assert b.allow()  # the trial's caller never reports back
    clock.now += 5
    assert not b.allow()
    clock.now += 5
    assert b.allow(), "a new trial once the old one is a reset period old"
