"""Durable alert state: current states, the notification outbox and the history.

In sms-monitor's own tables (a table prefix, optionally a schema) of an embedded SQLite
file by default, or of PostgreSQL. Created by sms-monitor itself; ``schema_version``
records the layout so later versions can migrate it. A decision and its notifications
are committed together (the outbox), so a crash between deciding and sending loses
nothing and a restart never re-decides what was already decided.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

from sqlalchemy import (
    Column,
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
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from sms_monitor.alerts.lifecycle import AlertState
from sms_monitor.storage.sqlite import ensure_directory

SCHEMA_VERSION = 1


class StoreError(Exception):
    """The alert store cannot be used; ``str()`` is one line."""


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
            Column("rule", String(200), primary_key=True),
            Column("target", String(100), primary_key=True),
            Column("state", String(20), nullable=False),
            Column("since", Float), Column("level", Integer, nullable=False, default=0),
            Column("last_notified", Float), Column("last_value", Float),
            Column("updated", Float, nullable=False))
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
            UniqueConstraint("key", "recipient", name=f"{prefix}outbox_key_recipient"))
        self.history = Table(
            f"{prefix}alert_history", md,
            Column("id", Integer, primary_key=True, autoincrement=True),
            Column("rule", String(200), nullable=False), Column("target", String(100), nullable=False),
            Column("event", String(20), nullable=False), Column("level", Integer, nullable=False),
            Column("value", Float), Column("at", Float, nullable=False))
        self.metadata = md

    def migrate(self) -> None:
        """Create the tables if needed and record the layout version."""
        try:
            ensure_directory(self.url)
        except OSError as exc:
            raise StoreError(f"cannot create the alert store's directory {exc.strerror}"
                             ) from None
        self.metadata.create_all(self.engine)
        with self.engine.begin() as conn:
            current = conn.execute(select(func.max(self.version.c.version))).scalar()
            if current is None:
                conn.execute(insert(self.version).values(version=SCHEMA_VERSION))
            elif current > SCHEMA_VERSION:
                raise StoreError(f"alert store has layout {current}, newer than this "
                                 f"sms-monitor ({SCHEMA_VERSION})")
        self.migrated = True

    def close(self) -> None:
        self.engine.dispose()

    # -- states -------------------------------------------------------------
    def load_states(self) -> dict[tuple[str, str], AlertState]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(self.state)).mappings().all()
        return {(r["rule"], r["target"]): AlertState(
            rule=r["rule"], target=r["target"], state=r["state"], since=r["since"],
            level=r["level"], last_notified=r["last_notified"], last_value=r["last_value"])
            for r in rows}

    def commit(self, states: Iterable[AlertState], outbox: Iterable[tuple[str, str, dict[str, Any]]],
               history: Iterable[tuple[str, str, str, int, float | None, float]], now: float,
               forget: Iterable[tuple[str, str]] = ()) -> None:
        """Write new states, queue notifications (key, recipient, payload) and history at once."""
        ins = postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert
        with self.engine.begin() as conn:
            for s in states:
                values = {**asdict(s), "updated": now}
                stmt = ins(self.state).values(**values)
                conn.execute(stmt.on_conflict_do_update(
                    index_elements=["rule", "target"],
                    set_={k: stmt.excluded[k] for k in values if k not in ("rule", "target")}))
            for rule, target in forget:
                conn.execute(delete(self.state).where(self.state.c.rule == rule,
                                                      self.state.c.target == target))
            for key, recipient, payload in outbox:
                conn.execute(ins(self.outbox).values(
                    key=key, recipient=recipient, payload=json.dumps(payload), created=now,
                    attempts=0, next_attempt=now).on_conflict_do_nothing())
            for rule, target, event, level, value, at in history:
                conn.execute(insert(self.history).values(rule=rule, target=target, event=event,
                                                         level=level, value=value, at=at))

    # -- outbox -------------------------------------------------------------
    def due(self, now: float, limit: int = 100) -> list[dict[str, Any]]:
        o = self.outbox
        with self.engine.connect() as conn:
            rows = conn.execute(select(o).where(o.c.sent_at.is_(None), o.c.next_attempt <= now)
                                .order_by(o.c.id).limit(limit)).mappings().all()
        return [dict(r) for r in rows]

    def mark_sent(self, row_id: int, now: float) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(self.outbox).where(self.outbox.c.id == row_id)
                         .values(sent_at=now, last_error=None))

    def mark_failed(self, row_id: int, attempts: int, next_attempt: float, error: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(self.outbox).where(self.outbox.c.id == row_id)
                         .values(attempts=attempts, next_attempt=next_attempt,
                                 last_error=error[:500]))

    def pending_count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(self.outbox)
                                    .where(self.outbox.c.sent_at.is_(None))).scalar_one())

    def last_sent(self) -> dict[tuple[str, str], float]:
        """(rule, target) -> when a notification for it was last delivered."""
        o = self.outbox
        with self.engine.connect() as conn:
            rows = conn.execute(select(o.c.payload, o.c.sent_at).where(o.c.sent_at.is_not(None)))
            out: dict[tuple[str, str], float] = {}
            for payload, sent in rows:
                p = json.loads(payload)
                k = (p.get("rule", ""), p.get("account", ""))
                out[k] = max(out.get(k, 0.0), float(sent))
        return out
