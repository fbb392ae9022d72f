"""Parse ``notification_rules`` rows into rules, or into a reason they cannot be used.

A row is the runbook's shape: ``rule_name``, ``rule_type`` (only ``alert`` rows are
evaluated), ``trigger_conditions`` (JSON object) and ``recipients`` (array of e-mail
addresses, https:// URLs (Slack's incoming webhooks among them) or ``pagerduty:<routing
key>``: a PostgreSQL array, a JSON array or ``{a,b}`` text).
``trigger_conditions`` keys (any other key is refused: it is most likely a typo):

- ``metric`` (required): a name of the vocabulary below;
- ``threshold`` (required): a number in the metric's unit. Percent metrics take 0-100 and
  refuse 0 to 1 inclusive, which look like ratios (0.9 for 90 %): a percent that small is
  written with its sign, ``"0.5%"``;
- ``window``: "1 hour", "15 minutes", "1h", "30m" (default 1 hour) for windowed metrics;
- ``operator``: "<", "<=", ">" or ">=" (default: the metric's natural direction);
- ``for``: how long the breach must last before firing (default 0: fire at once);
- ``severity``: "critical" (default) or "warning";
- ``account``: an account name, or "*" for the roll-up of all accounts; absent: each
  account separately;
- ``repeat``: how often to remind while firing (default 4 hours);
- ``runbook``: the runbook section to open (default: the metric's).

A webhook recipient (PagerDuty's: its events URL) must pass ``[alerts] webhook_allow``
(:mod:`sms_monitor.core.outbound`): one that does not is *refused*, named with its reason,
and never gets a POST; the rule still notifies its other recipients. Whether its host
resolves to an allowed address is known only when sending (the sender checks it then).

Lengths are checked here, so that ``rules check`` refuses what the alert store would: a
``rule_name`` of at most :data:`MAX_RULE_NAME` characters without control characters, an
e-mail recipient of at most :data:`MAX_EMAIL` and a URL of at most :data:`MAX_URL`.
"""

from __future__ import annotations

import csv
import difflib
import json
import math
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sms_monitor.alerts.explain import PAGERDUTY_EVENTS_URL
from sms_monitor.alerts.notify import recipient_kind, recipient_refusal
from sms_monitor.core.durations import parse_duration
from sms_monitor.core.outbound import Refusal, WebhookPolicy

NO_WEBHOOKS = WebhookPolicy()  # the default: no webhook recipient is allowed


@dataclass(frozen=True)
class MetricSpec:
    unit: str
    operator: str  # natural direction: fires when value <op> threshold
    windowed: bool
    runbook: str
    description: str


_STATUS = MetricSpec("status", ">=", False, "Health Check Criteria",
                     "a check's status: 0 green, 1 yellow, 2 red")

VOCABULARY: dict[str, MetricSpec] = {
    "sms_delivery_rate": MetricSpec("percent", "<", True, "Issue 1: SMS Messages Not Delivered",
                                    "delivered / settled outbound messages, in percent"),
    "sms_error_rate": MetricSpec("percent", ">", True, "Issue 1: SMS Messages Not Delivered",
                                 "outbound messages with an error code, in percent"),
    "sms_delivery_time": MetricSpec("seconds", ">", True, "Monitoring & Alerts",
                                    "mean creation-to-delivery time"),
    "sms_carrier_filtered": MetricSpec("messages", ">", True, "Issue 2: Messages Marked as Spam",
                                       "outbound messages failed with 30007"),
    "api_response_time": MetricSpec("seconds", ">", False, "Monitoring & Alerts",
                                    "the last Balance request's wall time"),
    "account_balance": MetricSpec("currency", "<", False, "Issue 4: High Cost / Unexpected Charges",
                                  "account balance"),
    "sms_spend_month": MetricSpec("currency", ">", False, "Issue 4: High Cost / Unexpected Charges",
                                  "this month's SMS spend so far"),
    "optout_violations": MetricSpec("messages", ">", False, "Issue 5: Opt-Out / Compliance Issues",
                                    "sent_to_opted_out + optout_unprocessed"),
    "queue_delay": MetricSpec("seconds", ">", False, "Issue 3: Rate Limiting / Throughput Issues",
                              "mean sent_at - created_at of the last hour's SMS notifications"),
}
# every check's status: "status:<check>" (e.g. "status:overall", "status:balance")
STATUS_PREFIX = "status:"

