"""Read the application's database: the runbook's diagnosis queries, run continuously.

Only SELECTs, each in its own short read-only transaction (PostgreSQL:
``default_transaction_read_only`` and ``statement_timeout`` on the session;
SQLite: ``PRAGMA query_only``). Each query fails alone: its checks become
unknown with a one-line reason naming the table or column, the others carry on.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import structlog
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Text,
    and_,
    any_,
    case,
    cast,
    create_engine,
    event,
    func,
    literal_column,
    make_url,
    not_,
    or_,
    select,
)
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from sms_monitor.config import DatabaseConfig
from sms_monitor.core.credentials import mask_credentials
from sms_monitor.core.e164 import E164
from sms_monitor.core.facts import DATABASE_QUERIES, DatabaseFacts
from sms_monitor.core.peers import normalise, peer_hash
from sms_monitor.inputs.schema_names import MappedTable

log = structlog.get_logger("sms_monitor.database")

T = TypeVar("T")


def describe_error(exc: BaseException) -> tuple[str, str]:
    """(cause label, one-line reason) for a failed query; never includes the URL."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    code = getattr(orig, "sqlstate", None) or ""
    lowered = text.lower()
    if code in ("42P01", "42703", "3F000") or "no such table" in lowered \
            or "no such column" in lowered or "does not exist" in lowered:
        cause = "schema"
    elif code == "42501" or "permission denied" in lowered:
        cause = "permission"
    elif code == "57014" or "statement timeout" in lowered:
        cause = "timeout"
    elif code == "25006" or "read-only" in lowered or "readonly" in lowered:
        cause = "read_only"
    elif isinstance(exc, DBAPIError) and exc.connection_invalidated or code.startswith("08") \
            or "connection" in lowered or "could not connect" in lowered:
        cause = "unreachable"
    else:
        cause = "error"
    # a connection error may echo host and port, never the password; mask user:pass@ anyway
    return cause, mask_credentials(text)[:300]


def _sqlite_digits(value: object) -> str | None:
    return None if value is None else re.sub(r"\D", "", str(value))


def _sqlite_mask_digits(value: object) -> str | None:
    return None if value is None else re.sub(r"\d+", "#", str(value))


CONTENT_DAYS = 7
# notification_logs.status values (any case) that are a delivery outcome, as Twilio names them
STATUS_DELIVERED = ("delivered", "read")
STATUS_SETTLED = (*STATUS_DELIVERED, "undelivered", "failed")
CONTENT_MAX_GROUPS = 5000


