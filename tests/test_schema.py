"""examples/schema.sql, the shipped application schema, and `sms-monitor db check`.

The schema is created from the file itself, on PostgreSQL and on SQLite, and the database
checks run against it through the monitor. `db check` is run against a real PostgreSQL with
a role that may not read one table and a column that is missing.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, inspect, text

from sms_monitor.cli import main
from sms_monitor.core.classify import Status
from sms_monitor.inputs.schema_check import PgType, compatible
from sms_monitor.inputs.schema_names import COLUMN_KINDS, DEFAULT_COLUMNS, TEXT_LIST, TIMESTAMP
from sms_monitor.simulator.practice_db import runbook_metadata
from sms_monitor.simulator.server import SimulatorServer
from sms_monitor.simulator.state import DEMO_ACCOUNT_SID, SimState
from tests.conftest import FakeClock, demo_env
from tests.test_database import client, db_checks, insert_rows, quiet_sim, run_monitor

SCHEMA = Path(__file__).resolve().parent.parent / "examples" / "schema.sql"
__all__ = ["quiet_sim"]  # a fixture, imported for the tests below


def apply_schema(url: str) -> Engine:
    """Run examples/schema.sql as it is, through the driver (psql -f / sqlite3 .read)."""
    engine = create_engine(url)
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        if url.startswith("sqlite"):
            raw.driver_connection.executescript(SCHEMA.read_text())  # type: ignore[union-attr]
        else:
            cursor.execute(SCHEMA.read_text())
        raw.commit()
    finally:
        raw.close()
    return engine


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'app.db'}"


@pytest.fixture(params=["postgresql", "sqlite"])
def db_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("pg_url" if request.param == "postgresql" else "sqlite_url"))


def test_the_file_documents_every_column_the_checks_read() -> None:
    sql = SCHEMA.read_text()
    # the values of notification_logs.status and what each means to the checks
    for value in ("'delivered'", "'read'", "'undelivered'", "'failed'", "'sent'"):
        assert value in sql
    for table, columns in COLUMN_KINDS.items():
        body = re.search(rf"CREATE TABLE {table} \((.*?)\n\);", sql, re.S)
        assert body, table
        for column in columns:
            line = re.search(rf"^\s+{column}\s+\S.*$", body.group(1), re.M)
            assert line, f"{table}.{column}"
            # a comment right above it, or on its line, says what it means
            before = body.group(1)[:line.start()].rstrip().splitlines()[-1]
            assert "--" in line.group(0) or before.strip().startswith("--"), f"{table}.{column}"
            assert "not read" not in line.group(0), f"{table}.{column} is read"


def test_schema_sql_is_the_runbook_schema_and_the_checks_run_on_it(
        db_url: str, quiet_sim: tuple[SimulatorServer, SimState], clock: FakeClock) -> None:
    engine = apply_schema(db_url)
    # the same tables and columns as the schema the tests and the demo build
    shipped = inspect(engine)
    for name, table in runbook_metadata().tables.items():
        assert {c["name"] for c in shipped.get_columns(name)} == set(table.columns.keys()), name
    assert set(shipped.get_table_names()) == set(runbook_metadata().tables)

    sim, state = quiet_sim
    now = datetime.fromtimestamp(clock(), UTC)
    insert_rows(db_url, "clients", [client(1, "(555) 010-0001"), client(2, "+15550100002",
                                                                         opted=True)])

    def log(i: int, status: str | None) -> dict[str, Any]:
        created = now - timedelta(minutes=50 - i)
        return {"id": i, "message": f"Reminder: your visit on {i % 28 + 1}/6. Reply STOP to "
                                    f"opt out.", "status": status, "sent_via": ["sms"],
                "recipient_user_ids": [1001], "created_at": created,
                "sent_at": created + timedelta(seconds=8)}

    statuses = ["delivered"] * 12 + ["Undelivered"] * 4 + ["sent"] * 20 + [None] * 4
    insert_rows(db_url, "notification_logs", [log(i, s) for i, s in enumerate(statuses)])
    insert_rows(db_url, "appointment_notification_settings",
                [{"id": i, "client_id": i, "send_via_sms": i != 2, "send_via_email": True}
                 for i in (1, 2)])
    state.insert_message(DEMO_ACCOUNT_SID, clock() - 600, outbound=False,
                         peer="+15550100001", body="STOP")

    snap = run_monitor(db_url, sim, clock, content_interval="1m")
    checks = db_checks(snap)
    assert checks["connection"].status is Status.GREEN
    assert (checks["invalid_phone_numbers"].status, checks["invalid_phone_numbers"].value) \
        == (Status.YELLOW, 1)
    assert checks["optout_unprocessed"].status is Status.RED  # "(555) 010-0001" sent STOP
    assert checks["sent_to_opted_out"].status is Status.GREEN
    assert checks["queue_delay"].value == pytest.approx(8.0)
    assert checks["sms_fallback"].value == 0.5
    # 12 delivered of the 16 rows with an outcome (the 'sent' and NULL ones not judged): 75 %
    assert checks["content"].status is Status.YELLOW, checks["content"].detail
    assert snap.database is not None and snap.database.content is not None
    [template] = snap.database.content.templates
    assert (template.sent, template.delivered, template.outcomes) == (40, 12, 16)
    assert not snap.database.facts.failures

    env = {"SMS_MONITOR_DATABASE_URL": db_url}
    assert main(["db", "check"], env=env) == 0


# -- sms-monitor db check ----------------------------------------------------------------


def test_column_types_the_queries_can_use() -> None:
    assert compatible(TIMESTAMP, PgType("timestamp with time zone", "timestamptz", "D", None))
    assert not compatible(TIMESTAMP, PgType("date", "date", "D", None))
    assert compatible(TEXT_LIST, PgType("text[]", "_text", "A", "S"))
    assert compatible(TEXT_LIST, PgType("text", "text", "S", None))
    assert not compatible(TEXT_LIST, PgType("integer[]", "_int4", "A", "N"))
    assert set(COLUMN_KINDS) == set(DEFAULT_COLUMNS)
    for table, kinds in COLUMN_KINDS.items():  # every column mapped is checked, ids aside
        assert set(kinds) == set(DEFAULT_COLUMNS[table]) - {"id"}


@pytest.fixture
def app_role(pg_url: str, pg_admin: Engine) -> Iterator[str]:
    """A login role for the application database, dropped afterwards."""
    role = f"smsm_{uuid.uuid4().hex[:8]}"
    with pg_admin.connect() as conn:
        conn.execute(text(f"CREATE ROLE {role} LOGIN"))
    yield role
    with pg_admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{pg_url.rsplit("/", 1)[1]}" WITH (FORCE)'))
        conn.execute(text(f"DROP ROLE IF EXISTS {role}"))


def test_db_check_names_each_problem_of_a_mapping(
        pg_url: str, app_role: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    engine = apply_schema(pg_url)
    with engine.begin() as conn:  # the application's own names for two of the tables
        conn.execute(text("CREATE SCHEMA app"))
        conn.execute(text("ALTER TABLE clients SET SCHEMA app"))
        conn.execute(text("ALTER TABLE app.clients RENAME TO patients"))
        conn.execute(text("ALTER TABLE app.patients RENAME COLUMN phone TO mobile"))
        conn.execute(text("ALTER TABLE app.patients ALTER COLUMN has_opted_out TYPE text"))
        conn.execute(text("ALTER TABLE notification_logs DROP COLUMN sent_at"))
        conn.execute(text(f"GRANT USAGE ON SCHEMA app TO {app_role}"))
        conn.execute(text(f"GRANT SELECT ON app.patients, notification_logs, "
                          f"appointment_notification_settings TO {app_role}"))
        # notification_rules: no SELECT for the role
    config = tmp_path / "sms-monitor.toml"
    config.write_text('[database.tables]\nclients = "app.patients"\n'
                      '[database.columns.clients]\nphone = "mobile"\ncell_phone = ""\n')
    as_role = pg_url.replace("postgres@", f"{app_role}:secret@")
    env = {"SMS_MONITOR_DATABASE_URL": as_role}

    assert main(["db", "check", "--config", str(config)], env=env) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "app.patients.has_opted_out (clients.has_opted_out): type text, expected boolean",
        "notification_logs.sent_at: no such column",
        f"notification_rules: no SELECT privilege (role {app_role})",
    ]
    assert err == ""

    # fixed: the mapping is usable
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE app.patients ALTER COLUMN has_opted_out TYPE boolean "
                          "USING has_opted_out::boolean"))
        conn.execute(text("ALTER TABLE notification_logs ADD COLUMN sent_at timestamptz"))
        conn.execute(text(f"GRANT SELECT (rule_name, rule_type, trigger_conditions, recipients)"
                          f" ON notification_rules TO {app_role}"))  # column grants do
    assert main(["db", "check", "--config", str(config)], env=env) == 0
    out, _ = capsys.readouterr()
    assert out.startswith("OK: 4 tables, 13 columns")

    # without the mapping the runbook's names are missing (clients) or not the app's
    assert main(["db", "check"], env=env) == 1
    assert capsys.readouterr().out.splitlines() == ["clients: no such table (or view)"]

    # a mapping that does not parse is a configuration error; no database, 3
    config.write_text('[database.columns.clients]\nphon = "mobile"\n')
    assert main(["db", "check", "--config", str(config)], env=env) == 2
    assert "database.columns.clients.phon" in capsys.readouterr().err
    assert main(["db", "check"], env={}) == 2
    capsys.readouterr()
    assert main(["db", "check"], env={
        "SMS_MONITOR_DATABASE_URL": "postgresql+psycopg://u:hunter2@127.0.0.1:1/app"}) == 3
    err = capsys.readouterr().err
    assert err.startswith("sms-monitor: cannot reach the database:") and "hunter2" not in err
    assert len(err.strip().splitlines()) == 1


def test_db_check_on_sqlite(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    engine = apply_schema(sqlite_url)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE notification_logs DROP COLUMN status"))
        conn.execute(text("DROP TABLE notification_rules"))
    assert main(["db", "check"], env={"SMS_MONITOR_DATABASE_URL": sqlite_url}) == 1
    assert capsys.readouterr().out.splitlines() == [
        "notification_logs.status: no such column",
        "notification_rules: no such table (or view)",
    ]


def test_db_check_does_not_need_twilio(sqlite_url: str) -> None:
    apply_schema(sqlite_url)
    assert main(["db", "check"], env=demo_env("http://127.0.0.1:9") | {
        "SMS_MONITOR_DATABASE_URL": sqlite_url}) == 0
