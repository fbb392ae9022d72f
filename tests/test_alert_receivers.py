"""PagerDuty (Events API v2) and Slack (incoming webhook) recipients, against real loopback
HTTP receivers and through the outbound controls: the allowlist, the address checks, no
redirects; the routing key never in an error, a log line or a listing.

PagerDuty's events URL is ``[alerts] pagerduty_url`` (a loopback receiver here, allowed as an
operator would: ``webhook_allow`` and ``webhook_allow_networks``). Slack is recognised by its
host, so its receiver is a TLS server with a certificate for hooks.slack.com, reached through
a resolver that answers 127.0.0.1 for it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import structlog
from sqlalchemy import create_engine, text

from sms_monitor.alerts.notify import (
    Notification,
    Notifier,
    SendError,
    dedup_key,
    recipient_kind,
    recipient_refusal,
    shown_recipient,
)
from sms_monitor.alerts.rules import parse_rows
from sms_monitor.config import ConfigError, load_settings
from sms_monitor.core.outbound import NOT_ALLOWED, REFUSED_ADDRESS, WebhookPolicy
from sms_monitor.simulator.server import SimulatorServer
from sms_monitor.simulator.state import SimState
from tests.conftest import FakeClock, Smtp, demo_env
from tests.loopback import LOOPBACK, LOOPBACK_ALERTS, self_signed
from tests.test_outbound import Receiver, TlsReceiver, names

KEY = "R0UTINGKEY0123456789abcdefABCDEF"  # a routing key: a secret
PD = f"pagerduty:{KEY}"
SLACK = "https://hooks.slack.com/services/T0001/B0002/s3cretpath"
RUNBOOK = "https://sms-monitor.example.org/runbook#twiliobalancecritical"
FIRING = Notification(
    rule="Low Twilio Balance", account="primary", event="firing", severity="critical",
    metric="account_balance", value=12.4, threshold=20.0, operator="<",
    since=1_780_000_000.0, at=1_780_001_500.0, level=1, runbook_section="Issue 4",
    key="Low Twilio Balance|primary|firing|1780000000|1|1780001500", unit="currency",
    currency="USD", runbook_url=RUNBOOK,
    dashboard_url="https://grafana.example.org/d/sms-monitor/sms-monitor?var-account=primary")
RESOLVED = dataclasses.replace(FIRING, event="resolved", value=120.0, at=1_780_003_000.0,
                               key="Low Twilio Balance|primary|resolved|1780000000|1|1780003000")


@pytest.mark.parametrize(("recipient", "kind"), [
    (PD, "pagerduty"),
    ("  PagerDuty:" + KEY + " ", "pagerduty"),
    ("pagerduty:", None),  # no key
    ("pagerduty:short", None),
    ("pagerduty:has spaces in it", None),
    ("pagerduty:abc@example.com", None),  # not an e-mail address either
    (SLACK, "slack"),
    ("https://hooks.slack.com:8443/services/T/B/X", "slack"),
    ("https://HOOKS.SLACK.COM./services/T/B/X", "slack"),
    ("https://hooks.slack.com/workflows/T/A/1", "webhook"),  # a workflow trigger: plain JSON
    ("https://hooks.slack.com.evil.example/services/T/B/X", "webhook"),
])
def test_recipient_kinds(recipient: str, kind: str | None) -> None:
    assert recipient_kind(recipient) == kind


def test_the_routing_key_is_shown_masked() -> None:
    assert shown_recipient(PD) == "pagerduty:…CDEF"
    assert shown_recipient(SLACK) == "https://hooks.slack.com/…"
    refusal = recipient_refusal(PD, WebhookPolicy())
    assert refusal is not None and refusal.reason == NOT_ALLOWED
    assert refusal.detail == ("pagerduty:…CDEF posts to https://events.pagerduty.com/… is not "
                              "in [alerts] webhook_allow")
    assert recipient_refusal(PD, WebhookPolicy.of(["events.pagerduty.com"])) is None
    assert recipient_refusal(SLACK, WebhookPolicy()) is not None


# -- PagerDuty ------------------------------------------------------------------------------

@pytest.fixture
def pagerduty() -> Any:
    server = Receiver(status=202)
    yield server
    server.stop()


def notifier(receiver: Receiver, **kwargs: Any) -> Notifier:
    return Notifier(None, None, webhooks=LOOPBACK,
                    pagerduty_url=f"http://127.0.0.1:{receiver.port}/v2/enqueue", **kwargs)


def test_pagerduty_trigger_acknowledge_resolve_share_one_dedup_key(pagerduty: Receiver) -> None:
    n = notifier(pagerduty)
    acked = dataclasses.replace(FIRING, event="acknowledged", at=1_780_001_600.0,
                                note="acknowledged by alice, until it resolves: on it")
    for event in (FIRING, dataclasses.replace(FIRING, event="escalated", level=2), acked,
                  RESOLVED):
        n.send(PD, event)
    (path, headers, trigger), (_, _, escalated), (_, _, ack), (_, _, resolve) = pagerduty.posts
    assert path == "/v2/enqueue" and headers["Content-Type"] == "application/json"
    assert [e["event_action"] for e in (trigger, escalated, ack, resolve)] == [
        "trigger", "trigger", "acknowledge", "resolve"]
    assert {e["dedup_key"] for e in (trigger, escalated, ack, resolve)} == {
        "sms-monitor/Low Twilio Balance/primary"} == {dedup_key(FIRING.rule, FIRING.account)}
    assert {e["routing_key"] for e in (trigger, ack, resolve)} == {KEY}
    payload = trigger["payload"]
    assert payload["summary"] == ("[FIRING] Low Twilio Balance (primary): balance 12.40 USD "
                                  "(threshold 20 USD)")
    assert payload["severity"] == "critical" and payload["timestamp"] == "2026-05-28T20:51:40Z"
    assert payload["component"] == "primary" and payload["class"] == "Low Twilio Balance"
    details = payload["custom_details"]
    assert details["value_text"] == "12.40 USD" and details["threshold_text"] == "20 USD"
    assert details["since_iso"] == "2026-05-28T20:26:40Z" and details["for"] == "25 min"
    assert trigger["links"] == [{"href": RUNBOOK, "text": "Runbook"},
                                {"href": FIRING.dashboard_url, "text": "Dashboard"}]
    assert "payload" not in resolve and "payload" not in ack  # PagerDuty needs only the key
    warning = notifier(pagerduty).send(PD, dataclasses.replace(FIRING, severity="warning"))
    assert warning is None and pagerduty.posts[-1][2]["payload"]["severity"] == "warning"


@pytest.mark.parametrize("status", [400, 429, 500, 302])
def test_a_pagerduty_failure_is_retried_and_never_names_the_key(status: int) -> None:
    server = Receiver(status=status, location="http://127.0.0.1:1/elsewhere")
    try:
        with pytest.raises(SendError) as err:
            notifier(server).send(PD, FIRING)
        assert str(err.value).startswith(f"PagerDuty 127.0.0.1 answered {status}")
        assert KEY not in str(err.value) and not err.value.permanent
        assert len(server.posts) == 1  # no redirect followed
    finally:
        server.stop()


def test_pagerduty_goes_nowhere_the_allowlist_does_not_name(pagerduty: Receiver) -> None:
    url = f"http://127.0.0.1:{pagerduty.port}/v2/enqueue"
    for policy, reason in ((WebhookPolicy.of([], allow_http=True), NOT_ALLOWED),
                           (WebhookPolicy.of(["127.0.0.1"], allow_http=True), REFUSED_ADDRESS)):
        with pytest.raises(SendError) as err:
            Notifier(None, None, webhooks=policy, pagerduty_url=url).send(PD, FIRING)
        assert err.value.refused == reason and KEY not in str(err.value)
        assert "pagerduty:…CDEF" in str(err.value)
    assert pagerduty.posts == []


# -- Slack ----------------------------------------------------------------------------------

def test_slack_gets_block_kit_over_tls_to_the_checked_address(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert = self_signed(tmp_path, "hooks.slack.com")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert[0]))
    server = TlsReceiver(cert)
    try:
        policy = WebhookPolicy.of(["hooks.slack.com"], networks=["127.0.0.0/8"])
        resolver = names({"hooks.slack.com": ["127.0.0.1"]})
        url = f"https://hooks.slack.com:{server.port}/services/T0001/B0002/s3cretpath"
        Notifier(None, None, webhooks=policy, resolver=resolver).send(url, FIRING)
        ((path, headers, message),) = server.posts
        assert path == "/services/T0001/B0002/s3cretpath" and server.sni == ["hooks.slack.com"]
        assert headers["Host"] == f"hooks.slack.com:{server.port}"
        assert message["text"] == ("[FIRING] Low Twilio Balance (primary): balance 12.40 USD "
                                   "(threshold 20 USD)")
        header, facts, context = message["blocks"]
        assert header == {"type": "header", "text": {
            "type": "plain_text", "text": "FIRING: Low Twilio Balance (primary)"}}
        assert facts["text"]["text"].splitlines() == [
            "*balance 12.40 USD (threshold 20 USD)*", "since 2026-05-28T20:26:40Z (for 25 min)",
            "severity critical, escalation level 1"]
        links = context["elements"][0]["text"]
        assert f"<{RUNBOOK}|Runbook>" in links and "|Dashboard>" in links
        assert "sms-monitor alerts ack 'Low Twilio Balance' --target primary" in links
        with pytest.raises(SendError) as err:  # not on the allowlist: refused, never posted
            Notifier(None, None, webhooks=WebhookPolicy(), resolver=resolver).send(url, FIRING)
        assert err.value.refused == NOT_ALLOWED and "s3cretpath" not in str(err.value)
        assert str(err.value).startswith("Slack webhook refused: https://hooks.slack.com:")
        assert len(server.posts) == 1
    finally:
        server.stop()


def test_slack_escapes_what_its_markup_would_read() -> None:
    from sms_monitor.alerts.notify import slack_message

    odd = dataclasses.replace(FIRING, rule="A <b> & <!channel>", errors=(("30003", 4),),
                              errors_window=3600.0, metric="sms_delivery_rate", unit="percent",
                              value=50.0, threshold=90.0)
    blocks = slack_message(odd)["blocks"]
    assert blocks[0]["text"]["text"] == "FIRING: A <b> & <!channel> (primary)"  # plain text
    errors = blocks[2]["text"]["text"]
    assert errors == "*Top error codes*\n• 30003 Unreachable destination handset: 4 messages"
    assert "&lt;!channel&gt;" in blocks[3]["elements"][0]["text"]  # the ack command, escaped


# -- rows, levels and the engine -------------------------------------------------------------

def test_rows_with_pagerduty_and_slack_are_judged_by_the_allowlist() -> None:
    row = {"rule_name": "R", "rule_type": "alert", "recipients": [PD, SLACK],
           "trigger_conditions": {"metric": "account_balance", "threshold": 20}}
    rules, broken = parse_rows([row], accounts=["primary"], checks=[], max_window=3600)
    assert rules == [] and len(broken) == 1
    assert "pagerduty:…CDEF posts to https://events.pagerduty.com/… is not in" in broken[0].reason
    assert KEY not in broken[0].reason and "s3cretpath" not in broken[0].reason
    allowed = WebhookPolicy.of(["events.pagerduty.com", "hooks.slack.com"])
    rules, broken = parse_rows([row], accounts=["primary"], checks=[], max_window=3600,
                               webhooks=allowed)
    assert broken == [] and rules[0].recipients == (PD, SLACK)
    rules, broken = parse_rows([row], accounts=["primary"], checks=[], max_window=3600,
                               webhooks=WebhookPolicy.of(["hooks.slack.com"]),
                               pagerduty_url="https://pd.internal.example/v2/enqueue")
    assert rules[0].recipients == (SLACK,) and "pd.internal.example" in broken[0].reason


def test_a_level_routing_key_must_be_allowed_and_is_a_secret() -> None:
    env = demo_env("http://127.0.0.1:1") | {"SMS_MONITOR_DATABASE_URL": "sqlite://"}
    with pytest.raises(ConfigError) as err:
        load_settings(env, {"alerts": {"level2": [PD]}})
    assert "alerts.level2" in str(err.value) and KEY not in str(err.value)
    settings = load_settings(env, {"alerts": {"level2": [PD],
                                              "webhook_allow": ["events.pagerduty.com"]}})
    assert KEY in settings.secrets()  # redacted wherever a log line would carry it


def test_the_engine_pages_pagerduty_and_resolves_it(
        app: str, sim: tuple[SimulatorServer, SimState], smtp: Smtp, clock: FakeClock,
        tmp_path: Path, pagerduty: Receiver) -> None:
    from tests.test_alert_engine import monitor, settings

    engine = create_engine(app)
    with engine.begin() as conn:
        conn.execute(text("UPDATE notification_rules SET recipients = :r "
                          "WHERE rule_name = 'Low Twilio Balance'"), {"r": [PD]})
    engine.dispose()
    server, state = sim
    s = settings(app, server, smtp, f"sqlite:///{tmp_path / 'alerts.db'}", **LOOPBACK_ALERTS,
                 pagerduty_url=f"http://127.0.0.1:{pagerduty.port}/v2/enqueue",
                 dashboard_url="https://grafana.example.org/d/sms-monitor/sms-monitor")
    state.set_scenario("out_of_credit")
    m = monitor(s, clock)
    with structlog.testing.capture_logs() as logs:
        m.run_cycle()
        ((_, _, trigger),) = pagerduty.posts
        assert trigger["event_action"] == "trigger" and trigger["routing_key"] == KEY
        assert trigger["payload"]["summary"].startswith(
            "[FIRING] Low Twilio Balance (primary): balance ")
        assert trigger["payload"]["custom_details"]["threshold_text"] == "20 USD"
        state.set_scenario("healthy")
        clock.advance(120)
        m.run_cycle()
    (_, _, resolve) = pagerduty.posts[-1]
    assert resolve == {"routing_key": KEY, "event_action": "resolve",
                       "dedup_key": "sms-monitor/Low Twilio Balance/primary"}
    assert KEY not in repr(logs)
    snap = m.holder.published
    assert snap is not None and snap.alerts is not None
    assert snap.alerts.notifications[("pagerduty", "sent")] == 2
    m.close()


def test_rules_check_resolves_pagerdutys_host_and_masks_the_key(pagerduty: Receiver) -> None:
    url = f"http://127.0.0.1:{pagerduty.port}/v2/enqueue"
    by_name = WebhookPolicy.of(["localhost"], allow_http=True)
    notifier = Notifier(None, None, webhooks=by_name,
                        pagerduty_url=url.replace("127.0.0.1", "localhost"))
    refusal = notifier.webhook_refusal(PD)  # what `rules check` asks: resolved now
    assert refusal is not None and refusal.reason == REFUSED_ADDRESS
    assert refusal.detail.startswith("pagerduty:…CDEF posts to http://localhost:")
    assert "(loopback)" in refusal.detail and KEY not in refusal.detail
    assert notifier.webhook_refusal("oncall@practice.example") is None
    assert Notifier(None, None, webhooks=LOOPBACK, pagerduty_url=url).webhook_refusal(PD) is None
