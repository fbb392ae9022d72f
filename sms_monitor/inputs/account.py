"""A Twilio account as an input: probes and the message log, read incrementally into the
account's window; status callbacks applied to the same records.

The window and the Usage Records figures (read every ``usage_interval``) live here between
cycles; the part it hands back is frozen.
"""

from __future__ import annotations

import math
import time
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import structlog

from sms_monitor.config import AccountConfig, Settings
from sms_monitor.core.checks import account_checks
from sms_monitor.core.dbchecks import KeywordEvent
from sms_monitor.core.facts import AccountFacts
from sms_monitor.core.snapshot import WEBHOOKS, AccountSnapshot, WebhooksPart, account_key
from sms_monitor.core.sources import SourceTracker
from sms_monitor.core.stats import ShareBaseline, window_stats
from sms_monitor.core.window import MessageWindow, unread_seconds
from sms_monitor.inputs.base import POLL, CycleContext, Input, Wiring
from sms_monitor.inputs.twilio import TwilioPoller

log = structlog.get_logger("sms_monitor.account")


def month_fraction(now: float) -> float:
    """Share of the current calendar month (UTC) that has passed at ``now``."""
    t = datetime.fromtimestamp(now, UTC)
    start = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start.replace(year=start.year + 1, month=1) if start.month == 12
           else start.replace(month=start.month + 1))
    return (t - start) / (end - start)


@dataclass(frozen=True)
class Usage:
    """SMS spend from Usage Records, and when it was read."""

    today: float
    month: float
    currency: str | None
    read_at: float


# Messages created this much after our clock are taken as ours running behind; beyond it
# they are dated in the future and left out of every statistic.
CLOCK_SKEW_TOLERANCE = 300.0


def cycle_budget(settings: Settings) -> float:
    """Seconds an account's reads may take in one cycle: three quarters of the poll
    interval, and never less than one request's timeout (so a fault shows within two poll
    intervals of its start, however Twilio misbehaves)."""
    return max(0.75 * settings.poll_interval, settings.request_timeout)


def retention(settings: Settings) -> float:
    """How long message records are kept: the window, or a longer alert rule window."""
    alerts = settings.alerts
    return max(settings.window_seconds, alerts.max_window if alerts else 0.0)


