"""``sms-monitor alerts``: list the alert store's alerts; acknowledge and silence them.

``alerts`` only reads: it never creates or migrates the store. ``ack``, ``unack``,
``silence`` and ``unsilence`` write one transaction each to the store the daemon uses (so
they hold across restarts and for every replica): the acknowledgement or silence
(``alert_mute``) and its audit row in the history (who, when, why). An acknowledgement also
tells everyone the alert has paged so far (an ``acknowledged`` notification; PagerDuty gets
``acknowledge``), queued in the outbox the daemon sends from.

- ``ack RULE [--target T] [--for 2h]``: a firing alert (every firing target of the rule
  without ``--target``) neither escalates nor reminds until it resolves, or until ``--for``
  has passed; it still resolves, with its RESOLVED notification, and the acknowledgement
  ends then. Only a firing alert can be acknowledged.
- ``silence RULE --for 2h [--target T]``: no notification of the rule's alerts (every target,
  those that appear later too, without ``--target``) until then. The alerts are still
  evaluated and their events recorded; a RESOLVED of an alert paged before the silence still
  goes out (it closes PagerDuty's incident); when the silence expires on a firing alert,
  everyone its level pages gets a reminder.
- ``unack`` and ``unsilence`` end them early.

Exit status: 0 done, 1 unknown rule or target or nothing to act on, 2 bad input or alerts
off, 3 the store cannot be used. Every error is one line.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import getpass
import os
import sys
import time
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from sqlalchemy.exc import SQLAlchemyError

from sms_monitor.alerts.engine import mutes_of, notification, recipients
from sms_monitor.alerts.lifecycle import FIRING, AlertState, Event
from sms_monitor.alerts.notify import Notification
from sms_monitor.alerts.rules import Rule, rule_from_json
from sms_monitor.alerts.store import (
    ACK,
    ALL_TARGETS,
    SCHEMA_VERSION,
    SILENCE,
    AlertStore,
    Mute,
    RuleChanges,
    StoreError,
)
from sms_monitor.core.durations import parse_duration

if TYPE_CHECKING:
    from sms_monitor.config import AlertsConfig, Settings

OK, NOT_FOUND, BAD_INPUT, CANNOT_RUN = 0, 1, 2, 3
MAX_FOR = 30 * 86400.0  # an acknowledgement or silence lasts at most 30 days
MAX_BY, MAX_REASON = 100, 500
ACTIONS = ("ack", "unack", "silence", "unsilence")
# what an acknowledgement's notification takes from the alert's last one (no snapshot here)
CONTEXT = ("unit", "currency", "window", "errors", "errors_window", "checks")


class CommandError(Exception):
    """One line for stderr, and the exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def when(ts: float | None) -> str:
    return "-" if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC).strftime(
        "%Y-%m-%d %H:%M:%SZ")


def default_actor() -> str:
    """Who runs the command: the sudo caller, else the login name."""
    try:
        return os.environ.get("SUDO_USER") or getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


def _text(value: str, what: str, limit: int) -> str:
    text = " ".join(value.split())
    if len(text) > limit:
        raise CommandError(f"{what} is {len(text)} characters long; at most {limit}", BAD_INPUT)
    if any(unicodedata.category(c) == "Cc" for c in text):
        raise CommandError(f"{what} contains a control character", BAD_INPUT)
    return text


def duration(text: str | None) -> float | None:
    """``--for``: seconds, at most :data:`MAX_FOR`; CommandError (exit 2) otherwise."""
    if text is None:
        return None
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise CommandError(f"--for: {exc}", BAD_INPUT) from None
    if seconds > MAX_FOR:
        raise CommandError("--for: at most 30 days", BAD_INPUT)
    return seconds


def mute_text(view: Mute | None, silence: Mute | None) -> str:
    """The MUTED column: who acknowledged it and until when; until when it is silenced."""
    parts = []
    if view is not None:
        parts.append(f"acked by {view.by}" + (f" until {when(view.until)}" if view.until else ""))
    if silence is not None:
        parts.append(f"silenced until {when(silence.until)} ({silence.by})")
    return "; ".join(parts) or "-"


def active_mutes(mutes: Sequence[Mute], states: dict[tuple[str, str], AlertState], rule: str,
                 target: str, now: float) -> tuple[Mute | None, Mute | None]:
    """The acknowledgement that holds for an alert now (its firing episode, not expired) and
    the silence that holds for it now."""
    ack, silence = mutes_of(mutes, rule, target, now)
    st = states.get((rule, target))
    if ack is not None and not (ack.active(now) and st is not None and st.state == FIRING
                                and ack.since == st.since):
        ack = None
    return ack, silence