DEFAULT_WINDOW = 3600.0
DEFAULT_REPEAT = 4 * 3600.0
OPERATORS = ("<", "<=", ">", ">=")
# Longest values a row may hold. A name is a label, a subject line and part of every
# notification's key; 200 is far more than a readable name needs. An e-mail address is at
# most 320 characters (64 local part + @ + 255 domain); a URL at most 400, what the outbox's
# recipient column holds (the webhooks of chat services are well under 300).
MAX_RULE_NAME = 200
MAX_EMAIL = 320
MAX_URL = 400
KEYS = ("metric", "threshold", "window", "operator", "for", "severity", "account", "repeat",
        "runbook")


@dataclass(frozen=True)
class Rule:
    name: str
    metric: str
    threshold: float
    operator: str
    window: float
    for_seconds: float
    severity: str
    account: str | None  # None: each account; "*": roll-up; else one account
    repeat: float
    recipients: tuple[str, ...]  # the row's usable ones (e-mail addresses, https:// URLs)
    runbook: str
    skipped: int = 0  # the row's recipients that are neither, left out of `recipients`
    too_long: int = 0  # the row's recipients longer than MAX_EMAIL / MAX_URL, left out too
    # the row's webhooks refused by [alerts] webhook_allow, left out too: (reason, detail);
    # a diagnosis of the row, not part of the rule (not in rule_json)
    refused: tuple[tuple[str, str], ...] = ()

    @property
    def check(self) -> str | None:
        return self.metric[len(STATUS_PREFIX):] if self.metric.startswith(STATUS_PREFIX) else None

    def breached(self, value: float) -> bool:
        return compare(value, self.operator, self.threshold)

    def recovered(self, value: float, hysteresis: float) -> bool:
        """Past the threshold by the hysteresis margin, in the good direction."""
        margin = abs(self.threshold) * hysteresis
        if margin == 0:  # e.g. "> 0" on a count: back at the threshold is recovered
            return not self.breached(value)
        if self.operator in ("<", "<="):
            return value >= self.threshold + margin
        return value <= self.threshold - margin


def compare(value: float, op: str, threshold: float) -> bool:
    return {"<": value < threshold, "<=": value <= threshold,
            ">": value > threshold, ">=": value >= threshold}[op]


@dataclass(frozen=True)
class BrokenRule:
    name: str
    reason: str


def spec_of(metric: str, checks: Sequence[str]) -> MetricSpec | None:
    if metric.startswith(STATUS_PREFIX):
        return _STATUS if metric[len(STATUS_PREFIX):] in checks else None
    return VOCABULARY.get(metric)


def _deliverable(recipient: str) -> bool:
    return recipient_kind(recipient) is not None


def _unknown_keys(cond: Mapping[str, Any]) -> str | None:
    unknown = [k for k in cond if k not in KEYS]
    if not unknown:
        return None
    named = []
    for key in unknown:
        close = difflib.get_close_matches(str(key), KEYS, n=1)
        named.append(repr(key) + (f" (did you mean {close[0]!r}?)" if close else ""))
    return (f"trigger_conditions: unknown key{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(named)}; known keys: {', '.join(KEYS)}")


def _threshold(raw: object, metric: str, spec: MetricSpec) -> float | str:
    """The threshold in the metric's unit, or why it cannot be used.

    A percent metric refuses 0 to 1 inclusive: 0.9 is far more likely a ratio (90 %) than
    0.9 %, and a rule with ``< 0.9`` on a delivery rate could never fire. A percent that
    small is written with its sign (``"0.5%"``), which also settles 0 and 1.
    """
    signed = False
    value: object = raw
    if isinstance(raw, str):
        text = raw.strip()
        signed = text.endswith("%")
        try:
            value = float(text[:-1] if signed else text)
        except ValueError:
            return f"threshold {raw!r} is not a number"
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return f"threshold {raw!r} is not a number"
    number = float(value)
    if spec.unit != "percent":
        if signed:
            return f"threshold {raw!r} is a percent; {metric} is in {spec.unit}"
        return number
    if not 0 <= number <= 100:
        return f"threshold {number:g} is outside 0-100 percent"
    if signed:
        return number
    if number in (0, 1):
        alternative = "100 for a ratio of 1, " if number == 1 else ""
        return (f"threshold {number:g} is ambiguous (a ratio or a percent?); {metric} is in "
                f"percent: write {alternative}\"{number:g}%\" for {number:g} percent")
    if number < 1:
        return (f"threshold {number:g} looks like a ratio; {metric} is in percent "
                f"(did you mean {number * 100:g}?); write \"{number:g}%\" if you mean "
                f"{number:g} percent")
    return number


def _too_long(recipient: str) -> bool:
    """Longer than the store holds: MAX_EMAIL for an address, MAX_URL for anything else."""
    return len(recipient) > (MAX_URL if "://" in recipient else MAX_EMAIL)


