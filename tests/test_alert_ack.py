"""Acknowledging and silencing alerts from the command line: durable in the alert store
(SQLite and PostgreSQL), audited, pausing escalation, visible in the listing and metrics.

The engine runs against the simulator, the runbook's rules in PostgreSQL and a real SMTP
server on a FakeClock; the commands run on the same clock (``commands.main``), or through
``sms-monitor``'s own argument parsing under freezegun.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time
from sqlalchemy import create_engine, inspect, text

from sms_monitor.alerts import commands
from sms_monitor.alerts.lifecycle import AlertState
from sms_monitor.alerts.store import SCHEMA_VERSION, AlertStore, RuleChanges
from sms_monitor.app import App
from sms_monitor.cli import main
from sms_monitor.config import Settings
from sms_monitor.outputs.http import build_registry
from sms_monitor.simulator.server import SimulatorServer
from sms_monitor.simulator.state import SimState
from tests.conftest import T0, FakeClock, Smtp, demo_env
from tests.test_alert_engine import monitor, settings

BALANCE = "Low Twilio Balance"
ONCALL, LEAD = "oncall@practice.example", "lead@practice.example"


def run(s: Settings, clock: FakeClock, action: str | None, rule: str | None = None,
        **kwargs: Any) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = commands.main(s, action, rule, out=out, err=err, clock=clock, **kwargs)
    return status, out.getvalue(), err.getvalue()


def received(smtp: Smtp) -> list[tuple[str, str]]:
    """(recipient, subject) of every balance e-mail, in order."""
    return [(r, " ".join(str(m["Subject"]).split())) for rcpts, m in smtp.inbox.messages
            for r in rcpts if BALANCE in str(m["Subject"])]


def history(url: str) -> list[tuple[str, str, str | None, str | None]]:
    store = AlertStore(url)
    try:
        rows = store.load_history(BALANCE, limit=100)
    finally:
        store.close()
    return [(r["target"], r["event"], r["actor"], r["note"]) for r in reversed(rows)]


def gauge(m: App, name: str) -> float | None:
    return build_registry(m.holder, m.areas).get_sample_value(
        name, {"rule": BALANCE, "target": "primary"})


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, app: str, tmp_path: Path) -> str:
    return app if request.param == "postgresql" else f"sqlite:///{tmp_path / 'alerts.db'}"


@pytest.fixture
def firing(app: str, sim: tuple[SimulatorServer, SimState], smtp: Smtp, clock: FakeClock,
           store_url: str) -> Iterator[tuple[Settings, App, SimState]]:
    """The balance alert firing since T0 (level 1, the on-call engineer paged)."""
    server, state = sim
    s = settings(app, server, smtp, store_url)
    state.set_scenario("out_of_credit")
    m = monitor(s, clock)
    m.run_cycle()
    assert received(smtp) == [(ONCALL, "[FIRING] Low Twilio Balance (primary): balance -0.42 "
                                       "USD (threshold 20 USD)")]
    yield s, m, state
    m.close()


def test_an_acknowledged_alert_does_not_escalate_and_still_resolves(
        firing: tuple[Settings, App, SimState], smtp: Smtp, clock: FakeClock,
        store_url: str) -> None:
    s, m, state = firing
    clock.advance(5 * 60)
    status, out, err = run(s, clock, "ack", BALANCE, by="alice", reason="topping up now")
    assert (status, err) == (0, "")
    assert out == ("Acknowledged Low Twilio Balance (primary) by alice until it resolves: no "
                   "escalation or reminder meanwhile; it still resolves.\n")
    m.run_cycle()  # the daemon sends the acknowledgement to whoever was paged
    assert received(smtp)[1:] == [(ONCALL, "[ACKNOWLEDGED] Low Twilio Balance (primary) by "
                                           "alice: balance -0.42 USD (threshold 20 USD)")]
    ack_mail = smtp.inbox.messages[-1][1].get_payload(decode=True)
    assert isinstance(ack_mail, bytes)
    assert "acknowledged by alice, until it resolves: topping up now" in ack_mail.decode()
    view = m.holder.published
    assert view is not None and view.alerts is not None
    (alert,) = [a for a in view.alerts.alerts if a.rule == BALANCE]
    assert alert.acknowledged_by == "alice" and alert.acknowledged_until is None
    assert gauge(m, "sms_alert_acknowledged") == 1.0
    status, out, _ = run(s, clock, None)
    (row,) = [line for line in out.splitlines() if line.startswith(BALANCE)]
    assert row.endswith("acked by alice")

    for minutes in (30, 120, 300):  # past level 2, level 3 and the 4-hour reminder
        clock.now = T0 + minutes * 60
        m.run_cycle()
    assert len(received(smtp)) == 2  # nobody else woken, no reminder
    assert [a.level for a in m.holder.published.alerts.alerts  # type: ignore[union-attr]
            if a.rule == BALANCE] == [1]

    state.set_scenario("healthy")
    clock.advance(120)
    m.run_cycle()
    assert received(smtp)[2:] == [(ONCALL, "[RESOLVED] Low Twilio Balance (primary): balance "
                                           "back to 120.00 USD (threshold 20 USD)")]
    assert gauge(m, "sms_alert_acknowledged") == 0.0
    assert history(store_url) == [
        ("primary", "firing", None, None),
        ("primary", "acknowledged", "alice", "until it resolves: topping up now"),
        ("primary", "resolved", None, None),
        ("primary", "unacknowledged", "sms-monitor",
         "the alert resolved (acknowledged by alice)")]
    store = AlertStore(store_url)
    assert store.load_mutes() == []  # the acknowledgement ended with its alert
    store.close()

    state.set_scenario("out_of_credit")  # a new alert: not acknowledged
    clock.advance(120)
    m.run_cycle()
    clock.advance(31 * 60)
    m.run_cycle()
    assert sorted(r for r, subject in received(smtp)[3:]) == [LEAD, ONCALL, ONCALL]


def test_an_acknowledgement_for_a_while_lets_escalation_resume(
        firing: tuple[Settings, App, SimState], smtp: Smtp, clock: FakeClock,
        store_url: str) -> None:
    s, m, _ = firing
    clock.advance(5 * 60)
    status, out, _ = run(s, clock, "ack", BALANCE, target="primary", for_="1h", by="alice")
    assert status == 0 and "until 2026-05-28 21:31:40Z" in out
    clock.now = T0 + 35 * 60
    m.run_cycle()
    assert [subject[:14] for _, subject in received(smtp)] == ["[FIRING] Low T",
                                                                "[ACKNOWLEDGED]"]
    clock.now = T0 + 66 * 60  # the acknowledgement expired: level 2 is due
    m.run_cycle()
    assert sorted(received(smtp)[2:]) == [
        (LEAD, "[ESCALATED] Low Twilio Balance (primary): balance -0.42 USD (threshold 20 USD)"),
        (ONCALL, "[ESCALATED] Low Twilio Balance (primary): balance -0.42 USD (threshold 20 "
                 "USD)")]
    assert history(store_url)[-2:] == [
        ("primary", "escalated", None, None),
        ("primary", "unacknowledged", "sms-monitor", "expired (acknowledged by alice)")]


def test_unack_resumes_escalation_on_the_next_cycle(
        firing: tuple[Settings, App, SimState], smtp: Smtp, clock: FakeClock) -> None:
    s, m, _ = firing
    assert run(s, clock, "ack", BALANCE, by="alice")[0] == 0
    m.run_cycle()
    clock.now = T0 + 40 * 60
    m.run_cycle()
    assert len(received(smtp)) == 2
    status, out, _ = run(s, clock, "unack", BALANCE, by="bob", reason="alice is off shift")
    assert status == 0 and out.startswith("Unacknowledged Low Twilio Balance (primary) by bob")
    assert run(s, clock, "unack", BALANCE, by="bob")[1:] == (
        "", "sms-monitor: 'Low Twilio Balance' is not acknowledged\n")
    m.run_cycle()
    assert sorted(r for r, _ in received(smtp)[2:]) == [LEAD, ONCALL]


def test_a_silence_sends_nothing_and_an_alert_still_firing_is_announced_after_it(
        app: str, sim: tuple[SimulatorServer, SimState], smtp: Smtp, clock: FakeClock,
        store_url: str) -> None:
    server, state = sim
    s = settings(app, server, smtp, store_url)
    m = monitor(s, clock)
    m.run_cycle()  # healthy: the rule's alert exists, inactive
    status, out, _ = run(s, clock, "silence", BALANCE, for_="20m", by="bob",
                         reason="planned top-up")
    assert status == 0 and out == (
        "Silenced Low Twilio Balance (every target) by bob until 2026-05-28 20:46:40Z: no "
        "notification until then.\n")
    state.set_scenario("out_of_credit")
    clock.advance(60)
    m.run_cycle()
    assert received(smtp) == []
    assert gauge(m, "sms_alert_silenced") == 1.0
    status, out, _ = run(s, clock, None)
    assert "silenced until 2026-05-28 20:46:40Z (bob)" in out
    clock.advance(10 * 60)
    m.run_cycle()
    assert received(smtp) == []
    clock.advance(11 * 60)  # the silence is over, the balance still low: everyone it pages
    m.run_cycle()
    assert received(smtp) == [(ONCALL, "[REPEAT] Low Twilio Balance (primary): balance -0.42 "
                                       "USD (threshold 20 USD)")]
    assert gauge(m, "sms_alert_silenced") == 0.0
    events = history(store_url)
    assert events[0] == ("*", "silenced", "bob", "until 2026-05-28 20:46:40Z: planned top-up")
    assert events[1] == ("primary", "firing", None, "silenced: not sent")
    assert events[2:] == [("primary", "repeat", None, None),
                          ("*", "unsilenced", "sms-monitor", "expired (silenced by bob)")]
    m.close()


def test_a_resolve_during_a_silence_closes_only_what_was_paged_before_it(
        firing: tuple[Settings, App, SimState], smtp: Smtp, clock: FakeClock) -> None:
    s, m, state = firing
    clock.advance(60)
    assert run(s, clock, "silence", BALANCE, target="primary", for_="2h", by="bob")[0] == 0
    state.set_scenario("healthy")
    clock.advance(120)
    m.run_cycle()  # paged before the silence: its RESOLVED still goes out
    assert [subject[:10] for _, subject in received(smtp)] == ["[FIRING] L", "[RESOLVED]"]
    state.set_scenario("out_of_credit")  # fires and resolves inside the silence: nothing
    clock.advance(120)
    m.run_cycle()
    state.set_scenario("healthy")
    clock.advance(120)
    m.run_cycle()
    assert len(received(smtp)) == 2
    status, out, _ = run(s, clock, "unsilence", BALANCE, by="bob")
    assert status == 0 and out.startswith("Unsilenced Low Twilio Balance (primary) by bob")


# -- the command line: one-line errors and exit statuses --------------------------------------

NOW = dt.datetime.fromtimestamp(T0, dt.UTC)


def seeded(url: str) -> None:
    """A store as the daemon leaves it: the balance alert firing, another rule inactive."""
    store = AlertStore(url)
    store.migrate()
    store.save_rule(RuleChanges(BALANCE, states=[
        AlertState(BALANCE, "primary", "firing", T0 - 600, 1, T0 - 600, -0.42),
        AlertState(BALANCE, "backup", "inactive", None, 0, None, 120.0)]), T0)
    store.save_rule(RuleChanges("Low SMS Delivery Rate", states=[
        AlertState("Low SMS Delivery Rate", "primary", "inactive")]), T0)
    store.close()


def cli(env: dict[str, str], *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), freeze_time(NOW):
        status = main(["alerts", *argv], env=env)
    return status, out.getvalue(), err.getvalue()


def env_for(store: str) -> dict[str, str]:
    return {**demo_env("http://127.0.0.1:9"),
            "SMS_MONITOR_DATABASE_URL": "postgresql+psycopg://x@127.0.0.1:9/practice",
            "SMS_MONITOR_ALERT_STORE_URL": store}


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_the_command_line(dialect: str, pg_url: str, tmp_path: Path) -> None:
    url = pg_url if dialect == "postgresql" else f"sqlite:///{tmp_path / 'alerts.db'}"
    seeded(url)
    env = env_for(url)
    assert cli(env, "ack", "Low Twilio Balanse") == (
        1, "", "sms-monitor: unknown rule 'Low Twilio Balanse' (did you mean 'Low Twilio "
               "Balance'?)\n")
    assert cli(env, "ack", BALANCE, "--target", "clinic") == (
        1, "", "sms-monitor: rule 'Low Twilio Balance' has no target 'clinic'; its targets: "
               "backup, primary\n")
    assert cli(env, "ack", BALANCE, "--target", "backup") == (
        1, "", "sms-monitor: 'Low Twilio Balance' (backup) is inactive, not firing: only a "
               "firing alert can be acknowledged (`silence` mutes one before it fires)\n")
    assert cli(env, "ack", "Low SMS Delivery Rate") == (
        1, "", "sms-monitor: 'Low SMS Delivery Rate' has no firing alert to acknowledge "
               "(`silence` mutes an alert before it fires)\n")
    for argv, message in (
            (("ack", BALANCE, "--for", "2 fortnights"), "--for: "),
            (("ack", BALANCE, "--for", "40d"), "--for: at most 30 days"),
            (("silence", BALANCE), "silence needs --for (how long, e.g. 2h)"),
            (("ack", BALANCE, "--reason", "a\x07b"), "--reason contains a control character"),
            (("ack", BALANCE, "--by", "x" * 101), "--by is 101 characters long; at most 100")):
        status, out, err = cli(env, *argv)
        assert (status, out) == (2, "") and err.startswith(f"sms-monitor: {message}")
        assert len(err.splitlines()) == 1
    status, out, err = cli(env, "ack", BALANCE, "--by", "carol", "--reason", "on it")
    assert (status, err) == (0, "") and out.startswith(
        "Acknowledged Low Twilio Balance (primary) by carol until it resolves")
    status, out, _ = cli(env, "silence", BALANCE, "--target", "backup", "--for", "90m")
    assert status == 0 and "(backup)" in out and "until 2026-05-28 21:56:40Z" in out
    status, out, _ = cli(env)
    lines = out.splitlines()
    assert lines[0].split()[-1] == "MUTED"
    assert [line.split("  ")[0] for line in lines[1:4]] == [
        "Low SMS Delivery Rate", BALANCE, BALANCE]
    assert lines[2].endswith(f"silenced until 2026-05-28 21:56:40Z ({commands.default_actor()})")
    assert lines[3].endswith("acked by carol")
    status, out, _ = cli(env, "history", BALANCE)
    assert status == 0 and out.splitlines()[-2:] == [
        "2026-05-28 20:26:40Z  Low Twilio Balance (primary)  acknowledged value -0.42 by carol: "
        "until it resolves: on it",
        f"2026-05-28 20:26:40Z  Low Twilio Balance (backup)  silenced by {commands.default_actor()}"
        ": until 2026-05-28 21:56:40Z"]
    assert cli(env, "unsilence", BALANCE, "--target", "primary")[2] == (
        "sms-monitor: 'Low Twilio Balance' (primary) is not silenced\n")
    assert cli(env, "unsilence", BALANCE)[0] == 0


def test_the_commands_need_a_store_of_this_layout(tmp_path: Path, pg_url: str) -> None:
    missing = f"sqlite:///{tmp_path / 'none' / 'alerts.db'}"
    status, _, err = cli(env_for(missing), "ack", BALANCE)
    assert status == 1 and err.startswith("sms-monitor: no alerts to act on: the alert store ")
    assert not (tmp_path / "none").exists()  # nothing created looking for it
    closed = "postgresql+psycopg://monitor:s3cr3t@127.0.0.1:9/alerts"
    status, _, err = cli(env_for(closed), "silence", BALANCE, "--for", "1h")
    assert status == 3 and err.startswith("sms-monitor: cannot write the alert store: ")
    assert "s3cr3t" not in err and len(err.splitlines()) == 1
    status, _, err = cli({**env_for(missing), "SMS_MONITOR_DATABASE_URL": ""}, "ack", BALANCE)
    assert status == 2 and err.startswith("sms-monitor: alerts are off")


LAYOUT_3 = (
    "CREATE TABLE sms_monitor_schema_version (version INTEGER NOT NULL)",
    "INSERT INTO sms_monitor_schema_version VALUES (3)",
    "CREATE TABLE sms_monitor_alert_state (rule TEXT NOT NULL, target TEXT NOT NULL, "
    "state VARCHAR(20) NOT NULL, since FLOAT, level INTEGER NOT NULL, last_notified FLOAT, "
    "last_value FLOAT, updated FLOAT NOT NULL, definition TEXT, PRIMARY KEY (rule, target))",
    "CREATE TABLE sms_monitor_alert_history (id SERIAL PRIMARY KEY, rule TEXT NOT NULL, "
    "target TEXT NOT NULL, event VARCHAR(20) NOT NULL, level INTEGER NOT NULL, value FLOAT, "
    "at FLOAT NOT NULL)",
    f"INSERT INTO sms_monitor_alert_state VALUES ('{BALANCE}', 'primary', 'firing', {T0 - 60}, "
    f"1, {T0 - 60}, -0.42, {T0}, NULL)",
    f"INSERT INTO sms_monitor_alert_history (rule, target, event, level, value, at) VALUES "
    f"('{BALANCE}', 'primary', 'firing', 1, -0.42, {T0 - 60})",
)


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_a_layout_3_store_is_upgraded_in_place_and_only_then_acknowledged(
        dialect: str, pg_url: str, tmp_path: Path) -> None:
    url = pg_url if dialect == "postgresql" else f"sqlite:///{tmp_path / 'alerts.db'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        for statement in LAYOUT_3:
            conn.exec_driver_sql(statement if dialect == "postgresql" else statement.replace(
                "id SERIAL PRIMARY KEY", "id INTEGER PRIMARY KEY AUTOINCREMENT"))
    env = env_for(url)
    status, out, err = cli(env)  # an older store lists, read-only
    assert status == 0 and out.splitlines()[1].startswith(BALANCE)
    status, _, err = cli(env, "ack", BALANCE)
    assert status == 3 and err == (
        "sms-monitor: the alert store has layout 3, older than this sms-monitor's 4: start this "
        "version's daemon (it upgrades the store in place), then try again\n")
    status, out, _ = cli(env, "history")
    assert status == 0 and "Low Twilio Balance (primary)  firing value -0.42" in out
    store = AlertStore(url)
    store.migrate()  # what the daemon does when it starts
    store.migrate()  # twice: nothing to do
    store.close()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version FROM sms_monitor_schema_version")
                            ).scalars().all() == [SCHEMA_VERSION] == [4]
        assert {"actor", "note"} <= {c["name"] for c in inspect(conn).get_columns(
            "sms_monitor_alert_history")}
    engine.dispose()
    assert cli(env, "ack", BALANCE, "--by", "dana")[0] == 0
    assert history(url) == [("primary", "firing", None, None),
                            ("primary", "acknowledged", "dana", "until it resolves")]
