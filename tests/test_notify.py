"""The senders of sms_monitor.alerts.notify against real local servers.

A real SMTP server (aiosmtpd) in-process, a real HTTP server for webhooks and a fake
Alertmanager (also a real HTTP server) collecting POSTs to /api/v2/alerts.
"""

from __future__ import annotations

import dataclasses
import email
import email.message
import email.policy
import json
import socket
import ssl
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from sms_monitor.alerts.notify import (
    Notification,
    Notifier,
    SendError,
    event_id,
    recipient_kind,
    smtp_auth_warning,
    summary,
)
from sms_monitor.background_server import BackgroundHTTPServer
from tests.loopback import LOOPBACK, self_signed

FIRING = Notification(
    rule="Low SMS Delivery Rate", account="primary", event="firing", severity="critical",
    metric="sms_delivery_rate", value=87.5, threshold=90.0, operator="<",
    since=1_780_000_000.0, at=1_780_000_060.0, level=2,
    runbook_section="Issue 1: SMS Messages Not Delivered",
    key="Low SMS Delivery Rate|primary|firing|1780000000|2|1780000060")
RESOLVED = dataclasses.replace(FIRING, event="resolved", value=95.0, at=1_780_000_600.0, level=2,
                               key="Low SMS Delivery Rate|primary|resolved|1780000000|2|1780000600")
