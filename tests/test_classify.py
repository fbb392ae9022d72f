"""Every boundary of the contract's threshold table, both sides."""

from __future__ import annotations

import pytest

from sms_monitor.core.classify import Status, grade, worst
from sms_monitor.core.thresholds import DEFAULT_THRESHOLDS, Threshold

G, Y, R = Status.GREEN, Status.YELLOW, Status.RED


@pytest.mark.parametrize(
    ("check", "value", "expected"),
    [
        # delivery_rate: > 95 % green, 90-95 % yellow (both ends), < 90 % red
        ("delivery_rate", 0.9501, G),
        ("delivery_rate", 0.95, Y),
        ("delivery_rate", 190 / 200, Y),
        ("delivery_rate", 0.92, Y),
        ("delivery_rate", 0.90, Y),
        ("delivery_rate", 180 / 200, Y),
        ("delivery_rate", 0.899, R),
        ("delivery_rate", 0.0, R),
        ("delivery_rate", 1.0, G),
        # error_rate: < 2 % green, 2-5 % yellow, > 5 % red
        ("error_rate", 0.0199, G),
        ("error_rate", 0.02, Y),
        ("error_rate", 0.05, Y),
        ("error_rate", 0.0501, R),
        # delivery_latency: < 10 s green, 10-30 s yellow, > 30 s red
        ("delivery_latency", 9.99, G),
        ("delivery_latency", 10.0, Y),
        ("delivery_latency", 30.0, Y),
        ("delivery_latency", 30.01, R),
        # api_response_time: < 3 s green, 3-7 s yellow, > 7 s red
        ("api_response_time", 2.999, G),
        ("api_response_time", 3.0, Y),
        ("api_response_time", 7.0, Y),
        ("api_response_time", 7.001, R),
        # balance: > 50 green, 20-50 yellow, < 20 red (out of credit included)
        ("balance", 50.01, G),
        ("balance", 50.0, Y),
        ("balance", 20.0, Y),
        ("balance", 19.99, R),
        ("balance", -0.42, R),
    ],
)
def test_boundaries(check: str, value: float, expected: Status) -> None:
    assert grade(value, DEFAULT_THRESHOLDS[check]) is expected


def test_threshold_rejects_inverted_bounds() -> None:
    with pytest.raises(ValueError):
        Threshold(good=0.90, bad=0.95, higher_is_better=True, unit="ratio")
    with pytest.raises(ValueError):
        Threshold(good=30, bad=10, higher_is_better=False, unit="seconds")


def test_worst_ignores_unknown_unless_all_unknown() -> None:
    assert worst([Status.UNKNOWN, G, Y]) is Y
    assert worst([R, Status.UNKNOWN, G]) is R
    assert worst([Status.UNKNOWN, Status.UNKNOWN]) is Status.UNKNOWN
    assert worst([]) is Status.UNKNOWN
    assert worst([G, G]) is G


def test_status_codes_follow_contract_and_nagios() -> None:
    assert [s.code for s in (G, Y, R, Status.UNKNOWN)] == [0, 1, 2, -1]
    assert [s.exit_code for s in (G, Y, R, Status.UNKNOWN)] == [0, 1, 2, 3]
