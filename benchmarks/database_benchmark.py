"""Benchmark of the database checks' queries on a runbook-sized PostgreSQL database.

A fresh database ``sms_monitor_bench`` (dropped first if it exists) is created on the
server (default ``postgresql+psycopg://postgres@127.0.0.1:5432``), given the runbook's
schema (``create_runbook_schema``) and filled with server-side SQL only
(``INSERT ... SELECT ... FROM generate_series``):

* ``clients`` (``--clients``, default 500,000): phones mostly ``+1555`` + 7 digits,
  0.5 % NULL, about 2 % of the others not E.164 (``(555) 123-4567``, ``555-123-4567``,
  ``15551234567``, ``555.123.4567``); a third have a ``cell_phone`` (2 % of those not
  E.164); 3 % ``has_opted_out``.
* ``notification_logs`` (``--logs``, default 10,000,000) spread uniformly over the last
  90 days, appended in time order as an application's log would be; ``sent_via`` 80 %
  ``{sms}``, 10 % ``{email}``, 10 % ``{sms,email}``; ``sent_at = created_at`` + 0-120 s
  (1 % NULL, and NULL while in the future); ``recipient_user_ids`` one id.
* ``appointment_notification_settings``: one row per client (4 % ``send_via_sms`` off).

then ``VACUUM ANALYZE``. Before each pass the log is topped up to "now" at the same
rate (as the application would keep logging), so the one-hour windows stay full.

Each check is timed as sms-monitor runs it: one ``DatabaseSource`` per pass (like a
daemon start), one connection per check, and ``with conn.begin(): method(...)`` timed
with ``time.perf_counter`` -- one warm-up call (reported as "1st call") then ``--runs``
calls (median and max, ms). The runbook's own diagnosis SQL is timed the same way
through ``conn.exec_driver_sql(...).all()`` on the same engine. Pass 1 has only the
primary keys; pass 2 adds the recommended indexes (then ANALYZE). After each pass every
query is run once more under ``EXPLAIN (ANALYZE, BUFFERS)`` with the statement and
parameters sms-monitor actually sent (captured from the engine) to show which index,
if any, it used. Pass 2 ends with ``--polls`` (default 12) full ``DatabaseSource.poll()``
cycles on one connection, past psycopg's prepare threshold and PostgreSQL's five custom
plans, and reads ``pg_prepared_statements`` to show whether generic plans took over.

Runbook SQL mapped to checks: Issue 1 (phone format, wrapped in ``SELECT count(*)``)
to invalid_phone_numbers, Issue 3 (24-hour volume/delay) to queue_delay, Issue 5
(opt-out; its ``client_id`` column is ``id`` in the runbook's own schema, the only
change) to opted_out_clients and optout_lookup. Issue 2 (content patterns) has no
check and is timed for information only.

Target: every sms-monitor check under 200 ms with the recommended indexes, judged on
the max of the runs. The script never asserts: it prints figures and PASS/FAIL lines
and exits 0. The database is dropped at the end (also on error) unless ``--keep``.

    python benchmarks/database_benchmark.py [--clients 500000] [--logs 10000000] [--runs 5]
                                            [--polls 12] [--server URL] [--keep] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import SQLAlchemyError

from sms_monitor.config import DatabaseConfig
from sms_monitor.core.e164 import E164
from sms_monitor.core.peers import normalise
from sms_monitor.inputs.database import DatabaseSource, describe_error
from sms_monitor.logs import configure as configure_logs
from sms_monitor.simulator.practice_db import create_runbook_schema

SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
DBNAME = "sms_monitor_bench"
TARGET_MS = 200.0
SPAN = timedelta(days=90)
LOG_CHUNK = 1_000_000
FILL_TABLES = ("clients", "notification_logs", "appointment_notification_settings")
RECONCILE_LAG = timedelta(seconds=120)

CHECKS = ("invalid_phone_numbers", "queue_delay", "sms_fallback", "opted_out_clients",
          "optout_lookup", "reconciliation")

# --- the runbook's SQL (twilio-sms-runbook.md) -------------------------------------------
RUNBOOK_SQL: dict[str, str] = {
    "issue1_phone_format": (  # wrapped to count its rows
        "SELECT count(*) FROM (\n"
        "SELECT id, phone, cell_phone\nFROM clients\nWHERE phone IS NOT NULL\n"
        "  AND phone !~ '^\\+[1-9]\\d{1,14}$'\n) AS issue1"),
    "issue3_volume_delay": (
        "SELECT \n  DATE_TRUNC('hour', created_at) as hour,\n  COUNT(*) as sms_count,\n"
        "  AVG(EXTRACT(EPOCH FROM (sent_at - created_at))) as avg_delay_seconds\n"
        "FROM notification_logs\nWHERE sent_via @> ARRAY['sms']\n"
        "  AND created_at > NOW() - INTERVAL '24 hours'\nGROUP BY hour\nORDER BY hour DESC"),
    "issue5_optout": (  # the runbook's client_id is the table's id
        "SELECT \n  id,\n  phone,\n  last_sms_date\nFROM clients\nWHERE phone IS NOT NULL\n"
        "  AND has_opted_out = false\nORDER BY last_sms_date DESC"),
    "issue2_content": (
        "SELECT \n  content_pattern,\n  COUNT(*) as sent,\n"
        "  SUM(CASE WHEN status = 'delivered' THEN 1 ELSE 0 END) as delivered\nFROM (\n"
        "  SELECT \n    LEFT(message, 50) as content_pattern,\n    status\n"
        "  FROM notification_logs\n  WHERE sent_via @> ARRAY['sms']\n"
        "    AND created_at > NOW() - INTERVAL '7 days'\n) sub\n"
        "GROUP BY content_pattern\nHAVING COUNT(*) > 10"),
}
RUNBOOK_FOR_CHECK = {"invalid_phone_numbers": "issue1_phone_format",
                     "queue_delay": "issue3_volume_delay",
                     "opted_out_clients": "issue5_optout", "optout_lookup": "issue5_optout"}
RUNBOOK_LABEL = {"issue1_phone_format": "Issue 1", "issue3_volume_delay": "Issue 3",
                 "issue5_optout": "Issue 5", "issue2_content": "Issue 2"}

E164_SQL = f"'{E164.pattern}'"  # as the monitor's query renders it
INDEXES: dict[str, str] = {
    "notification_logs_sms_created_at_idx":
        "CREATE INDEX notification_logs_sms_created_at_idx ON notification_logs (created_at) "
        "WHERE 'sms' = ANY (sent_via)",
    "clients_phone_not_e164_idx":
        "CREATE INDEX clients_phone_not_e164_idx ON clients (id) "
        f"WHERE phone IS NOT NULL AND phone !~ {E164_SQL}",
    "clients_cell_phone_not_e164_idx":
        "CREATE INDEX clients_cell_phone_not_e164_idx ON clients (id) "
        f"WHERE cell_phone IS NOT NULL AND cell_phone !~ {E164_SQL}",
    "clients_opted_out_idx":
        "CREATE INDEX clients_opted_out_idx ON clients (id) INCLUDE (phone, cell_phone) "
        "WHERE has_opted_out",
    "clients_phone_digits_idx":
        "CREATE INDEX clients_phone_digits_idx ON clients "
        "(right(regexp_replace(phone, '[^0-9]', '', 'g'), 10))",
    "clients_cell_phone_digits_idx":
        "CREATE INDEX clients_cell_phone_digits_idx ON clients "
        "(right(regexp_replace(cell_phone, '[^0-9]', '', 'g'), 10))",
}
# which index each check's query (or queries) should use
EXPECTED_INDEXES: dict[str, tuple[str, ...]] = {
    "invalid_phone_numbers": ("clients_phone_not_e164_idx", "clients_cell_phone_not_e164_idx"),
    "queue_delay": ("notification_logs_sms_created_at_idx",),
    "opted_out_clients": ("clients_opted_out_idx",),
    "optout_lookup": ("clients_phone_digits_idx", "clients_cell_phone_digits_idx"),
    "reconciliation": ("notification_logs_sms_created_at_idx",),
}

# --- fill -----------------------------------------------------------------------------------
# A national (not E.164) rendering of '555' || d (d: 7 digits), by k in 0..3.
_NATIONAL = ("CASE {k} WHEN 0 THEN '(555) ' || substr({d}, 1, 3) || '-' || substr({d}, 4) "
             "WHEN 1 THEN '555-' || substr({d}, 1, 3) || '-' || substr({d}, 4) "
             "WHEN 2 THEN '1555' || {d} "
             "ELSE '555.' || substr({d}, 1, 3) || '.' || substr({d}, 4) END")

FILL_CLIENTS = f"""
INSERT INTO clients (id, portal_user_id, name, phone, cell_phone, has_opted_out, last_sms_date)
SELECT g, 100000 + g, 'Client ' || g,
       CASE WHEN r_phone < 0.005 THEN NULL
            WHEN r_phone < 0.025 THEN {_NATIONAL.format(k='k1', d='d1')}
            ELSE '+1555' || d1 END,
       CASE WHEN r_cell >= 1.0 / 3 THEN NULL
            WHEN r_cell < 0.02 / 3 THEN {_NATIONAL.format(k='k2', d='d2')}
            ELSE '+1555' || d2 END,
       r_opt < 0.03,
       CASE WHEN r_last < 0.9 THEN now() - r_last / 0.9 * interval '90 days' END
