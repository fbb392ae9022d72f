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

A recipient the configuration refuses (``[alerts] webhook_allow``) is known when the rules
are read: the rule is reported (``sms_alert_rule_invalid``, ``sms_alert_recipients_refused``,
the log, ``rules check``) and that recipient gets no outbox row; the rule's other recipients
are notified. A send the notifier refuses (a host resolving to a refused address) is given
up at once, not retried: counted by rule and reason, logged with the rule's name.
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
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy.exc import SQLAlchemyError

from sms_monitor.alerts import explain
from sms_monitor.alerts.leader import Leadership
from sms_monitor.alerts.lifecycle import FIRING, AlertState, Event, step
from sms_monitor.alerts.notify import Notification, Notifier, SendError, recipient_kind
from sms_monitor.alerts.rules import (
    VOCABULARY,
    BrokenRule,
    Rule,
    parse_rows,
    rule_from_json,
    rule_json,
)
from sms_monitor.alerts.settings import AlertsConfig
from sms_monitor.alerts.store import (
    ACK,
    ALL_TARGETS,
    SILENCE,
    AlertStore,
    Mute,
    RuleChanges,
    StoreError,
)
from sms_monitor.alerts.values import ROLLUP, AlertInputs, explanation, targets, value
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


def recipients(rule: Rule, level: int, config: AlertsConfig) -> list[str]:
    """Who a notification of the rule at ``level`` goes to: the row's usable recipients and
    ``[alerts] level1`` to ``level<level>``, each once (Alertmanager apart)."""
    out: list[str] = []
    for r in (*rule.recipients, *(x for lv in config.level_recipients[:level] for x in lv)):
        if r not in out and recipient_kind(r) is not None:
            out.append(r)
    return out


def notification(rule: Rule, target: str, e: Event, config: AlertsConfig,
                 context: Mapping[str, Any] | None = None, note: str = "",
                 runbook: str | None = None) -> Notification:
    """The notification of an event: the value and what explains it (``context``, from
    :func:`sms_monitor.alerts.values.explanation`), the runbook and dashboard links."""
    spec = VOCABULARY.get(rule.metric)
    extra = dict(context or {"unit": "status" if rule.check is not None else
                             (spec.unit if spec else ""),
                             "window": rule.window if spec and spec.windowed else 0.0})
    return Notification(
        rule=rule.name, account=target, event=e.kind, severity=rule.severity,
        metric=rule.metric, value=e.value, threshold=rule.threshold,
        operator=rule.operator, since=e.since, at=e.at, level=e.level,
        runbook_section=runbook or rule.runbook,
        key=f"{rule.name}|{target}|{e.kind}|{e.since:.0f}|{e.level}|{e.at:.0f}",
        runbook_url=explain.runbook_link(config.runbook_url, rule.metric, rule.severity,
                                         rule.runbook),
        dashboard_url=explain.dashboard_link(config.dashboard_url, target), note=note,
        **extra)