class AccountInput:
    stage = POLL

    def __init__(self, config: AccountConfig, settings: Settings, wiring: Wiring) -> None:
        self.config = config
        self.settings = settings
        self.key = account_key(config.name)
        self._wiring = wiring
        self.clock = wiring.clock
        self.poller = TwilioPoller(config, settings, wiring.requests_log, sleep=wiring.sleep,
                                   monotonic=wiring.monotonic)
        self.poller.keywords = wiring.keywords
        self.window = MessageWindow(retention(settings), settings.settle_seconds)
        self.usage: Usage | None = None
        self.usage_tried: float | None = None  # the last Usage Records read, good or failed
        self.malformed_total = 0
        self.errors: Counter[tuple[str, str]] = Counter()
        self._last_success: float | None = None
        self.tracker = SourceTracker(self.key)
        self.international = ShareBaseline()
        self.future_total = 0  # distinct messages dated in the future, since start
        self._future_seen: OrderedDict[str, None] = OrderedDict()

    @property
    def last_success(self) -> float | None:
        return self._last_success

    def close(self) -> None:
        pass

    def _excluded(self, sid: str, peer: int | None) -> bool:
        excludes = self._wiring.excludes.get(self.config.name)
        return excludes is not None and excludes(sid, peer)

    def apply_callbacks(self, webhooks: WebhooksPart | None) -> None:
        """Status callbacks for this account's messages (the canary's are not ours)."""
        for e in webhooks.status_events if webhooks is not None else ():
            if e.account_sid == self.config.account_sid and not self._excluded(e.sid, None):
                self.window.apply_callback(e.sid, e.status, e.error_code, e.at)

    def read(self, ctx: CycleContext) -> AccountSnapshot:
        """A failure of Twilio is a fact of the part; a bug while reading leaves this
        account's checks unknown and never costs the others."""
        try:
            self.apply_callbacks(ctx.parts.get(WEBHOOKS))  # type: ignore[arg-type]
            return self._read()
        except Exception as exc:
            log.exception("account_poll_crashed", account=self.config.name,
                          error=type(exc).__name__)
            self.errors["poll", "internal"] += 1
            facts = AccountFacts(phone_number=self.config.phone_number,
                                 failures={"poll": "internal"})
            source = self.tracker.observe(False, "poll: internal error")
            checks = account_checks(self.config.name, facts, None,
                                    dict(self.settings.thresholds), self.settings.min_samples,
                                    source=source,
                                    unreachable_cycles=self.settings.unreachable_cycles)
            return AccountSnapshot(
                account=self.config.name, checks=tuple(checks), facts=facts, stats=None,
                latency=self.window.latency.freeze(), up=False, poll_seconds=0.0,
                window_records=len(self.window), malformed_records=self.malformed_total,
                poll_errors=self.errors, timed=self.window.timed,
                records=tuple(self.window.records.values()), keywords=self._keywords(),
                source=source)

    def _facts_with_usage(self, facts: AccountFacts, now: float) -> AccountFacts:
        if facts.spend_month is not None and facts.spend_today is not None:
            self.usage = Usage(facts.spend_today, facts.spend_month, facts.spend_currency, now)
        if self.usage is None:
            return facts
        return replace(facts, spend_today=self.usage.today, spend_month=self.usage.month,
                       spend_currency=self.usage.currency)

    def _read(self) -> AccountSnapshot:
        started = time.monotonic()
        now = self.clock()
        settings = self.settings
        self.window.floor = self._wiring.window_floor  # (the demo may restart the window)
        before = list(self.window.gaps) if self.window.backfilled else None
        horizon = self.window.fetch_horizon(now)
        read_started = now
        # a failed read waits for the interval like a good one (Twilio's Usage Records are
        # slow and rate limited; retrying each cycle would only add to what failed)
        usage_due = self.usage_tried is None or now - self.usage_tried >= settings.usage_interval
        result = self.poller.poll(horizon, read_usage=usage_due, gaps=self.window.gaps,
                                  budget=cycle_budget(settings), held=self.window.records)
        if usage_due and (result.facts.spend_month is not None
                          or "usage" in result.facts.failures):
            self.usage_tried = now  # asked (not skipped because Twilio was unreachable)
        now = self.clock()
        edge = self._wiring.window_edge(now, settings.window_seconds)
        facts = self._facts_with_usage(result.facts, now)
        future = 0
        if facts.messages_ok:  # a read whose first page failed changes nothing
            for rec in result.records:
                if rec.created > now + CLOCK_SKEW_TOLERANCE:
                    future += 1  # dated in the future: counted and reported, never trusted
                    self._count_future(rec.sid)
                    continue
                if self._excluded(rec.sid, rec.peer):
                    continue  # the probe's own messages are not the practice's traffic
                self.window.upsert(rec, result.keyword_numbers.get(rec.sid))
            self.window.gaps = list(result.gaps)
            self.window.backfilled = True
            self.window.read_at = read_started
        self.window.prune(now)
        self.malformed_total += result.malformed
        for part, cause in facts.failures.items():
            self.errors[part, cause] += 1
        if result.malformed:
            log.warning("twilio_malformed_messages", account=self.config.name,
                        count=result.malformed)
        if future:
            log.warning("twilio_future_dated_messages", account=self.config.name, count=future,
                        tolerance_seconds=CLOCK_SKEW_TOLERANCE)
        unread = self.window.unread(edge) if self.window.backfilled else settings.window_seconds
        # most of what the read brought dated ahead: a clock is off, the window cannot be judged
        skewed = future if future and 2 * future >= len(result.records) else 0
        incomplete = None
        if facts.messages_ok and (unread > 0 or skewed):
            incomplete = self._incomplete(now, edge, unread, skewed, result.read_problem)
        failed = {part: cause for part, cause in facts.failures.items() if part != "usage"}
        up = not failed  # spend is read now and then; its failure is only counted
        if up:
            self._last_success = now
        reasons = [f"{p}: {c}" for p, c in sorted(failed.items())]
        if incomplete is not None:
            reasons.append(incomplete)
        # reading a long backlog is progress, not an outage: unknown, but not counted toward red
        unread_before = unread_seconds(before, edge) if before is not None else math.inf
        progressing = (up and not skewed and result.read_problem is None
                       and unread < unread_before)
        source = self.tracker.observe(up and incomplete is None, "; ".join(reasons),
                                      progressing=progressing)
        stats = None if incomplete is not None else window_stats(
            self.window.records.values(), now, max(0.0, now - edge),
            home_code=settings.home_country_code)
        checks = account_checks(self.config.name, facts, stats, dict(settings.thresholds),
                                settings.min_samples, self.config.throughput_limit,
                                budget=self.config.monthly_budget,
                                month_elapsed=month_fraction(now), source=source,
                                unreachable_cycles=settings.unreachable_cycles,
                                incomplete=incomplete,
                                international_baseline=self.international.value)
        if stats is not None and stats.international_ratio is not None \
                and stats.outbound >= settings.min_samples:
            self.international.update(stats.international_ratio, now)
        elapsed = time.monotonic() - started
        log.info("twilio_poll_done", account=self.config.name, pages=result.pages,
                 fetched=len(result.records), window=len(self.window), up=up,
                 unread_seconds=round(unread), overall=checks[-1].status.value,
                 seconds=round(elapsed, 3))
        return AccountSnapshot(
            account=self.config.name,
            checks=tuple(checks),
            facts=facts,
            stats=stats,
            latency=self.window.latency.freeze(),
            timed=self.window.timed,
            up=up,
            poll_seconds=elapsed,
            window_records=len(self.window),
            malformed_records=self.malformed_total,
            poll_errors=self.errors,
            records=tuple(self.window.records.values()),
            keywords=self._keywords(),
            source=source,
            window_unread_seconds=unread if facts.messages_ok else None,
            gaps=tuple(self.window.gaps),
            future_dated_records=self.future_total,
        )

    def _count_future(self, sid: str) -> None:
        if sid in self._future_seen:
            return  # the same message, still at the top of the log
        self._future_seen[sid] = None
        self.future_total += 1
        if len(self._future_seen) > 10_000:
            self._future_seen.popitem(last=False)

    def _incomplete(self, now: float, edge: float, unread: float, future: int,
                    problem: str | None) -> str:
        """Why the window checks are unknown, in one line."""
        parts = []
        if unread > 0:
            back = now - self.window.oldest_read(edge)
            parts.append(f"window read back {back:.0f}s of {now - edge:.0f}s "
                         f"({len(self.window)} messages so far); the rest is read on the "
                         "next cycles")
        if problem:
            parts.append(problem)
        if future:
            parts.append(f"{future} message(s) dated more than "
                         f"{CLOCK_SKEW_TOLERANCE:.0f}s in the future (clock skew?) left out")
        return "; ".join(parts)

    def _keywords(self) -> tuple[tuple[str, KeywordEvent], ...]:
        records = self.window.records
        out = []
        for sid, number in self.window.keyword_numbers.items():
            rec = records.get(sid)
            if rec is not None and rec.keyword:
                out.append((sid, KeywordEvent(number, rec.created, rec.keyword)))
        return tuple(out)


def build(settings: Settings, wiring: Wiring) -> Sequence[Input]:
    return [AccountInput(a, settings, wiring) for a in settings.accounts]
