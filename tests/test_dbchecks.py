"""Database checks as a pure function: boundaries, keywords, grace, opt-back-in."""

from __future__ import annotations

import pytest

from sms_monitor.core.classify import Status
from sms_monitor.core.content import ContentReport
from sms_monitor.core.dbchecks import (
    DatabaseView,
    KeywordEvent,
    database_checks,
    optout_candidates,
)
from sms_monitor.core.facts import DatabaseFacts
from sms_monitor.core.keywords import KeywordMatcher
from sms_monitor.core.peers import normalise
from sms_monitor.core.thresholds import DEFAULT_THRESHOLDS

FACTS = DatabaseFacts(invalid_phones={"phone": 0, "cell_phone": 0}, queue_delay=20.0,
                      queue_sent=50, queue_unsent=0, sms_disabled=0, settings_rows=100,
                      opted_out=frozenset(), client_optout={}, logged_recipients=100)
VIEW = DatabaseView(twilio_in_span=100, content=ContentReport())


def run(facts: DatabaseFacts = FACTS, view: DatabaseView = VIEW) -> dict[str, Status]:
    checks = database_checks(facts, view, DEFAULT_THRESHOLDS, 10, 0.9, 300)
    return {c.name: c.status for c in checks}


def with_(**changes: object) -> DatabaseFacts:
    return DatabaseFacts(**{**FACTS.__dict__, **changes})


def test_healthy_is_green() -> None:
    assert set(run().values()) == {Status.GREEN}


@pytest.mark.parametrize(("delay", "expected"), [
    (59.9, Status.GREEN), (60.0, Status.YELLOW), (300.0, Status.YELLOW), (300.1, Status.RED)])
def test_queue_delay_boundaries(delay: float, expected: Status) -> None:
    assert run(with_(queue_delay=delay))["queue_delay"] is expected


@pytest.mark.parametrize(("waited", "expected"), [
    (None, Status.UNKNOWN), (59.0, Status.GREEN), (60.0, Status.YELLOW), (300.1, Status.RED)])
def test_a_queue_that_sends_nothing_is_graded_by_its_oldest_row(
        waited: float | None, expected: Status) -> None:
    facts = with_(queue_delay=None, queue_sent=0, queue_unsent=0 if waited is None else 12,
                  queue_oldest_unsent=waited)
    assert run(facts)["queue_delay"] is expected


def test_an_unsent_row_beside_sent_ones_does_not_change_the_grade() -> None:
    facts = with_(queue_delay=20.0, queue_sent=40, queue_unsent=1, queue_oldest_unsent=3000.0)
    assert run(facts)["queue_delay"] is Status.GREEN


def test_invalid_numbers_any_is_yellow() -> None:
    assert run(with_(invalid_phones={"phone": 0, "cell_phone": 1}))["invalid_phone_numbers"] \
        is Status.YELLOW


@pytest.mark.parametrize(("sent", "expected"), [
    (99, Status.GREEN), (98, Status.YELLOW), (90, Status.YELLOW), (89, Status.RED)])
def test_reconciliation_boundaries(sent: int, expected: Status) -> None:
    assert run(view=DatabaseView(twilio_in_span=sent, content=ContentReport()))["reconciliation"] \
        is expected


def test_reconciliation_needs_enough_logged_messages() -> None:
    assert run(with_(logged_recipients=9), DatabaseView(twilio_in_span=0))["reconciliation"] \
        is Status.UNKNOWN


@pytest.mark.parametrize(("off", "expected"), [(89, Status.GREEN), (90, Status.YELLOW),
                                               (100, Status.YELLOW)])
def test_sms_fallback_share(off: int, expected: Status) -> None:
    assert run(with_(sms_disabled=off))["sms_fallback"] is expected


def test_failed_query_is_unknown_and_named() -> None:
    facts = with_(queue_delay=None, queue_sent=None, queue_unsent=None,
                  failures={"queue_delay": 'relation "notification_logs" does not exist'})
    checks = database_checks(facts, VIEW, DEFAULT_THRESHOLDS, 10, 0.9, 300)
    delay = next(c for c in checks if c.name == "queue_delay")
    assert delay.status is Status.UNKNOWN and "notification_logs" in delay.detail
    assert checks[-1].status is Status.GREEN  # overall ignores unknown


@pytest.mark.parametrize(("body", "kind"), [
    ("STOP", "optout"), (" stop ", "optout"), ("Stop\n", "optout"), ("unsubscribe", "optout"),
    ("STOPALL", "optout"), ("QUIT", "optout"), ("cancel", "optout"), ("End", "optout"),
    ("OPTOUT", "optout"), ("revoke", "optout"), ("start", "optin"), ("UNSTOP", "optin"),
    ("Yes", "optin"), ("help", "help"), ("don't stop my reminders", None), ("STOP please", None),
    ("stop.", None), ("", None), (None, None)])
def test_keywords_are_whole_bodies(body: str | None, kind: str | None) -> None:
    assert KeywordMatcher().kind(body) == kind


def test_candidates_respect_grace_and_opt_back_in() -> None:
    events = [KeywordEvent("+15550000001", 100.0, "optout"),  # old enough
              KeywordEvent("+15550000002", 900.0, "optout"),  # inside the grace period
              KeywordEvent("+15550000003", 100.0, "optout"),
              KeywordEvent("+15550000003", 200.0, "optin"),  # opted back in
              KeywordEvent("+15550000004", 100.0, "help")]
    assert optout_candidates(events, now=1000.0, grace=300.0) == {"+15550000001": 100.0}


@pytest.mark.parametrize(("raw", "e164"), [
    ("+15551234567", "+15551234567"), ("(555) 123-4567", "+15551234567"),
    ("555.123.4567", "+15551234567"), ("1 555 123 4567", "+15551234567"),
    ("+44 20 7183 8750", "+442071838750"), ("hello", None), ("", None), ("123", None)])
def test_normalisation(raw: str, e164: str | None) -> None:
    assert normalise(raw) == e164


def test_database_overall_is_the_worst_of_the_contracts_checks_only() -> None:
    view = DatabaseView(**{**VIEW.__dict__, "twilio_in_span": 10})  # 10 of the logged: lost
    checks = database_checks(FACTS, view, DEFAULT_THRESHOLDS, 10, 0.9, 300)
    by = {c.name: c for c in checks}
    assert by["reconciliation"].status is Status.RED
    assert by["overall"].status is Status.GREEN
    assert by["overall"].detail == "advisory: reconciliation red"
