"""Two replicas, one pager: leadership by a PostgreSQL advisory lock.

The leader holds ``pg_try_advisory_lock`` on a dedicated connection. If its process dies
the connection closes, the lock is released and the other replica takes it on its next
cycle. With an embedded SQLite store there is a single replica, always the leader.
"""

from __future__ import annotations

import contextlib

import structlog
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

log = structlog.get_logger("sms_monitor.leader")

# A fixed 64-bit key for sms-monitor's lock ("smsmon" in ASCII, as a number).
LOCK_KEY = 0x736D736D6F6E


class Leadership:
    def __init__(self, url: str, key: int = LOCK_KEY) -> None:
        self.key = key
        self.single = not url.startswith("postgresql")
        self._engine: Engine | None = None if self.single else create_engine(url, poolclass=NullPool)
        self._conn: Connection | None = None
        self.leader = self.single

    def check(self) -> bool:
        """Keep or try to take the lock; True while this replica leads."""
        if self.single or self._engine is None:
            return True
        try:
            if self._conn is not None:
                self._conn.execute(text("SELECT 1"))  # is the lock's connection still alive?
                self._conn.commit()  # never sit "idle in transaction"
                return True
            conn = self._engine.connect()
            got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key})
                       .scalar())
            conn.commit()
            if got:
                self._conn = conn
                if not self.leader:
                    log.info("leadership_acquired")
                self.leader = True
            else:
                conn.close()
                self.leader = False
        except SQLAlchemyError as exc:
            if self.leader:
                log.warning("leadership_lost", error=type(exc).__name__)
            self._drop()
            self.leader = False
        return self.leader

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(SQLAlchemyError):
                self._conn.close()
            self._conn = None

    def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(SQLAlchemyError):
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
        self._drop()
        self.leader = self.single
        if self._engine is not None:
            self._engine.dispose()
