"""One poll cycle over every configured source, producing a Snapshot.

``check`` runs one cycle; ``run`` and ``demo`` run cycles on the scheduler.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog

from sms_monitor.config import AccountConfig, Settings

if TYPE_CHECKING:
    from sms_monitor.alerts.engine import AlertEngine
from sms_monitor.core.checks import account_checks
from sms_monitor.core.classify import Status
from sms_monitor.core.content import ContentReport, content_report
from sms_monitor.core.dbchecks import (
    DatabaseView,
    KeywordEvent,
    database_checks,
    latest_optouts,
    optout_candidates,
)
from sms_monitor.core.facts import AccountFacts
from sms_monitor.core.keywords import OPTIN, OPTOUT, KeywordMatcher
from sms_monitor.core.records import MessageRecord
from sms_monitor.core.snapshot import AccountSnapshot, DatabaseSnapshot, Snapshot, SnapshotHolder
from sms_monitor.core.stats import window_stats
from sms_monitor.core.statuspage import statuspage_check
from sms_monitor.core.window import MessageWindow
from sms_monitor.inputs.canary import CanaryProber
from sms_monitor.inputs.database import DatabaseSource
from sms_monitor.inputs.statuspage import StatusPageSource
from sms_monitor.inputs.telemetry import RequestLog
from sms_monitor.inputs.twilio import TwilioPoller
from sms_monitor.inputs.webhooks import CallbackInbox, InboundEvent
from sms_monitor.storage.audit import KeywordAudit

log = structlog.get_logger("sms_monitor.monitor")

Clock = Callable[[], float]


def build_alert_engine(settings: Settings, clock: Clock) -> AlertEngine:
    from sms_monitor.alerts.engine import AlertEngine
    from sms_monitor.alerts.leader import Leadership
    from sms_monitor.alerts.notify import Notifier
    from sms_monitor.alerts.store import AlertStore

    cfg = settings.alerts
    assert cfg is not None
    store = AlertStore(cfg.store_url, cfg.prefix, cfg.store_schema)  # created on first use
    return AlertEngine(
        config=cfg, accounts=[a.name for a in settings.accounts],
        notifier=Notifier(settings.smtp_url, settings.alert_from, cfg.alertmanager_url,
                          timeout=settings.request_timeout),
        store=store, leadership=Leadership(cfg.store_url), clock=clock,
        min_samples=settings.min_samples)


def month_fraction(now: float) -> float:
    """Share of the current calendar month (UTC) that has passed at ``now``."""
    t = datetime.fromtimestamp(now, UTC)
    start = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start.replace(year=start.year + 1, month=1) if start.month == 12
           else start.replace(month=start.month + 1))
    return (t - start) / (end - start)


@dataclass
class AccountState:
    config: AccountConfig
    poller: TwilioPoller
    window: MessageWindow
    malformed_total: int = 0
    last_success: float | None = None
    errors: Counter[tuple[str, str]] = field(default_factory=Counter)
    usage: tuple[float, float, str | None, float] | None = None  # today, month, currency, at


@dataclass
class Monitor:
    settings: Settings
    clock: Clock = time.time
    sleep: Callable[[float], None] = time.sleep
    holder: SnapshotHolder = field(default_factory=SnapshotHolder)

    @property
    def retention(self) -> float:
        """How long message records are kept: the window, or a longer alert rule window."""
        alerts = self.settings.alerts
        return max(self.settings.window_seconds, alerts.max_window if alerts else 0.0)

    def __post_init__(self) -> None:
        self.requests_log = RequestLog()
        self.accounts = [
            AccountState(
                config=a,
                poller=TwilioPoller(a, self.settings, self.requests_log, sleep=self.sleep),
                window=MessageWindow(self.retention, self.settings.settle_seconds),
            )
            for a in self.settings.accounts
        ]
        self.cycles = 0
        self.database = DatabaseSource(self.settings.database) if self.settings.database else None
        self.database_errors: Counter[tuple[str, str]] = Counter()
        self.database_last_success: float | None = None
        self.content: ContentReport | None = None
        self.content_read_at: float | None = None
        db, inbound = self.settings.database, self.settings.inbound
        self.keywords = KeywordMatcher(
            **({"optout": db.optout_keywords} if db else {}),
            **({"optin": inbound.optin_keywords, "help_words": inbound.help_keywords}
               if inbound else {}))
        for state in self.accounts:
            state.poller.keywords = self.keywords
        self.callbacks = CallbackInbox(
            {a.config.account_sid: a.config.auth_token.get_secret_value() for a in self.accounts},
            public_url=self.settings.public_url, clock=self.clock, keywords=self.keywords,
            on_inbound=self.record_inbound)
        # Keyword messages posted to /twilio/inbound, held (with the sender's number) for the
        # window so the opt-out checks see them before any poll does.
        self._inbound_lock = threading.Lock()
        self._inbound: deque[tuple[str, KeywordEvent]] = deque(maxlen=100_000)
        self.inbound_keywords: Counter[tuple[str, str]] = Counter()
        names = {a.config.account_sid: a.config.name for a in self.accounts}
        self.audit = (KeywordAudit(inbound.audit_url, inbound.prefix, accounts=names)
                      if inbound else None)
        # Set by the daemon: called with the moment an opt-out's grace period ends, so the
        # checks run then and not a poll interval later.
        self.on_deadline: Callable[[float], None] | None = None
        self.canary: CanaryProber | None = None
        canary = self.settings.canary
        if canary is not None:
            account = next(a.config for a in self.accounts if a.config.name == canary.account)
            self.canary = CanaryProber(canary, account, self.requests_log,
                                       timeout=self.settings.request_timeout,
                                       public_url=self.settings.public_url, clock=self.clock)
        self.statuspage = (StatusPageSource(self.settings.statuspage_url,
                                            timeout=min(5.0, self.settings.request_timeout),
                                            interval=self.settings.statuspage_interval)
                           if self.settings.statuspage_url else None)
        self.alerts: AlertEngine | None = None
        if self.settings.alerts is not None:
            self.alerts = build_alert_engine(self.settings, self.clock)

    def _run_alerts(self, snapshot: Snapshot) -> Snapshot:
        """Evaluate notification_rules against this cycle and notify; never fails the cycle."""
        if self.alerts is None:
            return snapshot
        records = {s.config.name: list(s.window.records.values()) for s in self.accounts}
        rows = snapshot.database.facts.rule_rows if snapshot.database is not None else None
        try:
            return replace(snapshot, alerts=self.alerts.cycle(snapshot, records, rows))
        except Exception as exc:  # a bug in the engine must not stop monitoring
            log.exception("alert_engine_crashed", error=type(exc).__name__)
            return snapshot

    def record_inbound(self, event: InboundEvent) -> None:
        """An incoming keyword message from the webhook: remember it, audit it, and ask for
        a check when the application's grace period to process an opt-out has passed."""
        name = next((s.config.name for s in self.accounts
                     if s.config.account_sid == event.account_sid), event.account_sid)
        with self._inbound_lock:
            self.inbound_keywords[name, event.kind] += 1
            if event.kind in (OPTOUT, OPTIN):
                self._inbound.append((event.sid, KeywordEvent(event.number, event.at,
                                                              event.kind)))
        if event.kind == OPTOUT and self.database is not None and self.on_deadline is not None:
            self.on_deadline(event.at + self.database.config.optout_grace)
        if self.audit is not None:
            self.audit.record(event)  # queued; written by the audit's own thread
        log.info("inbound_keyword", account=name, kind=event.kind)

    def _webhook_keywords(self, edge: float, polled: set[str]) -> list[KeywordEvent]:
        """Keyword events from the webhook in the window that no poll has brought yet."""
        with self._inbound_lock:
            while self._inbound and self._inbound[0][1].created < edge:
                self._inbound.popleft()
            return [e for sid, e in self._inbound if sid not in polled]

    def close(self) -> None:
        if self.audit is not None:
            self.audit.close()
        if self.database is not None:
            self.database.close()
        if self.alerts is not None:
            self.alerts.close()

    def _poll_database(self, source: DatabaseSource, accounts: list[AccountSnapshot]
                       ) -> DatabaseSnapshot:
        """The database checks, joined with what this cycle's Twilio windows hold."""
        cfg = source.config
        started = time.monotonic()
        now = self.clock()
        edge = now - self.settings.window_seconds
        events: list[KeywordEvent] = []
        outbound: list[MessageRecord] = []
        polled: set[str] = set()
        for state in self.accounts:
            records = state.window.records
            for sid, number in state.window.keyword_numbers.items():
                rec = records.get(sid)
                if rec is not None and rec.keyword and rec.created >= edge:
                    events.append(KeywordEvent(number, rec.created, rec.keyword))
                    polled.add(sid)
            outbound.extend(r for r in records.values() if r.outbound and r.created >= edge)
        events.extend(self._webhook_keywords(edge, polled))
        candidates = optout_candidates(events, now, cfg.optout_grace)
        span_end = now - cfg.reconcile_lag
        view = DatabaseView(
            candidates=candidates,
            outbound=tuple(outbound),
            optout_times=latest_optouts(events),
            refused_21610=sum(a.stats.by_error.get("21610", 0) for a in accounts if a.stats),
            twilio_in_span=sum(1 for r in outbound if r.created < span_end),
            messages_ok=all(a.facts.messages_ok for a in accounts),
        )
        content_due = self.content_read_at is None or now - self.content_read_at >= \
            cfg.content_interval
        facts = source.poll(datetime.fromtimestamp(now, UTC), candidates.keys(),
                            (datetime.fromtimestamp(edge, UTC),
                             datetime.fromtimestamp(span_end, UTC)), read_content=content_due)
        if facts.content_rows is not None:
            self.content = content_report(facts.content_rows, cfg.practice_name, cfg.spam_words)
            self.content_read_at = now
        view = replace(view, content=self.content)
        for query, cause in facts.causes.items():
            self.database_errors[query, cause] += 1
        if facts.up:
            self.database_last_success = self.clock()
        checks = database_checks(facts, view, self.settings.thresholds, self.settings.min_samples,
                                 cfg.fallback_share, cfg.optout_grace)
        by_name = {c.name: c for c in checks}
        log.info("database_poll_done", up=facts.up, overall=checks[-1].status.value,
                 failed=sorted(facts.failures), seconds=round(time.monotonic() - started, 3))

        def count(name: str) -> int | None:
            v = by_name[name].value
            return int(v) if v is not None and by_name[name].status is not Status.UNKNOWN else None

        return DatabaseSnapshot(
            checks=tuple(checks), facts=facts,
            sent_to_opted_out=count("sent_to_opted_out"),
            optout_unprocessed=count("optout_unprocessed"),
            twilio_in_span=view.twilio_in_span,
            poll_seconds=time.monotonic() - started,
            query_errors=dict(self.database_errors),
            content=self.content,
        )

    def _poll_account(self, state: AccountState) -> AccountSnapshot:
        started = time.monotonic()
        now = self.clock()
        horizon = state.window.fetch_horizon(now)
        usage_due = state.usage is None or now - state.usage[3] >= self.settings.usage_interval
        result = state.poller.poll(horizon, read_usage=usage_due)
        now = self.clock()
        f = result.facts
        if f.spend_month is not None and f.spend_today is not None:
            state.usage = (f.spend_today, f.spend_month, f.spend_currency, now)
        if state.usage is not None:
            result.facts = replace(f, spend_today=state.usage[0], spend_month=state.usage[1],
                                   spend_currency=state.usage[2], spend_as_of=state.usage[3])
        # a read that failed part-way is dropped whole: its pages would move the horizon past
        # what was not read
        canary = self.canary if self.canary is not None \
            and self.canary.account.name == state.config.name else None
        for rec in result.records if result.facts.messages_ok else ():
            if canary is not None and canary.excludes(rec.sid, rec.peer):
                continue  # the probe's own messages are not the practice's traffic
            state.window.upsert(rec, result.keyword_numbers.get(rec.sid))
        if result.facts.messages_ok:
            state.window.backfilled = True
        state.window.prune(now)
        state.malformed_total += result.malformed
        for part, cause in result.facts.failures.items():
            state.errors[part, cause] += 1
        if result.malformed:
            log.warning("twilio_malformed_messages", account=state.config.name,
                        count=result.malformed)
        up = not (set(result.facts.failures) - {"usage"})  # spend is read now and then
        if up:
            state.last_success = now
        stats = window_stats(state.window.records.values(), now, self.settings.window_seconds,
                             home_code=self.settings.home_country_code)
        checks = account_checks(state.config.name, result.facts, stats,
                                dict(self.settings.thresholds), self.settings.min_samples,
                                state.config.throughput_limit,
                                budget=state.config.monthly_budget,
                                month_elapsed=month_fraction(now))
        elapsed = time.monotonic() - started
        log.info("twilio_poll_done", account=state.config.name, pages=result.pages,
                 fetched=len(result.records), window=len(state.window), up=up,
                 overall=checks[-1].status.value, seconds=round(elapsed, 3))
        return AccountSnapshot(
            account=state.config.name,
            checks=tuple(checks),
            facts=result.facts,
            stats=stats,
            latency=state.window.latency.freeze(),
            timed=dict(state.window.timed),
            up=up,
            poll_seconds=elapsed,
            window_records=len(state.window),
            malformed_records=state.malformed_total,
            poll_errors=dict(state.errors),
        )

    def _poll_account_safely(self, state: AccountState) -> AccountSnapshot:
        """A bug while polling one account leaves its checks unknown, never the others'."""
        try:
            return self._poll_account(state)
        except Exception as exc:
            log.exception("account_poll_crashed", account=state.config.name,
                          error=type(exc).__name__)
            state.errors["poll", "internal"] += 1
            facts = AccountFacts(phone_number=state.config.phone_number,
                                 failures={"poll": "internal"})
            checks = account_checks(state.config.name, facts, None,
                                    dict(self.settings.thresholds), self.settings.min_samples)
            return AccountSnapshot(
                account=state.config.name, checks=tuple(checks), facts=facts, stats=None,
                latency=state.window.latency.freeze(), up=False, poll_seconds=0.0,
                window_records=len(state.window), malformed_records=state.malformed_total,
                poll_errors=dict(state.errors))

    def _apply_callbacks(self) -> None:
        by_sid = {s.config.account_sid: s for s in self.accounts}
        for e in self.callbacks.drain():
            if self.canary is not None and self.canary.tracker.observe(e.sid, e.status, e.at):
                continue
            state = by_sid.get(e.account_sid)
            if state is not None:
                state.window.apply_callback(e.sid, e.status, e.error_code, e.at)

    def _inbound_counts(self) -> dict[tuple[str, str], int]:
        with self._inbound_lock:
            return dict(self.inbound_keywords)

    def run_cycle(self) -> Snapshot:
        """Poll every account (in parallel), classify, publish and return the Snapshot."""
        started = time.monotonic()
        self._apply_callbacks()
        if len(self.accounts) > 1:
            with ThreadPoolExecutor(max_workers=min(8, len(self.accounts))) as pool:
                accounts = list(pool.map(self._poll_account_safely, self.accounts))
        else:
            accounts = [self._poll_account_safely(s) for s in self.accounts]
        database = None
        if self.database is not None:
            try:
                database = self._poll_database(self.database, accounts)
            except Exception as exc:  # a bug here must not cost the Twilio checks
                log.exception("database_poll_crashed", error=type(exc).__name__)
                self.database_errors["poll", "internal"] += 1
        status_facts = self.statuspage.poll(self.clock()) if self.statuspage else None
        if self.canary is not None:
            try:
                self.canary.follow()
            except Exception as exc:  # the probe must never cost a cycle
                log.exception("canary_follow_crashed", error=type(exc).__name__)
        if self.audit is not None and self.audit.queued:
            self.audit.flush(wait=False)  # rows a failed write kept; never waits on a writer
        self.cycles += 1
        last_success = {f"twilio:{s.config.name}": s.last_success
                        for s in self.accounts if s.last_success is not None}
        if self.database_last_success is not None:
            last_success["database"] = self.database_last_success
        if self.statuspage is not None and self.statuspage.last_ok is not None:
            last_success["statuspage"] = self.statuspage.last_ok
        snapshot = Snapshot(
            taken_at=self.clock(),
            accounts=tuple(accounts),
            requests=self.requests_log.freeze(),
            last_success=last_success,
            cycles=self.cycles,
            cycle_seconds=time.monotonic() - started,
            database=database,
            statuspage=status_facts,
            callbacks=self.callbacks.counts(),
            inbound_keywords=self._inbound_counts(),
            callback_drops=self.callbacks.dropped,
            audit=(self.audit.queued, self.audit.written, self.audit.failures,
                   self.audit.dropped)
            if self.audit is not None else None,
            canary=self.canary.tracker.view() if self.canary is not None else None,
            statuspage_check=statuspage_check(status_facts) if status_facts else None,
        )
        snapshot = self._run_alerts(snapshot)
        self.holder.publish(snapshot)
        return snapshot
