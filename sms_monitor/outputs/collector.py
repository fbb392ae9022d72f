"""Snapshot → Prometheus metric families. Every exported metric name is defined here.

The collector is stateless: each scrape turns the current immutable Snapshot
into fresh metric families, so a scrape never polls and never blocks on Twilio.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from sms_monitor import __version__
from sms_monitor.core.snapshot import Snapshot, SnapshotHolder
from sms_monitor.core.window import HistogramState

CACHED = " (cached from the last poll)"


def _buckets(h: HistogramState) -> list[tuple[str, float]]:
    return [(le, float(n)) for le, n in h.cumulative()]


class SnapshotCollector(Collector):
    def __init__(self, holder: SnapshotHolder) -> None:
        self.holder = holder

    def collect(self) -> Iterator[Metric]:
        build = GaugeMetricFamily("sms_monitor_build_info", "sms-monitor version; always 1",
                                  labels=["version"])
        build.add_metric([__version__], 1)
        yield build
        snap = self.holder.current
        ready = GaugeMetricFamily("sms_monitor_ready",
                                  "1 once the first complete poll cycle has finished")
        ready.add_metric([], 1 if snap is not None else 0)
        yield ready
        if snap is None:
            return
        yield from health_metrics(snap)
        yield from window_metrics(snap)
        yield from account_metrics(snap)
        yield from request_metrics(snap)
        yield from database_metrics(snap)
        yield from alert_metrics(snap)
        yield from statuspage_metrics(snap)
        yield from webhook_metrics(snap)
        yield from canary_metrics(snap)
        yield from self_metrics(snap)


def health_metrics(snap: Snapshot) -> Iterator[Metric]:
    status = GaugeMetricFamily(
        "sms_health_status",
        "Check state: 0 green, 1 yellow, 2 red, -1 unknown" + CACHED,
        labels=["account", "check"],
    )
    for c in snap.checks():
        status.add_metric([c.account, c.name], c.status.code)
    yield status


def window_metrics(snap: Snapshot) -> Iterator[Metric]:
    delivery = GaugeMetricFamily(
        "sms_delivery_success_ratio",
        "Delivered / (delivered + undelivered + failed) of outbound messages created in the "
        "window" + CACHED, labels=["account"])
    errors = GaugeMetricFamily(
        "sms_error_ratio",
        "Outbound messages in the window with an error code / all outbound in the window" + CACHED,
        labels=["account"])
    mean = GaugeMetricFamily(
        "sms_delivery_latency_mean_seconds",
        "Mean creation-to-delivery time of messages delivered in the window" + CACHED,
        labels=["account"])
    by_status = GaugeMetricFamily(
        "sms_window_messages", "Messages created in the window by direction and Twilio status"
        + CACHED, labels=["account", "direction", "status"])
    by_error = GaugeMetricFamily(
        "sms_window_error_messages", "Messages created in the window by Twilio error code" + CACHED,
        labels=["account", "error_code"])
    filtered = GaugeMetricFamily(
        "sms_window_carrier_filtered_messages",
        "Outbound messages in the window that failed with error 30007 (carrier filtering)" + CACHED,
        labels=["account"])
    window = GaugeMetricFamily("sms_window_seconds", "Length of the statistics window",
                               labels=["account"])
    latency = HistogramMetricFamily(
        "sms_delivery_latency_seconds",
        "Creation-to-delivery time, each delivered message observed once" + CACHED,
        labels=["account"])
    timed = CounterMetricFamily(
        "sms_delivery_latency_source",
        "Deliveries observed in sms_delivery_latency_seconds by where their delivery time came "
        "from: callback (arrival of Twilio's status callback) or poll (date_updated)",
        labels=["account", "source"])
    for a in snap.accounts:
        latency.add_metric([a.account], _buckets(a.latency), a.latency.total)
        for source in ("callback", "poll"):
            timed.add_metric([a.account, source], a.timed.get(source, 0))
        st = a.stats
        if st is None or not a.facts.messages_ok:
            continue
        window.add_metric([a.account], st.window_seconds)
        if st.delivery_ratio is not None:
            delivery.add_metric([a.account], st.delivery_ratio)
        if st.error_ratio is not None:
            errors.add_metric([a.account], st.error_ratio)
        if st.latency_mean is not None:
            mean.add_metric([a.account], st.latency_mean)
        filtered.add_metric([a.account], st.carrier_filtered)
        for (direction, status), n in sorted(st.by_status.items()):
            by_status.add_metric([a.account, direction, status], n)
        for code, n in sorted(st.by_error.items()):
            by_error.add_metric([a.account, code], n)
    yield from (delivery, errors, mean, latency, timed, by_status, by_error, filtered, window)
    yield from cost_metrics(snap)


def cost_metrics(snap: Snapshot) -> Iterator[Metric]:
    spend = GaugeMetricFamily(
        "twilio_sms_spend", "SMS spend from Twilio's Usage Records, today and this month so far "
        "(UTC)" + CACHED, labels=["account", "period", "currency"])
    budget = GaugeMetricFamily(
        "sms_budget_projected_ratio",
        "This month's SMS spend projected to the month's end / the configured monthly budget"
        + CACHED, labels=["account"])
    window_spend = GaugeMetricFamily(
        "sms_window_spend", "Price of outbound messages created in the window, by destination "
        "country calling code" + CACHED, labels=["account", "country_code"])
    segments = GaugeMetricFamily(
        "sms_window_segments_per_message", "Mean segments per outbound message in the window"
        + CACHED, labels=["account"])
    international = GaugeMetricFamily(
        "sms_window_international_ratio", "Outbound messages in the window to another calling "
        "code than home_country_code / all outbound" + CACHED, labels=["account"])
    for a in snap.accounts:
        f = a.facts
        cur = (f.spend_currency or "").upper()
        if f.spend_today is not None and f.spend_month is not None:
            spend.add_metric([a.account, "today", cur], f.spend_today)
            spend.add_metric([a.account, "month", cur], f.spend_month)
        check = next((c for c in a.checks if c.name == "budget"), None)
        if check is not None and check.value is not None:
            budget.add_metric([a.account], check.value)
        st = a.stats
        if st is None or not f.messages_ok:
            continue
        for code, price in sorted(st.spend_by_country.items()):
            window_spend.add_metric([a.account, code], price)
        if st.segments_per_message is not None:
            segments.add_metric([a.account], st.segments_per_message)
        if st.international_ratio is not None:
            international.add_metric([a.account], st.international_ratio)
    peak = GaugeMetricFamily(
        "sms_throughput_peak_messages_per_second",
        "Outbound messages created in the busiest minute of the window, per second" + CACHED,
        labels=["account"])
    util = GaugeMetricFamily(
        "sms_throughput_utilisation_ratio",
        "Busiest minute's rate / the sending number's limit (number_type)" + CACHED,
        labels=["account"])
    for a in snap.accounts:
        if a.stats is None or not a.facts.messages_ok:
            continue
        peak.add_metric([a.account], a.stats.peak_minute / 60.0)
        check = next((c for c in a.checks if c.name == "throughput"), None)
        if check is not None and check.value is not None:
            util.add_metric([a.account], check.value)
    yield from (spend, budget, window_spend, segments, international, peak, util)


def account_metrics(snap: Snapshot) -> Iterator[Metric]:
    balance = GaugeMetricFamily("twilio_account_balance", "Account balance in its currency"
                                + CACHED, labels=["account", "currency"])
    status = GaugeMetricFamily("twilio_account_status", "1 for the account's current status"
                               + CACHED, labels=["account", "status"])
    number = GaugeMetricFamily(
        "twilio_phone_number_sms_capable",
        "1 when the sending number is on the account with SMS capability, else 0" + CACHED,
        labels=["account", "phone_number"])
    probe = GaugeMetricFamily(
        "twilio_api_response_time_seconds",
        "Wall time of the cycle's Balance request, the API probe" + CACHED, labels=["account"])
    up = GaugeMetricFamily("twilio_up", "1 when the last poll of the account succeeded" + CACHED,
                           labels=["account"])
    for a in snap.accounts:
        f = a.facts
        up.add_metric([a.account], 1 if a.up else 0)
        if f.balance is not None:
            balance.add_metric([a.account, f.currency or ""], f.balance)
        if f.account_status is not None:
            status.add_metric([a.account, f.account_status], 1)
        if f.phone_number and f.phone_found is not None:
            number.add_metric([a.account, f.phone_number],
                              1 if f.phone_found and f.phone_sms_capable else 0)
        if f.balance_seconds is not None:
            probe.add_metric([a.account], f.balance_seconds)
    yield from (balance, status, number, probe, up)


def request_metrics(snap: Snapshot) -> Iterator[Metric]:
    total = CounterMetricFamily("twilio_api_requests", "Twilio API requests by HTTP status "
                                "('error' when no response)", labels=["account", "endpoint", "code"])
    for (account, endpoint, code), n in sorted(snap.requests.counts.items()):
        total.add_metric([account, endpoint, code], n)
    duration = HistogramMetricFamily("twilio_api_request_duration_seconds",
                                     "Duration of every Twilio API request",
                                     labels=["account", "endpoint"])
    for (account, endpoint), h in sorted(snap.requests.durations.items()):
        duration.add_metric([account, endpoint], _buckets(h), h.total)
    retries = CounterMetricFamily("twilio_api_retries", "Twilio requests retried, by reason",
                                  labels=["account", "reason"])
    for (account, reason), n in sorted(snap.requests.retries.items()):
        retries.add_metric([account, reason], n)
    yield from (total, duration, retries)


def database_metrics(snap: Snapshot) -> Iterator[Metric]:
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
    queue = next((c for c in db.checks if c.name == "queue_delay"), None)
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
    for (query, cause), n in sorted(db.query_errors.items()):
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
        bound = next((c for c in db.checks if c.name == "content"), None)
        if bound is not None and bound.value is not None:
            under.add_metric([], bound.value)
        for t in report.templates[:20]:
            ratio_t.add_metric([t.id], t.delivery_ratio)
        for rule, n in sorted(report.findings.items()):
            rules.add_metric([rule], n)
    yield from (templates, under, ratio_t, rules)
    duration = GaugeMetricFamily("sms_monitor_database_poll_duration_seconds",
                                 "Duration of the last database poll")
    duration.add_metric([], db.poll_seconds)
    yield from (invalid, unprocessed, opted, delay, volume, logged, received, ratio, disabled,
                rows, errors, duration)


def statuspage_metrics(snap: Snapshot) -> Iterator[Metric]:
    sp = snap.statuspage
    if sp is None:
        return
    up = GaugeMetricFamily("twilio_statuspage_up", "1 when Twilio's status page was readable")
    up.add_metric([], 1 if sp.ok else 0)
    yield up
    if not sp.ok:
        return
    comp = GaugeMetricFamily(
        "twilio_statuspage_component_status",
        "1 for the current state of each SMS-related component of Twilio's status page",
        labels=["component", "status"])
    for name, status in sorted(sp.components.items()):
        comp.add_metric([name, status], 1)
    incidents = GaugeMetricFamily("twilio_statuspage_open_incidents",
                                  "Incidents on Twilio's status page that are not resolved")
    incidents.add_metric([], sp.open_incidents)
    yield from (comp, incidents)


def webhook_metrics(snap: Snapshot) -> Iterator[Metric]:
    """Keyword messages from /twilio/inbound and the audit table they are written to."""
    keywords = CounterMetricFamily(
        "sms_inbound_keywords", "Incoming keyword messages posted to /twilio/inbound by kind "
        "(optout, optin, help)", labels=["account", "kind"])
    for account in sorted({a.account for a in snap.accounts}):
        for kind in ("optout", "optin", "help"):
            keywords.add_metric([account, kind], snap.inbound_keywords.get((account, kind), 0))
    yield keywords
    if snap.audit is None:
        return
    queued, written, failures, dropped = snap.audit
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


def canary_metrics(snap: Snapshot) -> Iterator[Metric]:
    c = snap.canary
    if c is None:
        return
    labels = [c.account, "api" if c.api_only else "delivery"]
    probes = CounterMetricFamily(
        "sms_canary_probes", "Canary probes by result (delivered, accepted, failed, timeout, "
        "send_error)", labels=["account", "mode", "result"])
    for result in ("accepted",) if c.api_only else ("delivered", "failed", "timeout"):
        probes.add_metric([*labels, result], c.results.get(result, 0))
    probes.add_metric([*labels, "send_error"], c.results.get("send_error", 0))
    yield probes
    in_flight = GaugeMetricFamily("sms_canary_in_flight", "Canary probes sent and not settled",
                                  labels=["account", "mode"])
    in_flight.add_metric(labels, c.in_flight)
    yield in_flight
    if c.success is not None:
        success = GaugeMetricFamily(
            "sms_canary_success", "1 when the last settled canary probe succeeded (delivered; "
            "accepted by the API in api mode)", labels=["account", "mode"])
        success.add_metric(labels, 1 if c.success else 0)
        yield success
    if c.latency is not None:
        latency = GaugeMetricFamily(
            "sms_canary_latency_seconds", "End-to-end time of the last successful canary probe, "
            "send to delivered (API round trip in api mode)", labels=["account", "mode"])
        latency.add_metric(labels, c.latency)
        yield latency
    if c.last_success is not None:
        last = GaugeMetricFamily("sms_canary_last_success_timestamp_seconds",
                                 "When the last canary probe succeeded",
                                 labels=["account", "mode"])
        last.add_metric(labels, c.last_success)
        yield last


def alert_metrics(snap: Snapshot) -> Iterator[Metric]:
    al = snap.alerts
    if al is None:
        return
    leader = GaugeMetricFamily("sms_alert_leader",
                               "1 when this replica evaluates rules and sends notifications")
    leader.add_metric([], 1 if al.leader else 0)
    state = GaugeMetricFamily(
        "sms_alert_state", "notification_rules alerts: 0 inactive, 1 pending, 2 firing",
        labels=["rule", "target", "severity"])
    level = GaugeMetricFamily("sms_alert_escalation_level",
                              "Escalation level of firing alerts (1-3)", labels=["rule", "target"])
    codes = {"inactive": 0, "pending": 1, "firing": 2}
    for a in al.alerts:
        state.add_metric([a.rule, a.target, a.severity], codes.get(a.state, 0))
        if a.state == "firing":
            level.add_metric([a.rule, a.target], a.level)
    invalid = GaugeMetricFamily("sms_alert_rule_invalid",
                                "1 for each alert rule row that cannot be used (see the log)",
                                labels=["rule"])
    for rule, _reason in al.broken:
        invalid.add_metric([rule], 1)
    sent = CounterMetricFamily("sms_alert_notifications",
                               "Notification attempts by channel and outcome",
                               labels=["channel", "outcome"])
    for (channel, outcome), n in sorted(al.notifications.items()):
        sent.add_metric([channel, outcome], n)
    pending = GaugeMetricFamily("sms_alert_outbox_pending", "Notifications not delivered yet")
    pending.add_metric([], al.outbox_pending)
    store = GaugeMetricFamily("sms_alert_store_up", "1 when the alert store was usable")
    store.add_metric([], 1 if al.store_ok else 0)
    yield from (leader, state, level, invalid, sent, pending, store)


def self_metrics(snap: Snapshot) -> Iterator[Metric]:
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
        for (part, cause), n in sorted(a.poll_errors.items()):
            errors.add_metric([a.account, part, cause], n)
        poll.add_metric([a.account], a.poll_seconds)
        records.add_metric([a.account], a.window_records)
        malformed.add_metric([a.account], a.malformed_records)
    up = GaugeMetricFamily("sms_monitor_up", "1 when the source's last poll fully succeeded",
                           labels=["source"])
    for a in snap.accounts:
        up.add_metric([f"twilio:{a.account}"], 1 if a.up else 0)
    if snap.database is not None:
        up.add_metric(["database"], 1 if snap.database.facts.up else 0)
    hooks = CounterMetricFamily(
        "sms_monitor_webhook_requests", "Twilio webhook requests (status callbacks, incoming "
        "messages) by outcome (accepted, unsigned, bad_signature, unknown_account, malformed, "
        "too_large, rate_limited, internal)",
        labels=["endpoint", "outcome"])
    for (endpoint, outcome), n in sorted(snap.callbacks.items()):
        hooks.add_metric([endpoint, outcome], n)
    drops = CounterMetricFamily(
        "sms_monitor_webhook_events_dropped",
        "Accepted status callbacks lost before a cycle applied them (more than 100,000 "
        "waiting: cycles too far apart for the callback rate)")
    drops.add_metric([], snap.callback_drops)
    cycles = CounterMetricFamily("sms_monitor_poll_cycles", "Completed poll cycles")
    cycles.add_metric([], snap.cycles)
    taken = GaugeMetricFamily("sms_monitor_snapshot_timestamp_seconds",
                              "When the exported snapshot was built")
    taken.add_metric([], snap.taken_at)
    yield from (last, up, poll, records, malformed, errors, hooks, drops, cycles, taken)