FROM (SELECT g, random() AS r_phone, random() AS r_cell, random() AS r_opt, random() AS r_last,
             floor(random() * 4)::int AS k1, floor(random() * 4)::int AS k2,
             lpad(floor(random() * 1e7)::int::text, 7, '0') AS d1,
             lpad(floor(random() * 1e7)::int::text, 7, '0') AS d2
      FROM generate_series(1, %(n)s) AS g) AS s
"""

# created_at = base + (g - zero - random()) * step: row g in the g-th step after base, in time order.
FILL_LOGS = """
INSERT INTO notification_logs (id, message, status, sent_via, recipient_user_ids, created_at, sent_at)
SELECT g,
       (ARRAY['Reminder: your appointment is tomorrow. Reply STOP to opt out.',
              'Your appointment has been rescheduled. Reply STOP to opt out.',
              'A spot opened on the waitlist: call us to book. Reply STOP to opt out.',
              'Please confirm your appointment by replying YES. Reply STOP to opt out.'])
           [1 + g %% 4],
       CASE WHEN r_status < 0.93 THEN 'delivered' WHEN r_status < 0.97 THEN 'sent'
            ELSE 'failed' END,
       CASE WHEN r_via < 0.8 THEN '{sms}'::text[] WHEN r_via < 0.9 THEN '{email}'::text[]
            ELSE '{sms,email}'::text[] END,
       ARRAY[100001 + floor(random() * %(clients)s)::int],
       created,
       CASE WHEN r_sent < 0.01 OR created + delay > %(upto)s THEN NULL ELSE created + delay END
