"""Snapshots built by hand: parts with exact, known contents, no network, no simulator.

The core computes the stats and checks (``window_stats``, ``account_checks``) from the
records given, so a test states its inputs and asserts exact outputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from sms_monitor.core.canary import CanaryView
from sms_monitor.core.checks import account_checks
from sms_monitor.core.classify import CheckResult, Status
from sms_monitor.core.dbchecks import KeywordEvent
from sms_monitor.core.facts import AccountFacts, DatabaseFacts, StatusPageFacts
from sms_monitor.core.records import MessageRecord
from sms_monitor.core.snapshot import (
    CANARY,
    DATABASE,
    STATUSPAGE,
    WEBHOOKS,
    AccountSnapshot,
    DatabaseSnapshot,
    Part,
    RequestTelemetry,
    Snapshot,
    StatusPagePart,
    WebhooksPart,
    account_key,
)
from sms_monitor.core.stats import window_stats
from sms_monitor.core.statuspage import statuspage_check
from sms_monitor.core.thresholds import DEFAULT_THRESHOLDS
from sms_monitor.core.window import Histogram

T0 = 1_780_000_000.0  # 2026-05-28T20:26:40Z

HEALTHY_FACTS = AccountFacts(balance=120.5, currency="USD", balance_seconds=0.25,
                             account_status="active", phone_number="+15005550006",
                             phone_found=True, phone_sms_capable=True, messages_ok=True,
                             credentials_accepted=True)


def message(sid: str, created: float, status: str = "delivered", *, outbound: bool = True,
            after: float | None = 4.0, error: int | None = None, price: float | None = 0.0079,
            country: str | None = "1", peer: int | None = None, keyword: str | None = None,
            segments: int = 1) -> MessageRecord:
    """A message record; ``after`` is the seconds from creation to its last update."""
    return MessageRecord(sid=sid, outbound=outbound, status=status, error_code=error,
                         created=created, updated=None if after is None else created + after,
                         price=price if outbound else None, segments=segments, peer=peer,
                         country=country if outbound else None, keyword=keyword)


def account(name: str = "primary", records: Iterable[MessageRecord] = (), *,
            now: float = T0, window: float = 3600.0, facts: AccountFacts = HEALTHY_FACTS,
            keywords: Iterable[tuple[str, KeywordEvent]] = (), up: bool = True,
            min_samples: int = 10, **extra: Any) -> AccountSnapshot:
    """An account's part as a cycle would build it from these records and facts."""
    held = tuple(records)
    stats = window_stats(held, now, window) if facts.messages_ok else None
    checks = account_checks(name, facts, stats, dict(DEFAULT_THRESHOLDS), min_samples)
    latency = Histogram()
    for r in held:
        if r.outbound and r.delivered and r.updated is not None and r.created >= now - window:
            latency.observe(r.updated - r.created)
    return AccountSnapshot(account=name, checks=tuple(checks), facts=facts, stats=stats,
                           latency=latency.freeze(), up=up, poll_seconds=0.5,
                           window_records=len(held), records=held, keywords=tuple(keywords),
                           **extra)


def database(facts: DatabaseFacts, checks: Iterable[CheckResult] = (), **extra: Any
             ) -> DatabaseSnapshot:
    return DatabaseSnapshot(checks=tuple(checks), facts=facts, sent_to_opted_out=extra.pop(
        "sent_to_opted_out", None), optout_unprocessed=extra.pop("optout_unprocessed", None),
        twilio_in_span=extra.pop("twilio_in_span", None), poll_seconds=0.125, **extra)


def statuspage(components: Mapping[str, str], incidents: tuple[str, ...] = ()) -> StatusPagePart:
    facts = StatusPageFacts(ok=True, indicator="none", components=components,
                            open_incidents=len(incidents), incident_names=incidents,
                            read_at=T0)
    return StatusPagePart(facts, statuspage_check(facts))


def snapshot(*accounts: AccountSnapshot, db: DatabaseSnapshot | None = None,
             status_page: StatusPagePart | None = None, canary: CanaryView | None = None,
             webhooks: WebhooksPart | None = None, taken_at: float = T0,
             requests: RequestTelemetry | None = None,
             last_success: Mapping[str, float] | None = None, cycles: int = 1) -> Snapshot:
    """A snapshot with its parts in the cycle's order."""
    parts: dict[str, Part] = {}
    if webhooks is not None:
        parts[WEBHOOKS] = webhooks
    for a in accounts:
        parts[account_key(a.account)] = a
    if db is not None:
        parts[DATABASE] = db
    if status_page is not None:
        parts[STATUSPAGE] = status_page
    if canary is not None:
        parts[CANARY] = canary
    return Snapshot(taken_at=taken_at, parts=parts, requests=requests or RequestTelemetry(),
                    last_success=last_success or {}, cycles=cycles, cycle_seconds=0.75)


