"""Templates, their 7-day delivery and the content rules (runbook, Issue 2)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from sms_monitor.core.classify import Status
from sms_monitor.core.content import content_report, findings, is_gsm7, normalise_template
from sms_monitor.core.dbchecks import DatabaseView, database_checks
from sms_monitor.core.facts import DatabaseFacts
from sms_monitor.core.thresholds import DEFAULT_THRESHOLDS
from sms_monitor.simulator.practice_db import create_runbook_schema
from tests.test_database import insert_rows, source

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
PRACTICE = "Riverside Family Practice"


def test_personal_and_varying_parts_are_masked() -> None:
    a = normalise_template("Hi Ana, your visit is on 3/12 at 10:30. Reply STOP to opt out.")
    b = normalise_template("Hello  Dmitri Ivanov, your visit is on 11/2 at 9:00. Reply STOP to opt out.")
    assert a == "Hi <name>, your visit is on #/# at #:#. Reply STOP to opt out."
    assert b.endswith("your visit is on #/# at #:#. Reply STOP to opt out.")
    assert "Dmitri" not in b and "Ivanov" not in b
    assert normalise_template("Mail a@b.example or see https://x.example/p?q=1") == \
        "Mail <email> or see <link>"


@pytest.mark.parametrize(("text", "rules"), [
    (f"Hi <name>, {PRACTICE}: your visit is tomorrow. Reply STOP to opt out.", set()),
    (f"{PRACTICE}: FREE check-up! Reply STOP to opt out.", {"spam_words"}),
    (f"{PRACTICE.upper()}: YOUR VISIT IS TOMORROW. REPLY STOP TO OPT OUT.", {"all_caps"}),
    (f"{PRACTICE}: your visit is tomorrow.", {"no_opt_out"}),
    ("Your visit is tomorrow. Reply STOP to opt out.", {"no_practice_name"}),
    (f"{PRACTICE}: your visit is tomorrow 🙂 Reply STOP to opt out.", {"not_gsm7"}),
    (f"{PRACTICE}: freedom of choice. Reply STOP to opt out.", set()),  # FREE inside a word
])
def test_content_rules(text: str, rules: set[str]) -> None:
    assert findings(text, PRACTICE) == rules


def test_gsm7() -> None:
    assert is_gsm7("Café à 10€ {ok}")
    assert not is_gsm7("naïve")  # ï is outside GSM-7: the message falls back to UCS-2
    assert not is_gsm7("smile 😀")


def test_report_merges_templates_and_finds_the_weak_one() -> None:
    rows = [("Hi Ana, see you on #/#. Reply STOP.", 40, 39),
            ("Hi Bo, see you on #/#. Reply STOP.", 40, 39),
            ("FREE shots! CLICK HERE", 20, 15),
            ("rare one", 5, 0)]  # under the minimum of 10 sent: not judged
    report = content_report(rows, None)
    assert [(t.sent, t.delivered) for t in report.templates] == [(80, 78), (20, 15)]
    assert [t.masked for t in report.under(0.90)] == ["FREE shots! CLICK HERE"]
    assert report.findings["spam_words"] == 1 and report.findings["no_opt_out"] == 1
    assert all(len(t.id) == 8 for t in report.templates)


def test_content_check_is_yellow_with_a_weak_template() -> None:
    facts = DatabaseFacts(invalid_phones={}, queue_delay=1.0, queue_sent=1, queue_unsent=0,
                          sms_disabled=0, settings_rows=1, opted_out=frozenset(),
                          client_optout={}, logged_recipients=100)
    report = content_report([("FREE shots! CLICK HERE", 20, 15)], None)
    checks = {c.name: c for c in database_checks(
        facts, DatabaseView(twilio_in_span=100, content=report), DEFAULT_THRESHOLDS, 10, 0.9, 300)}
    assert checks["content"].status is Status.YELLOW
    assert checks["content"].value == 1
    assert "FREE" not in checks["content"].detail  # text never leaves in check details


@pytest.fixture(params=["postgresql", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'c.db'}"
    return str(request.getfixturevalue("pg_url"))


def test_content_query_groups_seven_days_by_masked_digits(url: str) -> None:
    create_runbook_schema(create_engine(url))

    def row(days: float, text: str, status: str, via: list[str] | None = None) -> dict[str, object]:
        created = NOW - timedelta(days=days)
        return {"message": text, "status": status, "sent_via": via or ["sms"],
                "recipient_user_ids": [1], "created_at": created, "sent_at": created}

    insert_rows(url, "notification_logs", [
        row(1, "Visit on 3/12 at 10:30", "delivered"),
        row(2, "Visit on 4/1 at 9:00", "undelivered"),
        row(6.9, "Visit on 5/5 at 8:15", "Delivered"),  # any case
        row(3, "Visit on 5/6 at 8:15", "read"),  # delivered and read
        row(3, "Visit on 5/7 at 8:15", "FAILED"),
        row(3, "Visit on 5/8 at 8:15", "sent"),  # outcome not known (yet): not settled
        row(3, "Visit on 5/9 at 8:15", "queued"),
        row(8, "Visit on 6/6 at 8:15", "delivered"),  # older than 7 days
        row(1, "Visit on 7/7 at 7:00", "delivered", via=["email"]),  # not SMS
    ])
    src = source(url)
    with src.engine.connect() as conn:
        # (template, rows, delivered, settled)
        assert src.content(conn, NOW) == [("Visit on #/# at #:#", 7, 3, 5)]


def test_a_status_column_without_outcomes_is_not_judged() -> None:
    """An application that logs "sent" and never records Twilio's outcome: nothing to judge
    (unknown), not a false "0/120 delivered"."""
    facts = DatabaseFacts(invalid_phones={}, queue_delay=1.0, queue_sent=1, queue_unsent=0,
                          sms_disabled=0, settings_rows=1, opted_out=frozenset(),
                          client_optout={}, logged_recipients=100)
    report = content_report([("Your visit is on #/#. Reply STOP.", 120, 0, 0)], None)
    assert report.under(0.90) == []
    checks = {c.name: c for c in database_checks(
        facts, DatabaseView(twilio_in_span=100, content=report), DEFAULT_THRESHOLDS, 10, 0.9, 300)}
    assert checks["content"].status is Status.UNKNOWN
    assert "none with 10 delivery outcomes" in checks["content"].detail
    # with outcomes for some rows, the ratio is over those rows only
    report = content_report([("Your visit is on #/#. Reply STOP.", 120, 57, 60)], None)
    assert report.under(0.90) == [] and report.templates[0].delivery_ratio == 0.95