FROM (SELECT g, random() AS r_status, random() AS r_via, random() AS r_sent,
             random() * interval '120 seconds' AS delay,
             %(base)s::timestamptz + (g - %(zero)s - random()) * %(step)s::interval AS created
      FROM generate_series(%(first)s, %(last)s) AS g) AS s
"""

FILL_SETTINGS = """
INSERT INTO appointment_notification_settings (id, client_id, send_via_sms, send_via_email)
SELECT g, g, random() >= 0.04, true FROM generate_series(1, %(n)s) AS g
"""

FILL_RULES = """
INSERT INTO notification_rules (rule_name, rule_type, trigger_conditions, recipients)
VALUES ('Low SMS Delivery Rate', 'alert',
        '{"metric": "sms_delivery_rate", "threshold": 90, "window": "1 hour"}',
        ARRAY['admin@practice.com'])
"""

SAMPLE_NUMBERS = r"""
(SELECT phone FROM clients WHERE phone ~ '^\+' AND NOT has_opted_out ORDER BY md5(id::text) LIMIT 14)
UNION ALL (SELECT phone FROM clients WHERE phone !~ '^\+' ORDER BY md5(id::text) LIMIT 3)
UNION ALL (SELECT phone FROM clients WHERE has_opted_out AND phone IS NOT NULL
           ORDER BY md5(id::text) LIMIT 2)
