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
import os
import re
import smtplib
import socket
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from shlex import quote as shell_quote
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

import certifi
import requests
import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import NewConnectionError

from sms_monitor.alerts import explain
from sms_monitor.alerts.explain import PAGERDUTY_EVENTS_URL
from sms_monitor.core.outbound import NOT_ALLOWED, Refusal, WebhookPolicy, normal_host, shown

if TYPE_CHECKING:
    from sms_monitor.config import Settings

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
    # what the notification explains (all defaulted: a row queued by an older version reads)
    unit: str = ""  # the metric's unit: percent, seconds, currency, messages, status
    currency: str = ""  # the balance's or spend's currency
    window: float = 0.0  # the rule's window, for windowed metrics
    errors: tuple[tuple[str, int], ...] = ()  # the top error codes in the window: (code, count)
    errors_window: float = 0.0  # the window they were counted in
    # a status: rule's checks at or past its threshold: (account, check, status, detail, runbook)
    checks: tuple[tuple[str, str, str, str, str], ...] = ()
    runbook_url: str = ""  # [alerts] runbook_url with the metric's anchor, or the rule's URL
    dashboard_url: str = ""  # [alerts] dashboard_url narrowed to the account
    note: str = ""  # why it resolved when not by its value (the rule removed); who acknowledged

    @property
    def in_unit(self) -> str:
        """The unit its value is written in (queued by an older version: the metric's)."""
        return self.unit or explain.unit_of(self.metric)

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> Notification:
        """The notification an outbox row holds (JSON: its tuples came back as lists);
        TypeError for a payload that does not fit."""
        data = dict(payload)
        data["errors"] = tuple((str(c), int(k)) for c, k in data.get("errors") or ())
        data["checks"] = tuple(tuple(str(x) for x in c) for c in data.get("checks") or ())
        return cls(**data)


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


_PAGERDUTY = re.compile(r"^pagerduty:([A-Za-z0-9_-]{8,128})$", re.IGNORECASE)
SLACK_HOST = "hooks.slack.com"
# the kinds that POST to a URL (a webhook's own, Slack's, PagerDuty's events URL): each
# through [alerts] webhook_allow and the address checks
POSTED = ("webhook", "slack", "pagerduty")


def recipient_kind(recipient: str) -> str | None:
    """``email`` for an address; ``pagerduty`` for ``pagerduty:<routing key>`` (PagerDuty's
    Events API v2); ``slack`` for a Slack incoming webhook (``https://hooks.slack.com/services/
    ...``); ``webhook`` for any other http:// or https:// URL with a host (whether it may be
    sent to is :class:`WebhookPolicy`'s question); None for anything else, a phone number
    included: notifications never go by SMS."""
    r = recipient.strip()
    if r[:10].lower() == "pagerduty:":
        return "pagerduty" if _PAGERDUTY.match(r) else None
    if _EMAIL.match(r):
        return "email"
    try:
        url = urlsplit(r)
        host = url.hostname
    except ValueError:
        return None
    if url.scheme.lower() in ("https", "http") and host:
        if normal_host(host) == SLACK_HOST and url.path.startswith("/services/"):
            return "slack"
        return "webhook"
    return None


def routing_key(recipient: str) -> str:
    """A ``pagerduty:`` recipient's routing key (a secret: never logged)."""
    m = _PAGERDUTY.match(recipient.strip())
    return m.group(1) if m else ""


def shown_recipient(recipient: str) -> str:
    """What a log line, a reason or a listing may show of a recipient: an address as it is,
    a URL as ``scheme://host:port/…`` (a chat webhook's secret is its path), a PagerDuty
    routing key by its last four characters only."""
    r = recipient.strip()
    kind = recipient_kind(r)
    if kind == "pagerduty":
        return f"pagerduty:…{routing_key(r)[-4:]}"
    if kind in ("webhook", "slack"):
        return shown(r)
    return r if kind == "email" else "an unusable recipient"


def recipient_url(recipient: str, pagerduty_url: str = PAGERDUTY_EVENTS_URL) -> str | None:
    """The URL a recipient's notifications are POSTed to (None for e-mail and the unusable):
    the webhook's own, or PagerDuty's events URL for a routing key."""
    kind = recipient_kind(recipient)
    if kind == "pagerduty":
        return pagerduty_url
    return recipient.strip() if kind in ("webhook", "slack") else None


