"""What every metric area shares."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import Metric

from sms_monitor.core.snapshot import Snapshot
from sms_monitor.core.window import HistogramState

CACHED = " (cached from the last poll)"


def buckets(h: HistogramState) -> list[tuple[str, float]]:
    return [(le, float(n)) for le, n in h.cumulative()]


class Area:
    """The metrics (and landing-page lines) of one area of the snapshot.

    Stateless: each scrape turns the published snapshot into fresh metric families, so a
    scrape never polls and never waits for Twilio. A subclass's docstring shows a sample of
    its exposition.
    """

    def collect(self, snap: Snapshot) -> Iterator[Metric]:
        raise NotImplementedError

    def page_lines(self, snap: Snapshot) -> list[str]:
        """Plain-text lines for the landing page (escaped by the page)."""
        return []
