"""The immutable Snapshot every reader (scrape, ``check``, landing page, alert engine) reads.

A cycle reads each input into a *part* (frozen: its facts, checks and counters at that
moment) and publishes them together as one Snapshot, swapped in atomically; readers never
call inputs, so a scrape never waits for Twilio. The alert engine reads the published
snapshot and publishes its own state beside it (:class:`Published`), never into it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol, TypeVar

from sms_monitor.core.canary import CanaryView
from sms_monitor.core.classify import CheckResult, Status
from sms_monitor.core.content import ContentReport
from sms_monitor.core.dbchecks import KeywordEvent
from sms_monitor.core.events import CallbackEvent
from sms_monitor.core.facts import AccountFacts, DatabaseFacts, StatusPageFacts
from sms_monitor.core.frozen import Immutable
from sms_monitor.core.records import MessageRecord
from sms_monitor.core.sources import SourceState, verdict
from sms_monitor.core.stats import WindowStats
from sms_monitor.core.status_history import StatusHistory
from sms_monitor.core.window import Gap, HistogramState, unread_seconds


class Part(Protocol):
    """What one input contributes to a snapshot."""

    @property
    def checks(self) -> tuple[CheckResult, ...]: ...

    @property
    def verdict(self) -> Status | None:
        """Its say in ``overall`` (None: its checks are advisory, shown but not counted)."""
        ...

    @property
    def sources(self) -> tuple[SourceState, ...]:
        """The outside systems it read, and whether it could."""
        ...


P = TypeVar("P")

# Part keys: one per input instance.
DATABASE = "database"
STATUSPAGE = "statuspage"
MONITOR_GROUP = "monitor"  # the pseudo-account of sms-monitor's own stores' checks
CANARY = "canary"
WEBHOOKS = "webhooks"


def account_key(name: str) -> str:
    return f"twilio:{name}"


@dataclass(frozen=True)
class RequestTelemetry(Immutable):
    """Cumulative Twilio request counts and durations up to the snapshot."""

    counts: Mapping[tuple[str, str, str], int] = field(default_factory=dict)  # account, endpoint, code
    durations: Mapping[tuple[str, str], HistogramState] = field(default_factory=dict)
    retries: Mapping[tuple[str, str], int] = field(default_factory=dict)  # account, reason


class CheckGroup:
    """A part whose checks end with the group's ``overall``, which is its say in the
    verdict."""

    checks: tuple[CheckResult, ...]

    @property
    def overall(self) -> Status:
        return self.checks[-1].status if self.checks else Status.UNKNOWN

    @property
    def verdict(self) -> Status | None:
        return self.overall

    def check(self, name: str) -> CheckResult | None:
        return next((c for c in self.checks if c.name == name), None)


@dataclass(frozen=True)
class AccountSnapshot(CheckGroup, Immutable):
    """A Twilio account's part."""

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
    poll_errors: Mapping[tuple[str, str], int] = field(default_factory=dict)
    # deliveries in the latency histogram by where their time came from (callback, poll)
    timed: Mapping[str, int] = field(default_factory=dict)
    # every record held (the window, or a longer alert-rule window), as the cycle left them
    records: tuple[MessageRecord, ...] = field(default=(), repr=False)
    # keyword messages polled, with the sender's number (in memory only): (sid, event)
    keywords: tuple[tuple[str, KeywordEvent], ...] = field(default=(), repr=False)
    source: SourceState | None = None
    # seconds of the window not read yet (0: read whole; None: the log could not be read)
    window_unread_seconds: float | None = 0.0
    gaps: tuple[Gap, ...] = ()  # what is still unread of the records' span (see core.window)
    future_dated_records: int = 0  # messages dated in the future, left out, since start

    @property
    def window_complete(self) -> bool:
        return self.window_unread_seconds == 0.0 and self.facts.messages_ok

    def read_whole_since(self, edge: float) -> bool:
        """Whether everything created since ``edge`` has been read (an alert rule's window
        may be longer than the statistics window)."""
        return self.window_complete and unread_seconds(self.gaps, edge) == 0.0

    @property
    def sources(self) -> tuple[SourceState, ...]:
        if self.source is not None:
            return (self.source,)
        return (SourceState(account_key(self.account), self.up),)


@dataclass(frozen=True)
class DatabaseSnapshot(CheckGroup, Immutable):
    """The application database's part (the pseudo-account ``database``)."""

    checks: tuple[CheckResult, ...]
    facts: DatabaseFacts
    sent_to_opted_out: int | None
    optout_unprocessed: int | None
    twilio_in_span: int | None
    poll_seconds: float
    query_errors: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (query, cause)
    content: ContentReport | None = None
    source: SourceState | None = None

    @property
    def sources(self) -> tuple[SourceState, ...]:
        if self.source is not None:
            return (self.source,)
        return (SourceState(DATABASE, self.facts.up),)