def _name_problem(name: str) -> str | None:
    if len(name) > MAX_RULE_NAME:
        return f"rule_name is {len(name)} characters long; at most {MAX_RULE_NAME} are allowed"
    if any(unicodedata.category(c) == "Cc" for c in name):
        return "rule_name contains a control character (a line break, a tab or NUL)"
    return None


def _recipient_list(raw: object) -> list[object] | None:
    """The recipients as given: a PostgreSQL array (a list), or text holding a JSON array, a
    PostgreSQL array literal (``{a,"b"}``) or comma-separated addresses; None if neither."""
    if isinstance(raw, list | tuple):
        return list(raw)
    if raw is None:
        return []
    if not isinstance(raw, str):
        return None
    text = raw.strip()
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except ValueError:
            return None
        return list(parsed) if isinstance(parsed, list) else None
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1]
    if not text:
        return []
    # an array literal's elements: comma-separated, double quotes around those with commas
    fields = next(csv.reader([text], skipinitialspace=True, escapechar="\\"))
    return [None if f == "NULL" else f for f in fields]


def _refusal(recipient: str, webhooks: WebhookPolicy, pagerduty_url: str) -> Refusal | None:
    return recipient_refusal(recipient, webhooks, pagerduty_url)


def _refused_text(refused: Sequence[tuple[str, str]]) -> str:
    return f"{len(refused)} refused ({'; '.join(f'{d} ({r})' for r, d in refused)})"


def parse_rule(row: Mapping[str, Any], *, accounts: Sequence[str], checks: Sequence[str],
               max_window: float, recipient_ok: Callable[[str], bool] = _deliverable,
               always_notified: Sequence[str] = (),
               webhooks: WebhookPolicy = NO_WEBHOOKS,
               pagerduty_url: str = PAGERDUTY_EVENTS_URL) -> Rule | BrokenRule | None:
    """A Rule, a BrokenRule naming why not, or None for rows that are not alerts.

    ``always_notified``: who receives every rule's notifications whatever its row says
    (``[alerts] level1``, Alertmanager); without them a row must name a usable recipient.
    ``webhooks``: where webhook recipients may go (by default nowhere), PagerDuty's events
    URL (``pagerduty_url``) included.
    """
    name = row.get("rule_name")
    name = name.strip() if isinstance(name, str) and name.strip() else "<unnamed rule>"
    if str(row.get("rule_type") or "").strip().lower() != "alert":
        return None

    def broken(reason: str) -> BrokenRule:
        return BrokenRule(name, reason)

    problem = _name_problem(name)
    if problem:
        return broken(problem)

    cond = row.get("trigger_conditions")
    if isinstance(cond, str | bytes):
        try:
            cond = json.loads(cond)
        except ValueError:
            return broken("trigger_conditions is not valid JSON")
    if not isinstance(cond, Mapping):
        return broken("trigger_conditions must be a JSON object")
    unknown = _unknown_keys(cond)
    if unknown:
        return broken(unknown)
    metric = cond.get("metric")
    if not isinstance(metric, str) or not metric:
        return broken("trigger_conditions has no metric")
    spec = spec_of(metric, checks)
    if spec is None:
        return broken(f"unknown metric {metric!r}")
    threshold = _threshold(cond.get("threshold", 2 if metric.startswith(STATUS_PREFIX) else None),
                           metric, spec)
    if isinstance(threshold, str):
        return broken(threshold)
    operator = cond.get("operator", spec.operator)
    if operator not in OPERATORS:
        return broken(f"operator {operator!r} is not one of {', '.join(OPERATORS)}")
    durations: dict[str, float] = {}
    for key, default in (("window", DEFAULT_WINDOW), ("for", 0.0), ("repeat", DEFAULT_REPEAT)):
        given = cond.get(key, default)
        try:
            durations[key] = 0.0 if key == "for" and given in (None, 0, "0") \
                else parse_duration(given)
        except ValueError as exc:
            return broken(f"{key}: {exc}")
    window = durations["window"]
    if spec.windowed and window > max_window:
        return broken(f"window {window:g}s is longer than the monitor keeps ({max_window:g}s)")
    severity = cond.get("severity", "critical")
    if severity not in ("critical", "warning"):
        return broken(f"severity {severity!r} is not critical or warning")
    account = cond.get("account")
    if account is not None and (not isinstance(account, str) or
                                (account != "*" and account not in accounts)):
        return broken(f"account {account!r} is not monitored")
    runbook = cond.get("runbook", spec.runbook)
    if not isinstance(runbook, str) or not runbook.strip():
        return broken(f"runbook {runbook!r} is not a section name")
    given = _recipient_list(row.get("recipients"))
    if given is None:
        return broken("recipients must be an array of e-mail addresses or https:// URLs")
    # blank entries are nothing; anything else that is not an address (NULL too) is malformed
    listed = [r for r in (x.strip() if isinstance(x, str) else x for x in given) if r != ""]
    deliverable = [r for r in listed if isinstance(r, str) and recipient_ok(r)]
    too_long = [r for r in deliverable if _too_long(r)]
    refusals = {r: refusal for r in deliverable if not _too_long(r)
                if (refusal := _refusal(r, webhooks, pagerduty_url)) is not None}
    refused = tuple((f.reason, f.detail) for f in refusals.values())
    usable = tuple(dict.fromkeys(r for r in deliverable
                                 if not _too_long(r) and r not in refusals))
    if not usable and not always_notified:
        if refused:
            parts = [_refused_text(refused)]
            if len(listed) > len(deliverable):
                parts.insert(0, f"{len(listed) - len(deliverable)} is neither an e-mail address "
                                "nor an https:// URL (never SMS)")
            if too_long:
                parts.append(f"{len(too_long)} too long")
            return broken(f"recipients: none usable: {'; '.join(parts)}, so nobody would be "
                          "notified")
        if too_long:
            return broken(f"recipients: {len(too_long)} recipient(s) are too long (an e-mail "
                          f"address at most {MAX_EMAIL} characters, a URL at most {MAX_URL}), "
                          "so nobody would be notified")
        if not listed:
            return broken("recipients: none, so nobody would be notified; list e-mail "
                          "addresses or https:// URLs")
        return broken(f"recipients: none of the {len(listed)} is an e-mail address or an "
                      "https:// URL (never SMS), so nobody would be notified")
    return Rule(name=name, metric=metric, threshold=threshold, operator=operator,
                window=window, for_seconds=durations["for"], severity=severity, account=account,
                repeat=durations["repeat"], recipients=usable, runbook=runbook,
                skipped=len(listed) - len(deliverable), too_long=len(too_long), refused=refused)


