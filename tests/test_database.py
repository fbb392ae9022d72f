"""The application database source against a real PostgreSQL (and SQLite), and its checks.

Each test gets a database of its own. PostgreSQL must be running on 127.0.0.1:5432
(.ci/run starts it); these tests fail, never skip, without it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, insert, text
from sqlalchemy.exc import SQLAlchemyError

from sms_monitor.app import build
from sms_monitor.config import DatabaseConfig, load_settings
from sms_monitor.core.classify import Status
from sms_monitor.core.snapshot import Snapshot, SnapshotHolder
from sms_monitor.inputs.database import DatabaseSource
from sms_monitor.inputs.schema_names import SchemaNames
from sms_monitor.outputs.http import build_registry
from sms_monitor.outputs.metrics import DatabaseArea
from sms_monitor.simulator.practice_db import create_runbook_schema, runbook_metadata
from sms_monitor.simulator.server import SimulatorServer
from sms_monitor.simulator.state import DEMO_ACCOUNT_SID, SimState
from tests.conftest import FakeClock, SleepRecorder, demo_env


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'app.db'}"


@pytest.fixture(params=["postgresql", "sqlite"])
def db_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("pg_url" if request.param == "postgresql" else "sqlite_url"))


def writer(url: str) -> Engine:
    return create_engine(url)


def insert_rows(url: str, table: str, rows: list[dict[str, Any]],
                names: SchemaNames | None = None) -> None:
    md = runbook_metadata(names)
    real = (names or SchemaNames()).tables[table]
    with writer(url).begin() as conn:
        conn.execute(insert(md.tables[real]), rows)


NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def client(i: int, phone: str | None, cell: str | None = None, opted: bool = False) -> dict[str, Any]:
    return {"id": i, "portal_user_id": 1000 + i, "name": f"c{i}", "phone": phone,
            "cell_phone": cell, "has_opted_out": opted}


def sms_log(created: datetime, delay: float | None, via: list[str] | None = None,
            recipients: int = 1, status: str = "sent") -> dict[str, Any]:
    return {"message": "m", "status": status, "sent_via": via or ["sms"],
            "recipient_user_ids": list(range(recipients)), "created_at": created,
            "sent_at": None if delay is None else created + timedelta(seconds=delay)}


def source(url: str, **kwargs: Any) -> DatabaseSource:
    return DatabaseSource(DatabaseConfig(url=url, **kwargs))


# -- queries, on both backends --------------------------------------------------------------

def test_invalid_phone_numbers_per_column(db_url: str) -> None:
    create_runbook_schema(writer(db_url))
    insert_rows(db_url, "clients", [
        client(1, "+15551234567", "+442071838750"),
        client(2, None, None),  # NULL is not invalid
        client(3, "5551234567"),  # missing +
        client(4, "+1 555 123 4567"),  # spaces
        client(5, "(555) 123-4567", "+0123"),  # national format; + then 0
        client(6, "+1234567890123456"),  # 16 digits: too long
    ])
    src = source(db_url)
    with src.engine.connect() as conn:
        assert src.invalid_phones(conn) == {"phone": 4, "cell_phone": 1}


def test_queue_delay_counts_sms_rows_of_the_last_hour_only(db_url: str) -> None:
    create_runbook_schema(writer(db_url))
    insert_rows(db_url, "notification_logs", [
        sms_log(NOW - timedelta(minutes=10), 30),
        sms_log(NOW - timedelta(minutes=20), 90),
        sms_log(NOW - timedelta(minutes=30), None),  # not sent yet
        sms_log(NOW - timedelta(minutes=40), 600, via=["email"]),  # not SMS
        sms_log(NOW - timedelta(minutes=50), 60, via=["email", "sms"]),
        sms_log(NOW - timedelta(minutes=70), 900),  # older than an hour
    ])
    src = source(db_url)
    with src.engine.connect() as conn:
        mean, sent, unsent, waited = src.queue(conn, NOW)
    assert mean == pytest.approx(60.0)
    assert (sent, unsent) == (3, 1)
    assert waited == pytest.approx(30 * 60)  # the unsent row, created 30 minutes ago


def test_fallback_and_reconciliation_counts(db_url: str) -> None:
    create_runbook_schema(writer(db_url))
    insert_rows(db_url, "appointment_notification_settings",
                [{"client_id": i, "send_via_sms": i > 3, "send_via_email": True}
                 for i in range(10)])
    insert_rows(db_url, "notification_logs", [
        sms_log(NOW - timedelta(minutes=30), 5, recipients=3),
        sms_log(NOW - timedelta(minutes=20), 5, recipients=1),
        sms_log(NOW - timedelta(minutes=20), 5, via=["email"], recipients=5),
        sms_log(NOW - timedelta(minutes=1), 5, recipients=7),  # after the span's end
    ])
    src = source(db_url)
    with src.engine.connect() as conn:
        assert src.fallback(conn) == (4, 10)
        assert src.logged_recipients(conn, NOW - timedelta(hours=1),
                                     NOW - timedelta(minutes=2)) == 4


def test_numbers_are_matched_after_e164_normalisation(db_url: str) -> None:
    create_runbook_schema(writer(db_url))
    insert_rows(db_url, "clients", [
        client(1, "(555) 010-0001"),  # national format, not opted out
        client(2, "1 555 010 0002", opted=True),  # missing +, spaces
        client(3, None, "+1-555-010-0003", opted=True),  # the cell phone column
        client(4, "555.010.0004", opted=True),
        client(5, "+15550100004", opted=False),  # same number, another client still in
    ])
    src = source(db_url)
    with src.engine.connect() as conn:
        found = src.client_optout(conn, ["+15550100001", "+15550100002", "+15550100003",
                                         "+15550100004", "+15550109999"])
        opted = src.opted_out(conn)
    assert found == {"+15550100001": False, "+15550100002": True, "+15550100003": True,
                     "+15550100004": False}
    assert len(opted) == 3  # hashes of 0002, 0003 and 0004


def test_source_is_read_only(db_url: str) -> None:
    create_runbook_schema(writer(db_url))
    src = source(db_url)
    with pytest.raises(SQLAlchemyError) as err, src.engine.begin() as conn:
        conn.execute(text("DELETE FROM clients"))
    assert "read-only" in str(err.value) or "readonly" in str(err.value)


def test_remapped_schema(pg_url: str) -> None:
    names = SchemaNames.from_config(
        {"clients": "app.patients", "notification_logs": "app.sms_audit"},
        {"clients": {"phone": "mobile", "has_opted_out": "unsubscribed"},
         "notification_logs": {"created_at": "queued_at"}})
    settings = load_settings(demo_env("http://127.0.0.1:1") | {"SMS_MONITOR_DATABASE_URL": pg_url},
                             {"database": {"tables": dict(names.tables),
                                           "columns": {k: dict(v) for k, v in names.columns.items()}}})
    assert settings.database is not None and settings.database.names == names
    with writer(pg_url).begin() as conn:
        conn.execute(text("CREATE SCHEMA app"))
    create_runbook_schema(writer(pg_url), names)
    insert_rows(pg_url, "clients", [
        {"id": 1, "mobile": "5551234567", "cell_phone": None, "unsubscribed": True},
        {"id": 2, "mobile": "+15551234568", "cell_phone": None, "unsubscribed": False}], names)
    insert_rows(pg_url, "notification_logs", [
        {"queued_at": NOW - timedelta(minutes=5), "sent_at": NOW - timedelta(minutes=4),
         "sent_via": ["sms"], "recipient_user_ids": [1]}], names)
    src = DatabaseSource(DatabaseConfig(url=pg_url, names=names))
    with src.engine.connect() as conn:
        assert src.invalid_phones(conn) == {"phone": 1, "cell_phone": 0}
        assert src.queue(conn, NOW) == (pytest.approx(60.0), 1, 0, None)
        assert src.client_optout(conn, ["+15551234567"]) == {"+15551234567": True}
    # an application without a second phone column maps it to ""
    no_cell = SchemaNames.from_config(names.tables, {**names.columns,
                                                     "clients": {**names.columns["clients"],
                                                                 "cell_phone": ""}})
    src = DatabaseSource(DatabaseConfig(url=pg_url, names=no_cell))
    with src.engine.connect() as conn:
        assert src.invalid_phones(conn) == {"phone": 1}
        assert len(src.opted_out(conn)) == 1
        assert src.client_optout(conn, ["+15551234567"]) == {"+15551234567": True}


def test_remapping_is_validated() -> None:
    from sms_monitor.config import ConfigError

    env = demo_env("http://127.0.0.1:1") | {"SMS_MONITOR_DATABASE_URL": "sqlite://"}
    with pytest.raises(ConfigError) as err:
        load_settings(env, {"database": {"columns": {"clients": {"phon": "x"}}}})
    assert err.value.key == "database.columns.clients.phon"
    with pytest.raises(ConfigError) as err:
        load_settings(env, {"database": {"tables": {"clients": "x; drop table y"}}})
    assert err.value.key == "database.tables"


# -- the checks through the monitor, against the simulator ----------------------------------

def practice(url: str, now: datetime) -> None:
    create_runbook_schema(writer(url))
    insert_rows(url, "clients", [
        client(1, "(555) 010-0001"),  # sends STOP, never processed
        client(2, "555.010.0002", opted=True),  # opted out, still gets messages
        client(3, "+15550100003"),
        client(4, "+15550100004", opted=True),  # opted out and left alone
    ])
    insert_rows(url, "notification_logs",
                [sms_log(now - timedelta(seconds=3500 - i * 60), 20,
                         status="undelivered" if i % 3 else "delivered") for i in range(57)])
    insert_rows(url, "appointment_notification_settings",
                [{"client_id": i, "send_via_sms": True, "send_via_email": True}
                 for i in range(1, 5)])


def run_monitor(url: str, sim: SimulatorServer, clock: FakeClock, **db: Any) -> Snapshot:
    env = demo_env(sim.url) | {"SMS_MONITOR_DATABASE_URL": url}
    settings = load_settings(env, {"number_type": "toll_free", "database": db})
    monitor = build(settings, clock=clock, sleep=SleepRecorder())
    try:
        return monitor.run_cycle()
    finally:
        monitor.close()


def db_checks(snap: Snapshot) -> dict[str, Any]:
    assert snap.database is not None
    return {c.name: c for c in snap.database.checks}


@pytest.fixture
def quiet_sim(clock: FakeClock) -> Iterator[tuple[SimulatorServer, SimState]]:
    """One message a minute, so the test controls which numbers appear."""
    from sms_monitor.simulator.state import DEMO_AUTH_TOKEN, DEMO_PHONE_NUMBER

    state = SimState(clock=clock, rate_per_minute=1.0, history_seconds=3600.0)
    state.add_account(DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN, DEMO_PHONE_NUMBER)
    server = SimulatorServer(("127.0.0.1", 0), state).start()
    yield server, state
    server.stop()


def test_optout_checks_end_to_end(pg_url: str, quiet_sim: tuple[SimulatorServer, SimState],
                                  clock: FakeClock) -> None:
    sim, state = quiet_sim
    now = datetime.fromtimestamp(clock(), UTC)
    practice(pg_url, now)
    t = clock()
    sid = DEMO_ACCOUNT_SID
    state.insert_message(sid, t - 600, outbound=False, peer="+15550100001", body=" stop ")
    state.insert_message(sid, t - 900, outbound=False, peer="+15550100003",
                         body="don't stop my reminders")  # not a keyword
    state.insert_message(sid, t - 1200, outbound=True, peer="+15550100002", body="reminder")
    state.insert_message(sid, t - 1100, outbound=True, peer="+15550100002", body="reminder")
    snap = run_monitor(pg_url, sim, clock)
    checks = db_checks(snap)
    assert checks["optout_unprocessed"].status is Status.RED
    assert checks["optout_unprocessed"].value == 1
    assert checks["sent_to_opted_out"].status is Status.RED
    assert checks["sent_to_opted_out"].value == 2
    assert checks["invalid_phone_numbers"].status is Status.YELLOW
    assert checks["invalid_phone_numbers"].value == 2
    assert checks["queue_delay"].status is Status.GREEN
    assert checks["queue_delay"].value == pytest.approx(20.0)
    assert checks["sms_fallback"].status is Status.GREEN
    assert checks["overall"].status is Status.RED
    assert snap.overall is Status.RED
    assert {c.name: c.status for c in snap.accounts[0].checks}["overall"] is Status.GREEN


def test_optout_grace_and_opt_back_in(pg_url: str, quiet_sim: tuple[SimulatorServer, SimState],
                                      clock: FakeClock) -> None:
    sim, state = quiet_sim
    practice(pg_url, datetime.fromtimestamp(clock(), UTC))
    t = clock()
    state.insert_message(DEMO_ACCOUNT_SID, t - 120, outbound=False, peer="+15550100001",
                         body="STOP")  # inside the 5-minute grace period
    state.insert_message(DEMO_ACCOUNT_SID, t - 900, outbound=False, peer="+15550100003",
                         body="STOP")
    state.insert_message(DEMO_ACCOUNT_SID, t - 800, outbound=False, peer="+15550100003",
                         body="START")  # opted back in
    checks = db_checks(run_monitor(pg_url, sim, clock))
    assert checks["optout_unprocessed"].status is Status.GREEN
    assert checks["optout_unprocessed"].value == 0
    clock.advance(200)  # the first STOP is now past its grace period
    checks = db_checks(run_monitor(pg_url, sim, clock))
    assert checks["optout_unprocessed"].status is Status.RED


def test_messages_sent_before_a_stop_we_saw_are_not_violations(
        pg_url: str, quiet_sim: tuple[SimulatorServer, SimState], clock: FakeClock) -> None:
    sim, state = quiet_sim
    practice(pg_url, datetime.fromtimestamp(clock(), UTC))
    t = clock()
    state.insert_message(DEMO_ACCOUNT_SID, t - 1500, outbound=True, peer="+15550100004",
                         body="reminder")
    state.insert_message(DEMO_ACCOUNT_SID, t - 1400, outbound=False, peer="+15550100004",
                         body="STOP")
    checks = db_checks(run_monitor(pg_url, sim, clock))
    assert checks["sent_to_opted_out"].status is Status.GREEN
    assert checks["sent_to_opted_out"].value == 0
    state.insert_message(DEMO_ACCOUNT_SID, t - 1300, outbound=True, peer="+15550100004",
                         body="reminder")  # after the STOP: a violation
    checks = db_checks(run_monitor(pg_url, sim, clock))
    assert checks["sent_to_opted_out"].value == 1


def test_failures_are_isolated_named_and_recover(
        pg_url: str, quiet_sim: tuple[SimulatorServer, SimState], clock: FakeClock) -> None:
    sim, _ = quiet_sim
    practice(pg_url, datetime.fromtimestamp(clock(), UTC))
    with writer(pg_url).begin() as conn:
        conn.execute(text("DROP TABLE appointment_notification_settings"))
        conn.execute(text("ALTER TABLE clients RENAME COLUMN cell_phone TO mobile"))
    snap = run_monitor(pg_url, sim, clock)
    checks = db_checks(snap)
    assert checks["sms_fallback"].status is Status.UNKNOWN
    assert "appointment_notification_settings" in checks["sms_fallback"].detail
    assert checks["invalid_phone_numbers"].status is Status.UNKNOWN
    assert "cell_phone" in checks["invalid_phone_numbers"].detail
    assert checks["queue_delay"].status is Status.GREEN  # the rest carries on
    assert snap.accounts[0].overall is Status.GREEN  # and so do the Twilio checks
    assert snap.database is not None and not snap.database.facts.up
    assert snap.database.query_errors[("sms_fallback", "schema")] == 1

    with writer(pg_url).begin() as conn:
        conn.execute(text("ALTER TABLE clients RENAME COLUMN mobile TO cell_phone"))
    create_runbook_schema(writer(pg_url))
    checks = db_checks(run_monitor(pg_url, sim, clock))
    assert checks["sms_fallback"].status is Status.UNKNOWN  # empty table: nothing to judge
    assert "no notification settings rows" in checks["sms_fallback"].detail
    assert checks["invalid_phone_numbers"].status is Status.YELLOW


def test_unreachable_database_leaves_twilio_checks_alone(
        quiet_sim: tuple[SimulatorServer, SimState], clock: FakeClock) -> None:
    sim, _ = quiet_sim
    url = "postgresql+psycopg://postgres:hunter2@127.0.0.1:1/nothing"
    snap = run_monitor(url, sim, clock, connect_timeout=1)
    checks = db_checks(snap)
    assert all(c.status is Status.UNKNOWN for c in checks.values())
    assert "refused" in checks["queue_delay"].detail.lower()
    assert "hunter2" not in checks["queue_delay"].detail
    assert snap.accounts[0].overall is Status.GREEN
    assert snap.database is not None
    assert snap.database.query_errors[("queue_delay", "unreachable")] == 1


def test_permission_and_statement_timeout(pg_url: str, pg_admin: Engine) -> None:
    create_runbook_schema(writer(pg_url))
    role = f"smsm_{uuid.uuid4().hex[:8]}"
    with pg_admin.connect() as conn:
        conn.execute(text(f"CREATE ROLE {role} LOGIN"))
    try:
        with writer(pg_url).begin() as conn:
            conn.execute(text(f"GRANT SELECT ON notification_logs TO {role}"))
        limited = pg_url.replace("postgres@", f"{role}@")
        facts = source(limited).poll(NOW, [], (NOW - timedelta(hours=1), NOW))
        assert facts.causes["invalid_phone_numbers"] == "permission"
        assert "permission denied" in facts.failures["invalid_phone_numbers"]
        assert "queue_delay" not in facts.failures

        # a lock held elsewhere makes the query wait; the statement timeout ends the wait
        blocker = writer(pg_url).connect()
        tx = blocker.begin()
        blocker.execute(text("LOCK TABLE clients IN ACCESS EXCLUSIVE MODE"))
        try:
            facts = source(pg_url, statement_timeout=0.3).poll(NOW, [],
                                                               (NOW - timedelta(hours=1), NOW))
        finally:
            tx.rollback()
            blocker.close()
        assert facts.causes["invalid_phone_numbers"] == "timeout"
        assert "queue_delay" not in facts.failures
    finally:
        with pg_admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{pg_url.rsplit("/", 1)[1]}" WITH (FORCE)'))
            conn.execute(text(f"DROP ROLE IF EXISTS {role}"))


def test_check_json_against_postgresql(pg_url: str, live_simulator: SimulatorServer,
                                       live_state: SimState,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from sms_monitor.cli import main

    now = datetime.now(UTC)
    practice(pg_url, now)
    live_state.insert_message(DEMO_ACCOUNT_SID, now.timestamp() - 600, outbound=False,
                              peer="+15550100001", body="STOP")
    rc = main(["check", "--json"], env=demo_env(live_simulator.url)
              | {"SMS_MONITOR_DATABASE_URL": pg_url})
    doc = json.loads(capsys.readouterr().out)
    by = {(c["account"], c["name"]): c for c in doc["checks"]}
    assert rc == 2 and doc["overall"] == "red"
    assert by[("database", "invalid_phone_numbers")]["status"] == "yellow"
    assert by[("database", "invalid_phone_numbers")]["value"] == 2
    assert by[("database", "optout_unprocessed")]["status"] == "red"
    assert by[("database", "optout_unprocessed")]["value"] == 1
    assert by[("database", "sent_to_opted_out")]["status"] == "green"
    # the weak template is shown, masked, to the operator at the terminal (and only there)
    assert doc["templates_under_threshold"][0]["template"] == "m"
    assert by[("database", "content")]["status"] == "yellow"
    assert by[("database", "queue_delay")] == {
        "name": "queue_delay", "account": "database", "status": "green", "value": 20.0,
        "unit": "seconds", "detail": by[("database", "queue_delay")]["detail"]}


def test_sqlite_demo_database_gives_every_check(tmp_path: Path) -> None:
    from sms_monitor.simulator.practice_db import (
        DEMO_OPTED_OUT,
        DEMO_UNPROCESSED_STOP,
        seed_demo,
        seed_invalid_numbers,
        unseed_invalid_numbers,
    )

    url = f"sqlite:///{tmp_path / 'demo.db'}"
    seed_demo(create_engine(url), NOW)
    facts = source(url).poll(NOW, [DEMO_UNPROCESSED_STOP, DEMO_OPTED_OUT],
                             (NOW - timedelta(hours=1), NOW - timedelta(minutes=2)))
    assert facts.up, facts.failures
    assert facts.invalid_phones == {"phone": 0, "cell_phone": 0}  # a healthy practice
    assert facts.client_optout == {DEMO_UNPROCESSED_STOP: False, DEMO_OPTED_OUT: True}
    assert facts.queue_delay is not None and 2 <= facts.queue_delay <= 12
    assert facts.sms_disabled == 8 and facts.settings_rows == 200

    # the demo's invalid_numbers story adds its clients, and takes them out again
    engine = create_engine(url)
    assert seed_invalid_numbers(engine) == 6
    poll = source(url).poll
    span = (NOW - timedelta(hours=1), NOW - timedelta(minutes=2))
    assert poll(NOW, [], span).invalid_phones == {"phone": 6, "cell_phone": 0}
    unseed_invalid_numbers(engine)
    assert poll(NOW, [], span).invalid_phones == {"phone": 0, "cell_phone": 0}


def test_no_transaction_is_left_open_between_polls(pg_url: str, pg_admin: Engine) -> None:
    create_runbook_schema(writer(pg_url))
    src = source(pg_url)
    src.poll(NOW, ["+15550100001"], (NOW - timedelta(hours=1), NOW))
    db = pg_url.rsplit("/", 1)[1]
    with pg_admin.connect() as conn:
        states = conn.execute(text(
            "SELECT state FROM pg_stat_activity WHERE datname = :d AND application_name = "
            "'sms-monitor'"), {"d": db}).scalars().all()
    assert states and all(s == "idle" for s in states)
    src.close()




def test_a_stuck_queue_is_red_with_the_oldest_wait_exported(
        pg_url: str, quiet_sim: tuple[SimulatorServer, SimState], clock: FakeClock) -> None:
    sim, _ = quiet_sim
    now = datetime.fromtimestamp(clock(), UTC)
    practice(pg_url, now - timedelta(hours=2))  # its sent rows are all older than an hour
    insert_rows(pg_url, "notification_logs", [sms_log(now - timedelta(minutes=m), None)
                                              for m in (12, 8, 3)])  # nothing goes out
    snap = run_monitor(pg_url, sim, clock)
    check = db_checks(snap)["queue_delay"]
    assert check.status is Status.RED
    assert check.value == pytest.approx(12 * 60, abs=1)
    holder = SnapshotHolder()
    holder.publish(snap)
    assert build_registry(holder, [DatabaseArea]).get_sample_value(
        "sms_notification_queue_delay_seconds") == pytest.approx(12 * 60, abs=1)


def test_a_failing_advisory_query_leaves_only_its_own_check_unknown(
        pg_url: str, quiet_sim: tuple[SimulatorServer, SimState], clock: FakeClock) -> None:
    sim, _ = quiet_sim
    practice(pg_url, datetime.fromtimestamp(clock(), UTC))
    with writer(pg_url).begin() as conn:
        conn.execute(text("DROP TABLE appointment_notification_settings"))
    snap = run_monitor(pg_url, sim, clock)
    checks = db_checks(snap)
    assert checks["sms_fallback"].status is Status.UNKNOWN  # advisory: its own check only
    assert checks["connection"].status is Status.GREEN  # the counted queries all ran
    assert snap.database is not None and snap.database.sources[0].ok
    assert "database unreadable" not in snap.verdict_detail()