UNION ALL (SELECT cell_phone FROM clients WHERE cell_phone IS NOT NULL ORDER BY md5(id::text) LIMIT 1)
"""


def progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Timing:
    first_ms: float | None = None
    runs_ms: list[float] = field(default_factory=list)
    median_ms: float | None = None
    max_ms: float | None = None
    result: Any = None
    error: str | None = None


@dataclass
class Pass:
    name: str
    checks: dict[str, Timing] = field(default_factory=dict)
    runbook: dict[str, Timing] = field(default_factory=dict)
    plans: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # query -> statements
    window_rows: int | None = None  # notification_logs rows in the last hour (all channels)
    polls_ms: list[float] = field(default_factory=list)
    poll_failures: dict[str, str] = field(default_factory=dict)
    prepared: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Result:
    clients: int
    logs: int
    runs: int
    server: dict[str, str] = field(default_factory=dict)
    fill_s: dict[str, float] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    sizes_mb: dict[str, float] = field(default_factory=dict)
    all_visible: dict[str, float] = field(default_factory=dict)
    indexes: dict[str, dict[str, float]] = field(default_factory=dict)
    optout_numbers: int = 0
    passes: list[Pass] = field(default_factory=list)
    index_use: dict[str, dict[str, bool]] = field(default_factory=dict)
    target: dict[str, str] = field(default_factory=dict)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.server = args.server.rstrip("/")
        self.url = f"{self.server}/{DBNAME}"
        self.res = Result(clients=args.clients, logs=args.logs, runs=args.runs)
        self.admin: Engine | None = None
        self.log_end: datetime | None = None  # created_at of the newest generated log row
        self.log_count = 0
        self.step = SPAN / max(1, args.logs)
        self.numbers: list[str] = []

    # --- database lifecycle -------------------------------------------------------------
    def create_database(self) -> None:
        root = create_engine(f"{self.server}/postgres", isolation_level="AUTOCOMMIT")
        with root.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {DBNAME} WITH (FORCE)")
            conn.exec_driver_sql(f"CREATE DATABASE {DBNAME}")
        root.dispose()
        self.admin = create_engine(self.url, isolation_level="AUTOCOMMIT")
        create_runbook_schema(self.admin)
        with self.admin.connect() as conn:
            for name in ("server_version", "shared_buffers", "work_mem", "effective_cache_size",
                         "max_parallel_workers_per_gather", "jit", "random_page_cost"):
                self.res.server[name] = conn.exec_driver_sql(f"SHOW {name}").scalar_one()

    def drop_database(self) -> None:
        if self.admin is not None:
            self.admin.dispose()
        root = create_engine(f"{self.server}/postgres", isolation_level="AUTOCOMMIT")
        with root.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {DBNAME} WITH (FORCE)")
        root.dispose()

    def _session(self, conn: Connection) -> None:
        conn.exec_driver_sql("SET synchronous_commit = off")
        conn.exec_driver_sql("SET maintenance_work_mem = '512MB'")
        conn.exec_driver_sql("SET work_mem = '64MB'")

    def _insert_logs(self, conn: Connection, first: int, last: int, zero: int, base: datetime,
                     upto: datetime) -> None:
        """Rows first..last; row g is created in the (g - zero)-th step after base."""
        conn.exec_driver_sql(FILL_LOGS, {"first": first, "last": last, "zero": zero, "base": base,
                                         "upto": upto, "step": self.step,
                                         "clients": self.args.clients})

    def fill(self) -> None:
        assert self.admin is not None
        a = self.args
        with self.admin.connect() as conn:
            self._session(conn)
            # no auto-ANALYZE during the fill: its snapshot would keep VACUUM from setting
            # the visibility map (index-only scans would then visit the heap)
            for t in FILL_TABLES:
                conn.exec_driver_sql(f"ALTER TABLE {t} SET (autovacuum_enabled = false)")
            conn.exec_driver_sql("SELECT setseed(0.11)")
            now = conn.exec_driver_sql("SELECT now()").scalar_one()
            t_all = time.perf_counter()

            t0 = time.perf_counter()
            conn.exec_driver_sql(FILL_CLIENTS, {"n": a.clients})
            self.res.fill_s["clients"] = time.perf_counter() - t0
            progress(f"clients: {a.clients:,} rows in {self.res.fill_s['clients']:.1f} s")

            t0 = time.perf_counter()
            base = now - SPAN
            for first in range(1, a.logs + 1, LOG_CHUNK):
                last = min(a.logs, first + LOG_CHUNK - 1)
                self._insert_logs(conn, first, last, 0, base, now)
                progress(f"notification_logs: {last:,} / {a.logs:,} rows "
                         f"({time.perf_counter() - t0:.1f} s)")
            self.res.fill_s["notification_logs"] = time.perf_counter() - t0
            self.log_end, self.log_count = now, a.logs

            t0 = time.perf_counter()
            conn.exec_driver_sql(FILL_SETTINGS, {"n": a.clients})
            conn.exec_driver_sql(FILL_RULES)
            self.res.fill_s["settings_and_rules"] = time.perf_counter() - t0

            t0 = time.perf_counter()
            conn.exec_driver_sql("VACUUM (ANALYZE)")
            if min(self.all_visible(conn).values()) < 0.99:  # a concurrent snapshot held it back
                conn.exec_driver_sql("VACUUM")
            self.res.fill_s["vacuum_analyze"] = time.perf_counter() - t0
            for t in FILL_TABLES:
                conn.exec_driver_sql(f"ALTER TABLE {t} RESET (autovacuum_enabled)")
            self.res.all_visible = self.all_visible(conn)
            self.res.fill_s["total"] = time.perf_counter() - t_all
            progress(f"VACUUM ANALYZE in {self.res.fill_s['vacuum_analyze']:.1f} s; "
                     f"fill total {self.res.fill_s['total']:.1f} s")

            for t in ("clients", "notification_logs", "appointment_notification_settings"):
                self.res.rows[t] = conn.exec_driver_sql(f"SELECT count(*) FROM {t}").scalar_one()
                self.res.sizes_mb[t] = conn.exec_driver_sql(
                    f"SELECT pg_total_relation_size('{t}')").scalar_one() / 2**20
            self.res.rows["clients_phone_not_e164"] = conn.exec_driver_sql(
                f"SELECT count(*) FROM clients WHERE phone IS NOT NULL AND phone !~ {E164_SQL}"
            ).scalar_one()
            self.res.rows["clients_opted_out"] = conn.exec_driver_sql(
                "SELECT count(*) FROM clients WHERE has_opted_out").scalar_one()
            raw = [r[0] for r in conn.exec_driver_sql(SAMPLE_NUMBERS)]
        self.numbers = sorted({n for n in (normalise(r) for r in raw) if n})
        self.res.optout_numbers = len(self.numbers)

    @staticmethod
    def all_visible(conn: Connection) -> dict[str, float]:
        """Share of each table's pages marked all-visible (what index-only scans rely on)."""
        rows = conn.exec_driver_sql(
            "SELECT relname, relallvisible::float / greatest(relpages, 1) FROM pg_class "
            "WHERE relname IN ('clients', 'notification_logs', 'appointment_notification_settings')"
        ).all()
        return {r[0]: float(r[1]) for r in rows}

    def top_up(self) -> None:
        """Log rows from the end of the fill up to now, at the same rate (no VACUUM)."""
        assert self.admin is not None and self.log_end is not None
        with self.admin.connect() as conn:
            self._session(conn)
            now = conn.exec_driver_sql("SELECT now()").scalar_one()
            n = int((now - self.log_end) / self.step)
            if n <= 0:
                return
            first = self.log_count + 1
            self._insert_logs(conn, first, first + n - 1, self.log_count, self.log_end, now)
            self.log_end = self.log_end + n * self.step
            self.log_count += n
            progress(f"top-up: {n:,} notification_logs rows up to now")

    def create_indexes(self) -> None:
        assert self.admin is not None
        with self.admin.connect() as conn:
            self._session(conn)
            conn.exec_driver_sql("SET max_parallel_maintenance_workers = 2")
            for name, ddl in INDEXES.items():
                t0 = time.perf_counter()
                conn.exec_driver_sql(ddl)
                secs = time.perf_counter() - t0
                size = conn.exec_driver_sql(f"SELECT pg_relation_size('{name}')").scalar_one()
                self.res.indexes[name] = {"build_s": secs, "size_mb": size / 2**20}
                progress(f"index {name}: {secs:.1f} s, {size / 2**20:.1f} MB")
            t0 = time.perf_counter()
            conn.exec_driver_sql("ANALYZE")
            self.res.indexes["(ANALYZE)"] = {"build_s": time.perf_counter() - t0, "size_mb": 0.0}

    # --- measuring --------------------------------------------------------------------------
    def check_calls(self, src: DatabaseSource) -> dict[str, Callable[[Connection], Any]]:
        def reconcile(c: Connection) -> int:
            end = datetime.now(UTC) - RECONCILE_LAG
            return src.logged_recipients(c, end - timedelta(hours=1), end)

        return {
            "invalid_phone_numbers": src.invalid_phones,
            "queue_delay": lambda c: src.queue(c, datetime.now(UTC)),
            "sms_fallback": src.fallback,
            "opted_out_clients": lambda c: len(src.opted_out(c)),
            "optout_lookup": lambda c: src.client_optout(c, self.numbers),
            "reconciliation": reconcile,
        }

    def time_call(self, engine: Engine, fn: Callable[[Connection], Any]) -> Timing:
        timing = Timing()
        samples: list[float] = []
        with engine.connect() as conn:
            for _ in range(self.args.runs + 1):
                t0 = time.perf_counter()
                try:
                    with conn.begin():
                        result = fn(conn)
                except SQLAlchemyError as exc:
                    cause, reason = describe_error(exc)
                    timing.error = f"{cause}: {reason}"
                    break
                samples.append((time.perf_counter() - t0) * 1000)
                timing.result = result
        if samples:
            timing.first_ms = samples[0]
            timing.runs_ms = samples[1:]
        if timing.runs_ms:
            timing.median_ms = statistics.median(timing.runs_ms)
            timing.max_ms = max(timing.runs_ms)
        return timing

    def run_pass(self, name: str, polls: int) -> Pass:
        self.top_up()
        p = Pass(name)
        src = DatabaseSource(DatabaseConfig(url=self.url))
        captured: list[tuple[str, Any]] = []
        capturing = [False]

        @event.listens_for(src.engine, "before_cursor_execute")
        def _capture(conn: Any, cursor: Any, statement: str, params: Any, context: Any,
                     executemany: bool) -> None:
            if capturing[0] and statement.lstrip().upper().startswith("SELECT"):
                captured.append((statement, params))

        try:
            calls = self.check_calls(src)
            for check, fn in calls.items():
                progress(f"{name}: timing {check}")
                p.checks[check] = self.time_call(src.engine, fn)
            for key, sql in RUNBOOK_SQL.items():
                progress(f"{name}: timing runbook {key}")
                p.runbook[key] = self.time_call(src.engine, lambda c, s=sql: summarise_rows(
                    c.exec_driver_sql(s).all()))
            q = p.checks["queue_delay"].result
            p.window_rows = None if q is None else q[1] + q[2]

            progress(f"{name}: EXPLAIN ANALYZE")
            for check, fn in calls.items():
                captured.clear()
                capturing[0] = True
                try:
                    with src.engine.connect() as conn, conn.begin():
                        fn(conn)
                except SQLAlchemyError:
                    pass
                finally:
                    capturing[0] = False
                p.plans[check] = [explain(src.engine, stmt, params) for stmt, params in captured]
            for key, sql in RUNBOOK_SQL.items():
                p.plans[key] = [explain(src.engine, sql, None)]

            if polls:
                self.steady_state(src, p, polls)
        finally:
            src.close()
        return p

    def steady_state(self, src: DatabaseSource, p: Pass, polls: int) -> None:
        """Full poll() cycles as the daemon runs them; then the plan cache's verdict."""
        progress(f"{p.name}: {polls} poll() cycles")
        for _ in range(polls):
            now = datetime.now(UTC)
            end = now - RECONCILE_LAG
            t0 = time.perf_counter()
            facts = src.poll(now, self.numbers, (end - timedelta(hours=1), end))
            p.polls_ms.append((time.perf_counter() - t0) * 1000)
            p.poll_failures.update(facts.failures)
        with src.engine.connect() as conn, conn.begin():
            rows = conn.exec_driver_sql(
                "SELECT name, generic_plans, custom_plans, statement FROM pg_prepared_statements "
                "ORDER BY name").all()
        p.prepared = [{"name": r[0], "generic_plans": r[1], "custom_plans": r[2],
                       "statement": " ".join(r[3].split())[:140]} for r in rows]

    def run(self) -> Result:
        self.create_database()
        progress(f"filling {DBNAME}: {self.args.clients:,} clients, {self.args.logs:,} logs")
        self.fill()
        self.res.passes.append(self.run_pass("without indexes", polls=0))
        progress("creating the recommended indexes")
        self.create_indexes()
        self.res.passes.append(self.run_pass("with indexes", polls=self.args.polls))
        self.judge()
        return self.res

    def judge(self) -> None:
        with_idx = self.res.passes[-1]
        for check, wanted in EXPECTED_INDEXES.items():
            used = {i for stmt in with_idx.plans.get(check, []) for i in stmt.get("indexes", [])}
            self.res.index_use[check] = {name: name in used for name in wanted}
        for check in CHECKS:
            t = with_idx.checks[check]
            if t.error or t.max_ms is None:
                self.res.target[check] = "FAIL"
            else:
                self.res.target[check] = "PASS" if t.max_ms < TARGET_MS else "FAIL"


