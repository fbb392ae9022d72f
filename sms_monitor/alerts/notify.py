"""Delivering notifications: e-mail (SMTP), JSON webhooks and Alertmanager's API v2.

Never by SMS: SMS may be the thing that is down. Senders do not retry; the engine's
outbox does, with backoff. Errors are one line and never carry a password.

Every notification carries its event's stable key, so a receiver can drop a retry it has
already accepted: the e-mail's ``Message-ID``, the webhook's ``Idempotency-Key`` header and
``event_id`` field; Alertmanager merges posts of the same labels by itself. The receivers
have limits of their own (``[alerts] smtp_timeout``, ``webhook_timeout``), not Twilio's:
a limit shorter than the receiver's answer turns each retry into another copy.

Webhooks go only where ``[alerts] webhook_allow`` says (:mod:`sms_monitor.core.outbound`).
The sender resolves the recipient's host itself, checks every address it gets, and connects
to a checked address with the name kept for TLS (SNI, certificate check) and the ``Host``
header: a DNS answer that changes between the check and the connection (rebinding) is never
used. Redirects are never followed: a 3xx is a failed send. A refused recipient is a
*permanent* failure (:attr:`SendError.permanent`): the outbox gives it up instead of
retrying it. The proxy variables (``HTTPS_PROXY``) are not used for webhooks: a proxy would
resolve the name itself, after the check. E-mail sends SMTP credentials only over TLS
(``smtps://``, or STARTTLS, used whenever the server offers it and credentials are to be
sent) unless ``[alerts] smtp_allow_plain_auth`` allows them in clear.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import math
import os
import re
import smtplib
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from urllib.parse import parse_qs, unquote, urlsplit

import certifi
import requests
import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import NewConnectionError

from sms_monitor.core.outbound import Refusal, WebhookPolicy, normal_host, shown

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
    """A delivery failed; ``str()`` is one line without secrets. ``refused`` (a reason of
    :data:`sms_monitor.core.outbound.REASONS`) marks a recipient the configuration refuses:
    a permanent failure that no retry can change."""

    def __init__(self, message: str, refused: str | None = None) -> None:
        super().__init__(message)
        self.refused = refused

    @property
    def permanent(self) -> bool:
        return self.refused is not None


def recipient_kind(recipient: str) -> str | None:
    """``email`` for an address, ``webhook`` for an http:// or https:// URL with a host (whether
    it may be sent to is :class:`WebhookPolicy`'s question), None for anything else, a phone
    number included: notifications never go by SMS."""
    r = recipient.strip()
    if _EMAIL.match(r):
        return "email"
    try:
        url = urlsplit(r)
        host = url.hostname
    except ValueError:
        return None
    if url.scheme.lower() in ("https", "http") and host:
        return "webhook"
    return None


def ca_bundle() -> str:
    """The certificates webhooks are verified against: requests' choice (its variables, then
    certifi's bundle), so moving webhooks off requests changed no trust."""
    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") \
        or certifi.where()


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to for a TCP connection, in the resolver's order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


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


def smtp_auth_warning(smtp_url: str | None, allow_plain_auth: bool) -> str | None:
    """What to warn about at start when the SMTP URL's credentials may not be protected by
    TLS (whether the server offers STARTTLS is known only when sending), or None."""
    if not smtp_url:
        return None
    try:
        url = urlsplit(smtp_url)
        user = url.username
    except ValueError:
        return None
    if not user or url.scheme != "smtp" or parse_qs(url.query).get("starttls") == ["true"]:
        return None
    if allow_plain_auth:
        return ("SMS_MONITOR_SMTP_URL has credentials and is neither smtps:// nor "
                "?starttls=true: with [alerts] smtp_allow_plain_auth = true they cross the "
                "network in clear when the server offers no STARTTLS")
    return ("SMS_MONITOR_SMTP_URL has credentials and is neither smtps:// nor ?starttls=true: "
            "they are sent only after STARTTLS, so e-mail fails if the server does not offer "
            "it")