def recipient_refusal(recipient: str, webhooks: WebhookPolicy,
                      pagerduty_url: str = PAGERDUTY_EVENTS_URL) -> Refusal | None:
    """The allowlist's refusal of where a recipient POSTs, without resolving anything."""
    url = recipient_url(recipient, pagerduty_url)
    if url is None:
        return None
    refusal = webhooks.check_url(url)
    if refusal is None or recipient_kind(recipient) != "pagerduty":
        return refusal
    return Refusal(refusal.reason, f"{shown_recipient(recipient)} posts to {refusal.detail}")


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


_HEADLINES = {"firing": "FIRING", "escalated": "ESCALATED", "repeat": "STILL FIRING",
              "resolved": "RESOLVED", "acknowledged": "ACKNOWLEDGED"}


def where(account: str) -> str:
    """The alert's target in words: ``account primary``, ``all accounts``, ``the database``."""
    if account == explain.ROLLUP:
        return "all accounts"
    return "the database" if account == explain.DATABASE else f"account {account}"


def _target(account: str) -> str:
    return {explain.ROLLUP: "all accounts"}.get(account, account)


def statement(n: Notification) -> str:
    """``delivery rate 88.2 % (threshold 90 %)``; resolved ``delivery rate back to 97.1 %
    (threshold 90 %)``."""
    return explain.statement(n.metric, n.in_unit, n.value, n.threshold, n.operator, n.currency,
                             resolved=n.event == "resolved" and not n.note)


def summary(n: Notification) -> str:
    """The one-line subject, e.g. ``[FIRING] Low SMS Delivery Rate (primary): delivery rate
    88.2 % (threshold 90 %)``; a status: rule names its red checks."""
    head = f"[{n.event.upper()}] {n.rule} ({_target(n.account)})"
    by = re.match(r"acknowledged (by [^,]+)", n.note) if n.event == "acknowledged" else None
    if by:
        head += f" {by.group(1)}"
    if n.event == "resolved" and n.note:
        return _one_line(f"{head}: {n.note.split(':')[0]}")
    text = statement(n)
    bad = [check for _account, check, _status, _detail, _link in n.checks]
    if bad and n.event != "resolved":
        text += f": {', '.join(dict.fromkeys(bad))}"
    return _one_line(f"{head}: {text}")


def firing_for(n: Notification) -> str:
    """``since 2026-05-28T20:26:40Z (for 25 min)``; resolved: ``fired from ... to ...``."""
    if n.event == "resolved":
        return f"fired from {_iso(n.since)} to {_iso(n.at)} ({explain.span(n.at - n.since)})"
    lasted = n.at - n.since
    return f"since {_iso(n.since)} ({'just now' if lasted < 60 else f'for {explain.span(lasted)}'})"


def ack_command(n: Notification) -> str:
    """The command that acknowledges this alert, quoted for a shell."""
    return f"sms-monitor alerts ack {shell_quote(n.rule)} --target {shell_quote(n.account)}"


def body(n: Notification) -> str:
    """The plain-text e-mail body (also the Alertmanager description): what is wrong, since
    when, the error codes behind it, and where to look next."""
    what = {"firing": "is firing", "escalated": "is still firing", "repeat": "is still firing",
            "resolved": "has resolved", "acknowledged": "was acknowledged"}.get(n.event, n.event)
    more = f": escalated to level {n.level}" if n.event == "escalated" else ""
    lines = [_one_line(f"{n.rule} {what} for {where(n.account)}{more}."), ""]
    window = f", over the last {explain.span(n.window)}" if n.window else ""
    if n.event == "resolved" and n.note:
        lines += [f"  {_one_line(n.note)}", f"  last value: {statement(n)}{window}"]
    else:
        lines.append(f"  {statement(n)}{window}")
    lines.append(f"  {firing_for(n)}")
    reached = "reached " if n.event == "resolved" else ""
    lines.append(f"  severity {n.severity}, {reached}escalation level {n.level}")
    if n.event == "acknowledged" and n.note:
        lines.append(f"  {_one_line(n.note)}")
    if n.checks and n.event != "resolved":
        status = explain.status_limit(n.operator, n.threshold)
        lines += ["", f"Checks at {status}:"]
        for account, check, state, detail, link in n.checks:
            lines.append("  " + _one_line(f"{check} ({_target(account)}): {state}"
                                          + (f", {detail}" if detail else "")))
            if link:
                lines.append(f"    {link}")
    if n.errors and n.event != "resolved":
        during = f" in the last {explain.span(n.errors_window)}" if n.errors_window else ""
        lines += ["", f"Top error codes{during}:"]
        lines += [f"  {line}" for line in explain.error_lines(n.errors)]
    lines.append("")
    if n.runbook_url:
        lines.append(f"Runbook:   {n.runbook_url}")
    if n.runbook_section and not explain.is_url(n.runbook_section):
        section = _one_line(n.runbook_section)
        lines.append(f"           (the practice's runbook: {section})" if n.runbook_url
                     else f"Runbook:   {section}")
    if n.dashboard_url:
        lines.append(f"Dashboard: {n.dashboard_url}")
    lines.append("")
    lines.append("Confirm with `sms-monitor check`; `sms-monitor alerts` lists every alert.")
    if n.event in ("firing", "escalated", "repeat"):
        lines += ["Acknowledge (no escalation until it resolves):", f"  {ack_command(n)}"]
    return "\n".join(lines)


