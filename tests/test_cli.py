"""`sms-monitor check` and `run` end to end against the simulator."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest
from sqlalchemy import Engine, create_engine, text

from sms_monitor.cli import main
from sms_monitor.simulator.server import SimulatorServer
from sms_monitor.simulator.state import DEMO_AUTH_TOKEN, SimState
from tests.conftest import demo_env


@pytest.mark.parametrize(
    ("scenario", "exit_code", "overall"),
    [("healthy", 0, "green"), ("low_balance", 1, "yellow"), ("out_of_credit", 2, "red"),
     ("number_lost", 2, "red")],
)
def test_check_json_and_nagios_exit_codes(live_simulator: SimulatorServer, live_state: SimState,
                                          capsys: pytest.CaptureFixture[str], scenario: str,
                                          exit_code: int, overall: str) -> None:
    live_state.set_scenario(scenario)
    rc = main(["check", "--json"], env=demo_env(live_simulator.url))
    out = capsys.readouterr()
    assert rc == exit_code
    doc = json.loads(out.out)
    assert doc["overall"] == overall
    names = [c["name"] for c in doc["checks"]]
    assert names[0] == "api_response_time" and names[-1] == "overall"
    rate = next(c for c in doc["checks"] if c["name"] == "delivery_rate")
    assert set(rate) == {"name", "account", "status", "value", "unit", "detail"}
    assert rate["account"] == "primary" and rate["unit"] == "ratio"
    assert 0.9 < rate["value"] <= 1.0
    assert DEMO_AUTH_TOKEN not in out.out + out.err


def test_a_saturated_long_code_is_advisory_and_does_not_change_the_exit_code(
        capsys: pytest.CaptureFixture[str]) -> None:
    from sms_monitor.simulator.state import DEMO_ACCOUNT_SID, DEMO_PHONE_NUMBER

    state = SimState(rate_per_minute=60.0, history_seconds=3600.0)  # a long code's full rate
    state.add_account(DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN, DEMO_PHONE_NUMBER)
    sim = SimulatorServer(("127.0.0.1", 0), state).start()
    try:
        rc = main(["check", "--json"], env=demo_env(sim.url))
    finally:
        sim.stop()
    doc = json.loads(capsys.readouterr().out)
    by = {c["name"]: c for c in doc["checks"]}
    assert by["throughput"]["status"] in ("yellow", "red")
    assert (rc, doc["overall"], by["overall"]["status"]) == (0, "green", "green")
    assert "advisory: throughput" in by["overall"]["detail"]


def test_check_exit_3_when_nothing_is_known(live_simulator: SimulatorServer, live_state: SimState,
                                            capsys: pytest.CaptureFixture[str],
                                            tmp_path: os.PathLike[str]) -> None:
    live_state.faults.server_error_every = 1
    config = os.path.join(tmp_path, "c.toml")
    with open(config, "w") as fh:
        fh.write("max_retries = 0\n")
    rc = main(["check", "--config", config], env=demo_env(live_simulator.url))
    out = capsys.readouterr().out
    assert rc == 3
    assert "OVERALL: UNKNOWN" in out
    assert "balance" in out and "UNKNOWN" in out


def test_check_against_an_empty_in_memory_database_runs(
        live_simulator: SimulatorServer, capsys: pytest.CaptureFixture[str]) -> None:
    """``sqlite://`` has no pool to size: the check runs, and finds no runbook tables (the
    database cannot be read: unknown), rather than failing to start."""
    rc = main(["check"], env={**demo_env(live_simulator.url), "SMS_MONITOR_DATABASE_URL": "sqlite://"})
    captured = capsys.readouterr()
    assert rc == 3 and captured.out.startswith("OVERALL: UNKNOWN") and "no such table" in captured.out
    assert "could not run" not in captured.err


def test_check_table_is_readable(live_simulator: SimulatorServer,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check"], env=demo_env(live_simulator.url)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("OVERALL: GREEN - ")  # the verdict first, as Nagios reads it
    assert lines[1].split()[:4] == ["ACCOUNT", "CHECK", "STATUS", "VALUE"]
    assert any(line.startswith("primary") and "delivery_rate" in line and "GREEN" in line
               for line in lines)
    assert lines[-1] == "OVERALL: GREEN"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_run_serves_metrics_and_stops_on_sigterm(live_simulator: SimulatorServer) -> None:
    port = _free_port()
    env = {**os.environ, **demo_env(live_simulator.url), "SMS_MONITOR_POLL_INTERVAL": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sms_monitor.cli", "run", "--web.listen-address",
         f"127.0.0.1:{port}"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        ready = False
        while time.monotonic() < deadline and not ready:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                    ready = r.status == 200
            except OSError:
                time.sleep(0.02)  # waiting for a child process to come up, not for our code's time
        assert ready, "daemon never became ready"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            assert b'sms_health_status{account="primary",check="overall"} 0.0' in r.read()
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=10)
        assert time.monotonic() - started < 5
        assert rc == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    _, err = proc.communicate()
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    events = [line["event"] for line in lines]
    assert "started" in events and "stopped" in events and "twilio_poll_done" in events
    assert DEMO_AUTH_TOKEN not in err
    assert "+15005550006" not in err  # even our own number is masked in logs


def test_check_with_the_database_down_is_unknown_never_green(
        live_simulator: SimulatorServer, capsys: pytest.CaptureFixture[str]) -> None:
    env = demo_env(live_simulator.url) | {
        "SMS_MONITOR_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:{_free_port()}/x"}
    rc = main(["check"], env=env)
    lines = capsys.readouterr().out.splitlines()
    assert rc == 3  # Twilio is green, but opt-out compliance cannot be seen
    assert lines[0].startswith("OVERALL: UNKNOWN - database unreadable (")
    assert any(line.split()[:3] == ["database", "connection", "UNKNOWN"] for line in lines)
    assert lines[-1] == "OVERALL: UNKNOWN"


# -- `alerts` and `rules check` when their database cannot be used: one line, exit 3 ----------

STORE_PASSWORD = "store-pass-4711"  # noqa: S105 - a test password, to prove it is never shown


def _alerts_env(store_url: str, database_url: str | None = None) -> dict[str, str]:
    closed = f"postgresql+psycopg://monitor:{STORE_PASSWORD}@127.0.0.1:{_free_port()}/practice"
    return {**demo_env("http://127.0.0.1:9"), "SMS_MONITOR_DATABASE_URL": database_url or closed,
            "SMS_MONITOR_ALERT_STORE_URL": store_url}


def _one_error_line(capsys: pytest.CaptureFixture[str], prefix: str) -> str:
    out = capsys.readouterr()
    lines = out.err.splitlines()
    assert len(lines) == 1, out.err
    assert lines[0].startswith(prefix) and "Traceback" not in out.err
    assert STORE_PASSWORD not in out.out + out.err
    return lines[0][len(prefix):]


def test_alerts_with_the_store_unreachable_says_so_in_one_line(
        capsys: pytest.CaptureFixture[str], tmp_path: os.PathLike[str]) -> None:
    # PostgreSQL on a port nobody listens on
    store = f"postgresql+psycopg://monitor:{STORE_PASSWORD}@127.0.0.1:{_free_port()}/alerts"
    assert main(["alerts"], env=_alerts_env(store)) == 3
    cause = _one_error_line(capsys, "sms-monitor: cannot read the alert store: ")
    assert cause.startswith("connection failed: ") and "Connection refused" in cause
    # an SQLite file never created, in a directory that cannot be made (not even by root):
    # nothing to list, said so, and nothing created looking for it
    assert main(["alerts"], env=_alerts_env("sqlite:////proc/no-such-dir/alerts.db")) == 0
    out = capsys.readouterr()
    assert out.err == "" and len(out.out.splitlines()) == 1
    assert out.out.startswith("No alerts: the alert store /proc/no-such-dir/alerts.db has not "
                              "been created yet")
    assert main(["alerts"], env=_alerts_env(f"sqlite:///{tmp_path}/state/alerts.db")) == 0
    assert capsys.readouterr().out.startswith("No alerts: the alert store ")
    # a read-only SQLite URI naming a file that is not there
    missing = f"sqlite:///file:{tmp_path}/missing.db?mode=ro&uri=true"
    assert main(["alerts"], env=_alerts_env(missing)) == 3
    assert _one_error_line(capsys, "sms-monitor: cannot read the alert store: ") == \
        "unable to open database file"
    assert os.listdir(tmp_path) == []  # and nothing was created looking for it


def test_alerts_with_a_read_only_sqlite_store(capsys: pytest.CaptureFixture[str],
                                              tmp_path: os.PathLike[str]) -> None:
    # The tests run as root, which file permissions do not stop; SQLite's own read-only mode
    # does: `?mode=ro` opens the file read-only whoever we are. A store sms-monitor has never
    # written (an empty file) holds no alerts: said so, exit 0, nothing written.
    from sms_monitor.alerts.store import AlertStore

    path = os.path.join(tmp_path, "alerts.db")
    open(path, "wb").close()
    read_only = f"sqlite:///file:{path}?mode=ro&uri=true"
    assert main(["alerts"], env=_alerts_env(read_only)) == 0
    assert capsys.readouterr().out.startswith("No alerts: the alert store holds no sms-monitor "
                                              "tables yet")
    assert main(["alerts"], env=_alerts_env(f"sqlite:///{path}")) == 0  # read-write: the same
    capsys.readouterr()
    assert os.path.getsize(path) == 0  # nothing was created
    # once the daemon has created its tables, a read-only copy is enough to list the alerts
    store = AlertStore(f"sqlite:///{path}")
    store.migrate()  # (logs that it made the file private: 0600)
    store.close()
    capsys.readouterr()
    assert main(["alerts"], env=_alerts_env(read_only)) == 0
    out = capsys.readouterr()
    assert out.err == "" and out.out.splitlines() == [
        "No alerts in the alert store yet.", "0 notification(s) waiting in the outbox"]


def test_alerts_with_a_postgresql_role_that_may_not_create_the_store(
        pg_url: str, pg_admin: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    # A real read-only store: a role that may connect and read but not create tables (in
    # PostgreSQL 15 nobody but the owner may create in schema public; revoked for older ones).
    role = f"smsm_ro_{uuid.uuid4().hex[:12]}"
    database = pg_url.rsplit("/", 1)[1]
    with pg_admin.connect() as conn:
        conn.execute(text(f'CREATE ROLE "{role}" LOGIN PASSWORD \'{STORE_PASSWORD}\''))
    try:
        owner = create_engine(pg_url, isolation_level="AUTOCOMMIT")
        with owner.connect() as conn:
            conn.execute(text("REVOKE CREATE ON SCHEMA public FROM PUBLIC"))
        owner.dispose()
        store = f"postgresql+psycopg://{role}:{STORE_PASSWORD}@127.0.0.1:5432/{database}"
        assert main(["alerts"], env=_alerts_env(store)) == 0  # it only reads: allowed
        out = capsys.readouterr()
        assert out.err == "" and out.out.startswith("No alerts: the alert store holds no "
                                                    "sms-monitor tables yet")
    finally:
        with pg_admin.connect() as conn:
            conn.execute(text(f'DROP ROLE IF EXISTS "{role}"'))


def _tables(url: str) -> list[tuple[str, str]]:
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT table_schema, table_name FROM information_schema.tables "
                                 "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') "
                                 "ORDER BY 1, 2")).all()
    engine.dispose()
    return [(str(a), str(b)) for a, b in rows]


def test_alerts_lists_a_postgresql_store_without_creating_anything(
        pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    from sms_monitor.alerts.lifecycle import AlertState
    from sms_monitor.alerts.store import AlertStore, RuleChanges

    before = _tables(pg_url)
    assert main(["alerts"], env=_alerts_env(pg_url)) == 0  # a role that could create tables
    out = capsys.readouterr()
    assert out.out.startswith("No alerts: the alert store holds no sms-monitor tables yet")
    assert _tables(pg_url) == before  # nothing created

    store = AlertStore(pg_url)  # the daemon's first cycle
    store.migrate()
    before = _tables(pg_url)
    assert main(["alerts"], env=_alerts_env(pg_url)) == 0
    assert capsys.readouterr().out.splitlines() == [
        "No alerts in the alert store yet.", "0 notification(s) waiting in the outbox"]
    store.save_rule(RuleChanges("R", states=[AlertState("R", "primary", "firing", 0.0, 1)]), 0.0)
    store.close()
    assert main(["alerts"], env=_alerts_env(pg_url)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["RULE", "TARGET", "STATE"]
    assert lines[1].split()[:3] == ["R", "primary", "firing"]
    assert _tables(pg_url) == before


def test_rules_check_with_the_database_unreachable_says_so_in_one_line(
        capsys: pytest.CaptureFixture[str], tmp_path: os.PathLike[str]) -> None:
    env = _alerts_env(f"sqlite:///{tmp_path}/alerts.db")  # the application database: closed
    assert main(["rules", "check"], env=env) == 3
    cause = _one_error_line(capsys, "sms-monitor: cannot read notification_rules: ")
    assert cause.startswith("connection failed: ") and "Connection refused" in cause
    env = _alerts_env(f"sqlite:///{tmp_path}/alerts.db", database_url=(
        f"postgresql+psycopg://postgres:{STORE_PASSWORD}@127.0.0.1:5432/smsm_no_such_db"))
    assert main(["rules", "check"], env=env) == 3
    assert 'database "smsm_no_such_db" does not exist' in _one_error_line(
        capsys, "sms-monitor: cannot read notification_rules: ")


def test_check_with_the_alert_store_server_down_is_unknown(
        live_simulator: SimulatorServer, capsys: pytest.CaptureFixture[str],
        tmp_path: os.PathLike[str]) -> None:
    from sqlalchemy import create_engine

    from sms_monitor.simulator.practice_db import create_runbook_schema

    practice = f"sqlite:///{os.path.join(tmp_path, 'practice.db')}"
    create_runbook_schema(create_engine(practice))
    env = demo_env(live_simulator.url) | {
        "SMS_MONITOR_DATABASE_URL": practice,
        "SMS_MONITOR_ALERT_STORE_URL":
            f"postgresql+psycopg://monitor:secret-7@127.0.0.1:{_free_port()}/alerts"}
    config = os.path.join(tmp_path, "c.toml")
    with open(config, "w") as fh:  # the empty practice database logged none of Twilio's sends
        fh.write("[database]\nunexpected_sends_margin = 100000\n")
    rc = main(["check", "--json", "--config", config], env=env)
    out = capsys.readouterr().out
    doc = json.loads(out)
    assert (rc, doc["overall"]) == (3, "unknown"), doc["detail"]
    store = next(s for s in doc["sources"] if s["name"] == "alert_store")
    assert not store["readable"] and store["reason"]
    assert "secret-7" not in out


def test_a_busy_port_is_one_line_and_exit_2(tmp_path: os.PathLike[str]) -> None:
    """``simulate`` and ``run`` on a port another process holds: no traceback."""
    import socket
    import subprocess
    import sys

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        for args in (["simulate", "--listen", f"127.0.0.1:{port}"],
                     ["run", "--web.listen-address", f"127.0.0.1:{port}"]):
            result = subprocess.run([sys.executable, "-m", "sms_monitor.cli", *args],
                                    env={**demo_env("http://127.0.0.1:9"), "PATH": "/usr/bin:/bin"},
                                    cwd=tmp_path, capture_output=True, text=True, timeout=60)
            assert result.returncode == 2, result.stderr
            assert result.stderr.endswith(f"127.0.0.1:{port}: Address already in use\n")
            assert "Traceback" not in result.stderr
