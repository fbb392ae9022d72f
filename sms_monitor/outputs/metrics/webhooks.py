"""Twilio's webhooks: requests, incoming keywords and the audit table."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from sms_monitor.core.snapshot import Snapshot
from sms_monitor.outputs.metrics.base import Area


class WebhookArea(Area):
    """Webhook requests by outcome, keyword messages, and the keyword audit writer.

    Sample::

        sms_inbound_keywords_total{account="primary",kind="optout"} 2.0
        sms_monitor_keyword_audit_queued_rows 0.0
        sms_monitor_keyword_audit_rows_total 2.0
        sms_monitor_keyword_audit_write_failures_total 1.0
        sms_monitor_keyword_audit_dropped_rows_total 0.0
    """

    def collect(self, snap: Snapshot) -> Iterator[Metric]:
        hooks = snap.webhooks
        """Keyword messages from /twilio/inbound and the audit table they are written to."""
        keywords = CounterMetricFamily(
            "sms_inbound_keywords", "Incoming keyword messages posted to /twilio/inbound by kind "
            "(optout, optin, help)", labels=["account", "kind"])
        for account in sorted({a.account for a in snap.accounts}):
            for kind in ("optout", "optin", "help"):
                keywords.add_metric([account, kind], hooks.inbound_keywords.get((account, kind), 0))
        yield keywords
        audit = hooks.audit
        if audit is None:
            return
        queued, written, failures, dropped = audit.queued, audit.written, audit.failures, \
            audit.dropped
        q = GaugeMetricFamily("sms_monitor_keyword_audit_queued_rows",
                              "Keyword events waiting to be written to the audit table (a write "
                              "failed; retried every cycle)")
        q.add_metric([], queued)
        w = CounterMetricFamily("sms_monitor_keyword_audit_rows",
                                "Keyword events written to the audit table")
        w.add_metric([], written)
        f = CounterMetricFamily("sms_monitor_keyword_audit_write_failures",
                                "Failed writes to the keyword audit table")
        f.add_metric([], failures)
        d = CounterMetricFamily("sms_monitor_keyword_audit_dropped_rows",
                                "Keyword events lost to the audit table: the waiting queue was full, "
                                "or the store refused the row's data")
        d.add_metric([], dropped)
        yield from (q, w, f, d)
