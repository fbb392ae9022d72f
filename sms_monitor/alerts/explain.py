"""What a notification says, in words a person reads at 3 a.m.: pure, no I/O.

A value in its unit with its threshold (``delivery rate 88.2 % (threshold 90 %)``,
``balance 12.40 USD (threshold 20 USD)``, ``mean delivery time 4.2 s (threshold 30 s)``),
how long it has lasted (``for 25 min``), what Twilio's error codes mean, and where to look
next: the runbook section (``[alerts] runbook_url`` and an anchor of ``docs/runbook.md``) and
the dashboard (``[alerts] dashboard_url``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from urllib.parse import quote

# A runbook base for examples and tests; the configuration's default is the daemon's own
# /runbook under external_url (config.py).
DEFAULT_RUNBOOK_URL = "https://sms-monitor.example.org/runbook"
PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
TOP_ERRORS = 3  # error codes named in a notification
ROLLUP, DATABASE = "*", "database"

# What each metric of notification_rules is called in a sentence.
METRIC_LABELS = {
    "sms_delivery_rate": "delivery rate",
    "sms_error_rate": "error rate",
    "sms_delivery_time": "mean delivery time",
    "sms_carrier_filtered": "carrier-filtered messages",
    "api_response_time": "Twilio API response time",
    "account_balance": "balance",
    "sms_spend_month": "SMS spend this month",
    "optout_violations": "opt-out violations",
    "queue_delay": "queue delay",
}
# Each metric's unit (as sms_monitor.alerts.rules.VOCABULARY declares it): a notification
# queued without one (by an older version) is still written in its unit.
METRIC_UNITS = {
    "sms_delivery_rate": "percent", "sms_error_rate": "percent", "sms_delivery_time": "seconds",
    "sms_carrier_filtered": "messages", "api_response_time": "seconds",
    "account_balance": "currency", "sms_spend_month": "currency",
    "optout_violations": "messages", "queue_delay": "seconds",
}
STATUS_PREFIX = "status:"
STATUS_WORDS = {0: "green", 1: "yellow", 2: "red"}

# Twilio's meaning of the error codes an SMS sender meets (https://www.twilio.com/docs/api/errors).
TWILIO_ERRORS: Mapping[str, str] = {
    "21211": "Invalid 'To' phone number",
    "21408": "Permission to send an SMS has not been enabled for the region of the 'To' number",
    "21610": "Attempt to send to an unsubscribed recipient (they replied STOP)",
    "21612": "The 'To' phone number is not currently reachable via SMS",
    "21614": "'To' number is not a valid mobile number",
    "30001": "Queue overflow (sent faster than the number's rate)",
    "30002": "Account suspended",
    "30003": "Unreachable destination handset",
    "30004": "Message blocked (by the recipient or their carrier)",
    "30005": "Unknown destination handset",
    "30006": "Landline or unreachable carrier",
    "30007": "Message filtered (carrier filtering as spam)",
    "30008": "Unknown error",
    "30009": "Missing segment",
    "30010": "Message price exceeds max price",
    "30017": "Carrier network congestion",
    "30018": "Destination carrier requires sender ID pre-registration",
    "30019": "Content size exceeds carrier limit",
    "30022": "US A2P 10DLC: rate limits exceeded",
    "30023": "US A2P 10DLC: daily message cap reached",
    "30024": "Numeric sender ID not provisioned on the carrier",
    "30032": "Toll-free number has not been verified",
    "30034": "US A2P 10DLC: message from an unregistered number",
}

# docs/runbook.md's section (the anchor is the alert's name in lower case) for each metric of
# notification_rules, critical then warning, and for each check a status: rule watches.
_METRIC_ANCHORS: Mapping[str, tuple[str, str]] = {
    "sms_delivery_rate": ("smsdeliveryratecritical", "smsdeliveryratewarning"),
    "sms_error_rate": ("smserrorratecritical", "smserrorratewarning"),
    "sms_delivery_time": ("smsdeliverylatencycritical", "smsdeliverylatencywarning"),
    "sms_carrier_filtered": ("smscarrierfiltering", "smscarrierfiltering"),
    "api_response_time": ("twilioapislow", "twilioapislow"),
    "account_balance": ("twiliobalancecritical", "twiliobalancewarning"),
    "optout_violations": ("smssenttooptedout", "smssenttooptedout"),
    "queue_delay": ("smsqueuedelaycritical", "smsqueuedelaywarning"),
}
CHECK_ANCHORS: Mapping[str, str] = {
    "api_response_time": "twilioapislow",
    "delivery_rate": "smsdeliveryratecritical",
    "error_rate": "smserrorratecritical",
    "delivery_latency": "smsdeliverylatencycritical",
    "authentication": "twilioauthenticationfailing",
    "account_status": "twilioaccountsuspended",
    "balance": "twiliobalancecritical",
    "phone_number": "twiliosendingnumberunavailable",
    "carrier_filtering": "smscarrierfiltering",
    "international_share": "smsinternationalsharejump",
    "unexpected_sends": "smsunexpectedsends",
    "optout_unprocessed": "smsoptoutunprocessed",
    "sent_to_opted_out": "smssenttooptedout",
    "queue_delay": "smsqueuedelaycritical",
    "connection": "smsmonitordatabasedown",
}
# every other metric or check: the runbook's section on notification_rules alerts
FALLBACK_ANCHOR = "notification_rules-alerts"


def error_meaning(code: str) -> str:
    """Twilio's meaning of an error code, or where to look it up."""
    return TWILIO_ERRORS.get(str(code), f"see https://www.twilio.com/docs/api/errors/{code}")


