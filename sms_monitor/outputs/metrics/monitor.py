"""The monitor's own areas: every check's state, the cycle and each source's health, and
the alert engine."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from sms_monitor.core.facts import POLL_ERROR_LABELS
from sms_monitor.core.outbound import REASONS as REFUSAL_REASONS
from sms_monitor.core.snapshot import AlertsSnapshot, Snapshot
from sms_monitor.outputs.metrics.base import CACHED, Area, from_zero

# Every outcome a webhook request can have, by endpoint (inputs/webhooks.py): counted from 0.
_REFUSALS = ("unsigned", "bad_signature", "unknown_account", "malformed", "too_large",
             "rate_limited")
WEBHOOK_OUTCOMES: tuple[tuple[str, str], ...] = (
    *(("status", o) for o in ("accepted", *_REFUSALS)),
    *(("inbound", o) for o in ("accepted", "duplicate", *_REFUSALS, "internal")),
)
# Every channel a notification can leave by, and how an attempt can end: counted from 0.
NOTIFICATION_OUTCOMES: tuple[tuple[str, str], ...] = (
    ("email", "sent"), ("email", "failed"),
    ("webhook", "sent"), ("webhook", "failed"), ("webhook", "refused"),
    ("slack", "sent"), ("slack", "failed"), ("slack", "refused"),
    ("pagerduty", "sent"), ("pagerduty", "failed"), ("pagerduty", "refused"),
    ("alertmanager", "sent"), ("alertmanager", "failed"), ("alertmanager", "refreshed"),
)


class HealthArea(Area):
    """Every check of every part (``sms_health_status``).

    Sample::

        sms_health_status{account="primary",check="delivery_rate"} 2.0
        sms_health_status{account="primary",check="carrier_filtering"} 1.0
        sms_health_status{account="primary",check="overall"} 2.0
        sms_health_status{account="database",check="content"} -1.0
        sms_health_status{account="twilio",check="twilio_status"} 1.0
    """

    def collect(self, snap: Snapshot) -> Iterator[Metric]:
        status = GaugeMetricFamily(
            "sms_health_status",
            "Check state: 0 green, 1 yellow, 2 red, -1 unknown" + CACHED,
            labels=["account", "check"],
        )
        for c in snap.checks():
            status.add_metric([c.account, c.name], c.status.code)
        yield status
        verdict = GaugeMetricFamily(
            "sms_health_verdict", "The verdict across every group, as `check` gives it: red if "
            "any check that counts is red, else -1 (unknown) while a configured source cannot be "
            "read, else the worst of the groups" + CACHED)
        verdict.add_metric([], snap.overall.code)
        yield verdict


class MonitorArea(Area):
    """The cycle, each source's last success and ``up``, and the webhook receiver's health.

    Sample::

        sms_monitor_last_success_timestamp_seconds{source="twilio:primary"} 1.779999995e+09
        sms_monitor_up{source="database"} 1.0
        sms_monitor_poll_duration_seconds{account="primary"} 0.5
        sms_monitor_window_records{account="primary"} 11.0
        sms_monitor_poll_errors_total{account="primary",cause="timeout",part="usage"} 1.0
        sms_monitor_webhook_requests_total{endpoint="status",outcome="accepted"} 7.0
        sms_monitor_poll_cycles_total 1.0
    """

    def collect(self, snap: Snapshot) -> Iterator[Metric]:
        last = GaugeMetricFamily("sms_monitor_last_success_timestamp_seconds",
                                 "When each source was last polled without error",
                                 labels=["source"])
        for source, ts in sorted(snap.last_success.items()):
            last.add_metric([source], ts)
        poll = GaugeMetricFamily("sms_monitor_poll_duration_seconds",
                                 "Duration of the last poll of each account", labels=["account"])
        records = GaugeMetricFamily("sms_monitor_window_records",
                                    "Message records held in memory for the window",
                                    labels=["account"])
        malformed = CounterMetricFamily("sms_monitor_malformed_records",
                                        "Twilio message records skipped as unusable",
                                        labels=["account"])
        errors = CounterMetricFamily("sms_monitor_poll_errors",
                                     "Failed parts of account polls (balance, account, phone_number, "
                                     "messages) by cause", labels=["account", "part", "cause"])
        for a in snap.accounts:
            for (part, cause), n in from_zero(a.poll_errors, POLL_ERROR_LABELS):
                errors.add_metric([a.account, part, cause], n)
            poll.add_metric([a.account], a.poll_seconds)
            records.add_metric([a.account], a.window_records)
            malformed.add_metric([a.account], a.malformed_records)
        up = GaugeMetricFamily("sms_monitor_up", "1 when the source could be read in the last "
                               "cycle (every configured source: Twilio accounts, database, "
                               "status page, sms-monitor's stores)", labels=["source"])
        blind = GaugeMetricFamily("sms_monitor_source_unreadable_cycles",
                                  "Consecutive cycles the source could not be read (0 when it "
                                  "could)", labels=["source"])
        for state in snap.sources():
            up.add_metric([state.name], 1 if state.ok else 0)
            blind.add_metric([state.name], state.failing_cycles)
        hooks = CounterMetricFamily(
            "sms_monitor_webhook_requests", "Twilio webhook requests (status callbacks, incoming "
            "messages) by outcome (accepted, unsigned, bad_signature, unknown_account, malformed, "
            "too_large, rate_limited, internal)",
            labels=["endpoint", "outcome"])
        for (endpoint, outcome), n in from_zero(snap.webhooks.requests, WEBHOOK_OUTCOMES):
            hooks.add_metric([endpoint, outcome], n)
        drops = CounterMetricFamily(
            "sms_monitor_webhook_events_dropped",
            "Accepted status callbacks lost before a cycle applied them (more than 100,000 "
            "waiting: cycles too far apart for the callback rate)")
        drops.add_metric([], snap.webhooks.dropped)
        cycles = CounterMetricFamily("sms_monitor_poll_cycles", "Completed poll cycles")
        cycles.add_metric([], snap.cycles)
        taken = GaugeMetricFamily("sms_monitor_snapshot_timestamp_seconds",
                                  "When the exported snapshot was built")
        taken.add_metric([], snap.taken_at)
        duration = GaugeMetricFamily("sms_monitor_cycle_duration_seconds",
                                     "Duration of the last complete cycle (every input read)")
        duration.add_metric([], snap.cycle_seconds)
        yield from (last, up, blind, poll, records, malformed, errors, hooks, drops, cycles, taken, duration)


def alert_metrics(al: AlertsSnapshot) -> Iterator[Metric]:
    """The alert engine's state, published beside the snapshot it evaluated."""
    leader = GaugeMetricFamily("sms_alert_leader",
                               "1 when this replica evaluates rules and sends notifications")
    leader.add_metric([], 1 if al.leader else 0)
    state = GaugeMetricFamily(
        "sms_alert_state", "notification_rules alerts: 0 inactive, 1 pending, 2 firing",
        labels=["rule", "target", "severity"])
    level = GaugeMetricFamily("sms_alert_escalation_level",
                              "Escalation level of firing alerts (1-3)", labels=["rule", "target"])
    acked = GaugeMetricFamily(
        "sms_alert_acknowledged", "1 while a firing alert is acknowledged (`sms-monitor alerts "
        "ack`: no escalation or reminder until it resolves or the acknowledgement expires)",
        labels=["rule", "target"])
    silenced = GaugeMetricFamily(
        "sms_alert_silenced", "1 while an alert is silenced (`sms-monitor alerts silence`: no "
        "notification until the silence ends)", labels=["rule", "target"])
    codes = {"inactive": 0, "pending": 1, "firing": 2}
    for a in al.alerts:
        state.add_metric([a.rule, a.target, a.severity], codes.get(a.state, 0))
        if a.state == "firing":
            level.add_metric([a.rule, a.target], a.level)
        acked.add_metric([a.rule, a.target], 1 if a.acknowledged_by is not None else 0)
        silenced.add_metric([a.rule, a.target], 1 if a.silenced_until is not None else 0)
    invalid = GaugeMetricFamily("sms_alert_rule_invalid",
                                "1 for each alert rule row that cannot be used (see the log), "
                                "0 for each usable one",
                                labels=["rule"])
    broken = {rule for rule, _reason in al.broken}
    rules = sorted(broken | {a.rule for a in al.alerts})  # every rule this replica knows of
    for rule in rules:
        invalid.add_metric([rule], 1 if rule in broken else 0)
    refused = GaugeMetricFamily(
        "sms_alert_recipients_refused",
        "Recipients of an alert rule row refused by [alerts] webhook_allow (they get nothing)",
        labels=["rule", "reason"])
    for (rule, reason), n in sorted(al.recipients_refused.items()):
        refused.add_metric([rule, reason], n)
    gave_up = CounterMetricFamily(
        "sms_alert_notifications_refused",
        "Notifications given up when sending: the recipient's address is refused (not retried)",
        labels=["rule", "reason"])
    known = [(rule, reason) for rule in rules for reason in REFUSAL_REASONS]
    for (rule, reason), n in from_zero(al.notifications_refused, known):
        gave_up.add_metric([rule, reason], n)
    sent = CounterMetricFamily("sms_alert_notifications",
                               "Notification attempts by channel and outcome",
                               labels=["channel", "outcome"])
    for (channel, outcome), n in from_zero(al.notifications, NOTIFICATION_OUTCOMES):
        sent.add_metric([channel, outcome], n)
    pending = GaugeMetricFamily("sms_alert_outbox_pending", "Notifications not delivered yet")
    pending.add_metric([], al.outbox_pending)
    store = GaugeMetricFamily("sms_alert_store_up", "1 when the alert store was usable")
    store.add_metric([], 1 if al.store_ok else 0)
    readable = GaugeMetricFamily("sms_alert_rules_readable",
                                 "1 when the last read of notification_rules succeeded; while 0 "
                                 "every alert keeps the state it had")
    readable.add_metric([], 1 if al.rules_readable else 0)
    read_failures = CounterMetricFamily("sms_alert_rules_read_failures",
                                        "Cycles whose read of notification_rules failed")
    read_failures.add_metric([], al.rules_read_failures)
    save_failures = CounterMetricFamily(
        "sms_alert_rule_save_failures",
        "Cycles in which the alert store refused a rule's decisions (the others were saved)",
        labels=["rule"])
    for rule, n in from_zero(al.save_failures, rules):
        save_failures.add_metric([rule], n)
    yield from (leader, state, level, acked, silenced, invalid, refused, sent, gave_up, pending,
                store, readable, read_failures, save_failures)
