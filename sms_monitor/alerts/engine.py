"""The alert engine: rules from the application's table → states → outbox → notifiers.

Runs after every poll cycle on the leader replica only. Decisions and their notifications
are committed together. The outbox is drained apart from the poll cycle (the daemon's
sender thread, :mod:`sms_monitor.alerts.sender`) with per-row retries and backoff, so a
failing or hanging SMTP server delays pages but never stops or slows evaluation, nor
loses one.

Sending is fenced and claimed: each row is claimed by this replica before it is sent
(:meth:`AlertStore.claim`), leadership is checked on the lock's own connection right
before each send, and a row is marked sent only by its claimer. Events of one alert reach
one recipient in the order they happened: a later event waits while an earlier one for
the same (rule, target, recipient) is unsent.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import threading
import time
import uuid
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
from sms_monitor.core.snapshot import AlertsSnapshot, AlertView, Snapshot, SnapshotHolder

log = structlog.get_logger("sms_monitor.alerts")

ALERTMANAGER = "alertmanager"
ALL_CHECKS = (*CHECK_NAMES, *DB_CHECK_NAMES, "overall")
DRAIN_BUDGET = 120.0  # seconds: a drain starts no send after this; the rest waits for the next


def _owner() -> str:
    """This process's name on the claims it takes: host, pid and a random part."""
    return f"{socket.gethostname()[:100]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


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
    owner: str = field(default_factory=_owner)
    rules: list[Rule] = field(default_factory=list)  # the last cycle's, for the refresh
    _sent_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def claim_seconds(self) -> float:
        """How long a claim holds: past any send's limits (an SMTP delivery is several
        replies, each with its limit). A send abandoned (process killed, SIGTERM) is retried
        by whoever leads once it has expired: at least once, never lost."""
        return 3 * max(self.notifier.smtp_timeout, self.notifier.webhook_timeout) + 60.0

    def counts(self) -> dict[tuple[str, str], int]:
        with self._sent_lock:
            return dict(self.sent)

    def _count(self, channel: str, outcome: str) -> None:
        with self._sent_lock:
            self.sent[channel, outcome] += 1

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
        self.rules = rules
        leader = self.leadership.check()
        store_ok = True
        views: list[AlertView] = []
        try:
            if not self.store.migrated:
                self.store.migrate()  # retried every cycle until the store is reachable
            if leader:
                self._evaluate(rules, snapshot, records, now)
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
                              notifications=self.counts(), outbox_pending=pending,
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

    def deliver(self, refresh: bool = True, budget: float = DRAIN_BUDGET,
                stop: Callable[[], bool] = lambda: False) -> None:
        """One round of sending, on the leader only: the outbox's due rows, then (``refresh``)
        every firing alert re-posted to Alertmanager. The sender thread calls it after each
        cycle and between cycles (retries); a store that cannot be used is logged."""
        now = self.clock()
        try:
            if not self.store.migrated or not self.leadership.check():
                return  # the cycle migrates the store; a follower sends nothing
            self.drain(now, budget=budget, stop=stop)
            if refresh and not stop():
                self._refresh_alertmanager(self.rules, now)
        except (SQLAlchemyError, StoreError) as exc:
            log.warning("alert_store_failed", error=type(exc).__name__,
                        reason=(str(exc).splitlines() or [""])[0][:200])

    def publish_sent(self, holder: SnapshotHolder) -> None:
        """After a round of sending: the published alert state gets the new counts and the
        outbox's backlog (the cycle published them as they were when it committed)."""
        try:
            pending = self.store.pending_count() if self.store.migrated else 0
        except (SQLAlchemyError, StoreError):
            return  # the next cycle reports the store
        counts = self.counts()
        holder.amend_alerts(lambda a: dataclasses.replace(a, notifications=counts,
                                                          outbox_pending=pending))

    def _refresh_alertmanager(self, rules: list[Rule], now: float) -> None:
        """Re-post every firing alert each cycle: Alertmanager resolves an alert it has not
        heard of for resolve_timeout (5 minutes by default). The labels are the rule's
        (name, account, severity, metric), never the level or value, so every post of one
        alert is the same alert to Alertmanager."""
        if not self.config.alertmanager_url:
            return
        by_name = {r.name: r for r in rules}
        for (name, target), st in self.store.load_states().items():
            rule = by_name.get(name)
            if rule is None or st.state != FIRING or st.since is None:
                continue
            if not self.leadership.holds():
                return
            n = Notification(rule=name, account=target, event="firing", severity=rule.severity,
                             metric=rule.metric, value=st.last_value, threshold=rule.threshold,
                             operator=rule.operator, since=st.since, at=now, level=st.level,
                             runbook_section=rule.runbook, key=f"{name}|{target}|refresh")
            try:
                self.notifier.send_alertmanager(n)
                self._count(ALERTMANAGER, "refreshed")
            except SendError as exc:
                self._count(ALERTMANAGER, "failed")
                log.warning("alertmanager_refresh_failed", reason=str(exc))
                return  # it is down: the outbox keeps the events; try again next cycle

    def drain(self, now: float, budget: float = DRAIN_BUDGET,
              stop: Callable[[], bool] = lambda: False) -> None:
        """Send the due rows, oldest first, each claimed and fenced; stop when leadership is
        lost, ``stop()`` is true or ``budget`` seconds have passed."""
        deadline = time.monotonic() + budget
        waiting: set[tuple[str, str, str]] = set()  # alerts × recipients with an older row unsent
        for row in self.store.unsent():
            try:
                payload = json.loads(row["payload"])
            except ValueError:
                payload = {}
            alert = (str(payload.get("rule", "")), str(payload.get("account", "")),
                     row["recipient"])
            if alert in waiting:
                continue  # held behind an earlier event of the same alert
            waiting.add(alert)  # until this row is sent, its alert's later rows wait
            if row["next_attempt"] > now:
                continue
            if stop() or time.monotonic() > deadline:
                return
            if not self.store.claim(row["id"], self.owner, self.clock(),
                                    self.clock() + self.claim_seconds):
                continue  # another replica's live claim: it is sending this one
            if not self.leadership.holds():
                self.store.release(row["id"], self.owner)
                log.warning("sending_stopped", reason="no longer the leader")
                return
            if self._send(row, payload, now):
                waiting.discard(alert)

    def _send(self, row: Mapping[str, Any], payload: Mapping[str, Any], now: float) -> bool:
        """Send one claimed row; True when delivered (and recorded as such)."""
        recipient = row["recipient"]
        channel = ALERTMANAGER if recipient == ALERTMANAGER else (recipient_kind(recipient)
                                                                   or "unknown")
        try:
            n = Notification(**payload)
            if recipient == ALERTMANAGER:
                self.notifier.send_alertmanager(n)
            else:
                self.notifier.send(recipient, n)
        except (SendError, TypeError) as exc:
            attempts = int(row["attempts"]) + 1
            delay = self.retry_backoff.delay(attempts - 1)
            self.store.mark_failed(row["id"], attempts, now + delay, str(exc), self.owner)
            self._count(channel, "failed")
            log.warning("notification_failed", channel=channel, attempts=attempts,
                        retry_in=delay, reason=str(exc))
            return False
        if not self.store.mark_sent(row["id"], self.clock(), self.owner):
            log.warning("notification_claim_lost", channel=channel, row=row["id"])
        self._count(channel, "sent")
        return True

    def close(self) -> None:
        self.leadership.release()
        self.store.close()
