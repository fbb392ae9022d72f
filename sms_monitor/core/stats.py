"""Window statistics: the numbers behind the delivery, error, latency and filtering checks."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from sms_monitor.core.frozen import Immutable
from sms_monitor.core.records import (
    CARRIER_FILTERED_ERROR,
    DELIVERED_STATUSES,
    FAILED_STATUSES,
    MessageRecord,
)


@dataclass(frozen=True)
class WindowStats(Immutable):
    window_seconds: float
    outbound: int = 0
    delivered: int = 0
    failed: int = 0  # undelivered + failed
    with_error: int = 0  # outbound messages carrying an error code
    carrier_filtered: int = 0
    latency_sum: float = 0.0
    latency_count: int = 0
    peak_minute: int = 0  # outbound messages created in the busiest wall-clock minute
    segments: int = 0  # segments of outbound messages
    international: int = 0  # outbound messages to another calling code than home
    spend_by_country: Mapping[str, float] = field(default_factory=dict)  # calling code -> price
    by_status: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (direction, status)
    by_error: Mapping[str, int] = field(default_factory=dict)  # error code as text

    @property
    def settled(self) -> int:
        """Outbound messages with a final delivery outcome (the delivery rate's denominator)."""
        return self.delivered + self.failed

    @property
    def delivery_ratio(self) -> float | None:
        return self.delivered / self.settled if self.settled else None

    @property
    def error_ratio(self) -> float | None:
        return self.with_error / self.outbound if self.outbound else None

    @property
    def segments_per_message(self) -> float | None:
        return self.segments / self.outbound if self.outbound else None

    @property
    def international_ratio(self) -> float | None:
        return self.international / self.outbound if self.outbound else None

    @property
    def latency_mean(self) -> float | None:
        return self.latency_sum / self.latency_count if self.latency_count else None


def window_stats(
    records: Iterable[MessageRecord],
    now: float,
    window_seconds: float,
    exclude: frozenset[str] = frozenset(),
    home_code: str = "1",
) -> WindowStats:
    """Summarise the messages created in ``[now - window_seconds, now]``."""
    edge = now - window_seconds
    outbound = delivered = failed = with_error = filtered = latency_n = 0
    latency_sum = 0.0
    by_status: Counter[tuple[str, str]] = Counter()
    by_error: Counter[str] = Counter()
    per_minute: Counter[int] = Counter()
    spend: defaultdict[str, float] = defaultdict(float)
    segments = international = 0
    for r in records:
        if r.created < edge or r.sid in exclude:
            continue
        by_status["outbound" if r.outbound else "inbound", r.status] += 1
        if r.error_code is not None:
            by_error[str(r.error_code)] += 1
        if not r.outbound:
            continue
        outbound += 1
        per_minute[int(r.created // 60)] += 1
        segments += r.segments
        if r.country is not None and r.country != home_code:
            international += 1
        if r.price is not None:
            spend[r.country or "unknown"] += r.price
        if r.error_code is not None:
            with_error += 1
            if r.error_code == CARRIER_FILTERED_ERROR:
                filtered += 1
        if r.status in DELIVERED_STATUSES:
            delivered += 1
            if r.updated is not None:
                latency_sum += max(0.0, r.updated - r.created)
                latency_n += 1
        elif r.status in FAILED_STATUSES:
            failed += 1
    return WindowStats(
        window_seconds=window_seconds,
        outbound=outbound,
        delivered=delivered,
        failed=failed,
        with_error=with_error,
        carrier_filtered=filtered,
        latency_sum=latency_sum,
        latency_count=latency_n,
        by_status=dict(by_status),
        by_error=dict(by_error),
        peak_minute=max(per_minute.values(), default=0),
        segments=segments,
        international=international,
        spend_by_country=dict(spend),
    )


class ShareBaseline:
    """An account's usual share of international destinations: an exponentially weighted
    mean over about a day (``tau``) of each cycle's window share. In memory only: after a
    restart it learns again from the first whole window."""

    def __init__(self, tau: float = 86_400.0) -> None:
        self.tau = tau
        self.value: float | None = None
        self._at: float | None = None

    def update(self, share: float, now: float) -> None:
        if self.value is None or self._at is None:
            self.value, self._at = share, now
            return
        weight = 1.0 - math.exp(-max(0.0, now - self._at) / self.tau)
        self.value += weight * (share - self.value)
        self._at = now
