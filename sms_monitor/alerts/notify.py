"""Delivering notifications: e-mail (SMTP), JSON webhooks and Alertmanager's API v2.

Never by SMS: SMS may be the thing that is down. Senders do not retry; the engine's
outbox does, with backoff. Errors are one line and never carry a password.

Every notification carries its event's stable key, so a receiver can drop a retry it has
already accepted: the e-mail's ``Message-ID``, the webhook's ``Idempotency-Key`` header and
``event_id`` field; Alertmanager merges posts of the same labels by itself. The receivers
have limits of their own (``[alerts] smtp_timeout``, ``webhook_timeout``), not Twilio's:
a limit shorter than the receiver's answer turns each retry into another copy.
"""

from __future__ import annotations

import hashlib
import math
import re
import smtplib
import ssl
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
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
    """``email`` for an address, ``webhook`` for an https:// URL (http:// only for a local host),
    None for anything else, a phone number included: notifications never go by SMS."""
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


def _num(v: float | None) -> str:
    """A human number without exponents: 87.5, 90, 12345.68, 0.0042; ``unknown`` for None."""
    if v is None:
        return "unknown"
    if not math.isfinite(v):
        return str(v)
    text = f"{v:.2f}".rstrip("0").rstrip(".") if abs(v) >= 1 else f"{v:.4g}"
    return "0" if text == "-0" else text


def _value(n: Notification) -> str:
    """The value, with more digits when rounding would make it look equal to the threshold."""
    text = _num(n.value)
    if n.value is not None and text == _num(n.threshold) and n.value != n.threshold:
        text = f"{n.value:.10g}"
    return text


def _one_line(text: str) -> str:
    return " ".join(text.split())


def message_id(key: str) -> str:
    """The same ``Message-ID`` for the same idempotency key, so a re-sent duplicate is recognisable."""
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:40]}@sms-monitor>"


def event_id(key: str) -> str:
    """A webhook's ``Idempotency-Key`` and ``event_id``: the same for every retry of an event."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def _reason(exc: BaseException, secret: str = "") -> str:
    """``Type: first line of the message``, at most 200 characters, with ``secret`` masked."""
    text = str(exc).splitlines()[0][:200] if str(exc).strip() else ""
    if secret:
        text = text.replace(secret, "***")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def summary(n: Notification) -> str:
    """The one-line subject, e.g. ``[FIRING] Low SMS Delivery Rate (primary): 87.5 < 90``."""
    return _one_line(f"[{n.event.upper()}] {n.rule} ({n.account}): {_value(n)} {n.operator} "
                     f"{_num(n.threshold)}")


def body(n: Notification) -> str:
    """The plain-text e-mail body (also the Alertmanager description)."""
    what = {"firing": "is firing", "escalated": f"is still firing and escalated to level {n.level}",
            "repeat": "is still firing", "resolved": "has resolved"}.get(n.event, n.event)
    return "\n".join([
        f"The sms-monitor alert rule \"{n.rule}\" {what}.",
        "",
        f"Account:    {n.account}",
        f"Metric:     {n.metric} = {_value(n)} (fires when {n.operator} {_num(n.threshold)})",
        f"Since:      {_iso(n.since)}",
        f"This event: {_iso(n.at)}",
        f"Severity:   {n.severity}, escalation level {n.level}",
        f"Runbook:    {n.runbook_section}",
        "",
        "Confirm with `sms-monitor check`; see `sms-monitor alerts` for every alert's state.",
    ])


class Notifier:
    def __init__(self, smtp_url: str | None, mail_from: str | None,
                 alertmanager_url: str | None = None, timeout: float | None = None, *,
                 smtp_timeout: float = 120.0, webhook_timeout: float = 30.0) -> None:
        """``smtp_timeout`` limits each step of an e-mail (SMTP allows minutes for the final
        reply), ``webhook_timeout`` a webhook's or Alertmanager's answer; ``timeout`` sets both."""
        self.smtp_url = smtp_url
        self.mail_from = mail_from or "sms-monitor@localhost"
        self.alertmanager_url = alertmanager_url.rstrip("/") if alertmanager_url else None
        self.smtp_timeout = smtp_timeout if timeout is None else timeout
        self.webhook_timeout = webhook_timeout if timeout is None else timeout

    def send(self, recipient: str, n: Notification) -> None:
        """Deliver to one recipient by its kind; SendError on any failure (no retries here)."""
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
        if url.scheme not in ("smtp", "smtps"):
            raise SendError(f"SMTP URL scheme must be smtp:// or smtps://, not {url.scheme or 'none'!r}")
        password = unquote(url.password or "")
        host = url.hostname or "localhost"
        try:
            port = url.port or (465 if url.scheme == "smtps" else 25)
            msg = EmailMessage()
            msg["From"] = self.mail_from
            msg["To"] = to
            msg["Subject"] = summary(n)
            msg["Message-ID"] = message_id(n.key)
            msg["X-SMS-Monitor-Key"] = _one_line(n.key)
            msg.set_content(body(n))
        except ValueError as exc:  # a bad header value (port, address, linefeed in the key)
            raise SendError(f"e-mail to {to} not built: {_reason(exc, password)}") from None
        try:
            if url.scheme == "smtps":
                client: smtplib.SMTP = smtplib.SMTP_SSL(host, port, timeout=self.smtp_timeout,
                                                        context=ssl.create_default_context())
            else:
                client = smtplib.SMTP(host, port, timeout=self.smtp_timeout)
            with client:
                if parse_qs(url.query).get("starttls") == ["true"]:
                    client.starttls(context=ssl.create_default_context())
                if url.username:
                    client.login(unquote(url.username), password)
                client.send_message(msg)
        except (OSError, ValueError, smtplib.SMTPException) as exc:
            raise SendError(f"e-mail to {to} via {host}:{port} failed: {_reason(exc, password)}"
                            ) from None

    def _webhook(self, url: str, n: Notification) -> None:
        eid = event_id(n.key)
        payload = {**asdict(n), "text": summary(n), "event_id": eid}
        try:
            # no redirects: a 3xx would turn the POST into a GET that "succeeds" without delivering
            resp = requests.post(url, json=payload, headers={"Idempotency-Key": eid},
                                 timeout=self.webhook_timeout, allow_redirects=False)
        except requests.RequestException as exc:
            raise SendError(f"webhook {urlsplit(url).hostname} failed: {type(exc).__name__}"
                            ) from None
        if not 200 <= resp.status_code < 300:
            raise SendError(f"webhook {urlsplit(url).hostname} answered {resp.status_code}")

    def send_alertmanager(self, n: Notification) -> None:
        """POST ``n`` as one alert to Alertmanager's ``/api/v2/alerts``; endsAt only when resolved."""
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
                                 timeout=self.webhook_timeout, allow_redirects=False)
        except requests.RequestException as exc:
            raise SendError(f"Alertmanager failed: {type(exc).__name__}") from None
        if not 200 <= resp.status_code < 300:
            raise SendError(f"Alertmanager answered {resp.status_code}")
