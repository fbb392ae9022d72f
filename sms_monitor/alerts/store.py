"""Durable alert state: current states, the notification outbox and the history.

In sms-monitor's own tables (a table prefix, optionally a schema) of an embedded SQLite
file by default, or of PostgreSQL. Created by sms-monitor itself; ``schema_version``
records the layout so later versions can migrate it. A decision and its notifications
are committed together (the outbox), so a crash between deciding and sending loses
nothing and a restart never re-decides what was already decided.

Layouts: 1 held rule names and targets in ``VARCHAR(200)`` / ``VARCHAR(100)``, so one long
rule name made every save fail on PostgreSQL; 2 holds them as ``TEXT`` and keeps each rule's
definition beside its states (``definition``), so an alert whose rule was removed can still
be resolved. :meth:`AlertStore.migrate` upgrades a layout 1 store in place.

Layout 4 adds acknowledgements and silences (``alert_mute``: one row per rule, target and
kind, written by ``sms-monitor alerts ack|silence``, removed by ``unack|unsilence``, at
expiry or, for an acknowledgement, when its alert resolves) and who did what and why to the
history (``actor``, ``note``): the audit of both.

Each rule's decisions are saved in a transaction of their own (:meth:`AlertStore.save_rule`):
a row that cannot be saved holds back only its own rule.

An outbox row is sent by the replica that claims it (``claimed_by``, until ``claim_until``):
the claim is taken with one conditional UPDATE, and a row is marked sent or failed only by
its claimer and only while unsent, so two replicas never both deliver a row they each think
is theirs. A claim left by a process that died mid-send expires and the row is retried.

``sent_at`` is when a row was settled: delivered (``last_error`` empty), or given up
(:meth:`AlertStore.give_up`: ``last_error`` says why, a recipient the configuration
refuses). Either way it is no longer pending; only a delivered row counts as sent.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    func,
    insert,
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from sms_monitor.alerts.lifecycle import AlertState
from sms_monitor.storage.sqlite import ensure_directory

SCHEMA_VERSION = 4  # 2: alert_state/alert_history widths; 3: outbox claims; 4: mutes, audit

# Columns added to an existing outbox by version 3 (ALTER TABLE ... ADD COLUMN: additive).
OUTBOX_CLAIM_COLUMNS = {"claimed_by": "VARCHAR(200)", "claim_until": "FLOAT"}
# Columns added to an existing history by version 4: who (a person, or sms-monitor) and why.
HISTORY_AUDIT_COLUMNS = {"actor": "TEXT", "note": "TEXT"}
ACK, SILENCE = "ack", "silence"
ALL_TARGETS = "*"  # a silence of every target of a rule, those that appear later too


class StoreError(Exception):
    """The alert store cannot be used; ``str()`` is one line."""


@dataclass(frozen=True)
class Mute:
    """An acknowledgement (``ack``: no escalation or reminder of one firing alert until it
    resolves or ``until``) or a silence (``silence``: no notification of a rule's alert,
    ``target`` or every target, until ``until``)."""

    rule: str
    target: str
    kind: str  # ACK or SILENCE
    at: float  # when it was given
    by: str
    reason: str = ""
    until: float | None = None  # None: until the alert resolves (an acknowledgement)
    since: float | None = None  # an acknowledgement's firing alert: its since (one episode)

    def active(self, now: float) -> bool:
        return self.until is None or now < self.until


HistoryRow = tuple[Any, ...]  # rule, target, event, level, value, at[, actor, note]


@dataclass
class RuleChanges:
    """What one cycle decided for one rule, saved together (:meth:`AlertStore.save_rule`)."""

    rule: str
    states: list[AlertState] = field(default_factory=list)
    outbox: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)  # key, to, payload
    history: list[HistoryRow] = field(default_factory=list)
    forget: list[tuple[str, str]] = field(default_factory=list)  # (rule, target) to delete
    definition: str | None = None  # the rule as JSON, saved with its states
    mutes: list[Mute] = field(default_factory=list)  # acknowledgements and silences to write
    unmute: list[tuple[str, str, str]] = field(default_factory=list)  # (rule, target, kind)

    def __bool__(self) -> bool:
        return bool(self.states or self.outbox or self.history or self.forget or self.mutes
                    or self.unmute)


class AlertStore:
    def __init__(self, url: str, prefix: str = "sms_monitor_", schema: str | None = None) -> None:
        self.url = url
        self.migrated = False
        connect_args = {"timeout": 15} if url.startswith("sqlite") else {}
        self.engine: Engine = create_engine(url, pool_pre_ping=True, connect_args=connect_args)
        md = MetaData(schema=schema)
        self.version = Table(f"{prefix}schema_version", md, Column("version", Integer, nullable=False))
        self.state = Table(
            f"{prefix}alert_state", md,
            Column("rule", Text, primary_key=True),
            Column("target", Text, primary_key=True),
            Column("state", String(20), nullable=False),
            Column("since", Float), Column("level", Integer, nullable=False, default=0),
            Column("last_notified", Float), Column("last_value", Float),
            Column("updated", Float, nullable=False),
            Column("definition", Text))  # the rule as JSON (rules.rule_json), layout 2
        self.outbox = Table(
            f"{prefix}outbox", md,
            Column("id", Integer, primary_key=True, autoincrement=True),
            Column("key", String(400), nullable=False),
            Column("recipient", String(400), nullable=False),
            Column("payload", Text, nullable=False),
            Column("created", Float, nullable=False),
            Column("attempts", Integer, nullable=False, default=0),
            Column("next_attempt", Float, nullable=False),
            Column("sent_at", Float), Column("last_error", Text),
            # the replica sending it, and until when its claim holds (then it may be retried)
            Column("claimed_by", String(200)), Column("claim_until", Float),
            UniqueConstraint("key", "recipient", name=f"{prefix}outbox_key_recipient"))
        self.history = Table(
            f"{prefix}alert_history", md,
            Column("id", Integer, primary_key=True, autoincrement=True),
            Column("rule", Text, nullable=False), Column("target", Text, nullable=False),
            Column("event", String(20), nullable=False), Column("level", Integer, nullable=False),
            Column("value", Float), Column("at", Float, nullable=False),
            Column("actor", Text), Column("note", Text))  # layout 4: who and why
        self.mute = Table(
            f"{prefix}alert_mute", md,
            Column("rule", Text, primary_key=True),
            Column("target", Text, primary_key=True),  # "*": every target of the rule
            Column("kind", String(20), primary_key=True),  # ack, silence
            Column("since", Float), Column("until", Float),
            Column("at", Float, nullable=False), Column("by", Text, nullable=False),
            Column("reason", Text, nullable=False, default=""))
        self.metadata = md

    def migrate(self) -> None:
        """Create the tables if needed, upgrade an older layout in place and record the
        layout version. Replicas migrating at once wait for each other (PostgreSQL)."""
        try:
            ensure_directory(self.url)
        except OSError as exc:
            raise StoreError(f"cannot create the alert store's directory {exc.strerror}"
                             ) from None
        self.metadata.create_all(self.engine)
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text(f"LOCK TABLE {self._quoted(self.version)} IN EXCLUSIVE MODE"))
            current = conn.execute(select(func.max(self.version.c.version))).scalar()
            if current is None:
                conn.execute(insert(self.version).values(version=SCHEMA_VERSION))
            elif current > SCHEMA_VERSION:
                raise StoreError(f"alert store has layout {current}, newer than this "
                                 f"sms-monitor ({SCHEMA_VERSION})")
            elif current < SCHEMA_VERSION:
                if current < 2:
                    self._upgrade_to_2(conn)
                if current < 3:
                    self._add_claim_columns(conn)
                if current < 4:
                    self._add_columns(conn, self.history, HISTORY_AUDIT_COLUMNS)
                conn.execute(update(self.version).values(version=SCHEMA_VERSION))
        self.migrated = True

    def _quoted(self, table: Table) -> str:
        return self.engine.dialect.identifier_preparer.format_table(table)

    def _upgrade_to_2(self, conn: Connection) -> None:
        """Layout 1 → 2: rule and target as TEXT; the state table gains ``definition``.
        SQLite never enforced a VARCHAR's length, so there only the column is added."""
        state, history = self._quoted(self.state), self._quoted(self.history)
        columns = {c["name"] for c in inspect(conn).get_columns(self.state.name,
                                                                 schema=self.state.schema)}
        if "definition" not in columns:
            conn.execute(text(f"ALTER TABLE {state} ADD COLUMN definition TEXT"))
        if conn.dialect.name == "postgresql":
            for table in (state, history):
                conn.execute(text(f"ALTER TABLE {table} ALTER COLUMN rule TYPE TEXT, "
                                  "ALTER COLUMN target TYPE TEXT"))

    def tables(self) -> set[str]:
        """Which of the store's tables exist ("state", "outbox", "history", "version",
        "mute"), looked up without creating anything."""
        names = {self.state.name: "state", self.outbox.name: "outbox",
                 self.history.name: "history", self.version.name: "version",
                 self.mute.name: "mute"}
        with self.engine.connect() as conn:
            present = set(inspect(conn).get_table_names(schema=self.metadata.schema))
        return {kind for name, kind in names.items() if name in present}

    def ping(self) -> None:
        """Raises SQLAlchemyError when the store cannot be reached."""
        with self.engine.connect() as conn:
            conn.execute(select(1))

    def _add_claim_columns(self, conn: Connection) -> None:
        """Layout 3: an outbox created before it gets the claim columns (idempotent)."""
        self._add_columns(conn, self.outbox, OUTBOX_CLAIM_COLUMNS)

    @staticmethod
    def _add_columns(conn: Connection, table: Table, columns: Mapping[str, str]) -> None:
        """Add the columns a table created by an older layout lacks (idempotent)."""
        have = {c["name"] for c in inspect(conn).get_columns(table.name, schema=table.schema)}
        quoted = conn.dialect.identifier_preparer.format_table(table)
        for name, kind in columns.items():
            if name not in have:
                conn.exec_driver_sql(f"ALTER TABLE {quoted} ADD COLUMN {name} {kind}")

    def layout(self) -> int | None:
        """The layout version recorded in the store, None when it has none (not created);
        reads only."""
        if "version" not in self.tables():
            return None
        with self.engine.connect() as conn:
            return conn.execute(select(func.max(self.version.c.version))).scalar()

    def close(self) -> None:
        self.engine.dispose()

    # -- states -------------------------------------------------------------
    def load_states(self) -> dict[tuple[str, str], AlertState]:
        c = self.state.c
        with self.engine.connect() as conn:  # named columns: a layout 1 store reads too
            rows = conn.execute(select(c.rule, c.target, c.state, c.since, c.level,
                                       c.last_notified, c.last_value)).mappings().all()
        return {(r["rule"], r["target"]): AlertState(
            rule=r["rule"], target=r["target"], state=r["state"], since=r["since"],
            level=r["level"], last_notified=r["last_notified"], last_value=r["last_value"])
            for r in rows}

    def load_mutes(self) -> list[Mute]:
        """Every acknowledgement and silence, expired ones too (the engine ends those)."""
        m = self.mute.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(m.rule, m.target, m.kind, m.at, m.by, m.reason, m.until,
                                       m.since)).mappings().all()
        return [Mute(**dict(r)) for r in rows]

    def load_history(self, rule: str | None = None, limit: int = 100, audited: bool = True
                     ) -> list[dict[str, Any]]:
        """The newest history rows (of one rule), newest first; ``audited``: with who and why
        (layout 4; an older store has no such columns)."""
        h = self.history.c
        columns = [h.id, h.rule, h.target, h.event, h.level, h.value, h.at,
                   *((h.actor, h.note) if audited else ())]
        query = select(*columns).order_by(h.id.desc()).limit(limit)
        if rule is not None:
            query = query.where(h.rule == rule)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings().all()]

    def load_definitions(self) -> dict[str, str]:
        """rule name -> the definition saved with its states (JSON), where there is one."""
        c = self.state.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(c.rule, c.definition).where(c.definition.is_not(None)))
            return {str(rule): str(definition) for rule, definition in rows}

    def commit(self, states: Iterable[AlertState], outbox: Iterable[tuple[str, str, dict[str, Any]]],
               history: Iterable[HistoryRow], now: float,
               forget: Iterable[tuple[str, str]] = ()) -> None:
        """Write new states, queue notifications (key, recipient, payload) and history at once."""
        with self.engine.begin() as conn:
            self._write(conn, RuleChanges("", list(states), list(outbox), list(history),
                                          list(forget)), now)

    def save_rule(self, changes: RuleChanges, now: float) -> None:
        """One rule's decisions, notifications and history in a transaction of their own."""
        with self.engine.begin() as conn:
            self._write(conn, changes, now)

    def _write(self, conn: Connection, changes: RuleChanges, now: float) -> None:
        ins = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        for s in changes.states:
            values = {**asdict(s), "updated": now}
            if changes.definition is not None:
                values["definition"] = changes.definition
            stmt = ins(self.state).values(**values)
            conn.execute(stmt.on_conflict_do_update(
                index_elements=["rule", "target"],
                set_={k: stmt.excluded[k] for k in values if k not in ("rule", "target")}))
        for rule, target in changes.forget:
            conn.execute(delete(self.state).where(self.state.c.rule == rule,
                                                  self.state.c.target == target))
            conn.execute(delete(self.mute).where(self.mute.c.rule == rule,
                                                 self.mute.c.target == target))
        for rule, target, kind in changes.unmute:
            conn.execute(delete(self.mute).where(self.mute.c.rule == rule,
                                                 self.mute.c.target == target,
                                                 self.mute.c.kind == kind))
        for m in changes.mutes:
            values = asdict(m)
            stmt = ins(self.mute).values(**values)
            conn.execute(stmt.on_conflict_do_update(
                index_elements=["rule", "target", "kind"],
                set_={k: stmt.excluded[k] for k in values if k not in ("rule", "target", "kind")}))
        for key, recipient, payload in changes.outbox:
            conn.execute(ins(self.outbox).values(
                key=key, recipient=recipient, payload=json.dumps(payload), created=now,
                attempts=0, next_attempt=now).on_conflict_do_nothing())
        for rule, target, event, level, value, at, *audit in changes.history:
            actor, note = (list(audit) + [None, None])[:2]
            conn.execute(insert(self.history).values(rule=rule, target=target, event=event,
                                                     level=level, value=value, at=at,
                                                     actor=actor, note=note))

    # -- outbox -------------------------------------------------------------
    def unsent(self, limit: int = 1000) -> list[dict[str, Any]]:
        """Unsent rows, oldest first (the order their events happened), due or not: the
        sender needs the ones not due yet too, to hold later events of the same alert."""
        o = self.outbox
        with self.engine.connect() as conn:
            rows = conn.execute(select(o).where(o.c.sent_at.is_(None))
                                .order_by(o.c.id).limit(limit)).mappings().all()
        return [dict(r) for r in rows]

    def due(self, now: float, limit: int = 100) -> list[dict[str, Any]]:
        """Unsent rows whose next attempt has come, oldest first."""
        return [r for r in self.unsent(limit) if r["next_attempt"] <= now]

    def claim(self, row_id: int, owner: str, now: float, until: float) -> bool:
        """Take an unsent row for ``owner`` until ``until``; False when another live claim
        holds it or it was sent meanwhile. One conditional UPDATE: of two replicas
        claiming at once, one wins."""
        o = self.outbox
        with self.engine.begin() as conn:
            result = conn.execute(
                update(o).where(o.c.id == row_id, o.c.sent_at.is_(None),
                                or_(o.c.claimed_by.is_(None), o.c.claimed_by == owner,
                                    o.c.claim_until < now))
                .values(claimed_by=owner, claim_until=until))
        return result.rowcount == 1

    def mark_sent(self, row_id: int, now: float, owner: str) -> bool:
        """Record the delivery; only the claimer of a still unsent row may (False otherwise)."""
        o = self.outbox
        with self.engine.begin() as conn:
            result = conn.execute(
                update(o).where(o.c.id == row_id, o.c.claimed_by == owner, o.c.sent_at.is_(None))
                .values(sent_at=now, last_error=None, claim_until=None))
        return result.rowcount == 1

    def mark_failed(self, row_id: int, attempts: int, next_attempt: float, error: str,
                    owner: str) -> bool:
        """Record a failed attempt and release the claim; only the claimer may."""
        o = self.outbox
        with self.engine.begin() as conn:
            result = conn.execute(
                update(o).where(o.c.id == row_id, o.c.claimed_by == owner, o.c.sent_at.is_(None))
                .values(attempts=attempts, next_attempt=next_attempt, last_error=error[:500],
                        claimed_by=None, claim_until=None))
        return result.rowcount == 1

    def give_up(self, row_id: int, now: float, error: str, owner: str) -> bool:
        """Settle a row without delivering it (a permanent failure: no retry can help); only
        its claimer may. ``last_error`` keeps why, so it never counts as sent."""
        o = self.outbox
        with self.engine.begin() as conn:
            result = conn.execute(
                update(o).where(o.c.id == row_id, o.c.claimed_by == owner, o.c.sent_at.is_(None))
                .values(sent_at=now, attempts=o.c.attempts + 1,
                        last_error=f"given up: {error}"[:500], claim_until=None))
        return result.rowcount == 1

    def release(self, row_id: int, owner: str) -> None:
        """Give a claimed row back untried (leadership was lost before sending it)."""
        o = self.outbox
        with self.engine.begin() as conn:
            conn.execute(update(o).where(o.c.id == row_id, o.c.claimed_by == owner,
                                         o.c.sent_at.is_(None))
                         .values(claimed_by=None, claim_until=None))

    def last_payload(self, rule: str, target: str) -> dict[str, Any] | None:
        """The newest notification queued for an alert (what explained it then), or None."""
        o = self.outbox
        with self.engine.connect() as conn:
            rows = conn.execute(select(o.c.payload).where(
                o.c.key.startswith(f"{rule}|{target}|", autoescape=True))
                .order_by(o.c.id.desc()).limit(20)).scalars().all()
        for raw in rows:
            try:
                payload = json.loads(raw)
            except ValueError:
                continue
            if isinstance(payload, dict) and (payload.get("rule"), payload.get("account")) == \
                    (rule, target):
                return payload
        return None

    def pending_count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(self.outbox)
                                    .where(self.outbox.c.sent_at.is_(None))).scalar_one())

    def last_sent(self) -> dict[tuple[str, str], float]:
        """(rule, target) -> when a notification for it was last delivered."""
        o = self.outbox
        with self.engine.connect() as conn:
            rows = conn.execute(select(o.c.payload, o.c.sent_at).where(
                o.c.sent_at.is_not(None), o.c.last_error.is_(None)))  # delivered, not given up
            out: dict[tuple[str, str], float] = {}
            for payload, sent in rows:
                p = json.loads(payload)
                k = (p.get("rule", ""), p.get("account", ""))
                out[k] = max(out.get(k, 0.0), float(sent))
        return out