class DatabaseSource:
    def __init__(self, config: DatabaseConfig) -> None:
        self.config = config
        self.names = config.names
        url = config.url
        self.dialect = url.split(":", 1)[0].split("+", 1)[0]
        connect_args: dict[str, Any] = {}
        if self.dialect == "postgresql":
            timeout_ms = int(config.statement_timeout * 1000)
            connect_args = {
                "options": f"-c default_transaction_read_only=on -c statement_timeout={timeout_ms}",
                "connect_timeout": max(1, int(config.connect_timeout)),
                "application_name": "sms-monitor",
            }
        # an in-memory SQLite database ("sqlite://") has one connection per thread, no pool
        pooled = {} if make_url(url).database in (None, "", ":memory:") and \
            self.dialect == "sqlite" else {"pool_size": 1, "max_overflow": 2}
        self.engine: Engine = create_engine(url, pool_pre_ping=True, connect_args=connect_args,
                                            **pooled)
        if self.dialect == "sqlite":
            event.listen(self.engine, "connect", self._sqlite_setup)
        self._normalised: dict[str, str | None] = {}

    @staticmethod
    def _sqlite_setup(dbapi_conn: Any, record: Any) -> None:
        dbapi_conn.create_function("sms_digits", 1, _sqlite_digits, deterministic=True)
        dbapi_conn.create_function("sms_mask_digits", 1, _sqlite_mask_digits, deterministic=True)
        dbapi_conn.execute("PRAGMA query_only = ON")

    def close(self) -> None:
        self.engine.dispose()

    # -- dialect helpers --------------------------------------------------
    def _is_sms(self, col: Any) -> ColumnElement[bool]:
        if self.dialect == "postgresql":  # inline, so generic plans still match the index
            return literal_column("'sms'") == any_(col)
        return col.like('%"sms"%')

    def _seconds_between(self, later: Any, earlier: Any) -> Any:
        if self.dialect == "postgresql":
            return func.extract("epoch", later - earlier)
        return (func.julianday(later) - func.julianday(earlier)) * 86400.0

    def _recipients(self, col: Any) -> Any:
        if self.dialect == "postgresql":
            return func.coalesce(func.cardinality(col), 1)
        return func.coalesce(func.json_array_length(col), 1)

    def _digit_suffix(self, col: Any) -> Any:
        # Constants are rendered inline on PostgreSQL so the expression matches the
        # recommended expression index (a bound parameter would not).
        if self.dialect == "postgresql":
            return func.right(func.regexp_replace(col, literal_column("'[^0-9]'"),
                                                  literal_column("''"), literal_column("'g'")),
                              literal_column("10"))
        return func.substr(func.sms_digits(col), -10)

    def _not_e164(self, col: Any) -> ColumnElement[bool]:
        if self.dialect == "postgresql":  # inline, to match the recommended partial index
            return and_(col.is_not(None), col.op("!~")(literal_column(f"'{E164.pattern}'")))
        return and_(col.is_not(None), not_(col.regexp_match(E164.pattern)))

    def _mask_digits(self, col: Any) -> Any:
        if self.dialect == "postgresql":
            return func.regexp_replace(col, literal_column("'[0-9]+'"), literal_column("'#'"),
                                       literal_column("'g'"))
        return func.sms_mask_digits(col)

    def _norm(self, raw: object) -> str | None:
        if not isinstance(raw, str):
            return None
        if raw not in self._normalised:
            if len(self._normalised) > 500_000:
                self._normalised.clear()
            self._normalised[raw] = normalise(raw, self.config.default_region)
        return self._normalised[raw]

    # -- queries ----------------------------------------------------------
    def _run(self, conn: Connection, name: str, query: Callable[[Connection], T],
             failures: dict[str, str], causes: dict[str, str]) -> T | None:
        try:
            with conn.begin():
                return query(conn)
        except SQLAlchemyError as exc:
            cause, reason = describe_error(exc)
            failures[name] = reason
            causes[name] = cause
            log.warning("database_query_failed", query=name, cause=cause, reason=reason)
            return None

    def invalid_phones(self, conn: Connection) -> dict[str, int]:
        t = self.names.table("clients")
        return {k: int(conn.execute(select(func.count()).select_from(t.clause)
                                    .where(self._not_e164(t.c(k)))).scalar_one())
                for k in ("phone", "cell_phone") if t.columns[k].name}

    def queue(self, conn: Connection, now: datetime
              ) -> tuple[float | None, int, int, float | None]:
        """(mean delay of sent rows, sent, unsent, seconds the oldest unsent row has waited)
        over SMS rows created in the last hour."""
        t = self.names.table("notification_logs")
        created, sent = t.c("created_at"), t.c("sent_at")
        start = now.timestamp() - 3600
        stmt = select(
            func.avg(case((sent.is_not(None), self._seconds_between(sent, created)))),
            func.count(sent),
            func.count(),
            func.min(case((sent.is_(None), created))),
        ).where(self._is_sms(t.c("sent_via")),
                created >= datetime.fromtimestamp(start, now.tzinfo), created <= now)
        mean, n_sent, total, oldest = conn.execute(stmt).one()
        waited = None
        if oldest is not None:
            if isinstance(oldest, str):  # SQLite without a declared type
                oldest = datetime.fromisoformat(oldest)
            if isinstance(oldest, datetime):
                if oldest.tzinfo is None:
                    oldest = oldest.replace(tzinfo=UTC)
                waited = max(0.0, now.timestamp() - oldest.timestamp())
        return ((float(mean) if mean is not None else None), int(n_sent),
                int(total) - int(n_sent), waited)

    def fallback(self, conn: Connection) -> tuple[int, int]:
        t = self.names.table("appointment_notification_settings")
        col = t.c("send_via_sms")
        off, total = conn.execute(select(
            func.coalesce(func.sum(case((col.is_(False), 1), else_=0)), 0), func.count()
        ).select_from(t.clause)).one()
        return int(off), int(total)

    @staticmethod
    def _phone_columns(t: MappedTable) -> list[Any]:
        return [t.c(k) for k in ("phone", "cell_phone") if t.columns[k].name]

    def opted_out_rows(self, conn: Connection) -> list[tuple[Any, ...]]:
        t = self.names.table("clients")
        return [tuple(r) for r in conn.execute(
            select(*self._phone_columns(t))
            .where(t.c("has_opted_out") == True))]  # noqa: E712 (SQL, not Python)

    def opted_out_hashes(self, rows: Iterable[tuple[Any, ...]]) -> frozenset[int]:
        """Keyed hashes of opted-out clients' numbers (normalised outside any transaction)."""
        hashes = set()
        for row in rows:
            for raw in row:
                h = peer_hash(self._norm(raw))
                if h is not None:
                    hashes.add(h)
        return frozenset(hashes)

    def opted_out(self, conn: Connection) -> frozenset[int]:
        return self.opted_out_hashes(self.opted_out_rows(conn))

    def client_optout(self, conn: Connection, numbers: Iterable[str]) -> dict[str, bool]:
        """For each number (E.164) that belongs to a client: True when every such client has
        opted out. Numbers of no client are left out."""
        wanted = {n for n in numbers if n}
        if not wanted:
            return {}
        suffixes = sorted({re.sub(r"\D", "", n)[-10:] for n in wanted})
        t = self.names.table("clients")
        phones = self._phone_columns(t)
        stmt = select(t.c("has_opted_out"), *phones).where(or_(
            *(self._digit_suffix(col).in_(suffixes) for col in phones)))
        out: dict[str, bool] = {}
        for opted, *raws in conn.execute(stmt):
            for raw in raws:
                n = self._norm(raw)
                if n in wanted:
                    out[n] = out.get(n, True) and bool(opted)
        return out

    def logged_recipients(self, conn: Connection, start: datetime, end: datetime) -> int:
        t = self.names.table("notification_logs")
        created = t.c("created_at")
        total = conn.execute(select(func.coalesce(func.sum(self._recipients(
            t.c("recipient_user_ids"))), 0)).where(
            self._is_sms(t.c("sent_via")), created >= start, created < end)).scalar_one()
        return int(total)

    def content(self, conn: Connection, now: datetime) -> list[tuple[str, int, int, int]]:
        """The runbook's Issue 2 query, grouped by digit-masked text: 7 days of SMS rows, as
        (template, rows, delivered, settled). ``status`` is compared without regard to case:
        ``delivered`` and ``read`` are delivered; they, ``undelivered`` and ``failed`` are the
        settled rows a delivery ratio is taken over (:data:`STATUS_DELIVERED`,
        :data:`STATUS_SETTLED`); any other value (``queued``, ``sent``, NULL, an
        application's own) is a row whose outcome is not known and is not judged."""
        t = self.names.table("notification_logs")
        masked = self._mask_digits(t.c("message")).label("template")
        status = func.lower(cast(t.c("status"), Text))  # (an enum column too)

        def count(values: tuple[str, ...]) -> Any:
            return func.coalesce(func.sum(case((status.in_(values), 1), else_=0)), 0)

        stmt = (select(masked, func.count(), count(STATUS_DELIVERED), count(STATUS_SETTLED))
                .where(self._is_sms(t.c("sent_via")),
                       t.c("created_at") >= now - timedelta(days=CONTENT_DAYS),
                       t.c("created_at") <= now, t.c("message").is_not(None))
                .group_by(masked).order_by(func.count().desc()).limit(CONTENT_MAX_GROUPS))
        return [(str(text), int(n), int(d), int(settled))
                for text, n, d, settled in conn.execute(stmt)]

    def rules(self, conn: Connection) -> list[dict[str, object]]:
        """Every notification_rules row, keyed by the runbook's column names."""
        t = self.names.table("notification_rules")
        keys = ("rule_name", "rule_type", "trigger_conditions", "recipients")
        rows = conn.execute(select(*(t.c(k) for k in keys)))
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def poll(self, now: datetime, optout_candidates: Iterable[str],
             reconcile: tuple[datetime, datetime], read_content: bool = False) -> DatabaseFacts:
        failures: dict[str, str] = {}
        causes: dict[str, str] = {}
        try:
            conn = self.engine.connect()
        except SQLAlchemyError as exc:
            cause, reason = describe_error(exc)
            log.warning("database_unreachable", cause=cause, reason=reason)
            names = tuple(q for q in DATABASE_QUERIES if read_content or q != "content")
            return DatabaseFacts(failures=dict.fromkeys(names, reason),
                                 causes=dict.fromkeys(names, cause))
        with conn:
            invalid = self._run(conn, "invalid_phone_numbers", self.invalid_phones,
                                failures, causes)
            queue = self._run(conn, "queue_delay", lambda c: self.queue(c, now), failures, causes)
            fallback = self._run(conn, "sms_fallback", self.fallback, failures, causes)
            opted_rows = self._run(conn, "opted_out_clients", self.opted_out_rows, failures,
                                   causes)
            candidates = list(optout_candidates)
            lookup = self._run(conn, "optout_lookup", lambda c: self.client_optout(c, candidates),
                               failures, causes)
            logged = self._run(conn, "reconciliation",
                               lambda c: self.logged_recipients(c, *reconcile), failures, causes)
            rules = self._run(conn, "notification_rules", self.rules, failures, causes)
            content = self._run(conn, "content", lambda c: self.content(c, now), failures,
                                causes) if read_content else None
        return DatabaseFacts(
            invalid_phones=invalid,
            queue_delay=queue[0] if queue else None,
            queue_sent=queue[1] if queue else None,
            queue_unsent=queue[2] if queue else None,
            queue_oldest_unsent=queue[3] if queue else None,
            sms_disabled=fallback[0] if fallback else None,
            settings_rows=fallback[1] if fallback else None,
            opted_out=None if opted_rows is None else self.opted_out_hashes(opted_rows),
            client_optout=lookup,
            logged_recipients=logged,
            content_rows=content,
            rule_rows=rules,
            failures=failures,
            causes=causes,
        )
