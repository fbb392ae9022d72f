"""The application database as an input: the runbook's diagnosis queries, joined with what
this cycle's Twilio accounts and webhooks saw (:func:`sms_monitor.core.joins.database_view`).

Seven days of message text (the content report) are read every ``content_interval``; the
report is kept between reads.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime

import structlog

from sms_monitor.config import DatabaseConfig, Settings
from sms_monitor.core.classify import Status
from sms_monitor.core.content import ContentReport, content_report
from sms_monitor.core.dbchecks import GROUP, DatabaseView, database_checks
from sms_monitor.core.facts import DatabaseFacts
from sms_monitor.core.joins import database_view
from sms_monitor.core.snapshot import (
    DATABASE,
    WEBHOOKS,
    AccountSnapshot,
    DatabaseSnapshot,
    WebhooksPart,
)
from sms_monitor.core.sources import SourceTracker, connection_check
from sms_monitor.inputs.base import JOIN, CycleContext, Input, Wiring
from sms_monitor.inputs.database import DatabaseSource

log = structlog.get_logger("sms_monitor.database")


DATABASE_QUERIES = 8  # statements a cycle runs, at most (each under statement_timeout)
# The queries behind the checks that count in the verdict; the others (sms_fallback,
# content, notification_rules) only leave their own check unknown when they fail.
COUNTED_QUERIES = frozenset({"poll", "invalid_phone_numbers", "queue_delay", "opted_out_clients",
                             "optout_lookup", "reconciliation"})


def failure_summary(failures: Mapping[str, str]) -> str:
    """One line for the failed queries: the reason once when they all share it."""
    reasons = set(failures.values())
    if len(reasons) == 1 and len(failures) > 1:
        return f"{reasons.pop()} ({len(failures)} queries)"
    return "; ".join(f"{query}: {reason}" for query, reason in sorted(failures.items()))[:300]


class DatabaseInput:
    key = DATABASE
    stage = JOIN

    def __init__(self, config: DatabaseConfig, settings: Settings, wiring: Wiring) -> None:
        self.config = config
        self.settings = settings
        self.wiring = wiring
        self.clock = wiring.clock
        self.source = DatabaseSource(config)
        self.errors: Counter[tuple[str, str]] = Counter()
        self.content: ContentReport | None = None
        self.content_read_at: float | None = None
        self._last_success: float | None = None
        self.tracker = SourceTracker(DATABASE)

    @property
    def last_success(self) -> float | None:
        return self._last_success

    def close(self) -> None:
        self.source.close()

    def read(self, ctx: CycleContext) -> DatabaseSnapshot:
        started = time.monotonic()
        try:
            return self._read(ctx, started)
        except Exception as exc:  # a bug here must not cost the Twilio checks
            log.exception("database_poll_crashed", error=type(exc).__name__)
            self.errors["poll", "internal"] += 1
            facts = DatabaseFacts(failures={"poll": "internal error"}, causes={"poll": "internal"})
            return self._part(facts, ctx, started)

    def _read(self, ctx: CycleContext, started: float) -> DatabaseSnapshot:
        cfg = self.config
        now = self.clock()
        accounts = [p for p in ctx.parts.values() if isinstance(p, AccountSnapshot)]
        webhooks = ctx.parts.get(WEBHOOKS)
        edge = self.wiring.window_edge(now, self.settings.window_seconds)
        view = database_view(
            accounts, webhooks.keywords if isinstance(webhooks, WebhooksPart) else (),
            now=now, window=max(0.0, now - edge), grace=cfg.optout_grace,
            reconcile_lag=cfg.reconcile_lag)
        content_due = self.content_read_at is None or \
            now - self.content_read_at >= cfg.content_interval
        span_end = now - cfg.reconcile_lag
        facts = self.source.poll(datetime.fromtimestamp(now, UTC), view.candidates.keys(),
                                 (datetime.fromtimestamp(edge, UTC),
                                  datetime.fromtimestamp(span_end, UTC)),
                                 read_content=content_due)
        if facts.content_rows is not None:
            self.content = content_report(list(facts.content_rows), cfg.practice_name,
                                          cfg.spam_words)
            self.content_read_at = now
        for query, cause in facts.causes.items():
            self.errors[query, cause] += 1
        if facts.up:
            self._last_success = self.clock()
        return self._part(facts, ctx, started, view=replace(view, content=self.content))

    def _part(self, facts: DatabaseFacts, ctx: CycleContext, started: float,
              view: DatabaseView | None = None) -> DatabaseSnapshot:
        view = view or DatabaseView(messages_ok=False)
        cfg = self.config
        counted = {q: r for q, r in facts.failures.items() if q in COUNTED_QUERIES}
        source = self.tracker.observe(not counted, failure_summary(counted))
        checks = database_checks(
            facts, view, self.settings.thresholds, self.settings.min_samples, cfg.fallback_share,
            cfg.optout_grace, unexpected=(cfg.unexpected_sends_ratio, cfg.unexpected_sends_margin),
            connection=connection_check(source, GROUP, self.settings.unreachable_cycles))
        by_name = {c.name: c for c in checks}
        log.info("database_poll_done", up=facts.up, overall=checks[-1].status.value,
                 failed=sorted(facts.failures), seconds=round(time.monotonic() - started, 3))

        def count(name: str) -> int | None:
            c = by_name[name]
            return int(c.value) if c.value is not None and c.status is not Status.UNKNOWN \
                else None

        return DatabaseSnapshot(
            checks=tuple(checks), facts=facts,
            sent_to_opted_out=count("sent_to_opted_out"),
            optout_unprocessed=count("optout_unprocessed"),
            twilio_in_span=view.twilio_in_span,
            poll_seconds=time.monotonic() - started,
            query_errors=self.errors,
            content=self.content,
            source=source,
        )


def build(settings: Settings, wiring: Wiring) -> Sequence[Input]:
    return [DatabaseInput(settings.database, settings, wiring)] if settings.database else []
