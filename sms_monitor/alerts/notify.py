"""Delivering notifications: e-mail (SMTP), JSON webhooks and Alertmanager's API v2.

Never by SMS: SMS may be the thing that is down. Senders do not retry; the engine's
outbox does, with backoff. Errors are one line and never carry a password.
"""

from __future__ import annotations

import re
import smtplib
import ssl
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import make_msgid
from urllib.parse import parse_qs, unquote, urlsplit

import requests

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True)
class Notification:
    rule: str
    account: str
    event: str  # firing, escalated, repeat, resolved
    severity: str
    metric: str
    value: float | None
    threshold: float
    operator: str
    since: float
    at: float
    level: int
    runbook_section: str
    key: str


class SendError(Exception):
    """A delivery failed; ``str()`` is one line without secrets."""


def recipient_kind(recipient: str) -> str | None:
    r = recipient.strip()
    if _EMAIL.match(r):
        return "email"
    url = urlsplit(r)
    if url.scheme == "https" and url.hostname:
        return "webhook"
    if url.scheme == "http" and url.hostname in ("127.0.0.1", "localhost", "::1"):
        return "webhook"  # local receivers (tests, sidecars)
    return None


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def summary(n: Notification) -> str:
    value = "unknown" if n.value is None else f"{n.value:.4g}"
    return (f"[{n.event.upper()}] {n.rule} ({n.account}): {value} {n.operator} "
            f"{n.threshold:g}")


def body(n: Notification) -> str:
    value = "unknown" if n.value is None else f"{n.value:.4g}"
    what = {"firing": "is firing", "escalated": f"is still firing and escalated to level {n.level}",
            "repeat": "is still firing", "resolved": "has resolved"}.get(n.event, n.event)
    return "\n".join([
        f"The sms-monitor alert rule \"{n.rule}\" {what}.",
        "",
        f"Account:    {n.account}",
        f"Metric:     {n.metric} = {value} (fires when {n.operator} {n.threshold:g})",
        f"Since:      {_iso(n.since)}",
        f"This event: {_iso(n.at)}",
        f"Severity:   {n.severity}, escalation level {n.level}",
        f"Runbook:    {n.runbook_section}",
        "",
        "Confirm with `sms-monitor check`; see `sms-monitor alerts` for every alert's state.",
    ])


class Notifier:
    def __init__(self, smtp_url: str | None, mail_from: str | None,
                 alertmanager_url: str | None = None, timeout: float = 10.0) -> None:
        self.smtp_url = smtp_url
        self.mail_from = mail_from or "sms-monitor@localhost"
        self.alertmanager_url = alertmanager_url.rstrip("/") if alertmanager_url else None
        self.timeout = timeout

    def send(self, recipient: str, n: Notification) -> None:
        kind = recipient_kind(recipient)
        if kind == "email":
            self._email(recipient.strip(), n)
        elif kind == "webhook":
            self._webhook(recipient.strip(), n)
        else:
            raise SendError("recipient is neither an e-mail address nor an https:// URL")

    def _email(self, to: str, n: Notification) -> None:
        if not self.smtp_url:
            raise SendError("no SMTP server configured (SMS_MONITOR_SMTP_URL)")
        url = urlsplit(self.smtp_url)
        host, port = url.hostname or "localhost", url.port
        msg = EmailMessage()
        msg["From"] = self.mail_from
        msg["To"] = to
        msg["Subject"] = summary(n)
        msg["Message-ID"] = make_msgid(idstring=re.sub(r"[^A-Za-z0-9.-]", "-", n.key)[:60],
                                       domain="sms-monitor")
        msg["X-SMS-Monitor-Key"] = n.key
        msg.set_content(body(n))
        try:
            if url.scheme == "smtps":
                client: smtplib.SMTP = smtplib.SMTP_SSL(host, port or 465, timeout=self.timeout,
                                                        context=ssl.create_default_context())
            else:
                client = smtplib.SMTP(host, port or 25, timeout=self.timeout)
            with client:
                if parse_qs(url.query).get("starttls") == ["true"]:
                    client.starttls(context=ssl.create_default_context())
                if url.username:
                    client.login(unquote(url.username), unquote(url.password or ""))
                client.send_message(msg)
        except (OSError, smtplib.SMTPException) as exc:
            raise SendError(f"e-mail to {to} via {host}:{port or 25} failed: "
                            f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
                            ) from None

    def _webhook(self, url: str, n: Notification) -> None:
        payload = {**asdict(n), "text": summary(n)}
        try:
            resp = requests.post(url, json=payload, timeout=self.timeout)
        except requests.RequestException as exc:
            raise SendError(f"webhook {urlsplit(url).hostname} failed: {type(exc).__name__}"
                            ) from None
        if not 200 <= resp.status_code < 300:
            raise SendError(f"webhook {urlsplit(url).hostname} answered {resp.status_code}")

    def send_alertmanager(self, n: Notification) -> None:
        if not self.alertmanager_url:
            raise SendError("no Alertmanager configured")
        alert: dict[str, object] = {
            "labels": {"alertname": re.sub(r"[^A-Za-z0-9]+", "", n.rule.title()) or "SmsMonitorRule",
                       "account": n.account, "severity": n.severity, "metric": n.metric,
                       "source": "sms-monitor", "rule": n.rule},
            "annotations": {"summary": summary(n), "description": body(n),
                            "runbook": n.runbook_section},
            "startsAt": _iso(n.since),
        }
        if n.event == "resolved":
            alert["endsAt"] = _iso(n.at)
        try:
            resp = requests.post(f"{self.alertmanager_url}/api/v2/alerts", json=[alert],
                                 timeout=self.timeout)
        except requests.RequestException as exc:
            raise SendError(f"Alertmanager failed: {type(exc).__name__}") from None
        if not 200 <= resp.status_code < 300:
            raise SendError(f"Alertmanager answered {resp.status_code}")
