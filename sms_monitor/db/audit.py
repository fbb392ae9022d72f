"""The keyword audit trail: every opt-out, opt-in and help message Twilio posts to us.

Kept in sms-monitor's own table (``<prefix>keyword_events``; an embedded SQLite file by
default, or PostgreSQL), never in the application's. A row holds when the message
arrived, the account, the keyword, the message SID and the sender's number masked to its
last two digits: enough for the audit the runbook asks for, without the number itself.

Writes that fail (the store is down, locked, full) stay queued in memory, bounded, and are
retried on the next :meth:`KeywordAudit.flush`; nothing is lost while the process runs.
"""

from __future__ import annotations

import threading
from collections import deque
from pathlib import Path

import structlog
from sqlalchemy import Column, Engine, Float, Integer, MetaData, String, Table, create_engine, insert
from sqlalchemy.exc import SQLAlchemyError

from sms_monitor.export.webhooks import InboundEvent
from sms_monitor.logs import mask_phone

log = structlog.get_logger("sms_monitor.audit")

MAX_QUEUED = 10_000


class KeywordAudit:
    def __init__(self, url: str, prefix: str = "sms_monitor_", schema: str | None = None,
                 accounts: dict[str, str] | None = None) -> None:
        self.url = url
        self.accounts = accounts or {}  # account SID -> configured name
        connect_args = {"timeout": 5} if url.startswith("sqlite") else {"connect_timeout": 5}
        self.engine: Engine = create_engine(url, pool_pre_ping=True, connect_args=connect_args)
        md = MetaData(schema=schema)
        self.table = Table(
            f"{prefix}keyword_events", md,
            Column("id", Integer, primary_key=True, autoincrement=True),
            Column("received_at", Float, nullable=False, index=True),
            Column("account", String(100), nullable=False),
            Column("message_sid", String(64), nullable=False),
            Column("kind", String(10), nullable=False),
            Column("keyword", String(40), nullable=False),
            Column("number_masked", String(20), nullable=False))
        self.metadata = md
        self._created = False
        self._lock = threading.Lock()
        self._queue: deque[dict[str, object]] = deque(maxlen=MAX_QUEUED)
        self.written = 0
        self.failures = 0
        self.last_error: str | None = None

    def row(self, event: InboundEvent) -> dict[str, object]:
        return {"received_at": event.at,
                "account": self.accounts.get(event.account_sid, event.account_sid),
                "message_sid": event.sid[:64], "kind": event.kind, "keyword": event.keyword[:40],
                "number_masked": mask_phone(event.number)[:20] if event.number.startswith("+")
                else "*" * min(len(event.number), 18)}

    def record(self, event: InboundEvent) -> bool:
        """Queue one event and try to write everything queued; True when it is stored."""
        with self._lock:
            self._queue.append(self.row(event))
        return self.flush()

    def flush(self) -> bool:
        """Write what is queued; on failure keep it for the next call."""
        with self._lock:
            if not self._queue:
                return True
            rows = list(self._queue)
            try:
                self._ensure_table()
                with self.engine.begin() as conn:
                    conn.execute(insert(self.table), rows)
            except (SQLAlchemyError, OSError) as exc:
                self.failures += 1
                self.last_error = type(exc).__name__
                log.warning("keyword_audit_write_failed", error=self.last_error,
                            queued=len(rows))
                return False
            self._queue.clear()
            self.written += len(rows)
            return True

    @property
    def queued(self) -> int:
        return len(self._queue)

    def _ensure_table(self) -> None:
        if self._created:
            return
        if self.url.startswith("sqlite:///") and self.url != "sqlite:///:memory:":
            Path(self.url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        self.metadata.create_all(self.engine)
        self._created = True

    def close(self) -> None:
        self.engine.dispose()
