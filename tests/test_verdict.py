"""The verdict across groups: never green while a configured source cannot be read.

Hand-built parts (tests/snapshots.py); the rule is core/sources.py's ``verdict``.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from sms_monitor.core.checks import account_checks
from sms_monitor.core.classify import CheckResult, Status
from sms_monitor.core.dbchecks import GROUP, DatabaseView, database_checks
from sms_monitor.core.facts import DatabaseFacts, StatusPageFacts
from sms_monitor.core.snapshot import StatusPagePart
from sms_monitor.core.sources import SourceState, SourceTracker, connection_check, verdict
from sms_monitor.core.statuspage import statuspage_check
from sms_monitor.core.thresholds import DEFAULT_THRESHOLDS
from sms_monitor.outputs.check import render_table, snapshot_json
from tests.snapshots import (
    GREEN,
    HEALTHY_FACTS,
    RED,
    T0,
    UNKNOWN,
    YELLOW,
    account,
    database,
    message,
    snapshot,
    statuspage,
)

HEALTHY_DB = DatabaseFacts(invalid_phones={"phone": 0}, queue_delay=5.0, queue_sent=10,
                           queue_unsent=0, sms_disabled=0, settings_rows=10,
                           opted_out=frozenset(), client_optout={}, logged_recipients=20,
                           rule_rows=())
BLIND_DB = DatabaseFacts(failures=dict.fromkeys(("invalid_phone_numbers", "queue_delay"),
                                                "connection refused"),
                         causes=dict.fromkeys(("invalid_phone_numbers", "queue_delay"),
                                              "unreachable"))


def db_part(facts: DatabaseFacts, failing: int = 0, limit: int = 3, sent: int = 20):
    state = SourceState("database", facts.up, failing, "" if facts.up else "connection refused")
    view = DatabaseView(twilio_in_span=sent)
    checks = database_checks(facts, view, DEFAULT_THRESHOLDS, 10, 0.9, 300.0,
                             connection=connection_check(state, GROUP, limit))
    return database(facts, checks, source=state)


def green_account():
    return account("primary", [message(f"SM{i}", T0 - 60 * i) for i in range(1, 21)])


def test_every_source_readable_and_green_is_green() -> None:
    snap = snapshot(green_account(), db=db_part(HEALTHY_DB))
    assert snap.overall is GREEN
    assert snap.verdict_detail() == "every counted check green or quiet; 2 sources readable"


def test_a_blind_database_is_unknown_not_green_and_says_why() -> None:
    snap = snapshot(green_account(), db=db_part(BLIND_DB, failing=1))
    assert snap.overall is UNKNOWN and snap.overall.exit_code == 3
    assert snap.verdict_detail() == "database unreadable (connection refused)"
    table = render_table(snap).splitlines()
    assert table[0] == "OVERALL: UNKNOWN - database unreadable (connection refused)"
    assert "SOURCES THAT COULD NOT BE READ:" in table
    doc = snapshot_json(snap)
    assert doc["overall"] == "unknown"
    assert {"name": "database", "readable": False, "unreadable_cycles": 1,
            "reason": "connection refused"} in doc["sources"]


def test_red_anywhere_wins_over_a_blind_source() -> None:
    broken = account("primary", [message(f"SM{i}", T0 - 60 * i, "undelivered")
                                 for i in range(1, 21)])
    snap = snapshot(broken, db=db_part(BLIND_DB, failing=1))
    assert snap.overall is RED
    assert snap.verdict_detail().startswith("primary: delivery_rate")
    assert snap.verdict_detail().endswith("database unreadable (connection refused)")


@pytest.mark.parametrize(("failing", "status"), [(1, UNKNOWN), (2, UNKNOWN), (3, RED), (9, RED)])
def test_a_database_unreadable_for_three_cycles_is_red(failing: int, status: Status) -> None:
    part = db_part(BLIND_DB, failing=failing)
    connection = next(c for c in part.checks if c.name == "connection")
    assert connection.status is status
    assert part.overall is status  # the connection check counts in the group
    assert snapshot(green_account(), db=part).overall is status


def test_a_quiet_night_is_green_when_every_source_answers() -> None:
    quiet = account("primary", [message("SM1", T0 - 60)])  # 1 message: ratios unknown
    snap = snapshot(quiet, db=db_part(HEALTHY_DB))
    assert [c.status for c in snap.checks() if c.name == "delivery_rate"] == [UNKNOWN]
    assert snap.overall is GREEN


def test_an_unreadable_status_page_is_unknown_though_its_check_is_advisory() -> None:
    facts = StatusPageFacts(ok=False, error="timeout", read_at=T0)
    page = StatusPagePart(facts, statuspage_check(facts))
    assert snapshot(green_account(), status_page=page).overall is UNKNOWN
    # a yellow status page with every source readable does not change the verdict
    assert snapshot(green_account(),
                    status_page=statuspage({"SMS": "degraded_performance"})).overall is GREEN


def test_a_blind_account_is_unknown_then_its_connection_check_turns_red() -> None:
    facts = replace(HEALTHY_FACTS, messages_ok=False, failures={"messages": "server_error"})

    def probe(failing: int) -> CheckResult:
        state = SourceState("twilio:primary", False, failing, "messages: server_error")
        checks = account_checks("primary", facts, None, dict(DEFAULT_THRESHOLDS), 10,
                                source=state, unreachable_cycles=3)
        return checks[0]

    assert probe(2).status is GREEN  # the Balance probe itself answered in 0.25 s
    assert probe(3).status is RED
    assert probe(3).detail.startswith("Twilio unreadable for 3 cycles (messages: server_error)")
    blind = account("primary", facts=facts, up=False)
    assert snapshot(blind).overall is UNKNOWN


def test_the_tracker_counts_consecutive_failures_and_forgets_them_on_success() -> None:
    t = SourceTracker("database")
    assert [t.observe(False, "x").failing_cycles for _ in range(3)] == [1, 2, 3]
    assert t.observe(True) == SourceState("database", True, 0, "")
    assert t.observe(False, "y") == SourceState("database", False, 1, "y")


def test_the_rule_itself() -> None:
    ok, blind = SourceState("a", True), SourceState("b", False, 1, "why")
    assert verdict([GREEN, YELLOW], [ok]) is YELLOW
    assert verdict([GREEN, YELLOW], [ok, blind]) is UNKNOWN
    assert verdict([RED, GREEN], [blind]) is RED
    assert verdict([UNKNOWN, UNKNOWN], [ok]) is UNKNOWN
    assert verdict([UNKNOWN, GREEN], [ok]) is GREEN
    assert verdict([], []) is UNKNOWN


@pytest.mark.parametrize(("sent", "status", "value"), [
    (20, GREEN, 0.0), (120, GREEN, 20.0), (121, RED, 21.0), (2_900, RED, 2_800.0)])
def test_unexpected_sends_red_above_the_logged_ratio_plus_margin(
        sent: int, status: Status, value: float) -> None:
    facts = replace(HEALTHY_DB, logged_recipients=100)
    checks = database_checks(facts, DatabaseView(twilio_in_span=sent), DEFAULT_THRESHOLDS, 10,
                             0.9, 300.0, unexpected=(1.1, 10))
    check = next(c for c in checks if c.name == "unexpected_sends")
    assert (check.status, check.value) == (status, value)
    assert check.detail == (f"Twilio sent {sent} outbound messages in the span, the application "
                            "logged 100 (red above 120)")
    assert checks[-1].status is (RED if status is RED else checks[-1].status)


def test_unexpected_sends_unknown_when_either_side_is_unread() -> None:
    unread = DatabaseView(twilio_in_span=50, messages_ok=False)
    checks = database_checks(HEALTHY_DB, unread, DEFAULT_THRESHOLDS, 10, 0.9, 300.0)
    assert next(c for c in checks if c.name == "unexpected_sends").status is UNKNOWN
    checks = database_checks(replace(HEALTHY_DB, logged_recipients=None,
                                     failures={"reconciliation": "timeout"}),
                             DatabaseView(twilio_in_span=50), DEFAULT_THRESHOLDS, 10, 0.9, 300.0)
    assert next(c for c in checks if c.name == "unexpected_sends").status is UNKNOWN