SINCE_ISO = "2026-05-28T20:26:40Z"
SUBJECT = "[FIRING] Low SMS Delivery Rate (primary): delivery rate 87.5 % (threshold 90 %)"
AT_ISO_RESOLVED = "2026-05-28T20:36:40Z"
FIELDS = [f.name for f in dataclasses.fields(Notification)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- SMTP -------------------------------------------------------------------------------------


class Mailbox:
    """aiosmtpd handler: keeps every envelope's recipients and parsed message."""

    def __init__(self) -> None:
        self.received: list[tuple[list[str], email.message.EmailMessage]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(msg, email.message.EmailMessage)
        self.received.append((list(envelope.rcpt_tos), msg))
        return "250 OK"


class SmtpServer:
    def __init__(self, *, user: str | None = None, password: str | None = None,
                 tls: ssl.SSLContext | None = None) -> None:
        self.mailbox = Mailbox()
        self.port = free_port()
        self.logins: list[bool] = []  # each AUTH attempt: whether it came over TLS
        kwargs: dict[str, Any] = {}
        if user is not None:
            def authenticate(server: Any, session: Any, envelope: Any, mechanism: str,
                             auth_data: Any) -> AuthResult:
                self.logins.append(session.ssl is not None)
                ok = (isinstance(auth_data, LoginPassword) and auth_data.login == user.encode()
                      and auth_data.password == (password or "").encode())
                # a careless server that echoes what it got: the sender must still not leak it
                echo = auth_data.password.decode() if isinstance(auth_data, LoginPassword) else ""
                return AuthResult(success=ok, handled=False,
                                  message=None if ok else f"535 5.7.8 bad credentials {echo}")
            kwargs = {"authenticator": authenticate, "auth_require_tls": tls is not None,
                      "auth_required": True}
        if tls is not None:
            kwargs["tls_context"] = tls  # offers STARTTLS
        self.controller = Controller(self.mailbox, hostname="127.0.0.1", port=self.port, **kwargs)

    def url(self, credentials: str = "") -> str:
        return f"smtp://{credentials + '@' if credentials else ''}127.0.0.1:{self.port}"


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.controller.start()
    yield server
    server.controller.stop()


@pytest.fixture
def smtp_auth() -> Iterator[SmtpServer]:
    server = SmtpServer(user="alerts", password="s3cr3t-pw")
    server.controller.start()
    yield server
    server.controller.stop()


# --- HTTP (webhooks and Alertmanager) ---------------------------------------------------------


class HttpReceiver(BackgroundHTTPServer):
    """Collects (path, JSON body) of every POST and answers ``status`` (404 off ``only_path``)."""

    def __init__(self, status: int = 200, only_path: str | None = None) -> None:
        self.posts: list[tuple[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if only_path is not None and self.path != only_path:
                    code = 404
                else:
                    outer.posts.append((self.path, json.loads(raw)))
                    code = status
                self.send_response(code)
                if 300 <= code < 400:
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

        super().__init__(("127.0.0.1", 0), Handler)
        self.start()

    def close(self) -> None:
        self.stop()


@pytest.fixture
def webhook() -> Iterator[HttpReceiver]:
    server = HttpReceiver()
    yield server
    server.close()


@pytest.fixture
def alertmanager() -> Iterator[HttpReceiver]:
    server = HttpReceiver(only_path="/api/v2/alerts")
    yield server
    server.close()


# --- recipient kinds and the summary ----------------------------------------------------------


@pytest.mark.parametrize(("recipient", "kind"), [
    ("oncall@practice.example", "email"),
    ("  oncall@practice.example ", "email"),
    ("https://hooks.example.com/services/T000/B000", "webhook"),
    ("http://127.0.0.1:8080/hook", "webhook"),
    ("http://localhost/hook", "webhook"),
    ("http://hooks.example.com/hook", "webhook"),  # a URL: [alerts] webhook_allow_http decides
    ("ftp://hooks.example.com/hook", None),
    ("+15551234567", None),  # never by SMS
    ("5551234567", None),
    ("sms:+15551234567", None),
    ("not an address", None),
    ("@@", None),
    ("", None),
])
def test_recipient_kind(recipient: str, kind: str | None) -> None:
    assert recipient_kind(recipient) == kind


def test_summary_is_one_line_with_the_value_in_its_unit_against_the_threshold() -> None:
    assert summary(FIRING) == SUBJECT
    assert summary(RESOLVED) == (
        "[RESOLVED] Low SMS Delivery Rate (primary): delivery rate back to 95.0 % "
        "(threshold 90 %)")  # what it is now, never "95 < 90"
    assert summary(dataclasses.replace(FIRING, event="repeat")).startswith("[REPEAT] ")
    assert summary(dataclasses.replace(FIRING, value=None)).endswith(
        ": delivery rate unknown (threshold 90 %)")
    spend = dataclasses.replace(FIRING, rule="High spend", account="*", metric="sms_spend_month",
                                value=12345.678, threshold=10000.0, operator=">",
                                currency="USD")
    assert summary(spend) == ("[FIRING] High spend (all accounts): SMS spend this month "
                              "12345.68 USD (threshold 10000 USD)")  # no 1.235e+04
    close = dataclasses.replace(FIRING, value=89.999)
    assert summary(close).endswith("delivery rate 89.999 % (threshold 90 %)")  # not "90.0 %"
    assert summary(dataclasses.replace(FIRING, rule="Two\nlines\r\n rule")) == (
        SUBJECT.replace("Low SMS Delivery Rate", "Two lines rule"))


# --- e-mail -----------------------------------------------------------------------------------


def test_email_is_delivered_with_subject_body_and_message_id(smtp: SmtpServer) -> None:
    notifier = Notifier(smtp.url(), "monitor@practice.example")
    notifier.send("oncall@practice.example", FIRING)

    (rcpts, msg), = smtp.mailbox.received
    assert rcpts == ["oncall@practice.example"]
    assert msg["From"] == "monitor@practice.example" and msg["To"] == "oncall@practice.example"
    assert msg["Subject"] == SUBJECT
    assert msg.get_content_type() == "text/plain"
    text = msg.get_content().replace("\r\n", "\n")
    assert text.startswith("Low SMS Delivery Rate is firing for account primary.\n")
    assert "  delivery rate 87.5 % (threshold 90 %)\n" in text
    assert f"  since {SINCE_ISO} (for 1 min)\n" in text
    assert "escalation level 2" in text
    assert "Runbook:   Issue 1: SMS Messages Not Delivered" in text
    assert "sms-monitor alerts ack 'Low SMS Delivery Rate' --target primary" in text
    assert msg["X-SMS-Monitor-Key"].strip() == FIRING.key  # a long key is folded onto a new line
    message_id = msg["Message-ID"]
    assert message_id.startswith("<") and message_id.endswith("@sms-monitor>")


def test_a_resent_event_has_the_same_message_id_and_another_event_does_not(smtp: SmtpServer) -> None:
    notifier = Notifier(smtp.url(), "monitor@practice.example")
    notifier.send("oncall@practice.example", FIRING)
    notifier.send("oncall@practice.example", FIRING)  # the outbox retrying after a lost reply
    notifier.send("oncall@practice.example", RESOLVED)
    first, again, resolved = (m["Message-ID"] for _, m in smtp.mailbox.received)
    assert first == again
    assert resolved != first
    assert smtp.mailbox.received[2][1]["Subject"].startswith("[RESOLVED] ")
    resolved_text = smtp.mailbox.received[2][1].get_content()
    assert "has resolved" in resolved_text and "back to 95.0 % (threshold 90 %)" in resolved_text
    assert "alerts ack" not in resolved_text


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_email_logs_in_with_the_url_credentials(smtp_auth: SmtpServer) -> None:
    Notifier(smtp_auth.url("alerts:s3cr3t-pw"), "monitor@practice.example",
             smtp_allow_plain_auth=True).send("oncall@practice.example", FIRING)
    (rcpts, _), = smtp_auth.mailbox.received
    assert rcpts == ["oncall@practice.example"]


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_rejected_login_is_a_send_error_without_the_password(smtp_auth: SmtpServer) -> None:
    notifier = Notifier(smtp_auth.url("alerts:wrong-pw"), "monitor@practice.example",
                        smtp_allow_plain_auth=True)
    with pytest.raises(SendError) as err:
        notifier.send("oncall@practice.example", FIRING)
    reason = str(err.value)
    assert "SMTPAuthenticationError" in reason
    assert "bad credentials" in reason  # the server's reason is kept ...
    assert "wrong-pw" not in reason and "\n" not in reason  # ... but not the echoed password
    assert smtp_auth.mailbox.received == []


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_credentials_are_not_sent_to_a_server_without_starttls(smtp_auth: SmtpServer) -> None:
    notifier = Notifier(smtp_auth.url("alerts:s3cr3t-pw"), "monitor@practice.example")
    with pytest.raises(SendError) as err:
        notifier.send("oncall@practice.example", FIRING)
    assert str(err.value) == (
        f"e-mail to oncall@practice.example via 127.0.0.1:{smtp_auth.port} not sent: the server "
        "offers no STARTTLS and the SMTP URL is not smtps://, so its credentials would cross "
        "the network in clear ([alerts] smtp_allow_plain_auth allows it)")
    assert not err.value.permanent  # a failed send: the relay may offer STARTTLS again
    assert smtp_auth.logins == [] and smtp_auth.mailbox.received == []  # no AUTH at all
    # asked for STARTTLS explicitly: the same, never a fallback to clear text
    with pytest.raises(SendError, match="SMTPNotSupportedError"):
        Notifier(smtp_auth.url("alerts:s3cr3t-pw") + "?starttls=true",
                 "monitor@practice.example").send("oncall@practice.example", FIRING)
    assert smtp_auth.logins == []
    # allowed by the configuration: it logs in in clear
    Notifier(smtp_auth.url("alerts:s3cr3t-pw"), "monitor@practice.example",
             smtp_allow_plain_auth=True).send("oncall@practice.example", FIRING)
    assert smtp_auth.logins == [False] and len(smtp_auth.mailbox.received) == 1


def test_starttls_is_used_when_offered_before_the_credentials(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    crt, key = self_signed(tmp_path, "smtp.test")
    monkeypatch.setenv("SSL_CERT_FILE", str(crt))  # OpenSSL's default trust: our certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(crt, key)
    server = SmtpServer(user="alerts", password="s3cr3t-pw", tls=context)
    server.controller.start()
    try:
        Notifier(server.url("alerts:s3cr3t-pw"), "monitor@practice.example").send(
            "oncall@practice.example", FIRING)  # smtp:// without ?starttls=true
        assert server.logins == [True]  # the password went over TLS only
        (rcpts, _), = server.mailbox.received
        assert rcpts == ["oncall@practice.example"]
    finally:
        server.controller.stop()


@pytest.mark.parametrize(("url", "allow", "warning"), [
    ("smtp://u:p@relay.example:587", False, "they are sent only after STARTTLS"),
    ("smtp://u:p@relay.example:587", True, "they cross the network in clear"),
    ("smtp://u:p@relay.example:587?starttls=true", False, None),
    ("smtps://u:p@relay.example:465", False, None),
    ("smtp://relay.example:25", False, None),
    (None, False, None),
])
def test_a_start_warning_for_credentials_that_may_go_without_tls(
        url: str | None, allow: bool, warning: str | None) -> None:
    got = smtp_auth_warning(url, allow)
    assert (got is None) == (warning is None)
    if got is not None:
        assert warning in got and "p@" not in got and "\n" not in got


def test_smtp_down_is_a_quick_one_line_send_error_without_the_password() -> None:
    down = f"smtp://user:secret@127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    with pytest.raises(SendError) as err:
        Notifier(down, "monitor@practice.example", timeout=3).send("oncall@practice.example", FIRING)
    assert time.monotonic() - started < 2.5
    reason = str(err.value)
    assert reason and "\n" not in reason
    assert "secret" not in reason
    assert "oncall@practice.example" in reason and "127.0.0.1" in reason


def test_email_without_smtp_or_to_a_phone_number_is_a_send_error() -> None:
    with pytest.raises(SendError, match="no SMTP server"):
        Notifier(None, None).send("oncall@practice.example", FIRING)
    with pytest.raises(SendError, match="smtp:// or smtps://"):
        Notifier("http://127.0.0.1:25", None).send("oncall@practice.example", FIRING)
    with pytest.raises(SendError, match="neither"):
        Notifier("smtp://127.0.0.1:25", None).send("+15551234567", FIRING)


def test_a_linefeed_in_a_rule_name_does_not_break_the_e_mail(smtp: SmtpServer) -> None:
    odd = dataclasses.replace(FIRING, rule="Low\nrate", key="k\r\nBcc: victim@example.com")
    Notifier(smtp.url(), "monitor@practice.example").send("oncall@practice.example", odd)
    (rcpts, msg), = smtp.mailbox.received
    assert rcpts == ["oncall@practice.example"]  # no injected recipient
    assert msg["Subject"] == SUBJECT.replace("Low SMS Delivery Rate", "Low rate")
    assert msg["Bcc"] is None


# --- webhooks ---------------------------------------------------------------------------------


def test_webhook_gets_every_field_and_the_summary(webhook: HttpReceiver) -> None:
    Notifier(None, None, webhooks=LOOPBACK).send(webhook.url + "/hook?team=ops", FIRING)
    (path, payload), = webhook.posts
    assert path == "/hook?team=ops"
    assert {*FIELDS, "text", "description", "event_id", "statement"} <= set(payload)
    plain = [f for f in FIELDS if f not in ("errors", "checks")]  # tuples: objects in JSON
    assert {k: payload[k] for k in plain} == {k: v for k, v in dataclasses.asdict(FIRING).items()
                                              if k in plain}
    assert payload["event_id"] == event_id(FIRING.key) != event_id(RESOLVED.key)
    assert payload["text"] == SUBJECT
    assert payload["statement"] == "delivery rate 87.5 % (threshold 90 %)"
    assert payload["value_text"] == "87.5 %" and payload["threshold_text"] == "90 %"


def test_webhook_with_an_unknown_value_sends_null(webhook: HttpReceiver) -> None:
    Notifier(None, None, webhooks=LOOPBACK).send(webhook.url,
                                                 dataclasses.replace(FIRING, value=None))
    (_, payload), = webhook.posts
    assert payload["value"] is None
    assert payload["text"].endswith("delivery rate unknown (threshold 90 %)")


@pytest.mark.parametrize("status", [500, 404, 302])
def test_webhook_non_2xx_is_a_send_error_with_the_status(status: int) -> None:
    server = HttpReceiver(status=status)
    try:
        with pytest.raises(SendError, match=f"answered {status}"):
            Notifier(None, None, webhooks=LOOPBACK).send(server.url + "/hook", FIRING)
        assert len(server.posts) == 1  # tried once, no retries and no redirect followed
    finally:
        server.close()


def test_webhook_down_is_a_send_error() -> None:
    with pytest.raises(SendError, match="webhook 127.0.0.1 failed"):
        Notifier(None, None, timeout=2, webhooks=LOOPBACK).send(
            f"http://127.0.0.1:{free_port()}/hook", FIRING)


# --- Alertmanager -----------------------------------------------------------------------------


def test_alertmanager_payload_firing_and_resolved(alertmanager: HttpReceiver) -> None:
    notifier = Notifier(None, None, alertmanager_url=alertmanager.url + "/")
    notifier.send_alertmanager(FIRING)
    notifier.send_alertmanager(RESOLVED)

    (path, firing), (path2, resolved) = alertmanager.posts
    assert path == path2 == "/api/v2/alerts"
    assert isinstance(firing, list) and len(firing) == 1
    alert = firing[0]
    labels = alert["labels"]
    assert labels["alertname"] == "LowSmsDeliveryRate"
    assert {k: labels[k] for k in ("account", "severity", "metric", "source")} == {
        "account": "primary", "severity": "critical", "metric": "sms_delivery_rate",
        "source": "sms-monitor"}
    assert all(isinstance(v, str) for v in labels.values())
    annotations = alert["annotations"]
    assert annotations["summary"] == summary(FIRING)
    assert "87.5" in annotations["description"] and SINCE_ISO in annotations["description"]
    assert annotations["runbook"] == "Issue 1: SMS Messages Not Delivered"
    assert alert["startsAt"] == SINCE_ISO
    assert "endsAt" not in alert

    done = resolved[0]
    assert done["labels"] == labels  # the same alert, so Alertmanager resolves it
    assert done["startsAt"] == SINCE_ISO
    assert done["endsAt"] == AT_ISO_RESOLVED


def test_alertmanager_errors_are_send_errors() -> None:
    with pytest.raises(SendError, match="no Alertmanager"):
        Notifier(None, None).send_alertmanager(FIRING)
    failing = HttpReceiver(status=500)
    try:
        with pytest.raises(SendError, match="answered 500"):
            Notifier(None, None, alertmanager_url=failing.url).send_alertmanager(FIRING)
    finally:
        failing.close()
    with pytest.raises(SendError, match="Alertmanager failed"):
        Notifier(None, None, alertmanager_url=f"http://127.0.0.1:{free_port()}",
                 timeout=2).send_alertmanager(FIRING)
