"""Parse ``notification_rules`` rows into rules, or into a reason they cannot be used.

A row is the runbook's shape: ``rule_name``, ``rule_type`` (only ``alert`` rows are
evaluated), ``trigger_conditions`` (JSON object) and ``recipients`` (array of e-mail
addresses or https:// URLs). ``trigger_conditions`` keys:

- ``metric`` (required): a name of the vocabulary below;
- ``threshold`` (required): a number in the metric's unit;
- ``window``: "1 hour", "15 minutes", "1h", "30m" (default 1 hour) for windowed metrics;
- ``operator``: "<", "<=", ">" or ">=" (default: the metric's natural direction);
- ``for``: how long the breach must last before firing (default 0: fire at once);
- ``severity``: "critical" (default) or "warning";
- ``account``: an account name, or "*" for the roll-up of all accounts; absent: each
  account separately;
- ``repeat``: how often to remind while firing (default 4 hours);
- ``runbook``: the runbook section to open (default: the metric's).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sms_monitor.core.durations import parse_duration


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
    recipients: tuple[str, ...]
    runbook: str

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


def parse_rule(row: Mapping[str, Any], *, accounts: Sequence[str], checks: Sequence[str],
               max_window: float) -> Rule | BrokenRule | None:
    """A Rule, a BrokenRule naming why not, or None for rows that are not alerts."""
    name = row.get("rule_name")
    name = name.strip() if isinstance(name, str) and name.strip() else "<unnamed rule>"
    if str(row.get("rule_type") or "").strip().lower() != "alert":
        return None

    def broken(reason: str) -> BrokenRule:
        return BrokenRule(name, reason)

    cond = row.get("trigger_conditions")
    if isinstance(cond, str | bytes):
        try:
            cond = json.loads(cond)
        except ValueError:
            return broken("trigger_conditions is not valid JSON")
    if not isinstance(cond, Mapping):
        return broken("trigger_conditions must be a JSON object")
    metric = cond.get("metric")
    if not isinstance(metric, str) or not metric:
        return broken("trigger_conditions has no metric")
    spec = spec_of(metric, checks)
    if spec is None:
        return broken(f"unknown metric {metric!r}")
    threshold = cond.get("threshold", 2 if metric.startswith(STATUS_PREFIX) else None)
    if isinstance(threshold, str):
        try:
            threshold = float(threshold)
        except ValueError:
            return broken(f"threshold {threshold!r} is not a number")
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) \
            or not math.isfinite(threshold):
        return broken(f"threshold {threshold!r} is not a number")
    if spec.unit == "percent" and not 0 <= threshold <= 100:
        return broken(f"threshold {threshold} is outside 0-100 percent")
    operator = cond.get("operator", spec.operator)
    if operator not in OPERATORS:
        return broken(f"operator {operator!r} is not one of {', '.join(OPERATORS)}")
    try:
        window = parse_duration(cond.get("window", DEFAULT_WINDOW))
        for_seconds = parse_duration(cond["for"]) if cond.get("for") not in (None, 0, "0") else 0.0
        repeat = parse_duration(cond.get("repeat", DEFAULT_REPEAT))
    except ValueError as exc:
        return broken(str(exc))
    if spec.windowed and window > max_window:
        return broken(f"window {window:g}s is longer than the monitor keeps ({max_window:g}s)")
    severity = cond.get("severity", "critical")
    if severity not in ("critical", "warning"):
        return broken(f"severity {severity!r} is not critical or warning")
    account = cond.get("account")
    if account is not None and (not isinstance(account, str) or
                                (account != "*" and account not in accounts)):
        return broken(f"account {account!r} is not monitored")
    recipients = row.get("recipients")
    if isinstance(recipients, str):
        try:
            recipients = json.loads(recipients)
        except ValueError:
            recipients = [r.strip() for r in recipients.strip("{}").split(",") if r.strip()]
    if not isinstance(recipients, list | tuple) or not all(isinstance(r, str) for r in recipients):
        return broken("recipients must be an array of e-mail addresses or https:// URLs")
    runbook = cond.get("runbook", spec.runbook)
    return Rule(name=name, metric=metric, threshold=float(threshold), operator=operator,
                window=window, for_seconds=for_seconds, severity=severity, account=account,
                repeat=repeat, recipients=tuple(r.strip() for r in recipients if r.strip()),
                runbook=str(runbook))


def parse_rows(rows: Sequence[Mapping[str, Any]], *, accounts: Sequence[str], checks: Sequence[str],
               max_window: float, recipient_ok: Callable[[str], bool]
               ) -> tuple[list[Rule], list[BrokenRule]]:
    """Every alert row as a Rule or a BrokenRule (duplicate names and unusable recipients too)."""
    rules: list[Rule] = []
    broken: list[BrokenRule] = []
    names: set[str] = set()
    for row in rows:
        parsed = parse_rule(row, accounts=accounts, checks=checks, max_window=max_window)
        if parsed is None:
            continue
        if isinstance(parsed, Rule) and parsed.name in names:
            parsed = BrokenRule(parsed.name, "another alert rule has the same name")
        if isinstance(parsed, BrokenRule):
            broken.append(parsed)
            continue
        names.add(parsed.name)
        ignored = [r for r in parsed.recipients if not recipient_ok(r)]
        if ignored:
            broken.append(BrokenRule(parsed.name, f"{len(ignored)} recipient(s) are neither an "
                                     "e-mail address nor an https:// URL; they are skipped "
                                     "(never SMS)"))
        rules.append(parsed)
    return rules, broken
