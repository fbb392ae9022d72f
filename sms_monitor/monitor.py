"""One poll cycle over every configured source, producing a Snapshot.

``check`` runs one cycle; ``run`` and ``demo`` run cycles on the scheduler.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import structlog

from sms_monitor.config import AccountConfig, Settings
from sms_monitor.core.checks import account_checks
from sms_monitor.core.facts import AccountFacts
from sms_monitor.core.snapshot import AccountSnapshot, Snapshot, SnapshotHolder
from sms_monitor.core.stats import window_stats
from sms_monitor.core.window import MessageWindow
from sms_monitor.sources.telemetry import RequestLog
from sms_monitor.sources.twilio import TwilioPoller

log = structlog.get_logger("sms_monitor.monitor")

Clock = Callable[[], float]


@dataclass
class AccountState:
    config: AccountConfig
    poller: TwilioPoller
    window: MessageWindow
    malformed_total: int = 0
    last_success: float | None = None
    errors: Counter[tuple[str, str]] = field(default_factory=Counter)


@dataclass
class Monitor:
    settings: Settings
    clock: Clock = time.time
    sleep: Callable[[float], None] = time.sleep
    holder: SnapshotHolder = field(default_factory=SnapshotHolder)

    def __post_init__(self) -> None:
        self.requests_log = RequestLog()
        self.accounts = [
            AccountState(
                config=a,
                poller=TwilioPoller(a, self.settings, self.requests_log, sleep=self.sleep),
                window=MessageWindow(self.settings.window_seconds, self.settings.settle_seconds),
            )
            for a in self.settings.accounts
        ]
        self.cycles = 0

    def _poll_account(self, state: AccountState) -> AccountSnapshot:
        started = time.monotonic()
        now = self.clock()
        horizon = state.window.fetch_horizon(now)
        result = state.poller.poll(horizon)
        now = self.clock()
        for rec in result.records:
            state.window.upsert(rec)
        if result.facts.messages_ok:
            state.window.backfilled = True
        state.window.prune(now)
        state.malformed_total += result.malformed
        for part, cause in result.facts.failures.items():
            state.errors[part, cause] += 1
        if result.malformed:
            log.warning("twilio_malformed_messages", account=state.config.name,
                        count=result.malformed)
        up = not result.facts.failures
        if up:
            state.last_success = now
        stats = window_stats(state.window.records.values(), now, self.settings.window_seconds)
        checks = account_checks(state.config.name, result.facts, stats,
                                dict(self.settings.thresholds), self.settings.min_samples)
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

    def run_cycle(self) -> Snapshot:
        """Poll every account (in parallel), classify, publish and return the Snapshot."""
        started = time.monotonic()
        if len(self.accounts) > 1:
            with ThreadPoolExecutor(max_workers=min(8, len(self.accounts))) as pool:
                accounts = list(pool.map(self._poll_account_safely, self.accounts))
        else:
            accounts = [self._poll_account_safely(s) for s in self.accounts]
        self.cycles += 1
        snapshot = Snapshot(
            taken_at=self.clock(),
            accounts=tuple(accounts),
            requests=self.requests_log.freeze(),
            last_success={f"twilio:{s.config.name}": s.last_success
                          for s in self.accounts if s.last_success is not None},
            cycles=self.cycles,
            cycle_seconds=time.monotonic() - started,
        )
        self.holder.publish(snapshot)
        return snapshot
