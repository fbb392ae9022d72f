"""The immutable Snapshot every reader (scrape, check, landing page) reads.

A poll cycle builds a new Snapshot and swaps it in atomically; readers never
call sources, so a scrape never waits for Twilio.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from sms_monitor.core.canary import CanaryView
from sms_monitor.core.classify import CheckResult, Status, worst
from sms_monitor.core.content import ContentReport
from sms_monitor.core.facts import AccountFacts, DatabaseFacts, StatusPageFacts
from sms_monitor.core.stats import WindowStats
from sms_monitor.core.window import HistogramState


@dataclass(frozen=True)
class RequestTelemetry:
    """Cumulative Twilio request counts and durations up to the snapshot."""

    counts: dict[tuple[str, str, str], int] = field(default_factory=dict)  # account, endpoint, code
    durations: dict[tuple[str, str], HistogramState] = field(default_factory=dict)
    retries: dict[tuple[str, str], int] = field(default_factory=dict)  # account, reason


@dataclass(frozen=True)
class AccountSnapshot:
    account: str
    checks: tuple[CheckResult, ...]
    facts: AccountFacts
    stats: WindowStats | None
    latency: HistogramState
    up: bool
    poll_seconds: float
    window_records: int
    malformed_records: int = 0
    # cumulative failed poll parts: (part, cause) -> count
    poll_errors: dict[tuple[str, str], int] = field(default_factory=dict)
    # deliveries in the latency histogram by where their time came from (callback, poll)
    timed: dict[str, int] = field(default_factory=dict)

    @property
    def overall(self) -> Status:
        return self.checks[-1].status if self.checks else Status.UNKNOWN


@dataclass(frozen=True)
class DatabaseSnapshot:
    checks: tuple[CheckResult, ...]
    facts: DatabaseFacts
    sent_to_opted_out: int | None
    optout_unprocessed: int | None
    twilio_in_span: int | None
    poll_seconds: float
    query_errors: dict[tuple[str, str], int] = field(default_factory=dict)  # (query, cause)
    content: ContentReport | None = None

    @property
    def overall(self) -> Status:
        return self.checks[-1].status if self.checks else Status.UNKNOWN


@dataclass(frozen=True)
class AlertView:
    """One alert instance (a rule applied to a target) as readers see it."""

    rule: str
    target: str
    state: str  # inactive, pending, firing
    value: float | None
    since: float | None
    level: int
    last_notified: float | None
    severity: str
    metric: str


@dataclass(frozen=True)
class AlertsSnapshot:
    leader: bool
    alerts: tuple[AlertView, ...] = ()
    broken: tuple[tuple[str, str], ...] = ()  # (rule, reason)
    notifications: dict[tuple[str, str], int] = field(default_factory=dict)  # (channel, outcome)
    outbox_pending: int = 0
    store_ok: bool = True
    rules_ok: bool = True


@dataclass(frozen=True)
class Snapshot:
    taken_at: float
    accounts: tuple[AccountSnapshot, ...] = ()
    requests: RequestTelemetry = field(default_factory=RequestTelemetry)
    last_success: dict[str, float] = field(default_factory=dict)  # source -> POSIX seconds
    cycles: int = 0
    cycle_seconds: float = 0.0
    database: DatabaseSnapshot | None = None
    alerts: AlertsSnapshot | None = None
    statuspage: StatusPageFacts | None = None
    statuspage_check: CheckResult | None = None  # shown with the checks, not in overall
    # webhook requests by (endpoint, outcome)
    callbacks: dict[tuple[str, str], int] = field(default_factory=dict)
    inbound_keywords: dict[tuple[str, str], int] = field(default_factory=dict)  # (account, kind)
    callback_drops: int = 0  # status events lost before a cycle applied them
    # keyword audit rows: queued, written, write failures, dropped
    audit: tuple[int, int, int, int] | None = None
    canary: CanaryView | None = None

    def checks(self) -> list[CheckResult]:
        out = [c for a in self.accounts for c in a.checks]
        if self.database is not None:
            out.extend(self.database.checks)
        if self.statuspage_check is not None:
            out.append(self.statuspage_check)
        return out

    @property
    def overall(self) -> Status:
        groups = [a.overall for a in self.accounts]
        if self.database is not None:
            groups.append(self.database.overall)
        return worst(groups)


class SnapshotHolder:
    """Holds the latest Snapshot; replacing it is a single reference assignment."""

    def __init__(self) -> None:
        self._current: Snapshot | None = None
        self._ready = threading.Event()

    @property
    def current(self) -> Snapshot | None:
        return self._current

    def publish(self, snapshot: Snapshot) -> None:
        self._current = snapshot
        self._ready.set()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)