@dataclass(frozen=True)
class StatusPagePart:
    """Twilio's status page: shown with the checks, never part of ``overall``."""

    facts: StatusPageFacts
    check: CheckResult
    source: SourceState | None = None

    @property
    def checks(self) -> tuple[CheckResult, ...]:
        return (self.check,)

    @property
    def verdict(self) -> Status | None:
        return None

    @property
    def sources(self) -> tuple[SourceState, ...]:
        if self.source is not None:
            return (self.source,)
        return (SourceState(STATUSPAGE, self.facts.ok, reason=self.facts.error or ""),)


@dataclass(frozen=True)
class AuditCounts:
    """The keyword audit table's writer, since start."""

    queued: int = 0
    written: int = 0
    failures: int = 0
    dropped: int = 0


@dataclass(frozen=True)
class WebhooksPart(Immutable):
    """Twilio's webhooks (status callbacks, incoming messages) since the last cycle."""

    # requests by (endpoint, outcome), since start
    requests: Mapping[tuple[str, str], int] = field(default_factory=dict)
    inbound_keywords: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (account, kind)
    dropped: int = 0  # status events lost before a cycle applied them
    audit: AuditCounts | None = None
    # accepted status callbacks that arrived since the last cycle
    status_events: tuple[CallbackEvent, ...] = field(default=(), repr=False)
    # keyword messages posted to /twilio/inbound, with the sender (in memory only)
    keywords: tuple[tuple[str, KeywordEvent], ...] = field(default=(), repr=False)
    # the keyword audit store (when configured) and its check
    audit_source: SourceState | None = None
    audit_check: CheckResult | None = None

    @property
    def checks(self) -> tuple[CheckResult, ...]:
        return (self.audit_check,) if self.audit_check is not None else ()

    @property
    def verdict(self) -> Status | None:
        return self.audit_check.status if self.audit_check is not None else None

    @property
    def sources(self) -> tuple[SourceState, ...]:
        return (self.audit_source,) if self.audit_source is not None else ()


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
    acknowledged_by: str | None = None  # who acknowledged it (no escalation while it holds)
    acknowledged_until: float | None = None  # None: until it resolves
    silenced_until: float | None = None  # no notification of it until then


@dataclass(frozen=True)
class AlertsSnapshot(Immutable):
    """The alert engine's state after it evaluated a snapshot."""

    leader: bool
    alerts: tuple[AlertView, ...] = ()
    broken: tuple[tuple[str, str], ...] = ()  # (rule, reason)
    # (rule, reason) -> the rule's recipients refused by [alerts] webhook_allow (as read)
    recipients_refused: Mapping[tuple[str, str], int] = field(default_factory=dict)
    # (rule, reason) -> notifications given up at send time (a refused address), since start
    notifications_refused: Mapping[tuple[str, str], int] = field(default_factory=dict)
    notifications: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (channel, outcome)
    outbox_pending: int = 0
    store_ok: bool = True
    rules_readable: bool = True  # the last read of notification_rules succeeded
    rules_read_failures: int = 0  # reads of notification_rules that failed, since start
    save_failures: Mapping[str, int] = field(default_factory=dict)  # rule -> failed saves


