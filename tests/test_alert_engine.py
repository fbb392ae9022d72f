"""The alert engine end to end: rules in PostgreSQL, the simulator, a real SMTP server.

Time is a FakeClock shared by the simulator and the monitor; nothing sleeps.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text

from sms_monitor.app import App, build
from sms_monitor.config import Settings, load_settings
from sms_monitor.core.snapshot import Published
from sms_monitor.simulator.server import SimulatorServer
from sms_monitor.simulator.state import SimState
from tests.conftest import FakeClock, SleepRecorder, Smtp, demo_env


def settings(app: str, sim: SimulatorServer, smtp: Smtp, store: str, **alerts: Any) -> Settings:
    env = demo_env(sim.url) | {"SMS_MONITOR_DATABASE_URL": app, "SMS_MONITOR_SMTP_URL": smtp.url,
                               "SMS_MONITOR_ALERT_FROM": "sms-monitor@practice.example",
                               "SMS_MONITOR_ALERT_STORE_URL": store}
    return load_settings(env, {"alerts": {"level2": ["lead@practice.example"], **alerts}})


def monitor(s: Settings, clock: FakeClock) -> App:
    return build(s, clock=clock, sleep=SleepRecorder())


def published(m: App) -> Published:
    """Run a cycle; what readers then see: the snapshot and the alert state beside it."""
    m.run_cycle()
    assert m.holder.published is not None
    return m.holder.published


def state_of(m: App, rule: str) -> str:
    snap = m.holder.published
    assert snap is not None and snap.alerts is not None
    return next(a.state for a in snap.alerts.alerts if a.rule == rule)


DELIVERY = "Low SMS Delivery Rate"


def test_fires_once_escalates_resolves_and_survives_a_restart(
        app: str, sim: tuple[SimulatorServer, SimState], smtp: Smtp, clock: FakeClock,
        tmp_path: Any) -> None:
    server, state = sim
    store = f"sqlite:///{tmp_path / 'alerts.db'}"
    s = settings(app, server, smtp, store)
    m = monitor(s, clock)
    m.run_cycle()
    assert state_of(m, DELIVERY) == "inactive" and smtp.inbox.messages == []

    state.set_scenario("degraded_delivery")
    clock.advance(3600)  # an hour of degraded delivery fills the rule's window
    m.run_cycle()
    assert state_of(m, DELIVERY) == "firing"
    firing = [msg for msg in smtp.inbox.subjects() if DELIVERY in msg]
    assert len(firing) == 1 and firing[0].startswith("[FIRING]")
    rcpts, msg = next((r, mm) for r, mm in smtp.inbox.messages if DELIVERY in str(mm["Subject"]))
    assert rcpts == ["oncall@practice.example"]
    body = msg.get_payload(decode=True).decode()  # type: ignore[union-attr]
    assert "primary" in body and "90" in body

    for _ in range(5):  # more cycles while firing: nothing new
        clock.advance(60)
        m.run_cycle()
    assert len([x for x in smtp.inbox.subjects() if DELIVERY in x]) == 1

    # restart: a new process with the same store neither repeats nor forgets
    m.close()
    m = monitor(s, clock)
    clock.advance(60)
    m.run_cycle()
    assert state_of(m, DELIVERY) == "firing"
    assert len([x for x in smtp.inbox.subjects() if DELIVERY in x]) == 1

    clock.advance(30 * 60)  # 30 minutes firing: level 2, the lead is added
    m.run_cycle()
    escalated = [(r, mm) for r, mm in smtp.inbox.messages if DELIVERY in str(mm["Subject"])][1:]
    assert sorted(r for rcpts, _ in escalated for r in rcpts) == \
        ["lead@practice.example", "oncall@practice.example"]  # one e-mail each

    state.set_scenario("healthy")
    clock.advance(3600)
    m.run_cycle()
    assert state_of(m, DELIVERY) == "inactive"
    resolved = [x for x in smtp.inbox.subjects() if DELIVERY in x and x.startswith("[RESOLVED]")]
    assert len(resolved) == 2  # to the on-call engineer and to the lead it was escalated to
    m.close()


def test_crash_between_deciding_and_sending_loses_nothing(
        app: str, sim: tuple[SimulatorServer, SimState], smtp: Smtp, clock: FakeClock,
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    server, state = sim
    s = settings(app, server, smtp, f"sqlite:///{tmp_path / 'alerts.db'}")
    state.set_scenario("out_of_credit")
    m = monitor(s, clock)
    assert m.alerts is not None
    monkeypatch.setattr(m.alerts, "drain",
                        lambda now, **_: (_ for _ in ()).throw(SystemExit("crash")))
    with pytest.raises(SystemExit):
        m.run_cycle()  # decided and committed; the process "dies" before sending
    assert smtp.inbox.messages == []
    m.close()
    m = monitor(s, clock)  # restart
    clock.advance(60)
    m.run_cycle()
    balance = [x for x in smtp.inbox.subjects() if "Low Twilio Balance" in x]
    assert len(balance) == 1
    m.close()


def test_smtp_down_then_back(app: str, sim: tuple[SimulatorServer, SimState], smtp: Smtp,
                             clock: FakeClock, tmp_path: Any) -> None:
    server, state = sim
    smtp.stop()
    s = settings(app, server, smtp, f"sqlite:///{tmp_path / 'alerts.db'}")
    state.set_scenario("out_of_credit")
    m = monitor(s, clock)
    snap = published(m)
    assert snap.alerts is not None
    assert snap.alerts.notifications[("email", "failed")] == 1
    assert snap.alerts.outbox_pending == 1
    assert state_of(m, "Low Twilio Balance") == "firing"  # evaluation went on
    smtp.start()
    clock.advance(10)
    m.run_cycle()  # still inside the backoff: not retried yet
    assert smtp.inbox.messages == []
    clock.advance(60)
    snap = published(m)
    assert snap.alerts is not None and snap.alerts.outbox_pending == 0
    assert len([x for x in smtp.inbox.subjects() if "Low Twilio Balance" in x]) == 1
    m.close()


def test_broken_row_is_reported_and_the_rest_work(
        app: str, sim: tuple[SimulatorServer, SimState], smtp: Smtp, clock: FakeClock,
        tmp_path: Any) -> None:
    server, state = sim
    engine = create_engine(app)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO notification_rules (rule_name, rule_type, "
                          "trigger_conditions, recipients) VALUES ('Nonsense', 'alert', "
                          "'{\"metric\": \"sms_mood\", \"threshold\": 1}', ARRAY['x@y.example'])"))
    engine.dispose()
    state.set_scenario("out_of_credit")
    m = monitor(settings(app, server, smtp, f"sqlite:///{tmp_path / 'alerts.db'}"), clock)
    snap = published(m)
    assert snap.alerts is not None
    assert snap.alerts.broken == (("Nonsense", "unknown metric 'sms_mood'"),)
    assert len([x for x in smtp.inbox.subjects() if "Low Twilio Balance" in x]) == 1
    m.close()


def test_two_replicas_one_pager(app: str, pg_admin: Engine,
                                sim: tuple[SimulatorServer, SimState], smtp: Smtp,
                                clock: FakeClock) -> None:
    server, state = sim
    s = settings(app, server, smtp, app)  # both keep alert state in the shared PostgreSQL
    a, b = monitor(s, clock), monitor(s, clock)
    state.set_scenario("out_of_credit")
    snap_a, snap_b = published(a), published(b)
    assert snap_a.alerts is not None and snap_b.alerts is not None
    assert (snap_a.alerts.leader, snap_b.alerts.leader) == (True, False)
    assert len([x for x in smtp.inbox.subjects() if "Low Twilio Balance" in x]) == 1

    # the leader dies: its lock connection is gone; the other takes over within two cycles
    db = app.rsplit("/", 1)[1]
    with pg_admin.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE "
                          "locktype = 'advisory' AND database = (SELECT oid FROM pg_database "
                          "WHERE datname = :d)"), {"d": db})
    assert a.alerts is not None
    a.alerts.leadership._conn = None  # the dead process's handle is gone with it
    a.alerts.leadership.check = lambda: False  # type: ignore[method-assign]
    clock.advance(60)
    b.run_cycle()
    clock.advance(60)
    snap_b = published(b)
    assert snap_b.alerts is not None and snap_b.alerts.leader
    state.set_scenario("healthy")
    clock.advance(60)
    b.run_cycle()
    a.run_cycle()
    subjects = [x for x in smtp.inbox.subjects() if "Low Twilio Balance" in x]
    assert len(subjects) == 2 and subjects[1].startswith("[RESOLVED]")  # once each, not twice
    a.close()
    b.close()



def test_broken_row_is_logged_once_per_change(
        app: str, sim: tuple[SimulatorServer, SimState], smtp: Smtp, clock: FakeClock,
        tmp_path: Any) -> None:
    import structlog

    server, _ = sim
    engine = create_engine(app)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO notification_rules (rule_name, rule_type, "
                          "trigger_conditions, recipients) VALUES ('Typo', 'alert', "
                          "'{\"metric\": \"sms_delivery_rate\", \"threshold\": \"ninety\"}', "
                          "ARRAY['x@y.example'])"))
    m = monitor(settings(app, server, smtp, f"sqlite:///{tmp_path / 'alerts.db'}"), clock)
    with structlog.testing.capture_logs() as logs:
        m.run_cycle()
        m.run_cycle()
        with engine.begin() as conn:  # the row changes: reported again, with the new reason
            conn.execute(text("UPDATE notification_rules SET trigger_conditions = "
                              "'{\"metric\": \"sms_delivery_rate\", \"threshold\": 900}' "
                              "WHERE rule_name = 'Typo'"))
        m.run_cycle()
    reports = [e for e in logs if e["event"] == "alert_rule_unusable"]
    assert [(e["rule"], "ninety" in e["reason"] or "0-100" in e["reason"]) for e in reports] == \
        [("Typo", True), ("Typo", True)]
    from sms_monitor.outputs.http import build_registry

    registry = build_registry(m.holder, m.areas)
    assert registry.get_sample_value("sms_alert_rule_invalid", {"rule": "Typo"}) == 1
    assert registry.get_sample_value("sms_alert_leader") == 1
    assert registry.get_sample_value(
        "sms_alert_state", {"rule": DELIVERY, "target": "primary", "severity": "critical"}) == 0
    engine.dispose()
    m.close()


def test_rules_check_and_alerts_commands(app: str, sim: tuple[SimulatorServer, SimState],
                                         smtp: Smtp, clock: FakeClock, tmp_path: Any,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    from sms_monitor.cli import main

    server, state = sim
    store = f"sqlite:///{tmp_path / 'alerts.db'}"
    env = demo_env(server.url) | {"SMS_MONITOR_DATABASE_URL": app,
                                  "SMS_MONITOR_ALERT_STORE_URL": store}
    assert main(["rules", "check"], env=env) == 0
    out = capsys.readouterr().out
    assert "OK   Low SMS Delivery Rate: sms_delivery_rate < 90 over 3600s" in out
    assert "5 usable, 0 with problems" in out

    engine = create_engine(app)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO notification_rules (rule_name, rule_type, "
                          "trigger_conditions, recipients) VALUES ('Bad', 'alert', '{}', "
                          "ARRAY['+15551234567']), ('Digest', 'report', '{}', ARRAY['a@b.example'])"))
    engine.dispose()
    assert main(["rules", "check"], env=env) == 1
    out = capsys.readouterr().out
    assert "BAD  Bad: trigger_conditions has no metric" in out
    assert "5 usable, 1 with problems, 1 not alert rows" in out

    state.set_scenario("out_of_credit")
    m = monitor(settings(app, server, smtp, store), clock)
    m.run_cycle()
    m.close()
    assert main(["alerts"], env=env) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["RULE", "TARGET", "STATE"]
    balance = next(line for line in out if line.startswith("Low Twilio Balance"))
    assert "firing" in balance and "-0.42" in balance
    assert out[-1] == "0 notification(s) waiting in the outbox"


def test_unusable_store_is_reported_and_monitoring_goes_on(
        app: str, sim: tuple[SimulatorServer, SimState], smtp: Smtp, clock: FakeClock) -> None:
    server, _ = sim
    m = monitor(settings(app, server, smtp, "sqlite:////proc/no-such-dir/alerts.db"), clock)
    snap = published(m)
    assert snap.alerts is not None and not snap.alerts.store_ok
    assert snap.snapshot.accounts[0].overall.value == "green"
    from sms_monitor.outputs.http import build_registry

    assert build_registry(m.holder, m.areas).get_sample_value("sms_alert_store_up") == 0
    m.close()


def test_the_example_rules_pass_rules_check(pg_url: str, capsys: pytest.CaptureFixture[str],
                                            tmp_path: Any) -> None:
    from pathlib import Path

    from sms_monitor.cli import main
    from sms_monitor.simulator.practice_db import create_runbook_schema

    engine = create_engine(pg_url)
    create_runbook_schema(engine)
    sql = (Path(__file__).parent.parent / "examples" / "notification_rules.sql").read_text()
    with engine.begin() as conn:
        conn.exec_driver_sql(sql)
    engine.dispose()
    env = demo_env("http://127.0.0.1:9") | {"SMS_MONITOR_DATABASE_URL": pg_url,
                                            "SMS_MONITOR_ALERT_STORE_URL":
                                                f"sqlite:///{tmp_path / 'alerts.db'}"}
    assert main(["rules", "check"], env=env) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "5 usable, 0 with problems, 0 not alert rows"
    assert all(line.startswith("OK   ") for line in out[:-1])


def test_a_rule_nobody_receives_is_reported_by_name_unless_level1_receives_it(
        app: str, sim: tuple[SimulatorServer, SimState], smtp: Smtp, clock: FakeClock,
        tmp_path: Any) -> None:
    import structlog

    from sms_monitor.outputs.http import build_registry

    server, _ = sim
    engine = create_engine(app)
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO notification_rules (rule_name, rule_type, trigger_conditions, "
            "recipients) VALUES "
            "('Silent', 'alert', '{\"metric\": \"sms_error_rate\", \"threshold\": 5}', NULL), "
            "('Phone', 'alert', '{\"metric\": \"sms_error_rate\", \"threshold\": 5}', "
            "ARRAY['+15551234567']), "
            "('Ratio', 'alert', '{\"metric\": \"sms_delivery_rate\", \"threshold\": 0.9}', "
            "ARRAY['x@y.example'])"))
    engine.dispose()
    store = f"sqlite:///{tmp_path / 'alerts.db'}"
    m = monitor(settings(app, server, smtp, store), clock)
    with structlog.testing.capture_logs() as logs:
        snap = published(m)
    assert snap.alerts is not None and dict(snap.alerts.broken) == {
        "Silent": "recipients: none, so nobody would be notified; list e-mail addresses or "
                  "https:// URLs",
        "Phone": "recipients: none of the 1 is an e-mail address or an https:// URL (never SMS), "
                 "so nobody would be notified",
        "Ratio": "threshold 0.9 looks like a ratio; sms_delivery_rate is in percent (did you "
                 "mean 90?); write \"0.9%\" if you mean 0.9 percent"}
    assert sorted(e["rule"] for e in logs if e["event"] == "alert_rule_unusable") == \
        ["Phone", "Ratio", "Silent"]
    registry = build_registry(m.holder, m.areas)
    assert registry.get_sample_value("sms_alert_rule_invalid", {"rule": "Silent"}) == 1
    assert {a.rule for a in snap.alerts.alerts} == {DELIVERY, "Slow SMS Delivery",
                                                    "Slow Twilio API", "Low Twilio Balance",
                                                    "High SMS Error Rate"}
    m.close()

    # [alerts] level1 receives every rule: a row listing nobody usable is then a working rule
    m = monitor(settings(app, server, smtp, store, level1=["ops@practice.example"]), clock)
    snap = published(m)
    assert snap.alerts is not None and dict(snap.alerts.broken) == {
        "Phone": "recipients: 1 recipient(s) are neither an e-mail address nor an https:// URL; "
                 "they are skipped (never SMS)",
        "Ratio": "threshold 0.9 looks like a ratio; sms_delivery_rate is in percent (did you "
                 "mean 90?); write \"0.9%\" if you mean 0.9 percent"}
    assert {"Silent", "Phone"} <= {a.rule for a in snap.alerts.alerts}
    m.close()
