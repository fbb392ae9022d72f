"""The application database's area: the runbook's diagnosis queries."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from sms_monitor.core.facts import QUERY_ERROR_LABELS
from sms_monitor.core.snapshot import Snapshot
from sms_monitor.outputs.metrics.base import CACHED, Area, from_zero


class DatabaseArea(Area):
    """The database checks' numbers, the content report and query errors.

    Sample::

        sms_clients_invalid_phone_numbers{column="phone"} 2.0
        sms_optout_unprocessed_messages 0.0
        sms_sent_to_opted_out_messages 0.0
        sms_notification_queue_delay_seconds 12.5
        sms_notifications_last_hour{state="unsent"} 1.0
        sms_reconciliation_ratio 1.0
        sms_notification_settings_sms_disabled 3.0
        sms_monitor_database_query_errors_total{cause="timeout",query="content"} 2.0
    """

    def collect(self, snap: Snapshot) -> Iterator[Metric]:
        db = snap.database
        if db is None:
            return
        f = db.facts
        invalid = GaugeMetricFamily(
            "sms_clients_invalid_phone_numbers",
            "Non-null client phone numbers that are not E.164, by column" + CACHED, labels=["column"])
        for column, n in sorted((f.invalid_phones or {}).items()):
            invalid.add_metric([column], n)
        unprocessed = GaugeMetricFamily(
            "sms_optout_unprocessed_messages",
            "Opt-out keywords older than the grace period from clients still opted in" + CACHED)
        if db.optout_unprocessed is not None:
            unprocessed.add_metric([], db.optout_unprocessed)
        opted = GaugeMetricFamily(
            "sms_sent_to_opted_out_messages",
            "Outbound messages in the window to clients who have opted out" + CACHED)
        if db.sent_to_opted_out is not None:
            opted.add_metric([], db.sent_to_opted_out)
        delay = GaugeMetricFamily(
            "sms_notification_queue_delay_seconds",
            "Mean sent_at - created_at of SMS notifications created in the last hour (none sent: "
            "how long the oldest unsent one has waited)" + CACHED)
        queue = db.check("queue_delay")
        if queue is not None and queue.value is not None:
            delay.add_metric([], queue.value)
        volume = GaugeMetricFamily(
            "sms_notifications_last_hour",
            "SMS notifications the application created in the last hour, by state" + CACHED,
            labels=["state"])
        if f.queue_sent is not None and f.queue_unsent is not None:
            volume.add_metric(["sent"], f.queue_sent)
            volume.add_metric(["unsent"], f.queue_unsent)
        logged = GaugeMetricFamily(
            "sms_reconciliation_logged_recipients",
            "SMS recipients the application logged in the reconciliation span" + CACHED)
        received = GaugeMetricFamily(
            "sms_reconciliation_twilio_messages",
            "Outbound messages Twilio received in the same span, all accounts" + CACHED)
        ratio = GaugeMetricFamily(
            "sms_reconciliation_ratio",
            "Twilio outbound messages / SMS recipients logged by the application, same span" + CACHED)
        if f.logged_recipients is not None:
            logged.add_metric([], f.logged_recipients)
            if db.twilio_in_span is not None:
                received.add_metric([], db.twilio_in_span)
                if f.logged_recipients:
                    ratio.add_metric([], db.twilio_in_span / f.logged_recipients)
        disabled = GaugeMetricFamily(
            "sms_notification_settings_sms_disabled",
            "Notification settings rows with SMS switched off (a rollback left in place?)" + CACHED)
        rows = GaugeMetricFamily("sms_notification_settings_rows",
                                 "Notification settings rows" + CACHED)
        if f.sms_disabled is not None and f.settings_rows is not None:
            disabled.add_metric([], f.sms_disabled)
            rows.add_metric([], f.settings_rows)
        errors = CounterMetricFamily("sms_monitor_database_query_errors",
                                     "Failed database queries by query and cause",
                                     labels=["query", "cause"])
        for (query, cause), n in from_zero(db.query_errors, QUERY_ERROR_LABELS):
            errors.add_metric([query, cause], n)
        templates = GaugeMetricFamily(
            "sms_content_templates", "Message templates with more than 10 SMS in the last 7 days"
            + CACHED)
        under = GaugeMetricFamily(
            "sms_content_templates_under_threshold",
            "Templates whose 7-day delivery rate is under the delivery_rate red bound" + CACHED)
        ratio_t = GaugeMetricFamily(
            "sms_content_template_delivery_ratio",
            "7-day delivery rate of the 20 most sent templates, by hashed template id" + CACHED,
            labels=["template"])
        rules = GaugeMetricFamily("sms_content_findings",
                                  "Templates breaking each content rule (7 days)" + CACHED,
                                  labels=["rule"])
        report = db.content
        if report is not None:
            templates.add_metric([], len(report.templates))
            bound = db.check("content")
            if bound is not None and bound.value is not None:
                under.add_metric([], bound.value)
            for t in report.judged()[:20]:  # (a template without outcomes has no rate)
                ratio_t.add_metric([t.id], t.delivery_ratio)
            for rule, n in sorted(report.findings.items()):
                rules.add_metric([rule], n)
        yield from (templates, under, ratio_t, rules)
        duration = GaugeMetricFamily("sms_monitor_database_poll_duration_seconds",
                                     "Duration of the last database poll")
        duration.add_metric([], db.poll_seconds)
        yield from (invalid, unprocessed, opted, delay, volume, logged, received, ratio, disabled,
                    rows, errors, duration)
