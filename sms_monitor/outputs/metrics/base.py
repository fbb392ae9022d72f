"""What every metric area shares."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TypeVar

from prometheus_client.core import Metric

from sms_monitor.core.snapshot import Snapshot
from sms_monitor.core.window import HistogramState

CACHED = " (cached from the last poll)"

K = TypeVar("K", str, tuple[str, str])


def from_zero(counts: Mapping[K, int], known: Iterable[K]) -> list[tuple[K, int]]:
    """A labelled counter's samples: every known label set, at 0 until its first event, and
    whatever else was counted. Sorted, so the exposition is stable.

    A counter that appears only with its first event leaves a panel empty ("no data") and
    makes ``rate()`` miss that first event; starting at 0 avoids both. ``known`` must be
    bounded: it is a fixed list of label values (or the rows of notification_rules)."""
    merged = dict.fromkeys(known, 0)
    merged.update(counts)
    return sorted(merged.items())


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
