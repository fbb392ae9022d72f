"""Check construction: minimum samples, unreadable sources, red-on-timeout, overall."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from sms_monitor.core import facts as kinds
from sms_monitor.core.checks import CHECK_NAMES, account_checks
from sms_monitor.core.classify import Status
from sms_monitor.core.facts import AccountFacts
from sms_monitor.core.records import MessageRecord
from sms_monitor.core.stats import window_stats
from sms_monitor.core.thresholds import DEFAULT_THRESHOLDS

HEALTHY = AccountFacts(balance=120.0, currency="USD", balance_seconds=0.2, account_status="active",
                       phone_number="+15005550006", phone_found=True, phone_sms_capable=True,
                       messages_ok=True, credentials_accepted=True)


def stats_of(delivered: int, undelivered: int = 0, code: int = 30003, latency: float = 4.0,
             spread: float = 3600.0):
    n = delivered + undelivered
    times = [200.0 - spread + spread * i / max(1, n) for i in range(n)]
    recs = [MessageRecord(f"SMd{i}", True, "delivered", None, times[i], times[i] + latency)
            for i in range(delivered)]
    recs += [MessageRecord(f"SMu{i}", True, "undelivered", code, times[delivered + i],
                           times[delivered + i] + 10) for i in range(undelivered)]
    return window_stats(recs, 200.0, 3600)


def by_name(checks):
    return {c.name: c for c in checks}


def run(facts=HEALTHY, stats=None, min_samples=10):
    return by_name(account_checks("primary", facts, stats if stats is not None else stats_of(100),
                                  dict(DEFAULT_THRESHOLDS), min_samples))


def test_all_green_and_contract_order() -> None:
    checks = account_checks("primary", HEALTHY, stats_of(100), dict(DEFAULT_THRESHOLDS), 10,
                            international_baseline=0.0)  # the usual share, once learnt
    assert [c.name for c in checks] == [n for n in CHECK_NAMES if n != "budget"] + ["overall"]
    assert all(c.status is Status.GREEN for c in checks)


def test_delivery_rate_95_percent_is_yellow_and_overall_follows() -> None:
    # 190 of 200: exactly 95 % delivered and 5 % with errors: both yellow, not green
    checks = run(stats=stats_of(190, 10))
    assert checks["delivery_rate"].status is Status.YELLOW
    assert checks["delivery_rate"].value == 0.95
    assert checks["delivery_rate"].detail == "190 of 200 delivered in 1h"
    assert checks["error_rate"].status is Status.YELLOW
    assert checks["overall"].status is Status.YELLOW


def test_delivery_rate_just_under_90_percent_is_red() -> None:
    checks = run(stats=stats_of(899, 101))
    assert checks["delivery_rate"].status is Status.RED


def test_minimum_samples_make_ratio_checks_unknown() -> None:
    checks = run(stats=stats_of(5, 4))  # 9 settled, default minimum 10
    assert checks["delivery_rate"].status is Status.UNKNOWN
    assert checks["error_rate"].status is Status.UNKNOWN
    assert checks["delivery_latency"].status is Status.GREEN
    checks = run(stats=stats_of(6, 4))  # 10 settled: 60 % is red
    assert checks["delivery_rate"].status is Status.RED


def test_empty_window_is_unknown_not_green() -> None:
    checks = run(stats=stats_of(0))
    assert checks["delivery_rate"].status is Status.UNKNOWN
    assert checks["delivery_latency"].status is Status.UNKNOWN
    assert checks["carrier_filtering"].status is Status.GREEN


def test_carrier_filtering_any_is_yellow() -> None:
    checks = run(stats=stats_of(999, 1, code=30007))
    assert checks["carrier_filtering"].status is Status.YELLOW
    assert checks["carrier_filtering"].value == 1.0


def test_latency_boundaries() -> None:
    assert run(stats=stats_of(20, latency=10.0))["delivery_latency"].status is Status.YELLOW
    assert run(stats=stats_of(20, latency=31.0))["delivery_latency"].status is Status.RED


def test_timeout_makes_api_response_time_red_and_5xx_unknown() -> None:
    timeout = AccountFacts(balance_seconds=10.0, failures={"balance": kinds.TIMEOUT})
    assert run(facts=timeout)["api_response_time"].status is Status.RED
    refused = AccountFacts(balance_seconds=0.01, failures={"balance": kinds.CONNECTION})
    assert run(facts=refused)["api_response_time"].status is Status.RED
    server = AccountFacts(balance_seconds=0.3, credentials_accepted=True,
                          failures={"balance": kinds.SERVER_ERROR})
    checks = run(facts=server)
    assert checks["api_response_time"].status is Status.UNKNOWN
    assert checks["balance"].status is Status.UNKNOWN


def test_unreadable_messages_make_message_checks_unknown() -> None:
    facts = AccountFacts(**{**HEALTHY.__dict__, "messages_ok": False,
                            "failures": {"messages": kinds.MALFORMED}})
    checks = run(facts=facts)
    for name in ("delivery_rate", "error_rate", "delivery_latency", "carrier_filtering"):
        assert checks[name].status is Status.UNKNOWN
        assert "malformed" in checks[name].detail
    assert checks["overall"].status is Status.GREEN  # unknown is ignored by overall


def test_auth_failure_is_red_and_overall_red() -> None:
    facts = AccountFacts(balance_seconds=0.1, auth_failed=True, credentials_accepted=True,
                         failures={p: kinds.AUTH for p in ("balance", "account", "messages")})
    checks = run(facts=facts)
    assert checks["authentication"].status is Status.RED
    assert checks["overall"].status is Status.RED
    assert checks["balance"].status is Status.UNKNOWN


def test_account_and_number_checks() -> None:
    for status, expected in (("active", Status.GREEN), ("suspended", Status.RED),
                             ("closed", Status.RED)):
        facts = AccountFacts(**{**HEALTHY.__dict__, "account_status": status})
        assert run(facts=facts)["account_status"].status is expected
    lost = AccountFacts(**{**HEALTHY.__dict__, "phone_found": False, "phone_sms_capable": False})
    assert run(facts=lost)["phone_number"].status is Status.RED
    no_sms = AccountFacts(**{**HEALTHY.__dict__, "phone_sms_capable": False})
    assert run(facts=no_sms)["phone_number"].status is Status.RED
    unset = AccountFacts(**{**HEALTHY.__dict__, "phone_number": None})
    assert run(facts=unset)["phone_number"].status is Status.UNKNOWN


def test_throughput_against_the_number_limit() -> None:
    # 48 messages in one minute: 0.8/s against a long code's 1/s is the yellow boundary
    stats = stats_of(48, spread=19.0)
    assert stats.peak_minute == 48
    checks = by_name(account_checks("primary", HEALTHY, stats, dict(DEFAULT_THRESHOLDS), 10, 1.0))
    assert checks["throughput"].status is Status.YELLOW
    assert checks["throughput"].value == 0.8
    checks = by_name(account_checks("primary", HEALTHY, stats_of(47, spread=19.0),
                                    dict(DEFAULT_THRESHOLDS), 10, 1.0))
    assert checks["throughput"].status is Status.GREEN
    checks = by_name(account_checks("primary", HEALTHY, stats_of(61, spread=19.0),
                                    dict(DEFAULT_THRESHOLDS), 10, 1.0))
    assert checks["throughput"].status is Status.RED
    checks = by_name(account_checks("primary", HEALTHY, stats_of(61, spread=19.0),
                                    dict(DEFAULT_THRESHOLDS), 10, 3.0))
    assert checks["throughput"].status is Status.GREEN


@pytest.mark.parametrize(("month_to_date", "elapsed", "expected"), [
    (39.9, 0.5, Status.GREEN),  # projected 79.8 of 100
    (40.0, 0.5, Status.YELLOW),  # projected 80 %: yellow
    (50.0, 0.5, Status.YELLOW),  # projected 100 %: still yellow (red is above the budget)
    (50.1, 0.5, Status.RED),
])
def test_budget_projection(month_to_date: float, elapsed: float, expected: Status) -> None:
    facts = AccountFacts(**{**HEALTHY.__dict__, "spend_month": month_to_date, "spend_today": 1.0})
    checks = by_name(account_checks("primary", facts, stats_of(100), dict(DEFAULT_THRESHOLDS), 10,
                                    budget=100.0, month_elapsed=elapsed))
    assert checks["budget"].status is expected
    assert checks["budget"].value == pytest.approx(month_to_date / elapsed / 100.0)


def test_budget_unknown_without_usage() -> None:
    checks = by_name(account_checks("primary", HEALTHY, stats_of(100), dict(DEFAULT_THRESHOLDS), 10,
                                    budget=100.0))
    assert checks["budget"].status is Status.UNKNOWN


def test_nothing_known_is_unknown_overall() -> None:
    checks = run(facts=AccountFacts(), stats=stats_of(0))
    # carrier_filtering needs readable messages: with messages_ok False it is unknown too
    assert checks["overall"].status is Status.UNKNOWN


def test_overall_is_the_worst_of_the_contracts_checks_only() -> None:
    # a saturated long code (61 in a minute) and an over-budget month: advisory, not overall
    facts = AccountFacts(**{**HEALTHY.__dict__, "spend_month": 90.0, "spend_today": 3.0})
    checks = by_name(account_checks("primary", facts, stats_of(61, spread=19.0),
                                    dict(DEFAULT_THRESHOLDS), 10, 1.0, budget=100.0,
                                    month_elapsed=0.5))
    assert checks["throughput"].status is Status.RED
    assert checks["budget"].status is Status.RED
    assert checks["overall"].status is Status.GREEN
    assert checks["overall"].detail == "advisory: throughput red, budget red"
    # a contract check still decides, and the advisory ones worse than it are named
    stats = stats_of(190, 10, spread=19.0)  # 95 %: yellow; 200 in a minute: throughput red
    checks = by_name(account_checks("primary", HEALTHY, stats, dict(DEFAULT_THRESHOLDS), 10, 1.0))
    assert checks["overall"].status is Status.YELLOW
    assert checks["overall"].detail == "delivery_rate, error_rate; advisory: throughput red"


@pytest.mark.parametrize(("share", "baseline", "status", "value"), [
    (0.10, 0.10, Status.GREEN, 0.0),
    (0.14, 0.10, Status.GREEN, 0.04),  # 4 points above the usual share
    (0.15, 0.10, Status.YELLOW, 0.05),  # 5 points: the boundary is yellow
    (0.25, 0.10, Status.YELLOW, 0.15),
    (0.26, 0.10, Status.RED, 0.16),
    (0.02, 0.10, Status.GREEN, 0.0),  # fewer international than usual is no alarm
])
def test_international_share_jump(share: float, baseline: float, status: Status,
                                  value: float) -> None:
    international = round(share * 100)
    st = replace(stats_of(100), international=international)
    check = account_checks("primary", HEALTHY, st, dict(DEFAULT_THRESHOLDS), 10,
                           international_baseline=baseline)
    c = next(c for c in check if c.name == "international_share")
    assert c.status is status and c.value == pytest.approx(value)
    overall = check[-1]
    assert overall.status is Status.GREEN  # advisory: never in overall, named when worse
    if status is not Status.GREEN:
        assert f"international_share {status.value}" in overall.detail


def test_international_share_is_unknown_while_learning_or_quiet() -> None:
    learning = account_checks("primary", HEALTHY, stats_of(100), dict(DEFAULT_THRESHOLDS), 10)
    assert next(c for c in learning if c.name == "international_share").status is Status.UNKNOWN
    quiet = account_checks("primary", HEALTHY, stats_of(5), dict(DEFAULT_THRESHOLDS), 10,
                           international_baseline=0.0)
    assert next(c for c in quiet if c.name == "international_share").status is Status.UNKNOWN


def test_the_usual_share_follows_slowly() -> None:
    from sms_monitor.core.stats import ShareBaseline

    b = ShareBaseline(tau=86_400.0)
    b.update(0.10, 0.0)
    assert b.value == 0.10
    b.update(0.90, 3600.0)  # an hour of pumping moves the usual share by ~3 %
    assert b.value == pytest.approx(0.10 + 0.80 * (1 - math.exp(-1 / 24)))