@dataclass(frozen=True)
class Snapshot(Immutable):
    taken_at: float
    # one part per input, in the order the cycle read them (accounts, database, ...)
    parts: Mapping[str, Part] = field(default_factory=dict)
    requests: RequestTelemetry = field(default_factory=RequestTelemetry)
    last_success: Mapping[str, float] = field(default_factory=dict)  # source -> POSIX seconds
    cycles: int = 0
    cycle_seconds: float = 0.0

    def part(self, key: str, kind: type[P]) -> P | None:
        value = self.parts.get(key)
        return value if isinstance(value, kind) else None

    def parts_of(self, kind: type[P]) -> Iterator[P]:
        return (p for p in self.parts.values() if isinstance(p, kind))

    @property
    def accounts(self) -> tuple[AccountSnapshot, ...]:
        return tuple(self.parts_of(AccountSnapshot))

    @property
    def database(self) -> DatabaseSnapshot | None:
        return self.part(DATABASE, DatabaseSnapshot)

    @property
    def statuspage(self) -> StatusPageFacts | None:
        sp = self.part(STATUSPAGE, StatusPagePart)
        return sp.facts if sp is not None else None

    @property
    def statuspage_check(self) -> CheckResult | None:
        sp = self.part(STATUSPAGE, StatusPagePart)
        return sp.check if sp is not None else None

    @property
    def canary(self) -> CanaryView | None:
        return self.part(CANARY, CanaryView)

    @property
    def webhooks(self) -> WebhooksPart:
        return self.part(WEBHOOKS, WebhooksPart) or WebhooksPart()

    def checks(self) -> list[CheckResult]:
        return [c for p in self.parts.values() for c in p.checks]

    def sources(self) -> list[SourceState]:
        return [s for p in self.parts.values() for s in p.sources]

    def verdict_detail(self) -> str:
        """Why the verdict is what it is, in one line."""
        status = self.overall
        blind = [f"{s.name} unreadable" + (f" for {s.failing_cycles} cycles" if
                                            s.failing_cycles > 1 else "")
                 + (f" ({s.reason})" if s.reason else "")
                 for s in self.sources() if not s.ok]
        groups = [(c.account, c.detail) for p in self.parts.values() if p.verdict is status
                  for c in p.checks[-1:] if status is not Status.GREEN]
        named = "; ".join(f"{account}: {detail}" for account, detail in groups if detail)
        if status is Status.UNKNOWN and blind:
            return "; ".join(blind)
        if status is Status.RED:
            return named + ("; " + "; ".join(blind) if blind else "")
        if status is Status.GREEN:
            n = len(self.sources())
            return f"every counted check green or quiet; {n} source{'s' * (n != 1)} readable"
        return named or "nothing known yet"

    @property
    def overall(self) -> Status:
        """The verdict across groups (see :func:`sms_monitor.core.sources.verdict`)."""
        return verdict((v for p in self.parts.values() if (v := p.verdict) is not None),
                       self.sources())


@dataclass(frozen=True)
class Published:
    """What readers see: the last snapshot, the alert engine's state after it, and since
    when each of its checks has had its status (kept by the holder across snapshots)."""

    snapshot: Snapshot
    alerts: AlertsSnapshot | None = None
    history: StatusHistory = field(default_factory=StatusHistory)


class SnapshotHolder:
    """Holds the latest :class:`Published`; replacing it is a single reference assignment.

    It also knows when the last snapshot arrived (on ``monotonic``, never the wall clock a
    test may freeze), which is what liveness is judged by.
    """

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._published: Published | None = None
        self._ready = threading.Event()
        self._monotonic = monotonic
        self._since = monotonic()  # the last publish, or the holder's birth
        self._lock = threading.Lock()  # the cycle and the alert sender both publish
        # called after each publish, in the publisher's thread (the exporter renders /metrics)
        self._subscribers: list[Callable[[], None]] = []

    def subscribe(self, fn: Callable[[], None]) -> None:
        self._subscribers.append(fn)

    def unsubscribe(self, fn: Callable[[], None]) -> None:
        with contextlib.suppress(ValueError):
            self._subscribers.remove(fn)

    def _notify(self) -> None:
        for fn in list(self._subscribers):
            try:
                fn()
            except Exception:  # noqa: BLE001 - a subscriber never stops the cycle
                logging.getLogger(__name__).exception("snapshot_subscriber_failed")

    @property
    def published(self) -> Published | None:
        return self._published

    @property
    def current(self) -> Snapshot | None:
        p = self._published
        return p.snapshot if p is not None else None

    @property
    def alerts(self) -> AlertsSnapshot | None:
        p = self._published
        return p.alerts if p is not None else None

    def publish(self, snapshot: Snapshot) -> None:
        """A new snapshot; the alert state stays the last one published until the engine
        has evaluated this snapshot (a scrape in between never loses the alert metrics)."""
        with self._lock:
            previous = self._published
            history = (previous.history if previous else StatusHistory()).observe(
                snapshot.checks(), snapshot.taken_at)
            self._published = Published(snapshot, previous.alerts if previous else None,
                                        history)
        self._since = self._monotonic()
        self._ready.set()
        self._notify()

    def publish_alerts(self, alerts: AlertsSnapshot) -> None:
        """The alert engine's state for the snapshot already published."""
        with self._lock:
            p = self._published
            if p is not None:
                self._published = replace(p, alerts=alerts)
        self._notify()

    def amend_alerts(self, change: Callable[[AlertsSnapshot], AlertsSnapshot]) -> None:
        """Replace the published alert state by ``change(it)`` (the sender's counts after a
        round of sending), atomically with respect to the cycle's publishing."""
        with self._lock:
            p = self._published
            if p is not None and p.alerts is not None:
                self._published = replace(p, alerts=change(p.alerts))
        self._notify()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def stalled_for(self, max_age: float) -> float | None:
        """Seconds since the last cycle finished (or since start, before the first) when that
        is more than ``max_age``; None while the daemon is alive."""
        age = self._monotonic() - self._since
        return age if age > max_age else None
