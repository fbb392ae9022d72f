"""The published snapshot → Prometheus metric families, area by area.

The collector is stateless: each collection reads the current :class:`Published` once (so every
family comes from the same cycle) and asks each registered area for its families.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sms_monitor import __version__
from sms_monitor.core.snapshot import SnapshotHolder
from sms_monitor.outputs.metrics import Area, HealthArea, MonitorArea, RequestArea, alert_metrics

# Shown whatever the inputs: every check's state, and the monitor's own health.
CORE_AREAS: tuple[type[Area], ...] = (HealthArea, MonitorArea)


class SnapshotCollector(Collector):
    def __init__(self, holder: SnapshotHolder, areas: Sequence[type[Area]] = (),
                 per_account_request_histograms: bool = True) -> None:
        self.holder = holder
        self.areas = [a() for a in (*CORE_AREAS[:1], *areas, *CORE_AREAS[1:])]
        for area in self.areas:
            if isinstance(area, RequestArea):
                area.per_account = per_account_request_histograms

    def collect(self) -> Iterator[Metric]:
        build = GaugeMetricFamily("sms_monitor_build_info", "sms-monitor version; always 1",
                                  labels=["version"])
        build.add_metric([__version__], 1)
        yield build
        published = self.holder.published
        ready = GaugeMetricFamily("sms_monitor_ready",
                                  "1 once the first complete poll cycle has finished")
        ready.add_metric([], 1 if published is not None else 0)
        yield ready
        if published is None:
            return
        for area in self.areas:
            yield from area.collect(published.snapshot)
        if published.alerts is not None:
            yield from alert_metrics(published.alerts)
