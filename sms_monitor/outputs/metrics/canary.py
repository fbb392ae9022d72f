"""The synthetic canary."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from sms_monitor.core.snapshot import Snapshot
from sms_monitor.outputs.metrics.base import Area


class CanaryArea(Area):
    """The canary's probes: results, in flight, the last success and its latency.

    Sample::

        sms_canary_probes_total{account="primary",mode="delivery",result="delivered"} 5.0
        sms_canary_probes_total{account="primary",mode="delivery",result="timeout"} 1.0
        sms_canary_in_flight{account="primary",mode="delivery"} 1.0
        sms_canary_success{account="primary",mode="delivery"} 1.0
        sms_canary_latency_seconds{account="primary",mode="delivery"} 6.5
    """

    def collect(self, snap: Snapshot) -> Iterator[Metric]:
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

    def page_lines(self, snap: Snapshot) -> list[str]:
        c = snap.canary
        if c is None:
            return []
        counts = ", ".join(f"{n} {r}" for r, n in sorted(c.results.items())) or "none settled"
        last = "no probe settled yet" if c.last_result is None else (
            f"last probe {c.last_result}" + (f" in {c.latency:.1f} s" if c.latency is not None
                                             else ""))
        mode = "API only, test credentials" if c.api_only else "end to end"
        return [f"canary ({c.account}, {mode}): {last}; probes: {counts}; "
                f"{c.in_flight} in flight"]
