"""The keyword audit trail: every opt-out, opt-in and help message Twilio posts to us.

Kept in sms-monitor's own table (``<prefix>keyword_events``; an embedded SQLite file by
default, or PostgreSQL), never in the application's. A row holds when the message
arrived, the account, the keyword, the message SID and the sender's number masked to its
last two digits: enough for the audit the runbook asks for, without the number itself.

Writes happen on a writer thread, never on the webhook's request thread, so a slow store
never makes Twilio wait. Writes that fail (the store is down, locked, full) stay queued in
memory and are retried; rows are lost only past ``MAX_QUEUED`` waiting rows or when the
store refuses a row's data for good, and both are counted (``dropped``).
"""

from __future__ import annotations

import threading
from collections import deque

import structlog
from sqlalchemy import Column, Engine, Float, Integer, MetaData, String, Table, create_engine, insert
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError

from sms_monitor.core.events import InboundEvent
from sms_monitor.logs import mask_phone
from sms_monitor.storage.sqlite import ensure_directory

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
        self._lock = threading.Lock()  # guards the queue and the counters, never held for I/O
        self._write_lock = threading.Lock()  # one writer at a time
        self._queue: deque[dict[str, object]] = deque()
        self._in_flight = 0
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.written = 0
        self.failures = 0
        self.dropped = 0  # rows lost: the queue was full, or a row the store refuses for good
        self.last_error: str | None = None

    def row(self, event: InboundEvent) -> dict[str, object]:
        return {"received_at": event.at,
                "account": self.accounts.get(event.account_sid, event.account_sid),
                "message_sid": event.sid[:64], "kind": event.kind, "keyword": event.keyword[:40],
                "number_masked": mask_phone(event.number)[:20] if event.number.startswith("+")
                else "*" * min(len(event.number), 18)}

    def record(self, event: InboundEvent) -> None:
        """Queue one event for the writer thread; never waits for the store."""
        with self._lock:
            if len(self._queue) >= MAX_QUEUED:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(self.row(event))
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._writer, name="keyword-audit",
                                                daemon=True)
                self._thread.start()
        self._wake.set()

    def _writer(self) -> None:
        while not self._closed:
            self._wake.wait(timeout=30.0)  # a failed write is retried at least this often
            self._wake.clear()
            if not self._closed:
                self.flush()

    def flush(self, wait: bool = True) -> bool:
        """Write what is queued; on failure keep it for the next call. With ``wait=False``
        it returns at once (False) when another write is in progress."""
        if not self._write_lock.acquire(blocking=wait):
            return False
        try:
            with self._lock:
                rows = list(self._queue)
                self._queue.clear()
                self._in_flight = len(rows)
            if not rows:
                return True
            try:
                self._ensure_table()
                stored, refused = self._insert(rows)
            except (SQLAlchemyError, OSError) as exc:
                with self._lock:
                    self.failures += 1
                    self.last_error = type(exc).__name__
                    room = MAX_QUEUED - len(self._queue)
                    keep = rows[-room:] if room > 0 else []
                    self.dropped += len(rows) - len(keep)
                    self._queue.extendleft(reversed(keep))
                log.warning("keyword_audit_write_failed", error=self.last_error,
                            queued=len(rows))
                return False
            finally:
                with self._lock:
                    self._in_flight = 0
            with self._lock:
                self.written += stored
                self.dropped += refused
                self.last_error = None
            return True
        finally:
            self._write_lock.release()

    def _insert(self, rows: list[dict[str, object]]) -> tuple[int, int]:
        """(stored, refused for good). A batch the store rejects for its data is written row
        by row, so one bad row does not hold back the others; a store that is down raises."""
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(self.table), rows)
            return len(rows), 0
        except (DataError, IntegrityError):
            pass
        stored = 0
        for one in rows:
            try:
                with self.engine.begin() as conn:
                    conn.execute(insert(self.table), [one])
                stored += 1
            except (DataError, IntegrityError) as exc:
                log.warning("keyword_audit_row_refused", error=type(exc).__name__)
        return stored, len(rows) - stored

    @property
    def queued(self) -> int:
        with self._lock:
            return len(self._queue) + self._in_flight

    def _ensure_table(self) -> None:
        if self._created:
            return
        ensure_directory(self.url)
        self.metadata.create_all(self.engine)
        self._created = True

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self.engine.dispose()
