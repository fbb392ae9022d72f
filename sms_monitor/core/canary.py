"""The synthetic canary's bookkeeping: probes in flight, their outcomes, the latest result.

Pure and thread-safe: the edge (``inputs/canary.py``) reports what it sent and what it
read; status callbacks report what Twilio told us; the clock is injected. A probe ends as
``delivered`` (end-to-end latency known), ``failed`` (undelivered or failed at Twilio),
``timeout`` (nothing final within the timeout) or, before that, ``send_error`` (the API
refused or could not be reached). In API-only mode (Twilio's test credentials) a probe
ends as ``accepted`` as soon as the API has taken it.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from sms_monitor.core.classify import CheckResult, Status
from sms_monitor.core.frozen import Immutable
from sms_monitor.core.records import DELIVERED_STATUSES, FINAL_STATUSES
from sms_monitor.core.sources import SourceState

SUCCESS = frozenset({"delivered", "accepted"})


@dataclass(frozen=True)
class CanaryView(Immutable):
    """The canary's part of the snapshot: what it has seen of its probes at one moment."""

    account: str
    api_only: bool
    results: Mapping[str, int] = field(default_factory=dict)  # probes by result, since start
    success: bool | None = None  # the last finished probe's outcome (None: none finished yet)
    latency: float | None = None  # its end-to-end (or API) latency, seconds
    last_success: float | None = None  # when the last successful probe finished
    last_result: str | None = None
    in_flight: int = 0

    @property
    def checks(self) -> tuple[CheckResult, ...]:
        return ()  # the canary is judged by its alerts (SmsCanaryFailing), not a check

    @property
    def verdict(self) -> Status | None:
        return None

    @property
    def sources(self) -> tuple[SourceState, ...]:
        return ()  # its account is the source; a failing probe is the canary's alert


class CanaryTracker:
    def __init__(self, account: str, timeout: float, api_only: bool = False) -> None:
        self.account = account
        self.timeout = timeout
        self.api_only = api_only
        self._lock = threading.Lock()
        self._pending: dict[str, float] = {}  # SID -> when it was sent (our clock)
        # every SID the canary sent recently, so the poller's copies stay out of the statistics
        self._recent: deque[str] = deque(maxlen=10_000)
        self._known: set[str] = set()
        self._results: Counter[str] = Counter()
        self._success: bool | None = None
        self._latency: float | None = None
        self._last_success: float | None = None
        self._last_result: str | None = None

    def owns(self, sid: str) -> bool:
        return sid in self._known

    def sent(self, sid: str, at: float, api_seconds: float) -> None:
        """The API accepted a probe at ``at`` (our clock) after ``api_seconds``."""
        with self._lock:
            if len(self._recent) == self._recent.maxlen:
                self._known.discard(self._recent[0])
            self._recent.append(sid)
            self._known.add(sid)
            if self.api_only:
                self._finish("accepted", at, api_seconds)
            else:
                self._pending[sid] = at

    def send_failed(self, at: float) -> None:
        with self._lock:
            self._finish("send_error", at, None)

    def observe(self, sid: str, status: str, at: float, created: float | None = None) -> bool:
        """A status for one of our probes (callback: ``at`` is its arrival; poll: ``created``
        and ``at`` are Twilio's dates). Returns whether ``sid`` is a canary message."""
        if sid not in self._known:
            return False
        with self._lock:
            sent_at = self._pending.get(sid)
            if sent_at is None or status not in FINAL_STATUSES:
                return True
            del self._pending[sid]
            start = created if created is not None else sent_at
            if status in DELIVERED_STATUSES:
                self._finish("delivered", at, max(0.0, at - start))
            else:
                self._finish("failed", at, None)
        return True

    def pending(self, sent_before: float | None = None) -> list[str]:
        """Probes in flight (sent before ``sent_before``, when given)."""
        with self._lock:
            return [sid for sid, at in self._pending.items()
                    if sent_before is None or at < sent_before]

    def expire(self, now: float) -> int:
        """Probes older than the timeout have failed; returns how many."""
        with self._lock:
            late = [sid for sid, at in self._pending.items() if now - at >= self.timeout]
            for sid in late:
                del self._pending[sid]
                self._finish("timeout", now, None)
            return len(late)

    def _finish(self, result: str, at: float, latency: float | None) -> None:
        self._results[result] += 1
        self._last_result = result
        self._success = result in SUCCESS
        if self._success:  # the latency shown is the last successful probe's
            self._latency = latency
            self._last_success = at

    def view(self) -> CanaryView:
        with self._lock:
            return CanaryView(account=self.account, api_only=self.api_only,
                              results=dict(self._results), success=self._success,
                              latency=self._latency, last_success=self._last_success,
                              last_result=self._last_result, in_flight=len(self._pending))