class Notifier:
    def __init__(self, smtp_url: str | None, mail_from: str | None,
                 alertmanager_url: str | None = None, timeout: float | None = None, *,
                 smtp_timeout: float = 120.0, webhook_timeout: float = 30.0,
                 webhooks: WebhookPolicy | None = None, smtp_allow_plain_auth: bool = False,
                 resolver: Callable[[str, int], Sequence[str]] = resolve) -> None:
        """``smtp_timeout`` limits each step of an e-mail (SMTP allows minutes for the final
        reply), ``webhook_timeout`` a webhook's or Alertmanager's answer; ``timeout`` sets both.
        ``webhooks``: where webhooks may go (by default nowhere); ``smtp_allow_plain_auth``:
        SMTP credentials may be sent without TLS."""
        self.smtp_url = smtp_url
        self.mail_from = mail_from or "sms-monitor@localhost"
        self.alertmanager_url = alertmanager_url.rstrip("/") if alertmanager_url else None
        self.smtp_timeout = smtp_timeout if timeout is None else timeout
        self.webhook_timeout = webhook_timeout if timeout is None else timeout
        self.webhooks = webhooks if webhooks is not None else WebhookPolicy()
        self.smtp_allow_plain_auth = smtp_allow_plain_auth
        self.resolver = resolver

    def send(self, recipient: str, n: Notification) -> None:
        """Deliver to one recipient by its kind; SendError on any failure (no retries here)."""
        kind = recipient_kind(recipient)
        if kind == "email":
            self._email(recipient.strip(), n)
        elif kind == "webhook":
            self._webhook(recipient.strip(), n)
        else:
            raise SendError("recipient is neither an e-mail address nor an https:// URL",
                            refused="not_allowed")

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
                starttls = parse_qs(url.query).get("starttls") == ["true"]
                if url.username and url.scheme == "smtp" and not starttls:
                    client.ehlo()  # what the server offers: STARTTLS, then, before credentials
                    starttls = client.has_extn("starttls")
                    if not starttls and not self.smtp_allow_plain_auth:
                        raise SendError(
                            f"e-mail to {to} via {host}:{port} not sent: the server offers no "
                            "STARTTLS and the SMTP URL is not smtps://, so its credentials "
                            "would cross the network in clear ([alerts] smtp_allow_plain_auth "
                            "allows it)")
                if starttls:
                    client.starttls(context=ssl.create_default_context())
                if url.username:
                    client.login(unquote(url.username), password)
                client.send_message(msg)
        except (OSError, ValueError, smtplib.SMTPException) as exc:
            raise SendError(f"e-mail to {to} via {host}:{port} failed: {_reason(exc, password)}"
                            ) from None

    def _webhook(self, url: str, n: Notification) -> None:
        refusal = self.webhooks.check_url(url)
        if refusal is not None:
            raise _refused(refusal)
        parts = urlsplit(url)
        host = normal_host(parts.hostname or "")  # IDNA for a Unicode name
        https = parts.scheme.lower() == "https"
        port = parts.port or (443 if https else 80)
        checked, refusal = self._addresses(url, host, port)
        if refusal is not None:
            raise _refused(refusal)
        eid = event_id(n.key)
        body_bytes = json.dumps({**asdict(n), "text": summary(n), "event_id": eid}).encode()
        shown_host = f"[{host}]" if ":" in host else host
        headers = {"Host": shown_host if parts.port is None else f"{shown_host}:{port}",
                   "Content-Type": "application/json", "Idempotency-Key": eid,
                   "User-Agent": f"sms-monitor/{_version()}"}
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        status = self._post(checked, port, https, host, target, body_bytes, headers)
        if 300 <= status < 400:
            raise SendError(f"webhook {host} answered {status} (redirects are not followed)")
        if not 200 <= status < 300:
            raise SendError(f"webhook {host} answered {status}")

    def _addresses(self, url: str, host: str, port: int) -> tuple[list[str], Refusal | None]:
        """The addresses ``host`` resolves to now, and the refusal of the first refused one
        (one refused address refuses the name: an attacker's DNS may answer with a public
        address and a private one). SendError when it does not resolve."""
        try:
            addresses = list(self.resolver(host, port))
        except (OSError, UnicodeError) as exc:  # socket.gaierror: not resolved (now)
            raise SendError(f"webhook {host} failed: its name was not resolved "
                            f"({type(exc).__name__})") from None
        if not addresses:
            raise SendError(f"webhook {host} failed: its name resolved to no address")
        for text in addresses:
            ip = ipaddress.ip_address(text.split("%")[0])
            refusal = self.webhooks.check_address(ip, f"{shown(url)} resolves to")
            if refusal is not None:
                return addresses, refusal
        return addresses, None

    def webhook_refusal(self, url: str) -> Refusal | None:
        """Why a webhook to ``url`` would be refused now (the allowlist, then the addresses
        its host resolves to now), or None: what ``rules check`` reports before any send.
        A name that does not resolve now is not a refusal."""
        refusal = self.webhooks.check_url(url)
        if refusal is not None:
            return refusal
        parts = urlsplit(url.strip())
        try:
            port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
            return self._addresses(url, normal_host(parts.hostname or ""), port)[1]
        except (SendError, ValueError):
            return None

    def _post(self, addresses: list[str], port: int, https: bool, host: str, target: str,
              body_bytes: bytes, headers: dict[str, str]) -> int:
        """POST to the first of ``addresses`` that accepts a connection (the name only for
        TLS); the answer's status. No retries, no redirects."""
        timeout = urllib3.Timeout(connect=self.webhook_timeout, read=self.webhook_timeout)
        last: Exception | None = None
        for address in addresses:
            pool: urllib3.HTTPConnectionPool
            if https:
                bundle = ca_bundle()  # a file, or a directory (c_rehash) as requests allows
                context = ssl.create_default_context(
                    cafile=None if os.path.isdir(bundle) else bundle,
                    capath=bundle if os.path.isdir(bundle) else None)
                pool = urllib3.HTTPSConnectionPool(
                    address, port, timeout=timeout, retries=False, maxsize=1,
                    ssl_context=context, server_hostname=host, assert_hostname=host)
            else:
                pool = urllib3.HTTPConnectionPool(address, port, timeout=timeout,
                                                  retries=False, maxsize=1)
            try:
                resp = pool.urlopen("POST", target, body=body_bytes, headers=headers,
                                    retries=False, redirect=False, assert_same_host=False,
                                    preload_content=False)
                resp.release_conn()
                return int(resp.status)
            except NewConnectionError as exc:  # refused or unreachable: the next address
                last = exc
            except Urllib3Error as exc:
                raise SendError(f"webhook {host} failed: {_urllib3_reason(exc)}") from None
            finally:
                pool.close()
        raise SendError(f"webhook {host} failed: {_urllib3_reason(last)}")

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
        if 300 <= resp.status_code < 400:
            raise SendError(f"Alertmanager answered {resp.status_code} (redirects are not "
                            "followed)")
        if not 200 <= resp.status_code < 300:
            raise SendError(f"Alertmanager answered {resp.status_code}")


def _refused(refusal: Refusal) -> SendError:
    return SendError(f"webhook refused: {refusal.detail}", refused=refusal.reason)


def _urllib3_reason(exc: Exception | None) -> str:
    """The failure's kind (a timeout, a refused connection, a TLS error), one line, no URL."""
    if exc is None:
        return "no address answered"
    inner = getattr(exc, "reason", None)
    name = type(exc).__name__
    if isinstance(exc, NewConnectionError) or inner is None:
        return name
    return f"{name} ({type(inner).__name__})"


def _version() -> str:
    from sms_monitor import __version__

    return __version__