def summarise_rows(rows: list[Any]) -> Any:
    if len(rows) == 1 and len(rows[0]) == 1:
        return rows[0][0]  # a count
    return f"{len(rows)} rows"


def walk(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from walk(child)


def explain(engine: Engine, statement: str, params: Any) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of one statement with its parameters: scans and indexes used."""
    out: dict[str, Any] = {"statement": " ".join(statement.split())}
    try:
        with engine.connect() as conn, conn.begin():
            doc = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement,
                                       params or None).scalar_one()
    except SQLAlchemyError as exc:
        out["error"] = ": ".join(describe_error(exc))
        return out
    top = (json.loads(doc) if isinstance(doc, str) else doc)[0]
    scans, indexes = [], []
    for node in walk(top["Plan"]):
        kind = node["Node Type"]
        if "Scan" not in kind:
            continue
        text = kind
        if node.get("Index Name"):
            text += f" using {node['Index Name']}"
            indexes.append(node["Index Name"])
        if node.get("Relation Name"):
            text += f" on {node['Relation Name']}"
        if "Heap Fetches" in node:
            text += f" (heap fetches {node['Heap Fetches']})"
        if node.get("Workers Launched"):
            text += f" ({node['Workers Launched']} workers)"
        scans.append(text)
    gathers = [n.get("Workers Launched", 0) for n in walk(top["Plan"]) if "Gather" in n["Node Type"]]
    if gathers:
        scans.append(f"parallel: {sum(gathers)} workers")
    out.update(scans=scans, indexes=indexes, execution_ms=top.get("Execution Time"),
               planning_ms=top.get("Planning Time"),
               jit=bool(top.get("JIT")))
    return out


# --- output -----------------------------------------------------------------------------------
def fmt_ms(t: Timing | None, with_max: bool = True) -> str:
    if t is None:
        return "-"
    if t.error:
        return "ERROR " + t.error.split(":", 1)[0]
    if t.median_ms is None:
        return "-"
    return f"{t.median_ms:.1f} (max {t.max_ms:.1f})" if with_max else f"{t.median_ms:.1f}"


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def print_text(res: Result) -> None:
    out = print
    without, with_idx = res.passes[0], res.passes[-1]
    s = res.server
    out(f"Database benchmark: {res.rows.get('clients', 0):,} clients, "
        f"{res.rows.get('notification_logs', 0):,} notification_logs, "
        f"{res.rows.get('appointment_notification_settings', 0):,} notification settings; "
        f"ms = median (max) of {res.runs} runs after 1 warm-up")
    out(f"PostgreSQL {s.get('server_version')}: shared_buffers={s.get('shared_buffers')}, "
        f"work_mem={s.get('work_mem')}, effective_cache_size={s.get('effective_cache_size')}, "
        f"max_parallel_workers_per_gather={s.get('max_parallel_workers_per_gather')}, "
        f"jit={s.get('jit')}, random_page_cost={s.get('random_page_cost')}")
    f = res.fill_s
    out(f"\nFill: {f.get('total', 0):.1f} s (clients {f.get('clients', 0):.1f} s, notification_logs "
        f"{f.get('notification_logs', 0):.1f} s, settings+rules {f.get('settings_and_rules', 0):.1f} s, "
        f"VACUUM ANALYZE {f.get('vacuum_analyze', 0):.1f} s)")
    out("Sizes (with PK, before the extra indexes): " + ", ".join(
        f"{t} {mb:,.0f} MB" for t, mb in res.sizes_mb.items()))
    out("Pages all-visible after VACUUM: " + ", ".join(
        f"{t} {share:.0%}" for t, share in sorted(res.all_visible.items())))
    out(f"Data: {res.rows.get('clients_phone_not_e164', 0):,} clients with a non-E.164 phone, "
        f"{res.rows.get('clients_opted_out', 0):,} opted out; optout_lookup gets "
        f"{res.optout_numbers} numbers; last-hour log rows: pass 1 {without.window_rows}, "
        f"pass 2 {with_idx.window_rows} (SMS only)")
    out("Indexes: " + "; ".join(f"{n} {v['build_s']:.1f} s" + (f", {v['size_mb']:.1f} MB"
                                                              if n != "(ANALYZE)" else "")
                               for n, v in res.indexes.items()))

    out("\nRunbook SQL median ms is measured without the extra indexes (the runbook's schema);"
        "\nratio = runbook median / sms-monitor median with the recommended indexes.\n")
    rows = [["check", "runbook SQL median ms", "sms-monitor without indexes", "with indexes",
             "ratio (runbook / with indexes)"]]
    for check in CHECKS:
        key = RUNBOOK_FOR_CHECK.get(check)
        rb = without.runbook.get(key) if key else None
        w = with_idx.checks[check]
        if rb and rb.median_ms is not None and w.median_ms:
            ratio = f"{rb.median_ms / w.median_ms:,.1f}x"
        else:
            ratio = "-"
        rb_text = f"{fmt_ms(rb, False)} ({RUNBOOK_LABEL[key]})" if key else "-"
        rows.append([check, rb_text, fmt_ms(without.checks[check]), fmt_ms(w), ratio])
    out(table(rows))

    out("\nRunbook SQL, both passes (median (max) ms, result):")
    rows = [["query", "without indexes", "with indexes", "result"]]
    for key in RUNBOOK_SQL:
        rows.append([f"{RUNBOOK_LABEL[key]} {key}", fmt_ms(without.runbook[key]),
                     fmt_ms(with_idx.runbook[key]), str(with_idx.runbook[key].result)])
    out(table(rows))

    out("\nFirst call of a fresh DatabaseSource (warm-up, not in the medians), ms, and result:")
    rows = [["check", "without indexes", "with indexes", "result (with indexes)"]]
    for check in CHECKS:
        a, b = without.checks[check], with_idx.checks[check]
        rows.append([check, "-" if a.first_ms is None else f"{a.first_ms:.1f}",
                     "-" if b.first_ms is None else f"{b.first_ms:.1f}", short(b.result)])
    out(table(rows))

    if with_idx.polls_ms:
        last = with_idx.polls_ms[-5:]
        out(f"\npoll() with indexes, {len(with_idx.polls_ms)} cycles on one connection: first "
            f"{with_idx.polls_ms[0]:.1f} ms, median of the last {len(last)} "
            f"{statistics.median(last):.1f} ms, max of those {max(last):.1f} ms"
            + (f"; failures: {with_idx.poll_failures}" if with_idx.poll_failures else ""))
        out("pg_prepared_statements on that connection (psycopg prepares after 5 executions):")
        for ps in with_idx.prepared:
            out(f"  {ps['name']}: generic_plans={ps['generic_plans']} custom_plans={ps['custom_plans']}"
                f"  {ps['statement'][:90]}")

    for p in res.passes:
        out(f"\nEXPLAIN ANALYZE, {p.name}:")
        for key, stmts in p.plans.items():
            for st in stmts:
                if "error" in st:
                    out(f"  {key}: ERROR {st['error']}")
                    continue
                jit = ", JIT" if st.get("jit") else ""
                out(f"  {key}: {st['execution_ms']:.1f} ms{jit}: " + "; ".join(st["scans"]))

    out("\nRecommended index used by its query (pass 2 EXPLAIN):")
    for check, used in res.index_use.items():
        out(f"  {check}: " + ", ".join(f"{n} {'USED' if u else 'NOT USED'}" for n, u in used.items()))

    out(f"\nTarget: every sms-monitor check under {TARGET_MS:.0f} ms with the recommended indexes "
        f"(max of {res.runs} runs):")
    for check in CHECKS:
        t = with_idx.checks[check]
        detail = t.error or f"median {t.median_ms:.1f} ms, max {t.max_ms:.1f} ms"
        out(f"  {check:<22} {res.target[check]}  ({detail})")
    overall = "PASS" if all(v == "PASS" for v in res.target.values()) else "FAIL"
    out(f"  {'all checks':<22} {overall}")


def short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, default=500_000, help="clients (and settings) rows")
    parser.add_argument("--logs", type=int, default=10_000_000, help="notification_logs rows")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per query, after 1 warm-up")
    parser.add_argument("--polls", type=int, default=12, help="poll() cycles at the end of pass 2")
    parser.add_argument("--server", default=SERVER, help="SQLAlchemy URL of the server, no database")
    parser.add_argument("--keep", action="store_true", help=f"keep the {DBNAME} database")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    args = parser.parse_args(argv)
    if args.clients < 100 or args.logs < 1000 or args.runs < 1:
        parser.error("need --clients >= 100, --logs >= 1000 and --runs >= 1")

    configure_logs("warning", stream=sys.stderr)
    bench = Bench(args)
    try:
        res = bench.run()
    finally:
        if args.keep:
            progress(f"kept database {DBNAME}")
        else:
            bench.drop_database()
            progress(f"dropped database {DBNAME}")
    if args.json:
        print(json.dumps(asdict(res), indent=2, sort_keys=True, default=str))
    else:
        print_text(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
