"""The keyword audit trail: every opt-out, opt-in and help message Twilio posts to us.

Kept in sms-monitor's own table (``<prefix>keyword_events``; an embedded SQLite file by
default, or PostgreSQL), never in the application's. A row holds when the message
arrived, the account, the keyword, the message SID and the sender's number masked to its
last two digits: enough for the audit the runbook asks for, without the number itself.

The message SID is a unique key: a row is written with insert-or-ignore, so a message
Twilio retried or someone replayed, even after a restart, is one row. :meth:`claim` is the
first step of handling an incoming keyword message: it queues the row and waits up to
``CLAIM_WAIT`` seconds for the writer to say whether the SID was new (True) or known
(False). When the store is slow, down or failing it answers None at once (after one
wait): the caller then decides from memory, and the row stays queued, to be written
(or found known) later.

Writes happen on a writer thread, never on the webhook's request thread, so a slow store
makes Twilio wait at most ``CLAIM_WAIT`` once. Writes that fail (the store is down,
locked, full) stay queued in memory and are retried; rows are lost only past
``MAX_QUEUED`` waiting rows or when the store refuses a row's data for good, and both are
counted (``dropped``).

Layouts (``<prefix>keyword_audit_version``; a store without it is layout 1): 1 had no
unique key; 2 makes ``message_sid`` unique. Upgrading moves the later rows of a SID
written more than once (retries, replays) to ``<prefix>keyword_events_duplicates``, so
nothing is lost, then adds the key.
"""

from __future__ import annotations

import threading
from collections import deque

import structlog
from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError

from sms_monitor.core.events import InboundEvent
from sms_monitor.logs import mask_phone
from sms_monitor.storage.sqlite import ensure_directory

log = structlog.get_logger("sms_monitor.audit")

MAX_QUEUED = 10_000
CLAIM_WAIT = 1.0  # seconds a request waits at most to learn whether its SID is new
SCHEMA_VERSION = 2  # 2: message_sid unique


class AuditStoreError(Exception):
    """The audit store cannot be used as it is (a newer layout)."""


