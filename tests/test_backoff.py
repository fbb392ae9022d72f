"""The one back-off policy: exact delays, the random source injected."""

from __future__ import annotations

import pytest

from sms_monitor.core.backoff import Backoff


def fixed(value: float) -> float:
    return value


def test_doubles_from_base_up_to_the_cap_without_jitter() -> None:
    outbox = Backoff(30.0, 3600.0)  # the alert outbox's retries
    assert [outbox.delay(n) for n in range(9)] == [30.0, 60.0, 120.0, 240.0, 480.0, 960.0,
                                                   1920.0, 3600.0, 3600.0]


def test_a_huge_attempt_number_stays_at_the_cap() -> None:
    assert Backoff(30.0, 3600.0).delay(5000) == 3600.0
    assert Backoff(0.5, 10.0, jitter=0.5).delay(10**6, rand=lambda: 1.0) == 10.0


def test_without_jitter_the_random_source_is_not_used() -> None:
    def boom() -> float:
        raise AssertionError("rand called")

    assert Backoff(1.0, 8.0).delay(2, rand=boom) == 4.0


@pytest.mark.parametrize(("rand", "expected"), [(0.0, [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0]),
                                                (0.5, [0.375, 0.75, 1.5, 3.0, 6.0, 7.5, 7.5]),
                                                (1.0, [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0])])
def test_equal_jitter_waits_between_half_and_all_of_the_delay(rand: float,
                                                              expected: list[float]) -> None:
    twilio = Backoff(0.5, 10.0, jitter=0.5)  # the Twilio request retries
    assert [twilio.delay(n, rand=lambda: rand) for n in range(7)] == expected


def test_full_jitter_spans_zero_to_the_delay() -> None:
    policy = Backoff(2.0, 60.0, jitter=1.0)
    assert policy.delay(3, rand=lambda: 0.0) == 0.0
    assert policy.delay(3, rand=lambda: 0.25) == 4.0


def test_retry_after_wins_but_never_past_the_cap() -> None:
    twilio = Backoff(0.5, 10.0, jitter=0.5)
    assert twilio.delay(0, retry_after=3.0, rand=lambda: 0.9) == 3.0
    assert twilio.delay(5, retry_after=0.0) == 0.0
    assert twilio.delay(0, retry_after=120.0) == 10.0
    assert twilio.delay(0, retry_after=-4.0) == 0.0


@pytest.mark.parametrize("args", [(-1.0, 10.0, 0.0), (1.0, -1.0, 0.0), (1.0, 10.0, 1.5),
                                  (1.0, 10.0, -0.1)])
def test_nonsense_policies_are_refused(args: tuple[float, float, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(*args)
