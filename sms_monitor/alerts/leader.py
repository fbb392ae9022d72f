"""Two replicas, one pager: leadership by a PostgreSQL advisory lock.

The leader holds ``pg_try_advisory_lock`` on a dedicated connection. If its process dies
the connection closes, the lock is released and the other replica takes it on its next
cycle. With an embedded SQLite store there is a single replica, always the leader.

The sender asks again before every notification (:meth:`Leadership.check`), on the lock's
own connection: is it alive, and does its session still hold the lock in ``pg_locks``? A
replica whose lock connection was cut (a network partition, ``pg_terminate_backend``, a
restarted server) stops sending at once, before the other replica can take over.
"""

from __future__ import annotations

import contextlib
import threading

import structlog
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

log = structlog.get_logger("sms_monitor.leader")

# A fixed 64-bit key for sms-monitor's lock ("smsmon" in ASCII, as a number).
LOCK_KEY = 0x736D736D6F6E

# Does this session hold the lock? pg_locks shows a bigint key as classid (high 32 bits),
# objid (low 32 bits) and objsubid 1.
_HOLDS = text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
              "AND pid = pg_backend_pid() AND classid::bigint = :hi AND objid::bigint = :lo "
              "AND objsubid = 1")


class Leadership:
    def __init__(self, url: str, key: int = LOCK_KEY) -> None:
        self.key = key
        self.single = not url.startswith("postgresql")
        self._engine: Engine | None = None if self.single else create_engine(url, poolclass=NullPool)
        self._conn: Connection | None = None
        self.leader = self.single
        # the cycle and the sender thread share the lock's connection, one at a time
        self._mutex = threading.Lock()

    def check(self) -> bool:
        """Keep or try to take the lock; True while this replica leads."""
        if self.single or self._engine is None:
            return True
        with self._mutex:
            return self._check()

    def holds(self) -> bool:
        """Still the leader? Never takes the lock: the fence the sender checks before each
        notification. False once the lock's connection is gone or no longer holds it."""
        if self.single or self._engine is None:
            return True
        with self._mutex:
            return self._conn is not None and self._check()

    def _check(self) -> bool:
        assert self._engine is not None
        try:
            if self._conn is not None:
                # is the lock's connection alive, and does its session still hold the lock?
                held = bool(self._conn.execute(_HOLDS, {"hi": self.key >> 32,
                                                        "lo": self.key & 0xFFFFFFFF}).scalar())
                self._conn.commit()  # never sit "idle in transaction"
                if held:
                    return True
                log.warning("leadership_lost", error="lock no longer held")
                self._drop()
                self.leader = False
                return False
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
        with self._mutex:
            if self._conn is not None:
                with contextlib.suppress(SQLAlchemyError):
                    self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
            self._drop()
        self.leader = self.single
        if self._engine is not None:
            self._engine.dispose()