def mutes_of(mutes: Sequence[Mute], rule: str, target: str, now: float
             ) -> tuple[Mute | None, Mute | None]:
    """The acknowledgement and the (active) silence that hold for an alert, if any: a silence
    of the target, or of every target of the rule."""
    ack = next((m for m in mutes if m.kind == ACK and (m.rule, m.target) == (rule, target)),
               None)
    silences = [m for m in mutes if m.kind == SILENCE and m.rule == rule
                and m.target in (target, ALL_TARGETS) and m.active(now)]
    silence = max(silences, key=lambda m: m.until or 0.0) if silences else None
    return ack, silence


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
    rules_readable: bool = True
    rules_read_failures: int = 0
    save_failures: Counter[str] = field(default_factory=Counter)  # rule -> refused saves
    refusals: Counter[tuple[str, str]] = field(default_factory=Counter)  # (rule, reason) sends
    _reported: dict[str, str] = field(default_factory=dict)
    _save_reported: dict[str, str] = field(default_factory=dict)
    # the rules of the last successful read: what is shown while the table is unreadable
    _rules: list[Rule] = field(default_factory=list)
    _broken: list[BrokenRule] = field(default_factory=list)
    _rules_known: bool = False
    owner: str = field(default_factory=_owner)
    rules: list[Rule] = field(default_factory=list)  # the last cycle's, for the refresh
    # what explains each firing alert, from the last evaluation: for the refresh
    _explained: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    _sent_lock: threading.Lock = field(default_factory=threading.Lock)
    # sharded (core/sharding.py): the accounts this replica's shard polls, whose alerts it
    # evaluates; None: every account. ``shared``: it also evaluates the database's alerts.
    # The roll-up (*) needs every account's messages: no shard evaluates it.
    owned: frozenset[str] | None = None
    shared: bool = True

    def mine(self, target: str) -> bool:
        """Whether this replica evaluates (and shows) the alerts of ``target``."""
        if self.owned is None:
            return True
        if target in self.accounts:
            return target in self.owned
        return target != ROLLUP and self.shared

    @property
    def claim_seconds(self) -> float:
        """How long a claim holds: past any send's limits (an SMTP delivery is several
        replies, each with its limit). A send abandoned (process killed, SIGTERM) is retried
        by whoever leads once it has expired: at least once, never lost."""
        return 3 * max(self.notifier.smtp_timeout, self.notifier.webhook_timeout) + 60.0

    def counts(self) -> dict[tuple[str, str], int]:
        with self._sent_lock:
            return dict(self.sent)

    def refusal_counts(self) -> dict[tuple[str, str], int]:
        with self._sent_lock:
            return dict(self.refusals)

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
                                   always_notified=always_notified(self.config),
                                   webhooks=self.config.webhook_policy,
                                   pagerduty_url=self.config.pagerduty_url)
        current = {b.name: b.reason for b in broken}
        for name, reason in current.items():
            if self._reported.get(name) != reason:  # once per change
                log.warning("alert_rule_unusable", rule=name, reason=reason)
        self._reported = current
        return rules, broken

    def _rules_read(self, snapshot: Snapshot) -> Sequence[Mapping[str, Any]] | None:
        """The notification_rules rows, or None when they could not be read (logged once per
        change, counted)."""
        db = snapshot.database
        rows = db.facts.rule_rows if db is not None else None
        reason = None
        if rows is None:
            self.rules_read_failures += 1
            reason = (db.facts.failures.get("notification_rules") if db is not None else None) \
                or "the database was not read"
            if self.rules_readable:
                log.warning("alert_rules_unreadable", reason=reason,
                            effect="every alert keeps its state until the rules can be read")
        elif not self.rules_readable:
            log.info("alert_rules_readable_again")
        self.rules_readable = rows is not None
        return rows

    def cycle(self, snapshot: Snapshot) -> AlertsSnapshot:
        """Evaluate the rules the database part read against the published snapshot.

        When notification_rules cannot be read, nothing is evaluated, resolved or forgotten:
        every alert keeps its state and escalation as they were, and the rules last read
        (or, after a restart, those saved with the states) are shown and refreshed to
        Alertmanager."""
        now = self.clock()
        rows = self._rules_read(snapshot)
        records = {a.account: a.records for a in snapshot.accounts}
        if rows is not None:
            rules, broken = self.parse(rows)
            self._rules, self._broken, self._rules_known = rules, broken, True
        else:
            rules, broken = self._rules, self._broken
        leader = self.leadership.check()
        store_ok = True
        views: list[AlertView] = []
        try:
            if not self.store.migrated:
                self.store.migrate()  # retried every cycle until the store is reachable
            if rows is None and not self._rules_known:  # unreadable since start: as saved
                rules = self._rules = self._saved_rules()
            self.rules = rules  # what the sender refreshes to Alertmanager
            if leader and rows is not None:  # unreadable rules: every alert stays as it was
                unusable = {b.name for b in broken} - {r.name for r in rules}
                self._evaluate(rules, snapshot, records, now, keep=unusable)
            states = self.store.load_states()
            mutes = self.store.load_mutes()
            pending = self.store.pending_count()
        except (SQLAlchemyError, StoreError) as exc:
            log.warning("alert_store_failed", error=type(exc).__name__,
                        reason=(str(exc).splitlines() or [""])[0][:200])
            store_ok, states, mutes, pending = False, {}, [], 0
        by_name = {r.name: r for r in rules}
        for (rule_name, target), st in sorted(states.items()):
            rule = by_name.get(rule_name)
            if rule is None or not self.mine(target):
                continue
            ack, silence = mutes_of(mutes, rule_name, target, now)
            acked = ack is not None and ack.active(now) and st.state == FIRING \
                and ack.since == st.since
            views.append(AlertView(rule_name, target, st.state, st.last_value, st.since, st.level,
                                   st.last_notified, rule.severity, rule.metric,
                                   acknowledged_by=ack.by if ack is not None and acked else None,
                                   acknowledged_until=ack.until if ack is not None else None,
                                   silenced_until=silence.until if silence else None))
        refused: Counter[tuple[str, str]] = Counter()
        for rule in rules:
            for reason, _detail in rule.refused:
                refused[rule.name, reason] += 1
        return AlertsSnapshot(leader=leader, alerts=tuple(views),
                              broken=tuple((b.name, b.reason) for b in broken),
                              recipients_refused=dict(refused),
                              notifications_refused=self.refusal_counts(),
                              notifications=self.counts(), outbox_pending=pending,
                              store_ok=store_ok, rules_readable=rows is not None,
                              rules_read_failures=self.rules_read_failures,
                              save_failures=dict(self.save_failures))

    def _saved_rules(self) -> list[Rule]:
        """The rules as saved beside their alerts' states (the last ones this store saw)."""
        saved = (rule_from_json(d) for d in self.store.load_definitions().values())
        return [r for r in saved if r is not None]

    def _queue(self, changes: RuleChanges, rule: Rule, target: str, e: Event, now: float,
               runbook: str | None = None, context: Mapping[str, Any] | None = None,
               note: str = "") -> None:
        """The event's notification to every recipient of its level (and Alertmanager)."""
        n = notification(rule, target, e, self.config, context, note, runbook)
        payload = dataclasses.asdict(n)
        for r in recipients(rule, e.level, self.config):
            changes.outbox.append((n.key, r, payload))
        if self.config.alertmanager_url:
            changes.outbox.append((n.key, ALERTMANAGER, payload))

    def _evaluate(self, rules: list[Rule], snapshot: Snapshot,
                  records: Mapping[str, Sequence[MessageRecord]], now: float,
                  keep: Set[str] = frozenset()) -> None:
        """Step every alert of a rule read this cycle; resolve and forget the alerts of rules
        the table no longer holds (``keep``: rows still there but unusable, left as they
        were). Each rule's changes are saved on their own: a rule the store refuses is
        counted and logged, and every other rule is saved."""
        states = self.store.load_states()
        saved = self.store.load_definitions()
        mutes = self.store.load_mutes()
        inputs = AlertInputs(now, snapshot, records, min_samples=self.min_samples)
        batches: dict[str, RuleChanges] = {}
        live: set[tuple[str, str]] = set()
        explained: dict[tuple[str, str], dict[str, Any]] = {}
        for rule in rules:
            definition = rule_json(rule)
            changes = batches[rule.name] = RuleChanges(rule.name, definition=definition)
            for target in targets(rule, self.accounts):
                if not self.mine(target):
                    continue
                live.add((rule.name, target))
                old = states.get((rule.name, target)) or AlertState(rule.name, target)
                ack, silence = mutes_of(mutes, rule.name, target, now)
                acked = ack is not None and ack.active(now) and old.state == FIRING \
                    and ack.since == old.since
                new, events = step(old, rule, value(rule, target, inputs), now,
                                   hysteresis=self.config.hysteresis, levels=self.config.levels,
                                   paused=acked)
                if new.state == FIRING and not events and self._silence_ended(
                        mutes, rule.name, target, now) and silence is None:
                    # a silence ended on a firing alert: remind everyone it paged
                    events = [Event("repeat", new.level, new.last_value, new.since or now, now)]
                    new = dataclasses.replace(new, last_notified=now)
                # a new alert, a change, or an edited rule: saved with the rule as it is now
                if new != old or (rule.name, target) not in states \
                        or saved.get(rule.name) != definition:
                    changes.states.append(new)
                refreshed = new.state == FIRING and bool(self.config.alertmanager_url)
                context = explanation(rule, target, inputs, self.config.runbook_url) \
                    if events or refreshed else None
                if new.state == FIRING and context is not None:
                    explained[rule.name, target] = context
                for e in events:
                    # silenced: nothing pages; a RESOLVED still closes what was paged before
                    # the silence (PagerDuty's incident, Alertmanager's alert, the e-mail)
                    muted = silence is not None and not (e.kind == "resolved"
                                                         and e.since < silence.at)
                    if not muted:
                        self._queue(changes, rule, target, e, now, context=context)
                    changes.history.append((rule.name, target, e.kind, e.level, e.value, now,
                                            None, "silenced: not sent" if muted else None))
                    log.info("alert_event", rule=rule.name, target=target, kind=e.kind,
                             level=e.level, value=e.value, silenced=muted)
                if ack is not None and not (acked and new.state == FIRING):
                    self._end_ack(changes, ack, new, now)
            self._end_silences(changes, mutes, rule.name, now)
        self._explained = explained
        gone = [k for k in states if k not in live and k[0] not in keep and self.mine(k[1])]
        if gone:
            self._retire(gone, states, {r.name: r for r in rules}, saved, batches, now)
        failed: dict[str, str] = {}
        for name, changes in batches.items():
            if not changes:
                continue
            try:
                self.store.save_rule(changes, now)
            except SQLAlchemyError as exc:
                failed[name] = (str(exc).splitlines() or [""])[0][:200]
        if failed:
            self.store.ping()  # the store itself is down: that is not any rule's fault
        for name, reason in failed.items():
            self.save_failures[name] += 1
            if self._save_reported.get(name) != reason:
                log.warning("alert_rule_save_failed", rule=name, reason=reason,
                            effect="this rule's alerts keep their last saved state")
        self._save_reported = failed

    @staticmethod
    def _silence_ended(mutes: Sequence[Mute], rule: str, target: str, now: float) -> bool:
        """Whether a silence of this alert (its target's or its rule's) expired by now."""
        return any(m.kind == SILENCE and m.rule == rule and m.target in (target, ALL_TARGETS)
                   and not m.active(now) for m in mutes)

    @staticmethod
    def _end_silences(changes: RuleChanges, mutes: Sequence[Mute], rule: str,
                      now: float) -> None:
        """Remove the rule's expired silences, audited."""
        for m in mutes:
            if m.kind == SILENCE and m.rule == rule and not m.active(now):
                changes.unmute.append((m.rule, m.target, SILENCE))
                changes.history.append((m.rule, m.target, "unsilenced", 0, None, now,
                                        "sms-monitor", f"expired (silenced by {m.by})"))
                log.info("alert_silence_ended", rule=m.rule, target=m.target, by=m.by)

    @staticmethod
    def _end_ack(changes: RuleChanges, ack: Mute, state: AlertState, now: float) -> None:
        """An acknowledgement ends when its alert resolves (or fires anew) or it expires:
        removed, audited; escalation resumes where it is due."""
        why = ("expired" if not ack.active(now) else "the alert resolved"
               if state.state != FIRING else "the alert fired anew")
        changes.unmute.append((ack.rule, ack.target, ACK))
        changes.history.append((ack.rule, ack.target, "unacknowledged", state.level,
                                state.last_value, now, "sms-monitor",
                                f"{why} (acknowledged by {ack.by})"))
        log.info("alert_ack_ended", rule=ack.rule, target=ack.target, by=ack.by, reason=why)

    def _retire(self, gone: list[tuple[str, str]], states: Mapping[tuple[str, str], AlertState],
                live_rules: Mapping[str, Rule], saved: Mapping[str, str],
                batches: dict[str, RuleChanges], now: float) -> None:
        """Forget the alerts nothing evaluates any more: a rule removed from the table, or a
        target the rule no longer has. A firing one is resolved first, saying why, to whom it
        was sent, with the rule as it was last saved."""
        for key in gone:
            name, target = key
            st = states[key]
            changes = batches.setdefault(name, RuleChanges(name))
            changes.forget.append(key)
            if st.state != FIRING:
                continue
            rule = live_rules.get(name) or rule_from_json(saved.get(name)) \
                or self._forgotten_rule(name)
            why = (f"rule removed from notification_rules: it no longer pages "
                   f"(it pointed to: {rule.runbook})" if name not in live_rules else
                   f"{target} is no longer one of this rule's targets: it no longer pages "
                   f"there (it pointed to: {rule.runbook})")
            since = st.since if st.since is not None else now
            event = Event("resolved", st.level, st.last_value, since, now)
            self._queue(changes, rule, target, event, now, note=why)
            changes.history.append((name, target, "removed", st.level, st.last_value, now))
            log.info("alert_event", rule=name, target=target, kind="resolved", level=st.level,
                     value=st.last_value, reason="removed")

    def _forgotten_rule(self, name: str) -> Rule:
        """A stand-in for a rule whose definition was never saved (a layout 1 store)."""
        return Rule(name=name, metric="unknown", threshold=0.0, operator=">", window=0.0,
                    for_seconds=0.0, severity="critical", account=None, repeat=0.0,
                    recipients=(), runbook="unknown")

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
        counts, refusals = self.counts(), self.refusal_counts()
        holder.amend_alerts(lambda a: dataclasses.replace(a, notifications=counts,
                                                          notifications_refused=refusals,
                                                          outbox_pending=pending))

    def _refresh_alertmanager(self, rules: list[Rule], now: float) -> None:
        """Re-post every firing alert each cycle: Alertmanager resolves an alert it has not
        heard of for resolve_timeout (5 minutes by default). The labels are the rule's
        (name, account, severity, metric), never the level or value, so every post of one
        alert is the same alert to Alertmanager."""
        if not self.config.alertmanager_url:
            return
        by_name = {r.name: r for r in rules}
        mutes = self.store.load_mutes()
        for (name, target), st in self.store.load_states().items():
            rule = by_name.get(name)
            if rule is None or st.state != FIRING or st.since is None:
                continue
            if mutes_of(mutes, name, target, now)[1] is not None:
                continue  # silenced: Alertmanager hears of it again when the silence ends
            if not self.leadership.holds():
                return
            n = dataclasses.replace(
                notification(rule, target, Event("firing", st.level, st.last_value, st.since,
                                                 now), self.config,
                             self._explained.get((name, target))),
                key=f"{name}|{target}|refresh")
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
            n = Notification.from_payload(payload)
            if recipient == ALERTMANAGER:
                self.notifier.send_alertmanager(n)
            else:
                self.notifier.send(recipient, n)
        except SendError as exc:
            if exc.refused is None:
                return self._failed(row, channel, now, exc)
            self._give_up(row, payload, channel, exc, exc.refused)
            return True  # settled: the alert's later events need not wait for it
        except TypeError as exc:
            return self._failed(row, channel, now, exc)
        if not self.store.mark_sent(row["id"], self.clock(), self.owner):
            log.warning("notification_claim_lost", channel=channel, row=row["id"])
        self._count(channel, "sent")
        return True

    def _failed(self, row: Mapping[str, Any], channel: str, now: float,
                exc: Exception) -> bool:
        """A failed attempt: retried with backoff."""
        attempts = int(row["attempts"]) + 1
        delay = self.retry_backoff.delay(attempts - 1)
        self.store.mark_failed(row["id"], attempts, now + delay, str(exc), self.owner)
        self._count(channel, "failed")
        log.warning("notification_failed", channel=channel, attempts=attempts,
                    retry_in=delay, reason=str(exc))
        return False

    def _give_up(self, row: Mapping[str, Any], payload: Mapping[str, Any], channel: str,
                 exc: SendError, reason: str) -> None:
        """A recipient the configuration refuses: no retry can change that, so the row is
        settled without a delivery, counted by rule and reason, and logged once."""
        rule = str(payload.get("rule", ""))
        if not self.store.give_up(row["id"], self.clock(), str(exc), self.owner):
            log.warning("notification_claim_lost", channel=channel, row=row["id"])
        with self._sent_lock:
            self.sent[channel, "refused"] += 1
            self.refusals[rule, reason] += 1
        log.warning("notification_refused", rule=rule, channel=channel, reason=reason,
                    detail=str(exc), effect="not sent and not retried")

    def close(self) -> None:
        self.leadership.release()
        self.store.close()