def parse_rows(rows: Sequence[Mapping[str, Any]], *, accounts: Sequence[str], checks: Sequence[str],
               max_window: float, recipient_ok: Callable[[str], bool] = _deliverable,
               always_notified: Sequence[str] = (),
               webhooks: WebhookPolicy = NO_WEBHOOKS,
               pagerduty_url: str = PAGERDUTY_EVENTS_URL) -> tuple[list[Rule], list[BrokenRule]]:
    """Every alert row as a Rule or a BrokenRule (duplicate names too). A usable rule with
    some unusable recipients is a Rule and also a BrokenRule saying how many are skipped
    or refused, and why."""
    rules: list[Rule] = []
    broken: list[BrokenRule] = []
    names: set[str] = set()
    for row in rows:
        parsed = parse_rule(row, accounts=accounts, checks=checks, max_window=max_window,
                            recipient_ok=recipient_ok, always_notified=always_notified,
                            webhooks=webhooks, pagerduty_url=pagerduty_url)
        if parsed is None:
            continue
        if isinstance(parsed, Rule) and parsed.name in names:
            parsed = BrokenRule(parsed.name, "another alert rule has the same name")
        if isinstance(parsed, BrokenRule):
            broken.append(parsed)
            continue
        names.add(parsed.name)
        problems = []
        if parsed.skipped:
            problems.append(f"recipients: {parsed.skipped} recipient(s) are neither an e-mail "
                            "address nor an https:// URL; they are skipped (never SMS)")
        if parsed.too_long:
            problems.append(f"recipients: {parsed.too_long} recipient(s) are too long (an e-mail "
                            f"address at most {MAX_EMAIL} characters, a URL at most {MAX_URL}); "
                            "they are skipped")
        if parsed.refused:
            problems.append(f"recipients: {_refused_text(parsed.refused)}; they get no "
                            "notification")
        if problems:
            broken.append(BrokenRule(parsed.name, "; ".join(problems)))
        rules.append(parsed)
    return rules, broken


def rule_json(rule: Rule) -> str:
    """The rule as JSON, kept beside its alerts' states: a rule removed from the table (or
    unreadable after a restart) can still be resolved and shown as it was."""
    data = asdict(rule)
    del data["refused"]
    return json.dumps(data, sort_keys=True)


def rule_from_json(text: str | None) -> Rule | None:
    """The rule :func:`rule_json` wrote; None when there is none or it no longer fits."""
    if not text:
        return None
    try:
        data = json.loads(text)
        data["recipients"] = tuple(data.get("recipients") or ())
        return Rule(**data)
    except (ValueError, TypeError, AttributeError):
        return None