def top_errors(by_error: Mapping[str, int], n: int = TOP_ERRORS) -> tuple[tuple[str, int], ...]:
    """The ``n`` most frequent error codes, most frequent first (then by code)."""
    ranked = sorted(((str(c), int(k)) for c, k in by_error.items() if k > 0),
                    key=lambda item: (-item[1], item[0]))
    return tuple(ranked[:n])


def span(seconds: float) -> str:
    """A duration as a person says it: ``45 s``, ``25 min``, ``2 h 5 min``, ``3 d 4 h``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        h, m = divmod(s // 60, 60)
        return f"{h} h" + (f" {m} min" if m else "")
    d, h = divmod(s // 3600, 24)
    return f"{d} d" + (f" {h} h" if h else "")


def _trim(v: float, digits: int) -> str:
    text = f"{v:.{digits}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _plain(v: float) -> str:
    """A number without exponents: 87.5, 90, 12345.68, 0.0042."""
    if not math.isfinite(v):
        return str(v)
    return _trim(v, 2) if abs(v) >= 1 or v == 0 else f"{v:.4g}"


def quantity(unit: str, value: float | None, currency: str = "", *, threshold: bool = False
             ) -> str:
    """``value`` in its unit for a person: ``88.2 %``, ``4.2 s``, ``12.40 USD``, ``3``,
    ``red``; ``unknown`` for None. A threshold is written without trailing zeros (``90 %``,
    ``20 USD``)."""
    if value is None:
        return "unknown"
    if not math.isfinite(value):
        return str(value)
    if unit == "percent":
        return f"{_trim(value, 1) if threshold else f'{value:.1f}'} %"
    if unit == "seconds":
        if abs(value) < 60:
            return f"{_trim(value, 1) if threshold else f'{value:.1f}'} s"
        if abs(value) < 3600:
            return f"{_trim(value / 60, 1)} min"
        return f"{_trim(value / 3600, 1)} h"
    if unit == "currency":
        number = _trim(value, 2) if threshold and value == round(value) else f"{value:.2f}"
        return f"{number} {currency}".rstrip()
    if unit == "status":
        return STATUS_WORDS.get(int(value), _plain(value)) if value == int(value) else _plain(value)
    if unit == "messages":
        return _plain(value)
    return _plain(value)


def value_and_threshold(unit: str, value: float | None, threshold: float,
                        currency: str = "") -> tuple[str, str]:
    """The value and the threshold as :func:`quantity` writes them, the value with more
    digits when rounding would make it look equal to a threshold it is not."""
    shown = quantity(unit, value, currency)
    limit = quantity(unit, threshold, currency, threshold=True)
    if value is not None and value != threshold and unit != "status" and (
            shown == limit or shown == quantity(unit, threshold, currency)):
        number = f"{value:.6g}"
        shown = {"percent": f"{number} %", "seconds": f"{number} s",
                 "currency": f"{number} {currency}".rstrip()}.get(unit, number)
    return shown, limit


def unit_of(metric: str) -> str:
    return "status" if metric.startswith(STATUS_PREFIX) else METRIC_UNITS.get(metric, "")


def metric_label(metric: str) -> str:
    """``delivery rate``, ``balance``; ``overall status`` for ``status:overall``."""
    if metric.startswith(STATUS_PREFIX):
        return f"{metric[len(STATUS_PREFIX):]} status"
    return METRIC_LABELS.get(metric, metric)


def status_limit(operator: str, threshold: float) -> str:
    """What a status: rule fires at, in words: ``red``, ``yellow or worse``."""
    if operator == ">=":
        lowest = math.ceil(threshold)
    elif operator == ">":
        lowest = math.floor(threshold) + 1
    else:
        return f"{operator} {STATUS_WORDS.get(int(threshold), _plain(threshold))}"
    if lowest >= 2:
        return "red"
    return "yellow or worse" if lowest == 1 else "any status"


def statement(metric: str, unit: str, value: float | None, threshold: float, operator: str,
              currency: str = "", *, resolved: bool = False) -> str:
    """``delivery rate 88.2 % (threshold 90 %)``; resolved: ``delivery rate back to 97.1 %
    (threshold 90 %)``; a status rule: ``overall status red (fires at red)``."""
    label = metric_label(metric)
    back = "back to " if resolved and value is not None else ""
    if unit == "status":
        return f"{label} {back}{quantity(unit, value)} (fires at {status_limit(operator, threshold)})"
    shown, limit = value_and_threshold(unit, value, threshold, currency)
    return f"{label} {back}{shown} (threshold {limit})"


def runbook_anchor(metric: str, severity: str) -> str:
    """The section of docs/runbook.md for a rule on ``metric``."""
    if metric.startswith(STATUS_PREFIX):
        return CHECK_ANCHORS.get(metric[len(STATUS_PREFIX):], FALLBACK_ANCHOR)
    anchors = _METRIC_ANCHORS.get(metric)
    if anchors is None:
        return FALLBACK_ANCHOR
    return anchors[1] if severity == "warning" else anchors[0]


def is_url(text: str) -> bool:
    return re.match(r"^https?://\S+$", text.strip(), re.IGNORECASE) is not None


def runbook_link(base: str | None, metric: str, severity: str, section: str = "") -> str:
    """Where the runbook's advice for a rule is: the rule's own ``runbook`` when it is a URL,
    else ``base`` with the metric's anchor; empty without a base."""
    if section and is_url(section):
        return section.strip()
    if not base:
        return ""
    return f"{base.split('#')[0]}#{runbook_anchor(metric, severity)}"


def check_link(base: str | None, check: str) -> str:
    """The runbook section of one check (a red check named by a status: rule)."""
    return f"{base.split('#')[0]}#{CHECK_ANCHORS.get(check, FALLBACK_ANCHOR)}" if base else ""


def dashboard_link(base: str | None, target: str) -> str:
    """The dashboard, narrowed to the account (Grafana's ``var-account``); empty without a
    base. The roll-up and the database target open it unnarrowed."""
    if not base:
        return ""
    if target in (ROLLUP, DATABASE):
        return base
    return f"{base}{'&' if '?' in base else '?'}var-account={quote(target, safe='')}"


def error_lines(errors: Sequence[Sequence[object]]) -> list[str]:
    """``30003 Unreachable destination handset: 41 messages`` for each (code, count)."""
    out = []
    for code, count in errors:
        n = int(str(count))
        out.append(f"{code} {error_meaning(str(code))}: {n} message{'s' if n != 1 else ''}")
    return out