def details(n: Notification) -> dict[str, Any]:
    """The explanation as data: what webhooks, PagerDuty's ``custom_details`` and
    Alertmanager's annotations carry besides the text."""
    out: dict[str, Any] = {
        "statement": statement(n),
        "value_text": explain.quantity(n.in_unit, n.value, n.currency),
        "threshold_text": (explain.status_limit(n.operator, n.threshold) if n.in_unit == "status"
                           else explain.quantity(n.in_unit, n.threshold, n.currency,
                                                 threshold=True)),
        "since_iso": _iso(n.since), "at_iso": _iso(n.at), "for": explain.span(n.at - n.since),
        "errors_text": explain.error_lines(n.errors),
        "checks_text": [_one_line(f"{check} ({_target(account)}): {state}"
                                  + (f", {detail}" if detail else ""))
                        for account, check, state, detail, _link in n.checks],
    }
    if n.window:
        out["window_text"] = explain.span(n.window)
    return out


def webhook_json(n: Notification) -> dict[str, Any]:
    """A JSON webhook's document: every field of the notification, the subject as ``text``,
    the body as ``description``, the explanation and ``event_id``."""
    data = asdict(n)
    data["errors"] = [{"code": c, "count": k, "meaning": explain.error_meaning(c)}
                      for c, k in n.errors]
    data["checks"] = [{"account": a, "check": c, "status": st, "detail": d, "runbook_url": u}
                      for a, c, st, d, u in n.checks]
    return {**data, **details(n), "text": summary(n), "description": body(n),
            "event_id": event_id(n.key)}