def check(snap: Snapshot, account_name: str, name: str) -> CheckResult:
    return next(c for c in snap.checks() if c.account == account_name and c.name == name)


GREEN, YELLOW, RED, UNKNOWN = Status.GREEN, Status.YELLOW, Status.RED, Status.UNKNOWN


def sample_snapshot() -> Snapshot:
    """One of everything, with round numbers: the snapshot behind the metric areas'
    docstring samples and the byte-exact exposition fixture."""
    from sms_monitor.core.dbchecks import DatabaseView, database_checks
    from sms_monitor.core.snapshot import AuditCounts
    from sms_monitor.core.window import HistogramState

    records = [message(f"SM{i:02d}", T0 - 600 - i * 60, after=4.0 + i) for i in range(8)]
    records += [message("SM90", T0 - 300, "undelivered", error=30007, after=20.0),
                message("SM91", T0 - 200, "sent", after=None),
                message("SM92", T0 - 100, "received", outbound=False, after=None)]
    primary = account("primary", records, min_samples=5, poll_errors={("usage", "timeout"): 1},
                      timed={"callback": 6, "poll": 2})
    facts = DatabaseFacts(invalid_phones={"phone": 2, "cell_phone": 0}, queue_delay=12.5,
                          queue_sent=40, queue_unsent=1, sms_disabled=3, settings_rows=30,
                          opted_out=frozenset(), client_optout={}, logged_recipients=10,
                          rule_rows=())
    view = DatabaseView(outbound=tuple(r for r in records if r.outbound), twilio_in_span=10)
    checks = database_checks(facts, view, DEFAULT_THRESHOLDS, 5, 0.9, 300.0)
    db = database(facts, checks, sent_to_opted_out=0, optout_unprocessed=0, twilio_in_span=10,
                  query_errors={("content", "timeout"): 2})
    requests = RequestTelemetry(
        counts={("primary", "balance", "200"): 3, ("primary", "messages", "429"): 1},
        durations={("primary", "balance"): HistogramState((0.5, 1.0), (2, 1, 0), 1.25, 3)},
        retries={("primary", "429"): 1})
    return snapshot(
        primary, db=db,
        status_page=statuspage({"SMS": "operational", "REST API": "degraded_performance"},
                               ("Delayed SMS to Canada",)),
        canary=CanaryView(account="primary", api_only=False,
                          results={"delivered": 5, "timeout": 1}, success=True, latency=6.5,
                          last_success=T0 - 30, last_result="delivered", in_flight=1),
        webhooks=WebhooksPart(requests={("status", "accepted"): 7, ("inbound", "unsigned"): 1},
                              inbound_keywords={("primary", "optout"): 2}, dropped=0,
                              audit=AuditCounts(queued=0, written=2, failures=1, dropped=0)),
        requests=requests, last_success={"twilio:primary": T0 - 5, "database": T0 - 4})


PRIVATE_SENDER = "+15017122661"  # a client's number: held in memory, never shown


def blind_database_snapshot(taken_at: float = T0) -> Snapshot:
    """A healthy account, an advisory yellow status page, the canary, webhooks, and a
    database that could not be read this cycle: the verdict is unknown, never green.

    The account holds an inbound keyword from :data:`PRIVATE_SENDER`, so a page built from
    it can be checked for leaking that number."""
    from sms_monitor.core.dbchecks import GROUP, DatabaseView, database_checks
    from sms_monitor.core.sources import SourceState, connection_check

    sample = sample_snapshot()
    healthy = account("primary", [message(f"SM{i:02d}", taken_at - 60 * i) for i in range(1, 21)],
                      now=taken_at,
                      keywords=(("primary", KeywordEvent(PRIVATE_SENDER, taken_at - 90, "optout")),))
    reads = ("invalid_phone_numbers", "queue_delay")
    facts = DatabaseFacts(failures=dict.fromkeys(reads, "connection refused"),
                          causes=dict.fromkeys(reads, "unreachable"))
    state = SourceState(DATABASE, False, 1, "connection refused")
    checks = database_checks(facts, DatabaseView(twilio_in_span=20), DEFAULT_THRESHOLDS, 10, 0.9,
                             300.0, connection=connection_check(state, GROUP, 3))
    parts = dict(sample.parts)  # the same keys, in the cycle's order
    parts[account_key("primary")] = healthy
    parts[DATABASE] = database(facts, checks, source=state)
    return replace(sample, parts=parts, taken_at=taken_at,
                   last_success={"twilio:primary": taken_at - 5, "database": taken_at - 65})
