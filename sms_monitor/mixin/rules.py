"""Prometheus rules for sms-monitor as data: recording rules, then alerts.

Thresholds are the health contract's defaults (README "Checks"); the band between green and
red, boundaries included, is the warning band (a delivery rate of exactly 95 % warns).
Expressions are written as :mod:`sms_monitor.mixin.promql` describes (every selector in
braces, ``KEEP`` for the selector's labels); :func:`render_rules` scopes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sms_monitor.mixin.promql import Selector, go_string, scoped

RECORDING_GROUP = "sms-monitor.rules"
ALERTING_GROUP = "sms-monitor.alerts"


@dataclass(frozen=True)
class Record:
    record: str
    expr: str


@dataclass(frozen=True)
class Alert:
    alert: str
    expr: str
    severity: str
    summary: str
    # Go template text; {selector} and {query:EXPR} are filled in by render (see _description)
    description: str
    for_: str | None = None
    per_account: bool = True  # the dashboard link selects the alert's account
    comment: str | None = None  # a line above the expression in the rendered file


RECORDS = (
    Record("account:sms_delivery_success_ratio:min",
           "min by (KEEP, account) (sms_delivery_success_ratio{})"),
    Record("account:sms_error_ratio:max", "max by (KEEP, account) (sms_error_ratio{})"),
    Record("account:sms_delivery_latency_mean_seconds:max",
           "max by (KEEP, account) (sms_delivery_latency_mean_seconds{})"),
    Record("account:twilio_api_response_time_seconds:max",
           "max by (KEEP, account) (twilio_api_response_time_seconds{})"),
    Record("account:twilio_account_balance:min",
           "min by (KEEP, account, currency) (twilio_account_balance{})"),
    Record("account:sms_health_status:max", "max by (KEEP, account, check) (sms_health_status{})"),
    Record("account:sms_delivery_latency_seconds:p90_rate15m",
           "histogram_quantile(0.9, sum by (KEEP, account, le) "
           "(rate(sms_delivery_latency_seconds_bucket{}[15m])))"),
)

DELIVERY = "account:sms_delivery_success_ratio:min{}"
ERRORS = "account:sms_error_ratio:max{}"
LATENCY = "account:sms_delivery_latency_mean_seconds:max{}"
API = "account:twilio_api_response_time_seconds:max{}"
BALANCE = "account:twilio_account_balance:min{}"
QUEUE = "max by (KEEP) (sms_notification_queue_delay_seconds{})"

ALERTS = (
    Alert("SmsDeliveryRateCritical", f"{DELIVERY} < 0.90", "critical",
          "SMS delivery rate is under 90 %.",
          "Only {{ $value | humanizePercentage }} of the settled outbound SMS of account "
          "{{ $labels.account }} were delivered in the window (alert threshold 90 %).", "10m"),
    Alert("SmsDeliveryRateWarning", f"{DELIVERY} <= 0.95 and {DELIVERY} >= 0.90", "warning",
          "SMS delivery rate is degraded (90-95 %).",
          "{{ $value | humanizePercentage }} of the settled outbound SMS of account "
          "{{ $labels.account }} were delivered (healthy is above 95 %).", "15m"),
    Alert("SmsErrorRateCritical", f"{ERRORS} > 0.05", "critical",
          "More than 5 % of outbound SMS carry a Twilio error code.",
          "{{ $value | humanizePercentage }} of the outbound SMS of account {{ $labels.account }} "
          "failed with an error code (alert threshold 5 %).", "10m"),
    Alert("SmsErrorRateWarning", f"{ERRORS} >= 0.02 and {ERRORS} <= 0.05", "warning",
          "2-5 % of outbound SMS carry a Twilio error code.",
          "{{ $value | humanizePercentage }} of the outbound SMS of account {{ $labels.account }} "
          "failed with an error code (healthy is under 2 %).", "15m"),
    Alert("SmsDeliveryLatencyCritical", f"{LATENCY} > 30", "critical",
          "SMS take more than 30 s on average to be delivered.",
          "Mean delivery time of account {{ $labels.account }} is {{ $value | humanizeDuration }} "
          "(alert threshold 30 s).", "10m"),
    Alert("SmsDeliveryLatencyWarning", f"{LATENCY} >= 10 and {LATENCY} <= 30", "warning",
          "SMS take 10-30 s on average to be delivered.",
          "Mean delivery time of account {{ $labels.account }} is {{ $value | humanizeDuration }} "
          "(healthy is under 10 s).", "15m"),
    Alert("TwilioApiSlow", f"{API} > 7", "critical", "Twilio's API takes more than 7 s to answer.",
          "The Balance probe of account {{ $labels.account }} took {{ $value | humanizeDuration }} "
          "(alert threshold 7 s).", "10m"),
    Alert("TwilioApiDegraded", f"{API} >= 3 and {API} <= 7", "warning",
          "Twilio's API takes 3-7 s to answer.",
          "The Balance probe of account {{ $labels.account }} took {{ $value | humanizeDuration }} "
          "(healthy is under 3 s).", "15m"),
    Alert("TwilioApiDown", "max by (KEEP, account) (twilio_up{}) == 0", "critical",
          "sms-monitor cannot poll Twilio.",
          "Every poll of account {{ $labels.account }} has failed for 10 minutes (timeout, "
          "connection error, 5xx or authentication).", "10m"),
    Alert("TwilioBalanceCritical", f"{BALANCE} < 20", "critical", "Twilio balance is under 20.",
          'Account {{ $labels.account }} has {{ $value | printf "%.2f" }} {{ $labels.currency }} '
          "left (alert threshold 20); at 0 sending stops.", "5m"),
    Alert("TwilioBalanceWarning", f"{BALANCE} >= 20 and {BALANCE} <= 50", "warning",
          "Twilio balance is low (20-50).",
          'Account {{ $labels.account }} has {{ $value | printf "%.2f" }} {{ $labels.currency }} '
          "left (healthy is above 50).", "15m"),
    Alert("TwilioAuthenticationFailing",
          'account:sms_health_status:max{check="authentication"} == 2', "critical",
          "Twilio rejects sms-monitor's credentials (401).",
          "Twilio answers 401 / error 20003 for account {{ $labels.account }}; the application "
          "probably cannot send either.", "5m"),
    Alert("TwilioAccountSuspended",
          'max by (KEEP, account, status) (twilio_account_status{status=~"suspended|closed"}) == 1',
          "critical", "The Twilio account is suspended or closed.",
          "Account {{ $labels.account }} is {{ $labels.status }}: no SMS can be sent.", "1m"),
    Alert("TwilioSendingNumberUnavailable",
          "min by (KEEP, account, phone_number) (twilio_phone_number_sms_capable{}) == 0",
          "critical", "The sending number is gone or cannot send SMS.",
          "{{ $labels.phone_number }} is not among the SMS-capable numbers of account "
          "{{ $labels.account }}.", "5m"),
    Alert("SmsCarrierFiltering",
          "max by (KEEP, account) (sms_window_carrier_filtered_messages{}) > 0", "warning",
          "Carriers are filtering SMS (error 30007).",
          "{{ $value }} outbound SMS of account {{ $labels.account }} were filtered by carriers "
          "in the window.", "15m"),
    Alert("SmsSentToOptedOut", "max by (KEEP) (sms_sent_to_opted_out_messages{}) > 0",
          "critical", "SMS are being sent to clients who opted out.",
          "{{ $value }} SMS in the window went to clients with has_opted_out = true (a "
          "compliance breach).", "5m", per_account=False),
    Alert("SmsOptOutUnprocessed", "max by (KEEP) (sms_optout_unprocessed_messages{}) > 0",
          "critical", "STOP messages were not processed.",
          "{{ $value }} opt-out keywords older than the grace period came from clients still "
          "opted in.", "5m", per_account=False),
    Alert("SmsQueueDelayCritical", f"{QUEUE} > 300", "critical",
          "SMS notifications wait more than 5 minutes to be sent.",
          "Mean sent_at - created_at of the last hour is {{ $value | humanizeDuration }} (alert "
          "threshold 300 s).", "10m", per_account=False),
    Alert("SmsQueueDelayWarning", f"{QUEUE} >= 60 and {QUEUE} <= 300", "warning",
          "SMS notifications wait 1-5 minutes to be sent.",
          "Mean sent_at - created_at of the last hour is {{ $value | humanizeDuration }} "
          "(healthy is under 60 s).", "15m", per_account=False),
    Alert("SmsCanaryFailing",
          'max by (KEEP, account) (sms_canary_success{mode="delivery"}) == 0', "critical",
          "The canary's test messages are not delivered.",
          "Every canary probe of account {{ $labels.account }} for 15 minutes ended undelivered, "
          "timed out or was refused: the send path the reminders take is broken end to end.",
          "15m"),
    Alert("SmsCanarySlow",
          'max by (KEEP, account) (sms_canary_latency_seconds{mode="delivery"}) > 30', "warning",
          "The canary's test messages take more than 30 seconds to arrive.",
          "The last canary probe of account {{ $labels.account }} took "
          "{{ $value | humanizeDuration }} from send to delivered.", "15m"),
    Alert("SmsMonitorDown", "(max by (KEEP) (up{}) == 0) or absent(up{})", "critical",
          "No sms-monitor replica can be scraped.",
          "Prometheus has not scraped any sms-monitor target ({selector}) for 5 minutes: SMS "
          "health is not being watched.", "5m", per_account=False),
    Alert("SmsMonitorAccountCoverage",
          "sum by (KEEP, account) (sms_monitor_account_owned{}) != 1", "critical",
          "An account is not polled by exactly one sms-monitor replica.",
          "Account {{ $labels.account }} is polled by {{ $value }} replicas: 0 when the replica "
          "of its shard is down or no replica runs that shard number, 2 or more when replicas "
          "share a shard number or disagree on total_shards (see sms_monitor_shard_info).", "5m",
          comment="each replica exports every configured account, 1 where it polls it and 0 "
                  "where another shard does: summed, exactly one replica per account"),
    Alert("SmsMonitorPollsStale",
          'time() - max by (KEEP, source) (sms_monitor_last_success_timestamp_seconds'
          '{source!="statuspage"}) > 600', "warning",
          "sms-monitor's polls of a source have not succeeded for 15 minutes.",
          "The last successful poll of {{ $labels.source }} was {{ $value | humanizeDuration }} "
          "ago.", "5m", per_account=False,
          comment="the status page is context, not a source of checks: its own up metric "
                  "covers it"),
    Alert("SmsMonitorDatabaseDown", 'max by (KEEP) (sms_monitor_up{source="database"}) == 0',
          "warning", "sms-monitor cannot read the application database.",
          "Database checks are unknown: a query fails (missing table or column, permission, "
          "timeout) or the server is unreachable; see sms_monitor_database_query_errors_total.",
          "10m", per_account=False),
    Alert("SmsUnexpectedSends",
          'max by (KEEP) (sms_health_status{account="database", check="unexpected_sends"}) == 2',
          "critical", "Twilio is sending SMS the application never logged.",
          "Twilio sent {query:max(sms_reconciliation_twilio_messages{})} outbound messages in the "
          "reconciliation span; the application logged "
          "{query:max(sms_reconciliation_logged_recipients{})}. Leaked credentials, a second "
          "application on the account or SMS pumping look like this.", "10m", per_account=False,
          comment="the database check compares with the configured ratio and margin"),
    Alert("SmsInternationalShareJump",
          'max by (KEEP, account) (sms_health_status{check="international_share"}) >= 1',
          "warning", "The share of SMS to other countries has jumped.",
          "Account {{ $labels.account }} sends a markedly larger share of its SMS abroad than "
          "usual (see sms_window_international_ratio and sms_window_spend by country_code): the "
          "usual signature of SMS pumping fraud.", "30m"),
    Alert("SmsMonitorBlind", "max by (KEEP) (sms_health_verdict{}) == -1", "warning",
          "sms-monitor cannot give a verdict.",
          "For 15 minutes a configured source could not be read, or a window could not be read "
          "whole (see sms_monitor_up and sms_window_complete): SMS health is not known, and is "
          "not green.", "15m", per_account=False),
    Alert("SmsAlertStoreDown", "min by (KEEP) (sms_alert_store_up{}) == 0", "critical",
          "sms-monitor cannot use its alert store; notification_rules pages cannot be sent.",
          "For 5 minutes an sms-monitor replica could not read or write its alert store (SQLite "
          "file or PostgreSQL, [alerts] store_url): alert states are not saved and no "
          "notification is queued or sent.", "5m", per_account=False,
          comment="any replica: the leader cannot page without it, a standby cannot take over"),
    Alert("SmsNotificationsFailing",
          '(sum by (KEEP, channel) (increase(sms_alert_notifications_total{outcome="failed"}'
          '[15m])) > 0) unless (sum by (KEEP, channel) (increase(sms_alert_notifications_total'
          '{outcome=~"sent|refreshed"}[15m])) > 0)', "critical",
          "sms-monitor's notifications by {{ $labels.channel }} keep failing.",
          "For 15 minutes every {{ $labels.channel }} notification attempt failed "
          "({{ $value | humanize }} failures) and none was delivered: people paged by "
          "notification_rules are not being reached.", "5m", per_account=False,
          comment="per channel; a successful Alertmanager refresh counts as delivered"),
    Alert("SmsAlertRuleInvalid", "max by (KEEP, rule) (sms_alert_rule_invalid{}) == 1", "warning",
          'The notification_rules row "{{ $labels.rule }}" cannot be used (fully or in part).',
          'The alert rule "{{ $labels.rule }}" has been invalid for 10 minutes: it does not '
          "page, or skips some recipients. sms-monitor rules check says why.", "10m",
          per_account=False),
    Alert("SmsNotificationsRefused",
          "(sum by (KEEP, rule, reason) (increase(sms_alert_notifications_refused_total{}[1h])) "
          "> 0) or (sum by (KEEP, rule, reason) (sms_alert_notifications_refused_total{} unless "
          "sms_alert_notifications_refused_total{} offset 1h) > 0)", "warning",
          'sms-monitor refused to send notifications of the rule "{{ $labels.rule }}" '
          "({{ $labels.reason }}).",
          'In the last hour {{ $value | humanize }} notification(s) of the alert rule '
          '"{{ $labels.rule }}" were given up because a webhook recipient resolved to an address '
          "sms-monitor does not send to (loopback, private, link-local, metadata): they are not "
          "retried. The rule's other recipients were notified.", "0m", per_account=False,
          comment="given up at once, never retried: a series younger than the hour (a new rule, a "
                  "restart) counts by its value"),
    Alert("SmsAlertRulesUnreadable", "max by (KEEP) (sms_alert_rules_readable{}) == 0", "warning",
          "sms-monitor cannot read notification_rules.",
          "For 10 minutes no replica could read the notification_rules table: every alert keeps "
          "the state it had, nothing new fires or resolves, and edits to the rules are not seen.",
          "10m", per_account=False),
)


def _description(alert: Alert, selector: Selector) -> str:
    """The description with {selector} and {query:EXPR} (a Go template query) filled in."""
    text = alert.description.replace("{selector}", str(selector))
    while "{query:" in text:
        start = text.index("{query:")
        depth, end = 0, start
        for end in range(start, len(text)):  # noqa: B007 (the loop finds the closing brace)
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            if depth == 0:
                break
        expr = scoped(text[start + len("{query:"):end], selector)
        text = (text[:start] + "{{ with query " + go_string(expr) + " }}{{ . | first | value }}"
                "{{ end }}" + text[end + 1:])
    return text


def dashboard_link(dashboard_url: str, per_account: bool) -> str:
    if not per_account:
        return dashboard_url
    joiner = "&" if "?" in dashboard_url else "?"
    return f"{dashboard_url}{joiner}var-account={{{{ $labels.account }}}}"


def rule_groups(selector: Selector, runbook_url: str, dashboard_url: str) -> list[dict[str, Any]]:
    """The rules file's groups (comments aside), scoped to ``selector``."""
    records = [{"record": r.record, "expr": scoped(r.expr, selector)} for r in RECORDS]
    alerts = []
    for a in ALERTS:
        rule: dict[str, Any] = {"alert": a.alert, "expr": scoped(a.expr, selector)}
        if a.for_:
            rule["for"] = a.for_
        rule["labels"] = {"severity": a.severity}
        rule["annotations"] = {
            "summary": a.summary,
            "description": _description(a, selector),
            "runbook_url": f"{runbook_url}#{runbook_anchor(a.alert)}",
            "dashboard": dashboard_link(dashboard_url, a.per_account),
        }
        alerts.append(rule)
    return [{"name": RECORDING_GROUP, "rules": records},
            {"name": ALERTING_GROUP, "rules": alerts}]


def runbook_anchor(alert: str) -> str:
    """The anchor of the alert's section of docs/runbook.md (its heading is the lowercase
    name, so GitHub's and every Markdown renderer's anchor is that name)."""
    return alert.lower()


COMMENTS = {a.alert: a.comment for a in ALERTS if a.comment}
