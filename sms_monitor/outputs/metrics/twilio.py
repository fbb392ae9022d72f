"""The Twilio accounts' areas: the account resources, the message window, cost and requests."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from sms_monitor.core.facts import RETRY_REASONS
from sms_monitor.core.snapshot import Snapshot
from sms_monitor.core.window import HistogramState
from sms_monitor.outputs.metrics.base import CACHED, Area, buckets, from_zero


class AccountArea(Area):
    """Balance, status, sending number, API probe and ``twilio_up`` of each account.

    Sample::

        twilio_account_balance{account="primary",currency="USD"} 120.5
        twilio_account_status{account="primary",status="active"} 1.0
        twilio_phone_number_sms_capable{account="primary",phone_number="+15005550006"} 1.0
        twilio_api_response_time_seconds{account="primary"} 0.25
        twilio_up{account="primary"} 1.0
    """

    def collect(self, snap: Snapshot) -> Iterator[Metric]:
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


class WindowArea(Area):
    """The message window of each account: delivery, errors, latency, counts by status.

    Sample::

        sms_delivery_success_ratio{account="primary"} 0.8888888888888888
        sms_error_ratio{account="primary"} 0.1
        sms_delivery_latency_mean_seconds{account="primary"} 7.5
        sms_delivery_latency_seconds_bucket{account="primary",le="10.0"} 7.0
        sms_delivery_latency_seconds_count{account="primary"} 8.0
        sms_delivery_latency_seconds_sum{account="primary"} 60.0
        sms_delivery_latency_source_total{account="primary",source="callback"} 6.0
        sms_window_messages{account="primary",direction="outbound",status="delivered"} 8.0
        sms_window_messages{account="primary",direction="outbound",status="undelivered"} 1.0
        sms_window_error_messages{account="primary",error_code="30007"} 1.0
        sms_window_carrier_filtered_messages{account="primary"} 1.0
        sms_window_seconds{account="primary"} 3600.0
    """

    def collect(self, snap: Snapshot) -> Iterator[Metric]:
        complete = GaugeMetricFamily(
            "sms_window_complete", "1 when the account's window has been read whole; 0 while "
            "a read that stopped early (page cap, time budget, a failure part-way) is resumed "
            "(the window checks are unknown then)", labels=["account"])
        unread = GaugeMetricFamily(
            "sms_window_unread_seconds", "Seconds of the window not read yet", labels=["account"])
        future = CounterMetricFamily(
            "sms_monitor_future_dated_records", "Messages dated more than 5 minutes after our "
            "clock, left out of every statistic (clock skew?)", labels=["account"])
        for a in snap.accounts:
            future.add_metric([a.account], a.future_dated_records)
            if a.window_unread_seconds is not None:
                complete.add_metric([a.account], 1 if a.window_complete else 0)
                unread.add_metric([a.account], a.window_unread_seconds)
        yield from (complete, unread, future)
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
            latency.add_metric([a.account], buckets(a.latency), a.latency.total)
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


    def page_lines(self, snap: Snapshot) -> list[str]:
        """Where delivery times come from: status callbacks or polls."""
        lines = []
        for a in snap.accounts:
            callback, poll = a.timed.get("callback", 0), a.timed.get("poll", 0)
            if callback or poll:
                lines.append(f"{a.account}: {callback} of {callback + poll} delivery times from "
                             f"status callbacks, {poll} from polls")
        return lines


class CostArea(Area):
    """Spend, budget, segments, destinations and throughput of each account.

    Sample::

        sms_window_segments_per_message{account="primary"} 1.0
        sms_window_international_ratio{account="primary"} 0.0
        sms_throughput_peak_messages_per_second{account="primary"} 0.016666666666666666
        sms_throughput_utilisation_ratio{account="primary"} 0.016666666666666666
    """

    def collect(self, snap: Snapshot) -> Iterator[Metric]:
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
            check = a.check("budget")
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
            check = a.check("throughput")
            if check is not None and check.value is not None:
                util.add_metric([a.account], check.value)
        yield from (spend, budget, window_spend, segments, international, peak, util)


class RequestArea(Area):
    """Every Twilio API request: counts by status, durations, retries.

    Durations are one histogram per account and endpoint, as the health contract names
    them (70 series an account); ``per_account_request_histograms = false`` sums them over
    the accounts (12 series an endpoint in all), for a fleet's series budget.

    Sample::

        twilio_api_requests_total{account="primary",code="429",endpoint="messages"} 1.0
        twilio_api_request_duration_seconds_bucket{account="primary",endpoint="balance",le="0.5"} 2.0
        twilio_api_request_duration_seconds_count{account="primary",endpoint="balance"} 3.0
        twilio_api_request_duration_seconds_sum{account="primary",endpoint="balance"} 1.25
        twilio_api_retries_total{account="primary",reason="429"} 1.0
    """

    per_account = True  # set by the collector from per_account_request_histograms

    def collect(self, snap: Snapshot) -> Iterator[Metric]:
        total = CounterMetricFamily("twilio_api_requests", "Twilio API requests by HTTP status "
                                    "('error' when no response)", labels=["account", "endpoint", "code"])
        for (account, endpoint, code), n in sorted(snap.requests.counts.items()):
            total.add_metric([account, endpoint, code], n)
        help_ = "Duration of every Twilio API request"
        if self.per_account:
            duration = HistogramMetricFamily("twilio_api_request_duration_seconds",
                                             help_, labels=["account", "endpoint"])
            for (account, endpoint), h in sorted(snap.requests.durations.items()):
                duration.add_metric([account, endpoint], buckets(h), h.total)
        else:
            duration = HistogramMetricFamily("twilio_api_request_duration_seconds",
                                             help_ + ", summed over the accounts",
                                             labels=["endpoint"])
            for endpoint, h in sorted(by_endpoint(snap.requests.durations).items()):
                duration.add_metric([endpoint], buckets(h), h.total)
        retries = CounterMetricFamily("twilio_api_retries", "Twilio requests retried, by reason",
                                      labels=["account", "reason"])
        known = [(a.account, reason) for a in snap.accounts for reason in RETRY_REASONS]
        for (account, reason), n in from_zero(snap.requests.retries, known):
            retries.add_metric([account, reason], n)
        yield from (total, duration, retries)


def by_endpoint(durations: Mapping[tuple[str, str], HistogramState]) -> dict[str, HistogramState]:
    """The accounts' request histograms summed per endpoint (the buckets are the same)."""
    out: dict[str, HistogramState] = {}
    for (_, endpoint), h in durations.items():
        seen = out.get(endpoint)
        out[endpoint] = h if seen is None else HistogramState(
            h.bounds, tuple(a + b for a, b in zip(seen.counts, h.counts, strict=True)),
            seen.total + h.total, seen.count + h.count)
    return out
