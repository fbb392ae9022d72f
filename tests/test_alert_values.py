"""sms_monitor.alerts.values: which targets a rule has, and its exact value for each.

The inputs are built by hand (no network, no simulator, no clock but a number), and every
value is asserted exactly at the boundaries that decide whether somebody is paged: the
minimum sample count, one unknown account in a roll-up, the smallest balance, a check that
did not run. How a snapshot is put together lives only in the builders below.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from sms_monitor.alerts.rules import DEFAULT_REPEAT, DEFAULT_WINDOW, Rule
from sms_monitor.alerts.values import (
    DATABASE_METRICS,
    ROLLUP,
    AlertInputs,
    _known_max,
    targets,
    value,
)
from sms_monitor.core.classify import CheckResult, Status
from sms_monitor.core.dbchecks import DB_CHECK_NAMES, GROUP
from sms_monitor.core.facts import AccountFacts, DatabaseFacts
from sms_monitor.core.records import MessageRecord
from sms_monitor.core.snapshot import (
    DATABASE,
    AccountSnapshot,
    DatabaseSnapshot,
    Part,
    Snapshot,
    account_key,
)
from sms_monitor.core.stats import WindowStats
from sms_monitor.core.window import HistogramState

NOW = 1_780_000_000.0
HOUR = DEFAULT_WINDOW
ACCOUNTS = ("primary", "backup")

# -- builders: the only place that knows the snapshot's shape ------------------------------------


def rule(metric: str, account: str | None = None, window: float = HOUR) -> Rule:
    return Rule(name=f"rule on {metric}", metric=metric, threshold=0.0, operator=">",
                window=window, for_seconds=0.0, severity="critical", account=account,
                repeat=DEFAULT_REPEAT, recipients=("oncall@practice.example",),
                runbook="Monitoring & Alerts")


def check(name: str, status: Status, account: str = "primary") -> CheckResult:
    return CheckResult(name=name, account=account, status=status)


def account(name: str = "primary", *, checks: Sequence[CheckResult] = (),
            **facts: Any) -> AccountSnapshot:
    """One account's part of the snapshot; ``facts`` are AccountFacts fields
    (``messages_ok`` defaults to True: the message log was read)."""
    facts.setdefault("messages_ok", True)
    return AccountSnapshot(
        account=name, checks=tuple(checks), facts=AccountFacts(**facts), stats=None,
        latency=HistogramState(bounds=(), counts=(0,), total=0.0, count=0), up=True,
        poll_seconds=0.0, window_records=0)


def database(*, checks: Sequence[CheckResult] = (), queue_delay: float | None = None,
             sent_to_opted_out: int | None = 0, optout_unprocessed: int | None = 0
             ) -> DatabaseSnapshot:
    return DatabaseSnapshot(checks=tuple(checks), facts=DatabaseFacts(queue_delay=queue_delay),
                            sent_to_opted_out=sent_to_opted_out,
                            optout_unprocessed=optout_unprocessed, twilio_in_span=None,
                            poll_seconds=0.0)


def inputs(*accounts: AccountSnapshot, db: DatabaseSnapshot | None = None,
           records: Mapping[str, Sequence[MessageRecord]] | None = None,
           min_samples: int = 10) -> AlertInputs:
    parts: dict[str, Part] = {account_key(a.account): a for a in accounts}
    if db is not None:
        parts[DATABASE] = db
    return AlertInputs(now=NOW, snapshot=Snapshot(taken_at=NOW, parts=parts),
                       records=dict(records or {}), min_samples=min_samples)


def sent(n: int, status: str, *, ago: float = 60.0, error: int | None = None,
         took: float | None = None, prefix: str = "SM") -> list[MessageRecord]:
    """``n`` outbound messages created ``ago`` seconds before NOW; a delivered one took
    ``took`` seconds (its ``updated`` time)."""
    created = NOW - ago
    return [MessageRecord(sid=f"{prefix}{status}{i}", outbound=True, status=status,
                          error_code=error, created=created,
                          updated=None if took is None else created + took)
            for i in range(n)]


# -- targets ---------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", DATABASE_METRICS)
def test_database_metrics_have_the_database_as_their_only_target(metric: str) -> None:
    assert targets(rule(metric), ACCOUNTS) == [GROUP]
    assert targets(rule(metric, account="primary"), ACCOUNTS) == [GROUP]


@pytest.mark.parametrize("name", DB_CHECK_NAMES)
def test_database_checks_have_the_database_as_their_only_target(name: str) -> None:
    assert targets(rule(f"status:{name}"), ACCOUNTS) == [GROUP]


def test_account_rules_target_each_account_one_account_or_the_rollup() -> None:
    assert targets(rule("account_balance"), ACCOUNTS) == ["primary", "backup"]
    assert targets(rule("status:balance"), ACCOUNTS) == ["primary", "backup"]
    assert targets(rule("account_balance"), ()) == []
    assert targets(rule("account_balance", account="backup"), ACCOUNTS) == ["backup"]
    assert targets(rule("sms_delivery_rate", account=ROLLUP), ACCOUNTS) == [ROLLUP]


# -- the database target ---------------------------------------------------------------------


def test_database_target_without_a_database_is_unknown() -> None:
    for metric in ("queue_delay", "optout_violations", "status:optout_unprocessed"):
        assert value(rule(metric), GROUP, inputs(account())) is None


def test_queue_delay_is_the_fact_as_read() -> None:
    assert value(rule("queue_delay"), GROUP, inputs(db=database(queue_delay=42.5))) == 42.5
    assert value(rule("queue_delay"), GROUP, inputs(db=database(queue_delay=0.0))) == 0.0
    assert value(rule("queue_delay"), GROUP, inputs(db=database(queue_delay=None))) is None


def test_optout_violations_add_both_counts_and_need_both() -> None:
    r = rule("optout_violations")
    assert value(r, GROUP, inputs(db=database(sent_to_opted_out=2, optout_unprocessed=3))) == 5.0
    assert value(r, GROUP, inputs(db=database(sent_to_opted_out=0, optout_unprocessed=0))) == 0.0
    assert value(r, GROUP, inputs(db=database(sent_to_opted_out=None, optout_unprocessed=3))) is None
    assert value(r, GROUP, inputs(db=database(sent_to_opted_out=2, optout_unprocessed=None))) is None


def test_database_check_status_is_its_code_and_unknown_or_absent_is_none() -> None:
    db = database(checks=[check("invalid_phone_numbers", Status.YELLOW, GROUP),
                          check("optout_unprocessed", Status.RED, GROUP),
                          check("queue_delay", Status.GREEN, GROUP),
                          check("reconciliation", Status.UNKNOWN, GROUP)])
    assert value(rule("status:invalid_phone_numbers"), GROUP, inputs(db=db)) == 1.0
    assert value(rule("status:optout_unprocessed"), GROUP, inputs(db=db)) == 2.0
    assert value(rule("status:queue_delay"), GROUP, inputs(db=db)) == 0.0
    assert value(rule("status:reconciliation"), GROUP, inputs(db=db)) is None
    assert value(rule("status:content"), GROUP, inputs(db=db)) is None  # did not run
    assert value(rule("status:content"), GROUP, inputs(db=database())) is None


# -- account targets: which accounts ---------------------------------------------------------


def test_an_account_not_in_the_snapshot_is_unknown() -> None:
    snap = inputs(account("primary", balance=5.0))
    assert value(rule("account_balance"), "gone", snap) is None
    assert value(rule("status:balance"), "gone", snap) is None
    assert value(rule("account_balance"), ROLLUP, inputs()) is None  # a roll-up of nothing


def test_a_metric_outside_the_vocabulary_is_unknown() -> None:
    assert value(rule("no_such_metric"), "primary", inputs(account(balance=5.0))) is None


# -- account targets: check statuses ---------------------------------------------------------


def test_check_status_of_one_account() -> None:
    a = account(checks=[check("balance", Status.YELLOW), check("overall", Status.RED)])
    assert value(rule("status:balance"), "primary", inputs(a)) == 1.0
    assert value(rule("status:overall"), "primary", inputs(a)) == 2.0
    assert value(rule("status:phone_number"), "primary", inputs(a)) is None  # not run


def test_rollup_status_is_the_worst_known_and_unknown_only_when_nothing_is_known() -> None:
    green = account("primary", checks=[check("balance", Status.GREEN)])
    red = account("backup", checks=[check("balance", Status.RED, "backup")])
    unknown = account("backup", checks=[check("balance", Status.UNKNOWN, "backup")])
    silent = account("backup")  # the check did not run there
    r = rule("status:balance", account=ROLLUP)
    assert value(r, ROLLUP, inputs(green, red)) == 2.0
    assert value(r, ROLLUP, inputs(green, unknown)) == 0.0
    assert value(r, ROLLUP, inputs(green, silent)) == 0.0
    assert value(r, ROLLUP, inputs(unknown, silent)) is None
    assert value(r, "backup", inputs(green, red)) == 2.0  # one account of two


# -- account targets: windowed message metrics ------------------------------------------------


def test_delivery_rate_is_known_from_exactly_min_samples_settled_messages() -> None:
    r = rule("sms_delivery_rate")
    nine = {"primary": sent(8, "delivered") + sent(1, "undelivered", error=30003)}
    ten = {"primary": sent(8, "delivered") + sent(2, "undelivered", error=30003)}
    assert value(r, "primary", inputs(account(), records=nine, min_samples=10)) is None
    assert value(r, "primary", inputs(account(), records=ten, min_samples=10)) == 80.0
    assert value(r, "primary", inputs(account(), records=nine, min_samples=9)) == pytest.approx(
        800 / 9)


def test_delivery_rate_counts_only_settled_messages_in_the_window() -> None:
    r = rule("sms_delivery_rate", window=600.0)
    records = {"primary": sent(3, "delivered") + sent(1, "failed", error=30008)
               + sent(5, "sent")  # not settled: no outcome yet
               + sent(6, "undelivered", ago=601.0, error=30003)}  # before the window
    assert value(r, "primary", inputs(account(), records=records, min_samples=4)) == 75.0
    assert value(r, "primary", inputs(account(), records=records, min_samples=5)) is None


def test_delivery_rate_without_settled_messages_is_unknown_whatever_min_samples() -> None:
    r = rule("sms_delivery_rate")
    assert value(r, "primary", inputs(account(), records={"primary": sent(3, "sent")},
                                      min_samples=0)) is None
    assert value(r, "primary", inputs(account(), min_samples=0)) is None  # no records at all


def test_error_rate_is_known_from_exactly_min_samples_outbound_messages() -> None:
    r = rule("sms_error_rate")
    records = {"primary": sent(3, "undelivered", error=30003) + sent(2, "sent")}
    assert value(r, "primary", inputs(account(), records=records, min_samples=5)) == 60.0
    assert value(r, "primary", inputs(account(), records=records, min_samples=6)) is None
    assert value(r, "primary", inputs(account(), min_samples=0)) is None  # no outbound message


def test_delivery_time_is_the_mean_of_delivered_messages_and_unknown_without_one() -> None:
    r = rule("sms_delivery_time")
    records = {"primary": sent(1, "delivered", took=4.0, prefix="A")
               + sent(1, "delivered", took=10.0, prefix="B") + sent(1, "undelivered", took=99.0)}
    assert value(r, "primary", inputs(account(), records=records)) == 7.0
    assert value(r, "primary", inputs(account(), records={"primary": sent(4, "sent")})) is None


def test_carrier_filtered_counts_30007_only_and_zero_is_a_value() -> None:
    r = rule("sms_carrier_filtered")
    records = {"primary": sent(2, "undelivered", error=30007, prefix="F")
               + sent(3, "undelivered", error=30003)}
    assert value(r, "primary", inputs(account(), records=records)) == 2.0
    assert value(r, "primary", inputs(account())) == 0.0


def test_windowed_metrics_are_unknown_when_a_message_log_was_not_read() -> None:
    records = {"primary": sent(10, "delivered"), "backup": sent(10, "delivered", prefix="B")}
    snap = inputs(account("primary"), account("backup", messages_ok=False), records=records)
    for metric in ("sms_delivery_rate", "sms_error_rate", "sms_delivery_time",
                   "sms_carrier_filtered"):
        assert value(rule(metric), "backup", snap) is None
        assert value(rule(metric, account=ROLLUP), ROLLUP, snap) is None  # one unknown: None
    assert value(rule("sms_delivery_rate"), "primary", snap) == 100.0


def test_rollup_pools_the_messages_of_every_account() -> None:
    records = {"primary": sent(6, "delivered"),
               "backup": sent(2, "delivered", prefix="B") + sent(2, "undelivered", error=30003)}
    snap = inputs(account("primary"), account("backup"), records=records)
    r = rule("sms_delivery_rate", account=ROLLUP)
    assert value(r, ROLLUP, snap) == 80.0  # 8 of 10; neither account alone has 10
    assert value(rule("sms_delivery_rate"), "primary", snap) is None
    assert value(rule("sms_delivery_rate"), "backup", snap) is None


def test_window_statistics_are_computed_once_per_target_and_window() -> None:
    snap = inputs(account(), records={"primary": sent(10, "delivered")})
    assert value(rule("sms_delivery_rate"), "primary", snap) == 100.0
    assert set(snap.stats_cache) == {("primary", HOUR)}
    # a rule on the same window reads the cached pass, not the records
    snap.stats_cache["primary", HOUR] = WindowStats(window_seconds=HOUR, outbound=10,
                                                   with_error=1)
    assert value(rule("sms_error_rate"), "primary", snap) == 10.0
    # another window is its own pass over the records: 10 outbound, none with an error code
    assert value(rule("sms_error_rate", window=60.0), "primary", snap) == 0.0
    assert set(snap.stats_cache) == {("primary", HOUR), ("primary", 60.0)}


# -- account targets: facts ------------------------------------------------------------------


def test_api_response_time_is_the_slowest_and_unknown_if_any_is() -> None:
    r = rule("api_response_time", account=ROLLUP)
    fast, slow = account("primary", balance_seconds=0.25), account("backup", balance_seconds=1.5)
    assert value(r, ROLLUP, inputs(fast, slow)) == 1.5
    assert value(rule("api_response_time"), "primary", inputs(fast, slow)) == 0.25
    assert value(r, ROLLUP, inputs(fast, account("backup"))) is None


def test_balance_is_the_smallest_and_unknown_if_any_is() -> None:
    r = rule("account_balance", account=ROLLUP)
    rich, poor = account("primary", balance=120.0), account("backup", balance=-0.42)
    assert value(r, ROLLUP, inputs(rich, poor)) == -0.42
    assert value(rule("account_balance"), "primary", inputs(rich, poor)) == 120.0
    assert value(r, ROLLUP, inputs(rich, account("backup"))) is None
    assert value(rule("account_balance"), "backup", inputs(rich, account("backup"))) is None
    assert value(r, ROLLUP, inputs(account("primary", balance=0.0))) == 0.0  # zero is known


def test_spend_adds_up_and_is_unknown_if_any_is() -> None:
    r = rule("sms_spend_month", account=ROLLUP)
    a, b = account("primary", spend_month=12.5), account("backup", spend_month=0.75)
    assert value(r, ROLLUP, inputs(a, b)) == 13.25
    assert value(rule("sms_spend_month"), "backup", inputs(a, b)) == 0.75
    assert value(r, ROLLUP, inputs(a, account("backup"))) is None
    assert value(r, ROLLUP, inputs(account("primary", spend_month=0.0))) == 0.0


def test_known_max() -> None:
    assert _known_max([]) is None
    assert _known_max([None]) is None
    assert _known_max([3.0, None, 5.0]) is None
    assert _known_max([3.0, 5.0, 4.0]) == 5.0
    assert _known_max(iter([0.0])) == 0.0


def test_a_rule_window_is_judged_only_once_it_has_been_read_whole() -> None:
    from dataclasses import replace

    from sms_monitor.core.window import Gap

    records = {"primary": sent(8, "delivered") + sent(2, "undelivered", error=30003)}
    # the last hour is whole; a backfill of the day still has a gap 3 to 24 hours back
    day_gap = replace(account(), gaps=(Gap(upper=NOW - 3 * HOUR, lower=NOW - 24 * HOUR,
                                           resume="/2010-04-01/Messages.json?PageToken=PA1"),))
    assert value(rule("sms_delivery_rate"), "primary", inputs(day_gap, records=records)) == 80.0
    assert value(rule("sms_delivery_rate", window=24 * HOUR), "primary",
                 inputs(day_gap, records=records)) is None
    assert value(rule("sms_delivery_rate", window=3 * HOUR), "primary",
                 inputs(day_gap, records=records)) == 80.0  # the gap starts where it ends
    part = replace(account(), window_unread_seconds=600.0)
    assert value(rule("sms_delivery_rate"), "primary", inputs(part, records=records)) is None
