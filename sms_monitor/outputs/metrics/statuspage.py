"""Twilio's status page."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from sms_monitor.core.snapshot import Snapshot
from sms_monitor.outputs.metrics.base import Area


class StatusPageArea(Area):
    """The SMS-related components and open incidents of Twilio's status page.

    Sample::

        twilio_statuspage_up 1.0
        twilio_statuspage_component_status{component="REST API",status="degraded_performance"} 1.0
        twilio_statuspage_open_incidents 1.0
    """

    def collect(self, snap: Snapshot) -> Iterator[Metric]:
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
