"""Senders against real local servers: webhook, Alertmanager API v2, SMTP (and SMTP down)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from sms_monitor.alerts.notify import Notification, Notifier, SendError, recipient_kind, summary
from sms_monitor.background_server import BackgroundHTTPServer
from tests.conftest import Smtp, _free_port
from tests.loopback import LOOPBACK

N = Notification(rule="Low SMS Delivery Rate", account="primary", event="firing",
                 severity="critical", metric="sms_delivery_rate", value=87.5, threshold=90.0,
                 operator="<", since=1_780_000_000.0, at=1_780_000_060.0, level=1,
                 runbook_section="Issue 1: SMS Messages Not Delivered", key="k|primary|firing|1")


class Receiver(BackgroundHTTPServer):
    def __init__(self, status: int = 200) -> None:
        self.bodies: list[tuple[str, Any]] = []
        self.status = status
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.bodies.append((self.path, json.loads(raw)))
                self.send_response(outer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        super().__init__(("127.0.0.1", 0), Handler)
        self.start()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


@pytest.mark.parametrize(("recipient", "kind"), [
    ("admin@practice.com", "email"), ("https://hooks.example/x", "webhook"),
    ("http://127.0.0.1:9/x", "webhook"), ("http://hooks.example/x", "webhook"),
    ("ftp://hooks.example/x", None),
    ("+15551234567", None), ("not an address", None), ("", None)])
def test_recipient_kinds_never_sms(recipient: str, kind: str | None) -> None:
    assert recipient_kind(recipient) == kind


def test_webhook_gets_every_field_and_a_summary(receiver: Receiver) -> None:
    Notifier(None, None, webhooks=LOOPBACK).send(receiver.url + "/hook", N)
    (path, body), = receiver.bodies
    assert path == "/hook"
    assert body["rule"] == "Low SMS Delivery Rate" and body["value"] == 87.5
    assert body["key"] == N.key and body["text"] == summary(N)
    assert summary(N) == ("[FIRING] Low SMS Delivery Rate (primary): delivery rate 87.5 % "
                          "(threshold 90 %)")


def test_webhook_error_status_is_a_send_error() -> None:
    r = Receiver(status=500)
    try:
        with pytest.raises(SendError, match="answered 500"):
            Notifier(None, None, webhooks=LOOPBACK).send(r.url + "/hook", N)
    finally:
        r.stop()


def test_alertmanager_payload(receiver: Receiver) -> None:
    notifier = Notifier(None, None, alertmanager_url=receiver.url)
    notifier.send_alertmanager(N)
    resolved = Notification(**{**N.__dict__, "event": "resolved", "at": 1_780_000_600.0})
    notifier.send_alertmanager(resolved)
    (path, firing), (_, done) = receiver.bodies
    assert path == "/api/v2/alerts"
    alert = firing[0]
    assert alert["labels"] == {"alertname": "LowSmsDeliveryRate", "account": "primary",
                               "severity": "critical", "metric": "sms_delivery_rate",
                               "source": "sms-monitor", "rule": "Low SMS Delivery Rate"}
    assert alert["startsAt"] == "2026-05-28T20:26:40Z" and "endsAt" not in alert
    assert done[0]["endsAt"] == "2026-05-28T20:36:40Z"


def test_email_and_smtp_down_without_leaking_the_password(smtp: Smtp) -> None:
    Notifier(smtp.url, "monitor@practice.example").send("admin@practice.com", N)
    (rcpts, msg), = smtp.inbox.messages
    assert rcpts == ["admin@practice.com"] and msg["From"] == "monitor@practice.example"
    assert smtp.inbox.subjects() == [summary(N)] and msg["X-SMS-Monitor-Key"] == N.key
    text = msg.get_payload(decode=True).decode()
    assert "87.5" in text and "Issue 1" in text and "2026-05-28T20:26:40Z" in text

    down = f"smtp://user:s3cr3t-pw@127.0.0.1:{_free_port()}"
    with pytest.raises(SendError) as err:
        Notifier(down, None, timeout=2).send("admin@practice.com", N)
    assert "s3cr3t-pw" not in str(err.value) and "\n" not in str(err.value)
    assert "admin@practice.com" in str(err.value)


def test_engine_keeps_firing_alerts_alive_in_alertmanager(
        app: str, sim: Any, smtp: Smtp, clock: Any, tmp_path: Any, receiver: Receiver) -> None:
    from tests.test_alert_engine import monitor, settings

    server, state = sim
    s = settings(app, server, smtp, f"sqlite:///{tmp_path / 'a.db'}", alertmanager_url=receiver.url)
    state.set_scenario("out_of_credit")
    m = monitor(s, clock)
    m.run_cycle()
    balance = [b for _, b in receiver.bodies if b[0]["labels"]["rule"] == "Low Twilio Balance"]
    assert len(balance) == 2  # the event (outbox) and this cycle's refresh
    clock.advance(60)
    m.run_cycle()
    balance = [b for _, b in receiver.bodies if b[0]["labels"]["rule"] == "Low Twilio Balance"]
    assert len(balance) == 3 and all("endsAt" not in b[0] for b in balance)
    state.set_scenario("healthy")
    clock.advance(60)
    m.run_cycle()
    last = [b for _, b in receiver.bodies if b[0]["labels"]["rule"] == "Low Twilio Balance"][-1]
    assert "endsAt" in last[0]  # resolved, and no refresh after it
    m.close()