class AlertCommands:
    """The ``alerts`` subcommands against one alert store."""

    def __init__(self, settings: Settings, out: TextIO | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        if settings.alerts is None:
            raise CommandError("alerts are off (set SMS_MONITOR_DATABASE_URL; [alerts] "
                               "enabled)", BAD_INPUT)
        self.settings = settings
        self.config: AlertsConfig = settings.alerts
        self.out = out or sys.stdout
        self.clock = clock or time.time

    def _print(self, text: str = "") -> None:
        print(text, file=self.out)

    def _missing_file(self) -> str | None:
        """Why there is nothing to read yet: an SQLite store not created (opening it would)."""
        from sms_monitor.storage.sqlite import missing_file_problem, sqlite_file

        path = sqlite_file(self.config.store_url)
        if path is None or path.exists():
            return None
        problem = missing_file_problem(path)
        return (f"the alert store {path} has not been created yet ("
                + (f"and the daemon cannot create it: {problem})" if problem else
                   "the daemon creates it on its first cycle)"))

    def _store(self) -> AlertStore:
        return AlertStore(self.config.store_url, self.config.prefix, self.config.store_schema)

    # -- listing ------------------------------------------------------------------------------

    def listing(self) -> int:
        """Every alert with its state, value, escalation, last notification and whether it is
        acknowledged or silenced. Reads only."""
        missing = self._missing_file()
        if missing:
            self._print(f"No alerts: {missing}.")
            return OK
        store = self._store()
        try:
            tables = store.tables()
            states = store.load_states() if "state" in tables else {}
            last = store.last_sent() if "outbox" in tables else {}
            pending = store.pending_count() if "outbox" in tables else 0
            mutes = store.load_mutes() if "mute" in tables else []
        finally:
            store.close()
        if "state" not in tables:
            self._print("No alerts: the alert store holds no sms-monitor tables yet (the daemon "
                        "creates them on its first cycle).")
            return OK
        if not states:
            self._print("No alerts in the alert store yet.")
        now = self.clock()
        rows = [("RULE", "TARGET", "STATE", "VALUE", "SINCE", "LEVEL", "LAST NOTIFIED", "MUTED")] \
            if states else []
        for (rule, target), st in sorted(states.items()):
            ack, silence = active_mutes(mutes, states, rule, target, now)
            rows.append((rule, target, st.state,
                         "-" if st.last_value is None else f"{st.last_value:.4g}",
                         when(st.since), str(st.level or "-"), when(last.get((rule, target))),
                         mute_text(ack, silence)))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))] if rows else []
        for r in rows:
            self._print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        self._print(f"{pending} notification(s) waiting in the outbox")
        return OK

    def history(self, rule: str | None, limit: int) -> int:
        """The newest history rows: events, acknowledgements, silences, who and why."""
        missing = self._missing_file()
        if missing:
            self._print(f"No history: {missing}.")
            return OK
        store = self._store()
        try:
            tables = store.tables()
            if "history" not in tables:
                self._print("No history: the alert store holds no sms-monitor tables yet.")
                return OK
            if rule is not None:
                self._known_rule(store, rule)
            rows = store.load_history(rule, limit, audited="mute" in tables)  # layout 4
        finally:
            store.close()
        for r in reversed(rows):
            value = "" if r.get("value") is None else f" value {r['value']:.4g}"
            who = f" by {r['actor']}" if r.get("actor") else ""
            why = f": {r['note']}" if r.get("note") else ""
            self._print(f"{when(r['at'])}  {r['rule']} ({r['target']})  {r['event']}"
                        f"{value}{who}{why}")
        return OK

    # -- acknowledging and silencing ------------------------------------------------------------

    def _open_for_writing(self) -> AlertStore:
        missing = self._missing_file()
        if missing:
            raise CommandError(f"no alerts to act on: {missing}", NOT_FOUND)
        store = self._store()
        try:
            layout = store.layout()
        except BaseException:
            store.close()
            raise
        if layout is None:
            store.close()
            raise CommandError("no alerts to act on: the alert store holds no sms-monitor "
                               "tables yet (the daemon creates them on its first cycle)",
                               NOT_FOUND)
        if layout != SCHEMA_VERSION:
            store.close()
            newer = layout > SCHEMA_VERSION
            raise CommandError(
                f"the alert store has layout {layout}, "
                + (f"newer than this sms-monitor's ({SCHEMA_VERSION})" if newer else
                   f"older than this sms-monitor's {SCHEMA_VERSION}: start this version's "
                   "daemon (it upgrades the store in place), then try again"), CANNOT_RUN)
        return store

    @staticmethod
    def _known_rule(store: AlertStore, rule: str) -> dict[tuple[str, str], AlertState]:
        """The rule's alerts; CommandError (exit 1) naming the known rules if it has none."""
        states = store.load_states()
        mine = {k: v for k, v in states.items() if k[0] == rule}
        if mine:
            return mine
        names = sorted({r for r, _ in states})
        close = difflib.get_close_matches(rule, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else (
            f"; known: {', '.join(repr(n) for n in names[:10])}" if names else
            "; the alert store holds no alert yet")
        raise CommandError(f"unknown rule {rule!r}{hint}", NOT_FOUND)

    @staticmethod
    def _known_target(mine: dict[tuple[str, str], AlertState], rule: str,
                      target: str | None) -> list[str]:
        targets = sorted(t for _, t in mine)
        if target is None:
            return targets
        if target not in targets:
            raise CommandError(f"rule {rule!r} has no target {target!r}; its targets: "
                               f"{', '.join(targets)}", NOT_FOUND)
        return [target]

    def run(self, action: str, rule: str, target: str | None = None, for_: str | None = None,
            by: str | None = None, reason: str | None = None) -> int:
        """``ack``, ``unack``, ``silence`` or ``unsilence``; prints what it did."""
        seconds = duration(for_)
        actor = _text(by if by is not None else default_actor(), "--by", MAX_BY) or "unknown"
        why = _text(reason or "", "--reason", MAX_REASON)
        if action == "silence" and seconds is None:
            raise CommandError("silence needs --for (how long, e.g. 2h)", BAD_INPUT)
        if action in ("unack", "unsilence") and seconds is not None:
            raise CommandError(f"{action} takes no --for", BAD_INPUT)
        store = self._open_for_writing()
        try:
            now = self.clock()
            mine = self._known_rule(store, rule)
            targets = self._known_target(mine, rule, target)
            mutes = [m for m in store.load_mutes() if m.rule == rule]
            changes = RuleChanges(rule)
            if action == "ack":
                done = self._ack(changes, store, mine, targets, target is None, mutes, now,
                                 seconds, actor, why)
            elif action == "unack":
                done = self._unmute(changes, ACK, mine, targets, target, mutes, now, actor, why)
            elif action == "silence":
                assert seconds is not None
                done = self._silence(changes, mine, target, now, seconds, actor, why)
            else:
                done = self._unmute(changes, SILENCE, mine, targets, target, mutes, now, actor,
                                    why)
            store.save_rule(changes, now)
        finally:
            store.close()
        for line in done:
            self._print(line)
        return OK

    def _ack(self, changes: RuleChanges, store: AlertStore,
             mine: dict[tuple[str, str], AlertState], targets: list[str], every: bool,
             mutes: Sequence[Mute], now: float, seconds: float | None, actor: str,
             why: str) -> list[str]:
        rule_name = next(iter(mine))[0]
        firing = [t for t in targets if mine[rule_name, t].state == FIRING]
        if not firing:
            if every:
                raise CommandError(f"{rule_name!r} has no firing alert to acknowledge "
                                   "(`silence` mutes an alert before it fires)", NOT_FOUND)
            st = mine[rule_name, targets[0]]
            raise CommandError(f"{rule_name!r} ({targets[0]}) is {st.state}, not firing: only a "
                               "firing alert can be acknowledged (`silence` mutes one before "
                               "it fires)", NOT_FOUND)
        until = now + seconds if seconds is not None else None
        lasts = f"until {when(until)}" if until else "until it resolves"
        note = f"{lasts}" + (f": {why}" if why else "")
        rule = _rule(store, rule_name)
        done = []
        for t in firing:
            st = mine[rule_name, t]
            changes.mutes.append(Mute(rule_name, t, ACK, now, actor, why, until, st.since))
            changes.history.append((rule_name, t, "acknowledged", st.level, st.last_value, now,
                                    actor, note))
            silenced = mutes_of(mutes, rule_name, t, now)[1] is not None
            if rule is not None and not silenced:
                self._queue_ack(changes, rule, st, now, f"acknowledged by {actor}, {note}",
                                store.last_payload(rule_name, t))
            done.append(f"Acknowledged {rule_name} ({t}) by {actor} {lasts}: no escalation or "
                        "reminder meanwhile; it still resolves.")
        return done

    def _queue_ack(self, changes: RuleChanges, rule: Rule, st: AlertState, now: float,
                   note: str, last: Mapping[str, Any] | None) -> None:
        """Tell everyone the alert has paged so far (its level's recipients) who took it,
        explained as its last notification was (``last``: its currency, error codes ...)."""
        since = st.since if st.since is not None else now
        event = Event("acknowledged", st.level, st.last_value, since, now)
        context = {k: last[k] for k in CONTEXT if k in last} if last else None
        n = Notification.from_payload(dataclasses.asdict(
            notification(rule, st.target, event, self.config, context, note=note)))
        payload = dataclasses.asdict(n)
        for r in recipients(rule, st.level, self.config):
            changes.outbox.append((n.key, r, payload))

    @staticmethod
    def _silence(changes: RuleChanges, mine: dict[tuple[str, str], AlertState],
                 target: str | None, now: float, seconds: float, actor: str,
                 why: str) -> list[str]:
        rule_name = next(iter(mine))[0]
        until = now + seconds
        t = target if target is not None else ALL_TARGETS
        changes.mutes.append(Mute(rule_name, t, SILENCE, now, actor, why, until))
        changes.history.append((rule_name, t, "silenced", 0, None, now, actor,
                                f"until {when(until)}" + (f": {why}" if why else "")))
        what = f"({target})" if target is not None else "(every target)"
        return [f"Silenced {rule_name} {what} by {actor} until {when(until)}: no notification "
                "until then."]

    @staticmethod
    def _unmute(changes: RuleChanges, kind: str, mine: dict[tuple[str, str], AlertState],
                targets: list[str], target: str | None, mutes: Sequence[Mute], now: float,
                actor: str, why: str) -> list[str]:
        rule_name = next(iter(mine))[0]
        wanted = set(targets) | ({ALL_TARGETS} if target is None else set())
        found = [m for m in mutes if m.kind == kind and m.target in wanted and m.active(now)]
        word = "acknowledged" if kind == ACK else "silenced"
        if not found:
            every = [m for m in mutes if m.kind == kind and m.target == ALL_TARGETS
                     and m.active(now)]
            if every and target is not None:
                raise CommandError(f"{rule_name!r} is silenced for every target: unsilence it "
                                   "without --target", NOT_FOUND)
            which = f" ({target})" if target is not None else ""
            raise CommandError(f"{rule_name!r}{which} is not {word}", NOT_FOUND)
        done = []
        for m in found:
            st = mine.get((rule_name, m.target))
            changes.unmute.append((rule_name, m.target, kind))
            changes.history.append((rule_name, m.target, f"un{word}",
                                    st.level if st else 0, st.last_value if st else None, now,
                                    actor, f"{word} by {m.by}" + (f": {why}" if why else "")))
            shown = "every target" if m.target == ALL_TARGETS else m.target
            done.append(f"{'Unacknowledged' if kind == ACK else 'Unsilenced'} {rule_name} "
                        f"({shown}) by {actor}"
                        + (": escalation resumes on the next cycle." if kind == ACK else
                           ": its notifications resume."))
        return done


def _rule(store: AlertStore, name: str) -> Rule | None:
    """The rule as the daemon last saved it beside its alerts, or None."""
    return rule_from_json(store.load_definitions().get(name))


def main(settings: Settings, action: str | None, rule: str | None = None,
         target: str | None = None, for_: str | None = None, by: str | None = None,
         reason: str | None = None, limit: int = 20, out: TextIO | None = None,
         err: TextIO | None = None, clock: Callable[[], float] | None = None,
         clean: Callable[[BaseException], str] = str) -> int:
    """Run one ``alerts`` command; errors are one line on ``err``, ``sms-monitor: ...``.
    ``clean`` turns a store's exception into one line without passwords."""
    err = err or sys.stderr
    try:
        commands = AlertCommands(settings, out, clock)
        if action is None:
            return commands.listing()
        if action == "history":
            return commands.history(rule, limit)
        assert rule is not None
        return commands.run(action, rule, target, for_, by, reason)
    except CommandError as exc:
        print(f"sms-monitor: {exc}", file=err)
        return exc.status
    except (SQLAlchemyError, StoreError, OSError, ImportError) as exc:
        verb = "read" if action in (None, "history") else "write"
        print(f"sms-monitor: cannot {verb} the alert store: {clean(exc)}", file=err)
        return CANNOT_RUN

