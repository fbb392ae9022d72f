"""The alert engine: rules from the application's table → states → outbox → notifiers.

Runs after every poll cycle on the leader replica only. Decisions and their notifications
are committed together; the outbox is then drained with per-row retries and backoff, so a
failing SMTP server delays pages but never stops evaluation or loses one.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy.exc import SQLAlchemyError

from sms_monitor.alerts.leader import Leadership
from sms_monitor.alerts.lifecycle import FIRING, AlertState, step
from sms_monitor.alerts.notify import Notification, Notifier, SendError, recipient_kind
from sms_monitor.alerts.rules import BrokenRule, Rule, parse_rows
from sms_monitor.alerts.settings import AlertsConfig
from sms_monitor.alerts.store import AlertStore, StoreError
from sms_monitor.alerts.values import AlertInputs, targets, value
from sms_monitor.core.backoff import Backoff
from sms_monitor.core.checks import CHECK_NAMES
from sms_monitor.core.dbchecks import DB_CHECK_NAMES
from sms_monitor.core.records import MessageRecord
from sms_monitor.core.snapshot import AlertsSnapshot, AlertView, Snapshot

log = structlog.get_logger("sms_monitor.alerts")

ALERTMANAGER = "alertmanager"
ALL_CHECKS = (*CHECK_NAMES, *DB_CHECK_NAMES, "overall")


def always_notified(config: AlertsConfig) -> list[str]:
    """Who receives every rule's first notification whatever its row lists: the usable
    ``[alerts] level1`` recipients and Alertmanager. A row may then list nobody itself."""
    return [*(r for r in config.level1 if recipient_kind(r) is not None),
            *([ALERTMANAGER] if config.alertmanager_url else [])]


@dataclass
class AlertEngine:
    config: AlertsConfig
    accounts: Sequence[str]
    notifier: Notifier
    store: AlertStore
    leadership: Leadership
    clock: Callable[[], float] = time.time
    min_samples: int = 10
    sent: Counter[tuple[str, str]] = field(default_factory=Counter)
    _reported: dict[str, str] = field(default_factory=dict)

    @property
    def retry_backoff(self) -> Backoff:
        """When a failed notification is tried again: retry_base doubling to retry_max."""
        return Backoff(self.config.retry_base, self.config.retry_max)

    def parse(self, rows: Sequence[Mapping[str, Any]]) -> tuple[list[Rule], list[BrokenRule]]:
        rules, broken = parse_rows(rows, accounts=self.accounts, checks=ALL_CHECKS,
                                   max_window=self.config.max_window,
                                   recipient_ok=lambda r: recipient_kind(r) is not None,
                                   always_notified=always_notified(self.config))
        current = {b.name: b.reason for b in broken}
        for name, reason in current.items():
            if self._reported.get(name) != reason:  # once per change
                log.warning("alert_rule_unusable", rule=name, reason=reason)
        self._reported = current
        return rules, broken

    def cycle(self, snapshot: Snapshot) -> AlertsSnapshot:
        """Evaluate the rules the database part read against the published snapshot."""
        now = self.clock()
        rows = snapshot.database.facts.rule_rows if snapshot.database is not None else None
        records = {a.account: a.records for a in snapshot.accounts}
        rules, broken = self.parse(rows or [])
        leader = self.leadership.check()
        store_ok = True
        views: list[AlertView] = []
        try:
            if not self.store.migrated:
                self.store.migrate()  # retried every cycle until the store is reachable
            if leader:
                self._evaluate(rules, snapshot, records, now)
                self.drain(now)
                self._refresh_alertmanager(rules, now)
            states = self.store.load_states()
            pending = self.store.pending_count()
        except (SQLAlchemyError, StoreError) as exc:
            log.warning("alert_store_failed", error=type(exc).__name__,
                        reason=(str(exc).splitlines() or [""])[0][:200])
            store_ok, states, pending = False, {}, 0
        by_name = {r.name: r for r in rules}
        for (rule_name, target), st in sorted(states.items()):
            rule = by_name.get(rule_name)
            if rule is None:
                continue
            views.append(AlertView(rule_name, target, st.state, st.last_value, st.since, st.level,
                                   st.last_notified, rule.severity, rule.metric))
        return AlertsSnapshot(leader=leader, alerts=tuple(views),
                              broken=tuple((b.name, b.reason) for b in broken),
                              notifications=dict(self.sent), outbox_pending=pending,
                              store_ok=store_ok)

    def _recipients(self, rule: Rule, level: int) -> list[str]:
        out: list[str] = []
        for r in (*rule.recipients,
                  *(x for lv in self.config.level_recipients[:level] for x in lv)):
            if r not in out and recipient_kind(r) is not None:
                out.append(r)
        return out

    def _evaluate(self, rules: list[Rule], snapshot: Snapshot,
                  records: Mapping[str, Sequence[MessageRecord]], now: float) -> None:
        states = self.store.load_states()
        inputs = AlertInputs(now, snapshot, records, min_samples=self.min_samples)
        changed: list[AlertState] = []
        outbox: list[tuple[str, str, dict[str, Any]]] = []
        history: list[tuple[str, str, str, int, float | None, float]] = []
        live: set[tuple[str, str]] = set()
        for rule in rules:
            for target in targets(rule, self.accounts):
                live.add((rule.name, target))
                old = states.get((rule.name, target)) or AlertState(rule.name, target)
                new, events = step(old, rule, value(rule, target, inputs), now,
                                   hysteresis=self.config.hysteresis, levels=self.config.levels)
                if new != old:
                    changed.append(new)
                for e in events:
                    n = Notification(
                        rule=rule.name, account=target, event=e.kind, severity=rule.severity,
                        metric=rule.metric, value=e.value, threshold=rule.threshold,
                        operator=rule.operator, since=e.since, at=e.at, level=e.level,
                        runbook_section=rule.runbook,
                        key=f"{rule.name}|{target}|{e.kind}|{e.since:.0f}|{e.level}|{e.at:.0f}")
                    payload = n.__dict__.copy()
                    for r in self._recipients(rule, e.level):
                        outbox.append((n.key, r, payload))
                    if self.config.alertmanager_url:
                        outbox.append((n.key, ALERTMANAGER, payload))
                    history.append((rule.name, target, e.kind, e.level, e.value, now))
                    log.info("alert_event", rule=rule.name, target=target, kind=e.kind,
                             level=e.level, value=e.value)
        # states of deleted rules (or targets) are forgotten; a firing one is resolved first
        forget = [k for k, st in states.items() if k not in live]
        for key in forget:
            if states[key].state == FIRING:
                history.append((key[0], key[1], "forgotten", states[key].level,
                                states[key].last_value, now))
        self.store.commit(changed, outbox, history, now, forget)

    def _refresh_alertmanager(self, rules: list[Rule], now: float) -> None:
        """Re-post every firing alert each cycle: Alertmanager resolves an alert it has not
        heard of for resolve_timeout (5 minutes by default)."""
        if not self.config.alertmanager_url:
            return
        by_name = {r.name: r for r in rules}
        for (name, target), st in self.store.load_states().items():
            rule = by_name.get(name)
            if rule is None or st.state != FIRING or st.since is None:
                continue
            n = Notification(rule=name, account=target, event="firing", severity=rule.severity,
                             metric=rule.metric, value=st.last_value, threshold=rule.threshold,
                             operator=rule.operator, since=st.since, at=now, level=st.level,
                             runbook_section=rule.runbook, key=f"{name}|{target}|refresh")
            try:
                self.notifier.send_alertmanager(n)
                self.sent[ALERTMANAGER, "refreshed"] += 1
            except SendError as exc:
                self.sent[ALERTMANAGER, "failed"] += 1
                log.warning("alertmanager_refresh_failed", reason=str(exc))
                return  # it is down: the outbox keeps the events; try again next cycle

    def drain(self, now: float) -> None:
        for row in self.store.due(now):
            recipient = row["recipient"]
            channel = ALERTMANAGER if recipient == ALERTMANAGER else (recipient_kind(recipient)
                                                                       or "unknown")
            try:
                n = Notification(**json.loads(row["payload"]))
                if recipient == ALERTMANAGER:
                    self.notifier.send_alertmanager(n)
                else:
                    self.notifier.send(recipient, n)
            except SendError as exc:
                attempts = int(row["attempts"]) + 1
                delay = self.retry_backoff.delay(attempts - 1)
                self.store.mark_failed(row["id"], attempts, now + delay, str(exc))
                self.sent[channel, "failed"] += 1
                log.warning("notification_failed", channel=channel, attempts=attempts,
                            retry_in=delay, reason=str(exc))
                continue
            self.store.mark_sent(row["id"], now)
            self.sent[channel, "sent"] += 1

    def close(self) -> None:
        self.leadership.release()
        self.store.close()