def _slack_escape(text: str) -> str:
    """Slack's mrkdwn: ``&``, ``<`` and ``>`` are control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_message(n: Notification) -> dict[str, Any]:
    """A Slack incoming webhook's message: Block Kit, with the subject as ``text`` (the
    notification's and the fallback's)."""
    headline = _HEADLINES.get(n.event, n.event.upper())
    title = _one_line(f"{headline}: {n.rule} ({_target(n.account)})")
    window = f" over the last {explain.span(n.window)}" if n.window else ""
    facts = [f"*{_slack_escape(statement(n))}*{window}", _slack_escape(firing_for(n)),
             f"severity {n.severity}, escalation level {n.level}"]
    if n.note:
        facts.insert(0, _slack_escape(_one_line(n.note)))
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(facts)[:3000]}}]
    if n.checks and n.event != "resolved":
        lines = [f"• {_slack_escape(line)}" for line in details(n)["checks_text"]]
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": (
            f"*Checks at {explain.status_limit(n.operator, n.threshold)}*\n"
            + "\n".join(lines))[:3000]}})
    if n.errors and n.event != "resolved":
        lines = [f"• {_slack_escape(line)}" for line in explain.error_lines(n.errors)]
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": (
            "*Top error codes*\n" + "\n".join(lines))[:3000]}})
    links = [f"<{u}|{label}>" for u, label in ((n.runbook_url, "Runbook"),
                                                (n.dashboard_url, "Dashboard")) if u]
    context = " · ".join([*links, f"`{_slack_escape(ack_command(n))}`"]
                         if n.event in ("firing", "escalated", "repeat") else links)
    if context:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn",
                                                         "text": context[:3000]}]})
    return {"text": summary(n), "blocks": blocks}


PAGERDUTY_SEVERITY = {"critical": "critical", "warning": "warning"}


def dedup_key(rule: str, target: str) -> str:
    """PagerDuty's ``dedup_key``: one per alert (rule, target), so every event of an alert
    updates one PagerDuty alert, and a resolve closes it."""
    key = f"sms-monitor/{rule}/{target}"
    if len(key) <= 255:
        return key
    return f"sms-monitor/{hashlib.sha256(f'{rule}|{target}'.encode()).hexdigest()}"


def pagerduty_event(key: str, n: Notification) -> dict[str, Any]:
    """A PagerDuty Events API v2 event: ``trigger`` for firing, escalated and repeated events,
    ``acknowledge`` for an acknowledgement, ``resolve`` when it resolves."""
    action = {"resolved": "resolve", "acknowledged": "acknowledge"}.get(n.event, "trigger")
    event: dict[str, Any] = {"routing_key": key, "event_action": action,
                             "dedup_key": dedup_key(n.rule, n.account)}
    if action != "trigger":
        return event
    custom = {"rule": n.rule, "target": n.account, "metric": n.metric, "event": n.event,
              "escalation_level": n.level, "runbook_section": n.runbook_section,
              "event_id": event_id(n.key), **details(n)}
    event["payload"] = {
        "summary": summary(n)[:1024], "source": f"sms-monitor ({_target(n.account)})",
        "severity": PAGERDUTY_SEVERITY.get(n.severity, "error"), "timestamp": _iso(n.at),
        "component": n.account, "group": n.metric, "class": n.rule,
        "custom_details": custom}
    event["links"] = [{"href": u, "text": label} for u, label in
                      ((n.runbook_url, "Runbook"), (n.dashboard_url, "Dashboard")) if u]
    event["client"] = "sms-monitor"
    if n.dashboard_url:
        event["client_url"] = n.dashboard_url
    return event


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


def notifier_for(settings: Settings) -> Notifier:
    """The notifier the settings describe (``[alerts]`` and the SMTP variables)."""
    cfg = settings.alerts
    if cfg is None:
        return Notifier(settings.smtp_url, settings.alert_from)
    return Notifier(settings.smtp_url, settings.alert_from, cfg.alertmanager_url,
                    smtp_timeout=cfg.smtp_timeout, webhook_timeout=cfg.webhook_timeout,
                    webhooks=cfg.webhook_policy, smtp_allow_plain_auth=cfg.smtp_allow_plain_auth,
                    pagerduty_url=cfg.pagerduty_url)


class Notifier:
    def __init__(self, smtp_url: str | None, mail_from: str | None,
                 alertmanager_url: str | None = None, timeout: float | None = None, *,
                 smtp_timeout: float = 120.0, webhook_timeout: float = 30.0,
                 webhooks: WebhookPolicy | None = None, smtp_allow_plain_auth: bool = False,
                 resolver: Callable[[str, int], Sequence[str]] = resolve,
                 pagerduty_url: str = PAGERDUTY_EVENTS_URL) -> None:
        """``smtp_timeout`` limits each step of an e-mail (SMTP allows minutes for the final
        reply), ``webhook_timeout`` a webhook's or Alertmanager's answer; ``timeout`` sets both.
        ``webhooks``: where webhooks may go (by default nowhere); ``smtp_allow_plain_auth``:
        SMTP credentials may be sent without TLS; ``pagerduty_url``: PagerDuty's Events API v2
        (``pagerduty:`` recipients), held to ``webhooks`` like any webhook."""
        self.smtp_url = smtp_url
        self.pagerduty_url = pagerduty_url
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
        elif kind == "slack":
            self._post_json("Slack webhook", recipient.strip(), slack_message(n),
                            {"Idempotency-Key": event_id(n.key)})
        elif kind == "pagerduty":
            self._post_json("PagerDuty", self.pagerduty_url,
                            pagerduty_event(routing_key(recipient), n), {}, who=recipient)
        else:
            raise SendError("recipient is neither an e-mail address, an https:// URL nor "
                            "pagerduty:<routing key>", refused=NOT_ALLOWED)

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
        eid = event_id(n.key)
        self._post_json("webhook", url, webhook_json(n), {"Idempotency-Key": eid})

    def _post_json(self, what: str, url: str, document: Mapping[str, Any],
                   headers: Mapping[str, str], who: str = "") -> None:
        """POST ``document`` to ``url`` through the outbound controls: the allowlist, the
        addresses its host resolves to now, a checked address, no redirects. ``what`` names
        the receiver in errors, ``who`` the recipient a refusal shows (masked)."""
        refusal = self.webhooks.check_url(url)
        if refusal is not None:
            raise _refused(refusal, what, who)
        parts = urlsplit(url)
        host = normal_host(parts.hostname or "")  # IDNA for a Unicode name
        https = parts.scheme.lower() == "https"
        port = parts.port or (443 if https else 80)
        checked, refusal = self._addresses(url, host, port, what)
        if refusal is not None:
            raise _refused(refusal, what, who)
        shown_host = f"[{host}]" if ":" in host else host
        sent = {"Host": shown_host if parts.port is None else f"{shown_host}:{port}",
                "Content-Type": "application/json", "User-Agent": f"sms-monitor/{_version()}",
                **headers}
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        status = self._post(checked, port, https, host, target, json.dumps(document).encode(),
                            sent, what)
        if 300 <= status < 400:
            raise SendError(f"{what} {host} answered {status} (redirects are not followed)")
        if not 200 <= status < 300:
            raise SendError(f"{what} {host} answered {status}")

    def _addresses(self, url: str, host: str, port: int, what: str = "webhook"
                   ) -> tuple[list[str], Refusal | None]:
        """The addresses ``host`` resolves to now, and the refusal of the first refused one
        (one refused address refuses the name: an attacker's DNS may answer with a public
        address and a private one). SendError when it does not resolve."""
        try:
            addresses = list(self.resolver(host, port))
        except (OSError, UnicodeError) as exc:  # socket.gaierror: not resolved (now)
            raise SendError(f"{what} {host} failed: its name was not resolved "
                            f"({type(exc).__name__})") from None
        if not addresses:
            raise SendError(f"{what} {host} failed: its name resolved to no address")
        for text in addresses:
            ip = ipaddress.ip_address(text.split("%")[0])
            refusal = self.webhooks.check_address(ip, f"{shown(url)} resolves to")
            if refusal is not None:
                return addresses, refusal
        return addresses, None

    def webhook_refusal(self, recipient: str) -> Refusal | None:
        """Why a POST for ``recipient`` (a webhook, a Slack webhook, a PagerDuty routing
        key: the events URL) would be refused now (the allowlist, then the addresses its
        host resolves to now), or None: what ``rules check`` reports before any send. A name
        that does not resolve now is not a refusal."""
        url = recipient_url(recipient, self.pagerduty_url)
        if url is None:
            return None
        refusal = recipient_refusal(recipient, self.webhooks, self.pagerduty_url)
        if refusal is not None:
            return refusal
        parts = urlsplit(url.strip())
        try:
            port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
            refusal = self._addresses(url, normal_host(parts.hostname or ""), port)[1]
        except (SendError, ValueError):
            return None
        if refusal is not None and recipient_kind(recipient) == "pagerduty":
            return Refusal(refusal.reason, f"{shown_recipient(recipient)} posts to "
                                           f"{refusal.detail}")
        return refusal

    def _post(self, addresses: list[str], port: int, https: bool, host: str, target: str,
              body_bytes: bytes, headers: dict[str, str], what: str = "webhook") -> int:
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
                raise SendError(f"{what} {host} failed: {_urllib3_reason(exc)}") from None
            finally:
                pool.close()
        raise SendError(f"{what} {host} failed: {_urllib3_reason(last)}")

    def send_alertmanager(self, n: Notification) -> None:
        """POST ``n`` as one alert to Alertmanager's ``/api/v2/alerts``; endsAt only when resolved."""
        if not self.alertmanager_url:
            raise SendError("no Alertmanager configured")
        info = details(n)
        annotations = {"summary": summary(n), "description": body(n),
                       "runbook": n.runbook_section, "value": info["value_text"],
                       "threshold": info["threshold_text"], "since": info["since_iso"]}
        for name, text in (("runbook_url", n.runbook_url), ("dashboard", n.dashboard_url),
                           ("top_errors", "; ".join(info["errors_text"])),
                           ("checks", "; ".join(info["checks_text"])), ("note", n.note)):
            if text:
                annotations[name] = text
        alert: dict[str, object] = {
            "labels": {"alertname": re.sub(r"[^A-Za-z0-9]+", "", n.rule.title()) or "SmsMonitorRule",
                       "account": n.account, "severity": n.severity, "metric": n.metric,
                       "source": "sms-monitor", "rule": n.rule},
            "annotations": annotations,
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


def _refused(refusal: Refusal, what: str = "webhook", who: str = "") -> SendError:
    detail = f"{shown_recipient(who)} posts to {refusal.detail}" if who else refusal.detail
    return SendError(f"{what} refused: {detail}", refused=refusal.reason)


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
