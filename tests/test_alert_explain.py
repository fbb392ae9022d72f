"""Notifications that explain themselves: the value in its unit against the threshold, since
when, the top error codes with Twilio's meaning, the runbook and dashboard links, a RESOLVED
that says what the value is now, a status rule that names its red checks.

The words are pure functions (first part); the end-to-end part runs the engine against the
simulator, the runbook's rules in PostgreSQL, a real SMTP server (aiosmtpd) and a loopback
Alertmanager, on a FakeClock.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from sms_monitor.alerts import explain
from sms_monitor.alerts.notify import Notification, body, summary, webhook_json
from sms_monitor.alerts.rules import VOCABULARY
from sms_monitor.simulator.server import SimulatorServer
from sms_monitor.simulator.state import SimState
from tests.conftest import FakeClock, Smtp
from tests.test_outbound import Receiver

BASE = explain.DEFAULT_RUNBOOK_URL
GRAFANA = "https://grafana.example.org/d/sms-monitor/sms-monitor"


# -- the words -----------------------------------------------------------------------------

@pytest.mark.parametrize(("unit", "value", "threshold", "currency", "text"), [
    ("percent", 88.24, 90.0, "", "delivery rate 88.2 % (threshold 90 %)"),
    ("percent", 89.96, 90.0, "", "delivery rate 89.96 % (threshold 90 %)"),  # not "90.0 %"
    ("percent", 97.0, 92.5, "", "delivery rate 97.0 % (threshold 92.5 %)"),
    ("currency", 12.4, 20.0, "USD", "balance 12.40 USD (threshold 20 USD)"),
    ("currency", -0.42, 20.5, "EUR", "balance -0.42 EUR (threshold 20.50 EUR)"),
    ("currency", 12.4, 20.0, "", "balance 12.40 (threshold 20)"),
    ("seconds", 4.21, 30.0, "", "balance 4.2 s (threshold 30 s)"),
    ("seconds", 312.0, 300.0, "", "balance 5.2 min (threshold 5 min)"),
    ("messages", 12.0, 5.0, "", "balance 12 (threshold 5)"),
    ("percent", None, 90.0, "", "balance unknown (threshold 90 %)"),
])
def test_a_value_in_its_unit_against_its_threshold(unit: str, value: float | None,
                                                    threshold: float, currency: str,
                                                    text: str) -> None:
    metric = "sms_delivery_rate" if text.startswith("delivery") else "account_balance"
    assert explain.statement(metric, unit, value, threshold, "<", currency) == text


def test_resolved_says_what_the_value_is_now() -> None:
    assert explain.statement("sms_delivery_rate", "percent", 97.1, 90.0, "<", resolved=True) \
        == "delivery rate back to 97.1 % (threshold 90 %)"
    assert explain.statement("account_balance", "currency", 120.0, 20.0, "<", "USD",
                             resolved=True) == "balance back to 120.00 USD (threshold 20 USD)"
    assert explain.statement("status:overall", "status", 0.0, 2.0, ">=", resolved=True) == \
        "overall status back to green (fires at red)"
    assert explain.statement("status:balance", "status", 1.0, 1.0, ">=") == \
        "balance status yellow (fires at yellow or worse)"


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0 s"), (44.6, "45 s"), (60, "1 min"), (25 * 60 + 59, "25 min"), (3600, "1 h"),
    (2 * 3600 + 5 * 60, "2 h 5 min"), (86400 * 3 + 3600 * 4, "3 d 4 h")])
def test_spans_as_a_person_says_them(seconds: float, text: str) -> None:
    assert explain.span(seconds) == text


def test_every_metric_has_a_label_a_unit_and_a_runbook_section() -> None:
    runbook = (Path(__file__).resolve().parents[1] / "docs" / "runbook.md").read_text()
    anchors = {line[3:].strip() for line in runbook.splitlines() if line.startswith("## ")}
    anchors.add("notification_rules-alerts")  # "## notification_rules alerts"
    assert "## notification_rules alerts" in runbook
    for metric, spec in VOCABULARY.items():
        assert explain.METRIC_UNITS[metric] == spec.unit
        assert metric in explain.METRIC_LABELS
        for severity in ("critical", "warning"):
            assert explain.runbook_anchor(metric, severity) in anchors
    for anchor in explain.CHECK_ANCHORS.values():
        assert anchor in anchors


def test_links() -> None:
    assert explain.runbook_link(BASE, "sms_delivery_rate", "warning", "Issue 1") == \
        f"{BASE}#smsdeliveryratewarning"
    assert explain.runbook_link(BASE, "status:overall", "critical") == \
        f"{BASE}#notification_rules-alerts"
    assert explain.runbook_link(None, "sms_delivery_rate", "critical") == ""
    own = "https://wiki.practice.example/sms#delivery"
    assert explain.runbook_link(BASE, "sms_delivery_rate", "critical", own) == own
    assert explain.dashboard_link(GRAFANA, "clinic west") == f"{GRAFANA}?var-account=clinic%20west"
    assert explain.dashboard_link(f"{GRAFANA}?orgId=2", "a") == f"{GRAFANA}?orgId=2&var-account=a"
    assert explain.dashboard_link(GRAFANA, "*") == GRAFANA
    assert explain.dashboard_link(None, "primary") == ""


def test_error_codes_with_twilios_meaning() -> None:
    assert explain.top_errors({"30005": 3, "30003": 7, "30007": 3, "21610": 1}) == (
        ("30003", 7), ("30005", 3), ("30007", 3))
    assert explain.error_lines([("30007", 1), ("39999", 2)]) == [
        "30007 Message filtered (carrier filtering as spam): 1 message",
        "39999 see https://www.twilio.com/docs/api/errors/39999: 2 messages"]


OVERALL = Notification(
    rule="Practice SMS health", account="primary", event="firing", severity="critical",
    metric="status:overall", value=2.0, threshold=2.0, operator=">=", since=1_780_000_000.0,
    at=1_780_001_500.0, level=1, runbook_section="Health Check Criteria", key="k",
    unit="status", runbook_url=f"{BASE}#notification_rules-alerts",
    checks=(("primary", "delivery_rate", "red", "78 of 100 delivered",
             f"{BASE}#smsdeliveryratecritical"),
            ("primary", "balance", "red", "balance -0.42 USD", f"{BASE}#twiliobalancecritical")),
    errors=(("30003", 12),), errors_window=3600.0)


def test_a_status_overall_notification_names_its_red_checks() -> None:
    assert summary(OVERALL) == ("[FIRING] Practice SMS health (primary): overall status red "
                                "(fires at red): delivery_rate, balance")
    text = body(OVERALL)
    assert ("Checks at red:\n"
            "  delivery_rate (primary): red, 78 of 100 delivered\n"
            f"    {BASE}#smsdeliveryratecritical\n"
            "  balance (primary): red, balance -0.42 USD\n"
            f"    {BASE}#twiliobalancecritical\n") in text
    assert "Top error codes in the last 1 h:\n  30003 Unreachable destination handset: 12" in text
    doc = webhook_json(OVERALL)
    assert doc["checks"][0] == {"account": "primary", "check": "delivery_rate", "status": "red",
                                "detail": "78 of 100 delivered",
                                "runbook_url": f"{BASE}#smsdeliveryratecritical"}
    assert doc["errors"] == [{"code": "30003", "count": 12,
                              "meaning": "Unreachable destination handset"}]
    resolved = dataclasses.replace(OVERALL, event="resolved", value=0.0, checks=())
    assert summary(resolved).endswith(": overall status back to green (fires at red)")


def test_an_outbox_row_of_an_older_version_still_reads() -> None:
    old = {"rule": "R", "account": "primary", "event": "firing", "severity": "critical",
           "metric": "sms_delivery_rate", "value": 80.0, "threshold": 90.0, "operator": "<",
           "since": 0.0, "at": 60.0, "level": 1, "runbook_section": "Issue 1", "key": "k"}
    n = Notification.from_payload(old)
    assert summary(n) == "[FIRING] R (primary): delivery rate 80.0 % (threshold 90 %)"
    stored = json.loads(json.dumps(dataclasses.asdict(OVERALL)))  # as the outbox holds it
    assert Notification.from_payload(stored) == OVERALL  # its lists read back as tuples


# -- end to end ----------------------------------------------------------------------------

def e_mail(smtp: Smtp, subject_start: str) -> tuple[list[str], str, str]:
    for rcpts, msg in smtp.inbox.messages:
        subject = " ".join(str(msg["Subject"]).split())
        if subject.startswith(subject_start):
            payload = msg.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return rcpts, subject, payload.decode().replace("\r\n", "\n")
    raise AssertionError(f"no e-mail {subject_start!r} in {smtp.inbox.subjects()}")


def test_the_engine_explains_a_delivery_alert_end_to_end(
        app: str, sim: tuple[SimulatorServer, SimState], smtp: Smtp, clock: FakeClock,
        tmp_path: Path) -> None:
    from tests.test_alert_engine import monitor, settings

    server, state = sim
    alertmanager = Receiver()
    s = settings(app, server, smtp, f"sqlite:///{tmp_path / 'alerts.db'}",
                 dashboard_url=GRAFANA, runbook_url=BASE, alertmanager_url=f"http://127.0.0.1:{alertmanager.port}")
    m = monitor(s, clock)
    try:
        m.run_cycle()
        state.set_scenario("degraded_delivery")
        clock.advance(3600)
        m.run_cycle()
        rcpts, subject, text = e_mail(smtp, "[FIRING] Low SMS Delivery Rate")
        assert rcpts == ["oncall@practice.example"]
        assert subject.startswith("[FIRING] Low SMS Delivery Rate (primary): delivery rate ")
        assert subject.endswith(" % (threshold 90 %)")
        assert text.startswith("Low SMS Delivery Rate is firing for account primary.\n")
        assert ", over the last 1 h\n  since 2026-05-28T21:26:40Z (just now)\n" in text
        assert "Top error codes in the last 1 h:\n  30003 Unreachable destination handset: " \
            in text
        assert "30005 Unknown destination handset: " in text
        assert f"Runbook:   {BASE}#smsdeliveryratecritical\n" in text
        assert "(the practice's runbook: Issue 1: SMS Messages Not Delivered)" in text
        assert f"Dashboard: {GRAFANA}?var-account=primary\n" in text
        assert "sms-monitor alerts ack 'Low SMS Delivery Rate' --target primary" in text
        (_, _, posted), = [p for p in alertmanager.posts
                           if p[2][0]["labels"]["rule"] == "Low SMS Delivery Rate"][:1]
        notes = posted[0]["annotations"]
        assert notes["summary"] == subject and notes["threshold"] == "90 %"
        assert notes["value"].endswith(" %") and notes["since"] == "2026-05-28T21:26:40Z"
        assert notes["runbook_url"] == f"{BASE}#smsdeliveryratecritical"
        assert notes["dashboard"] == f"{GRAFANA}?var-account=primary"
        assert notes["top_errors"].startswith("30003 Unreachable destination handset: ")

        clock.advance(25 * 60)  # the refresh explains too, with how long it has lasted
        m.run_cycle()
        refreshed = [p[2][0]["annotations"] for p in alertmanager.posts
                     if p[2][0]["labels"]["rule"] == "Low SMS Delivery Rate"][-1]
        assert refreshed["top_errors"].startswith("30003 ") and "(for 25 min)" in \
            refreshed["description"]

        state.set_scenario("healthy")
        clock.advance(3600)
        m.run_cycle()
        _, subject, text = e_mail(smtp, "[RESOLVED] Low SMS Delivery Rate")
        assert subject.startswith("[RESOLVED] Low SMS Delivery Rate (primary): delivery rate "
                                  "back to ")
        assert subject.endswith(" % (threshold 90 %)") and " < " not in subject
        assert "  fired from 2026-05-28T21:26:40Z to 2026-05-28T22:51:40Z (1 h 25 min)" in text
        assert "alerts ack" not in text and "Top error codes" not in text  # it is over
        assert "  severity critical, reached escalation level 1\n" in text
    finally:
        m.close()
        alertmanager.stop()


def test_a_status_overall_rule_names_the_checks_that_are_red(
        app: str, sim: tuple[SimulatorServer, SimState], smtp: Smtp, clock: FakeClock,
        tmp_path: Path) -> None:
    from tests.test_alert_engine import monitor, settings

    engine = create_engine(app)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO notification_rules (rule_name, rule_type, "
                          "trigger_conditions, recipients) VALUES ('Practice SMS health', "
                          "'alert', '{\"metric\": \"status:overall\"}', :r)"),
                     {"r": ["oncall@practice.example"]})
    engine.dispose()
    server, state = sim
    s = settings(app, server, smtp, f"sqlite:///{tmp_path / 'alerts.db'}", runbook_url=BASE)
    state.set_scenario("out_of_credit")
    m = monitor(s, clock)
    try:
        m.run_cycle()
        _, subject, body_text = e_mail(smtp, "[FIRING] Practice SMS health")
        assert subject == ("[FIRING] Practice SMS health (primary): overall status red "
                           "(fires at red): balance")
        assert "Checks at red:\n  balance (primary): red, " in body_text
        assert f"    {BASE}#twiliobalancecritical\n" in body_text
        assert f"Runbook:   {BASE}#notification_rules-alerts" in body_text
    finally:
        m.close()
