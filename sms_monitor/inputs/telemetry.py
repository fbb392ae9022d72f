"""Thread-safe running totals of Twilio requests, frozen into each Snapshot."""

from __future__ import annotations

import threading
from collections import Counter

from sms_monitor.core.snapshot import RequestTelemetry
from sms_monitor.core.window import Histogram

# Buckets for Twilio request durations, in seconds.
REQUEST_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 7, 10, 20)


class RequestLog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str, str]] = Counter()
        self._durations: dict[tuple[str, str], Histogram] = {}
        self._retries: Counter[tuple[str, str]] = Counter()

    def record(self, account: str, endpoint: str, code: str, seconds: float) -> None:
        with self._lock:
            self._counts[account, endpoint, code] += 1
            hist = self._durations.get((account, endpoint))
            if hist is None:
                hist = self._durations[account, endpoint] = Histogram(REQUEST_BUCKETS)
            hist.observe(seconds)

    def retry(self, account: str, reason: str) -> None:
        with self._lock:
            self._retries[account, reason] += 1

    def freeze(self) -> RequestTelemetry:
        with self._lock:
            return RequestTelemetry(
                counts=dict(self._counts),
                durations={k: h.freeze() for k, h in self._durations.items()},
                retries=dict(self._retries),
            )