class _Claim:
    """The answer to one :meth:`KeywordAudit.claim`: set by the writer."""

    __slots__ = ("done", "new")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.new: bool | None = None

    def settle(self, new: bool | None) -> None:
        self.new = new
        self.done.set()


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
            Column("number_masked", String(20), nullable=False),
            Index(f"{prefix}keyword_events_message_sid", "message_sid", unique=True))
        self.version = Table(f"{prefix}keyword_audit_version", md,
                             Column("version", Integer, nullable=False))
        self._duplicates = Table(  # created only by an upgrade that finds some (layout 2)
            f"{prefix}keyword_events_duplicates", MetaData(schema=schema),
            *(Column(c.name, c.type) for c in self.table.columns))
        self.metadata = md
        self._created = False
        self._lock = threading.Lock()  # guards the queue and the counters, never held for I/O
        self._write_lock = threading.Lock()  # one writer at a time
        self._queue: deque[tuple[dict[str, object], _Claim | None]] = deque()
        self._stalled = False  # a claim waited in vain: answer None at once until a write works
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
        self._enqueue(event, None)

    def claim(self, event: InboundEvent, wait: float = CLAIM_WAIT) -> bool | None:
        """Write ``event``'s row unless its SID is known: True when it was new, False when
        the store knew it (a retry or a replay, perhaps from before a restart), None when
        the store did not answer within ``wait`` seconds or is failing (the row stays
        queued; the caller decides from what it remembers)."""
        claim = _Claim()
        ready = self._enqueue(event, claim)
        if not ready or wait <= 0:
            return None
        if not claim.done.wait(wait):
            with self._lock:
                self._stalled = True
            log.warning("keyword_audit_slow", waited=wait)
            return None
        return claim.new

    def _enqueue(self, event: InboundEvent, claim: _Claim | None) -> bool:
        """Queue a row; whether the store is worth waiting for."""
        with self._lock:
            if len(self._queue) >= MAX_QUEUED:
                _, lost = self._queue.popleft()
                if lost is not None:
                    lost.settle(None)
                self.dropped += 1
            self._queue.append((self.row(event), claim))
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._writer, name="keyword-audit",
                                                daemon=True)
                self._thread.start()
            ready = self.last_error is None and not self._stalled
        self._wake.set()
        return ready

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
                outcomes = self._insert([row for row, _ in rows])
            except (SQLAlchemyError, OSError, AuditStoreError) as exc:
                with self._lock:
                    self.failures += 1
                    self.last_error = type(exc).__name__
                    room = MAX_QUEUED - len(self._queue)
                    keep = rows[-room:] if room > 0 else []
                    for _, lost in rows[:len(rows) - len(keep)]:
                        if lost is not None:
                            lost.settle(None)
                    self.dropped += len(rows) - len(keep)
                    self._queue.extendleft(reversed(keep))
                log.warning("keyword_audit_write_failed", error=self.last_error,
                            queued=len(rows))
                return False
            finally:
                with self._lock:
                    self._in_flight = 0
            for (_, claim), new in zip(rows, outcomes, strict=True):
                if claim is not None:
                    claim.settle(new)
            with self._lock:
                self.written += sum(1 for new in outcomes if new)
                self.dropped += sum(1 for new in outcomes if new is None)
                self.last_error = None
                self._stalled = False
            return True
        finally:
            self._write_lock.release()

    def _insert(self, rows: list[dict[str, object]]) -> list[bool | None]:
        """For each row: True written, False its SID was known (nothing written), None
        refused for good. A batch the store rejects for its data is written row by row, so
        one bad row does not hold back the others; a store that is down raises."""
        try:
            with self.engine.begin() as conn:
                return [self._insert_one(conn, row) for row in rows]
        except (DataError, IntegrityError):
            pass
        out: list[bool | None] = []
        for row in rows:
            try:
                with self.engine.begin() as conn:
                    out.append(self._insert_one(conn, row))
            except (DataError, IntegrityError) as exc:
                log.warning("keyword_audit_row_refused", error=type(exc).__name__)
                out.append(None)
        return out

    def _insert_one(self, conn: Connection, row: dict[str, object]) -> bool:
        """Insert-or-ignore on the message SID; whether a row was written."""
        ins = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        result = conn.execute(ins(self.table).values(**row)
                              .on_conflict_do_nothing(index_elements=["message_sid"])
                              .returning(self.table.c.id))
        return result.first() is not None

    @property
    def queued(self) -> int:
        with self._lock:
            return len(self._queue) + self._in_flight

    def _ensure_table(self) -> None:
        if self._created:
            return
        ensure_directory(self.url)
        self.metadata.create_all(self.engine)
        self.migrate()
        self._created = True

    def migrate(self) -> None:
        """Bring the store to ``SCHEMA_VERSION`` (tables made by :meth:`_ensure_table`).
        Replicas migrating at once wait for each other (PostgreSQL)."""
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text(f"LOCK TABLE {self._quoted(self.version)} IN EXCLUSIVE MODE"))
            current = conn.execute(select(func.max(self.version.c.version))).scalar()
            if current is not None and current > SCHEMA_VERSION:
                raise AuditStoreError(f"audit store has layout {current}, newer than this "
                                      f"sms-monitor ({SCHEMA_VERSION})")
            if current is None or current < 2:
                self._upgrade_to_2(conn)
            if current is None:
                conn.execute(insert(self.version).values(version=SCHEMA_VERSION))
            elif current < SCHEMA_VERSION:
                conn.execute(update(self.version).values(version=SCHEMA_VERSION))

    def _quoted(self, table: Table) -> str:
        return self.engine.dialect.identifier_preparer.format_table(table)

    def _upgrade_to_2(self, conn: Connection) -> None:
        """Layout 1 → 2: the later rows of a SID written more than once move to the
        duplicates table; then ``message_sid`` becomes unique. Nothing to do on a new store."""
        t = self.table
        first = select(func.min(t.c.id)).group_by(t.c.message_sid)
        later = select(func.count()).select_from(t).where(t.c.id.not_in(first))
        moved = int(conn.execute(later).scalar_one())
        if moved:
            self._duplicates.create(conn, checkfirst=True)
            names = [c.name for c in t.columns]
            conn.execute(insert(self._duplicates).from_select(
                names, select(*t.columns).where(t.c.id.not_in(first))))
            conn.execute(delete(t).where(t.c.id.not_in(first)))
            log.warning("keyword_audit_duplicates_moved", rows=moved,
                        table=self._duplicates.name)
        for index in t.indexes:
            index.create(conn, checkfirst=True)

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self.engine.dispose()
