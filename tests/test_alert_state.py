"""Alert state through trouble: notification_rules unreadable, rules removed, rows the store
refuses, and the store's layout migrated in place (a real PostgreSQL, a real SMTP server)."""

from __future__ import annotations

from typing import Any

import pytest
import structlog
from sqlalchemy import create_engine, inspect, text

from sms_monitor.alerts.lifecycle import AlertState
from sms_monitor.alerts.store import AlertStore
from sms_monitor.app import App
from sms_monitor.config import Settings
from sms_monitor.outputs.http import build_registry
from sms_monitor.simulator.server import SimulatorServer
from sms_monitor.simulator.state import SimState
from tests.conftest import FakeClock, Smtp
from tests.test_alert_engine import monitor, published, settings

BALANCE = "Low Twilio Balance"


def subjects(smtp: Smtp, rule: str) -> list[str]:
    return [s for s in smtp.inbox.subjects() if rule in s]


def sql(url: str, *statements: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement))
    engine.dispose()


def firing(app: str, sim: tuple[SimulatorServer, SimState], smtp: Smtp, clock: FakeClock,
           tmp_path: Any) -> tuple[Settings, App]:
    """The balance alert fired once, with its store in an SQLite file: (settings, monitor)."""
    server, state = sim
    s = settings(app, server, smtp, f"sqlite:///{tmp_path / 'alerts.db'}")
    m = monitor(s, clock)
    state.set_scenario("out_of_credit")
    m.run_cycle()
    return s, m


def test_unreadable_rules_keep_every_alert_and_its_escalation(
        app: str, sim: tuple[SimulatorServer, SimState], smtp: Smtp, clock: FakeClock,
        tmp_path: Any) -> None:
    _, m = firing(app, sim, smtp, clock, tmp_path)
    assert subjects(smtp, BALANCE) == [subjects(smtp, BALANCE)[0]]
    assert subjects(smtp, BALANCE)[0].startswith("[FIRING]")

    # the table is renamed for a few cycles (a migration, a lock, an outage of the database)
    sql(app, "ALTER TABLE notification_rules RENAME TO notification_rules_moving")
    with structlog.testing.capture_logs() as outage:
        for _ in range(3):
            clock.advance(60)
            snap = published(m)
    assert snap.alerts is not None
    firing_meanwhile = {a.rule: a.state for a in snap.alerts.alerts}.get(BALANCE)
    registry = build_registry(m.holder, m.areas)  # read now: it shows the latest cycle
    meanwhile = [registry.get_sample_value("sms_alert_rules_readable"),
                 registry.get_sample_value("sms_alert_rules_read_failures_total"),
                 registry.get_sample_value("sms_alert_state", {
                     "rule": BALANCE, "target": "primary", "severity": "critical"})]
    sql(app, "ALTER TABLE notification_rules_moving RENAME TO notification_rules")
    with structlog.testing.capture_logs() as back:
        clock.advance(60)
        m.run_cycle()
    assert len(subjects(smtp, BALANCE)) == 1  # one breach, one [FIRING]: nothing re-fired

    assert firing_meanwhile == "firing"  # still shown, as it was
    assert not snap.alerts.rules_readable
    assert [e["event"] for e in outage if e["event"].startswith("alert_rules_")] == \
        ["alert_rules_unreadable"]  # once, not every cycle
    assert meanwhile == [0, 3, 2]
    assert [e["event"] for e in back if e["event"].startswith("alert_rules_")] == \
        ["alert_rules_readable_again"]
    assert build_registry(m.holder, m.areas).get_sample_value("sms_alert_rules_readable") == 1

    clock.advance(30 * 60)  # the escalation clock kept running from the first firing
    m.run_cycle()
    assert [s.split("]")[0] for s in subjects(smtp, BALANCE)] == ["[FIRING", "[ESCALATED",
                                                                  "[ESCALATED"]
    m.close()


def test_unreadable_rules_after_a_restart_show_the_saved_ones(
        app: str, sim: tuple[SimulatorServer, SimState], smtp: Smtp, clock: FakeClock,
        tmp_path: Any) -> None:
    s, m = firing(app, sim, smtp, clock, tmp_path)
    m.close()
    sql(app, "ALTER TABLE notification_rules RENAME TO notification_rules_moving")
    m = monitor(s, clock)
    clock.advance(60)
    m.run_cycle()
    shown = {a.rule: a.state for a in (m.holder.published.alerts.alerts  # type: ignore[union-attr]
                                       )}
    sql(app, "ALTER TABLE notification_rules_moving RENAME TO notification_rules")
    clock.advance(60)
    m.run_cycle()
    assert len(subjects(smtp, BALANCE)) == 1
    assert shown.get(BALANCE) == "firing"  # the rules saved with the states are shown
    m.close()


def test_a_removed_firing_rule_is_resolved_saying_so(
        app: str, sim: tuple[SimulatorServer, SimState], smtp: Smtp, clock: FakeClock,
        tmp_path: Any) -> None:
    s, m = firing(app, sim, smtp, clock, tmp_path)
    m.close()
    sql(app, f"DELETE FROM notification_rules WHERE rule_name = '{BALANCE}'")
    m = monitor(s, clock)  # a restart in between: the rule as saved with its state is used
    clock.advance(60)
    snap = published(m)
    got = [(r, mm) for r, mm in smtp.inbox.messages if BALANCE in str(mm["Subject"])]
    assert [str(mm["Subject"]).split("]")[0].strip() for _, mm in got] == ["[FIRING",
                                                                             "[RESOLVED"]
    rcpts, resolved = got[1]
    assert rcpts == ["oncall@practice.example"]  # the row's recipient, as it was
    body = resolved.get_payload(decode=True).decode()  # type: ignore[union-attr]
    assert "rule removed from notification_rules" in body
    assert snap.alerts is not None and BALANCE not in {a.rule for a in snap.alerts.alerts}
    store = AlertStore(f"sqlite:///{tmp_path / 'alerts.db'}")
    assert not [k for k in store.load_states() if k[0] == BALANCE]  # forgotten after resolving
    with store.engine.connect() as conn:
        events = conn.execute(text("SELECT event FROM sms_monitor_alert_history "
                                   "WHERE rule = :r ORDER BY id"), {"r": BALANCE}).scalars().all()
    store.close()
    assert events == ["firing", "removed"]
    clock.advance(60)
    m.run_cycle()
    assert len(subjects(smtp, BALANCE)) == 2  # resolved once
    m.close()


def test_an_unusable_row_keeps_its_alerts_as_they_were(
        app: str, sim: tuple[SimulatorServer, SimState], smtp: Smtp, clock: FakeClock,
        tmp_path: Any) -> None:
    _, m = firing(app, sim, smtp, clock, tmp_path)
    sql(app, "UPDATE notification_rules SET trigger_conditions = '{\"metric\": \"balanse\"}' "
             f"WHERE rule_name = '{BALANCE}'")  # a typo: the row is still there
    clock.advance(60)
    m.run_cycle()
    sql(app, "UPDATE notification_rules SET trigger_conditions = "
             "'{\"metric\": \"account_balance\", \"threshold\": 20}' "
             f"WHERE rule_name = '{BALANCE}'")
    clock.advance(60)
    m.run_cycle()
    assert [x.split("]")[0] for x in subjects(smtp, BALANCE)] == ["[FIRING"]
    m.close()


LONG_NAME = "Balance " + "x" * 242  # 250 characters


def test_a_long_rule_name_is_refused_and_every_other_rule_pages(
        app: str, sim: tuple[SimulatorServer, SimState], smtp: Smtp, clock: FakeClock) -> None:
    server, state = sim
    long_url = "https://hooks.example/" + "p" * 400
    sql(app, "INSERT INTO notification_rules (rule_name, rule_type, trigger_conditions, "
             f"recipients) VALUES ('{LONG_NAME}', 'alert', "
             "'{\"metric\": \"account_balance\", \"threshold\": 20}', ARRAY['a@practice.example']),"
             "('Long Hook', 'alert', '{\"metric\": \"account_balance\", \"threshold\": 20}', "
             f"ARRAY['b@practice.example', '{long_url}'])")
    state.set_scenario("out_of_credit")
    m = monitor(settings(app, server, smtp, app), clock)  # the store in PostgreSQL
    snap = published(m)
    assert snap.alerts is not None and snap.alerts.store_ok
    broken = dict(snap.alerts.broken)
    assert broken[LONG_NAME] == "rule_name is 250 characters long; at most 200 are allowed"
    assert "1 recipient(s) are too long" in broken["Long Hook"]
    assert len(subjects(smtp, BALANCE)) == 1
    hook = [r for r, mm in smtp.inbox.messages if "Long Hook" in str(mm["Subject"])]
    assert hook == [["b@practice.example"]]
    m.close()


def test_a_rule_the_store_refuses_holds_back_only_itself(
        app: str, sim: tuple[SimulatorServer, SimState], smtp: Smtp, clock: FakeClock) -> None:
    server, state = sim
    AlertStore(app).migrate()
    sql(app, "INSERT INTO notification_rules (rule_name, rule_type, trigger_conditions, "
             "recipients) VALUES ('Balance Copy', 'alert', "
             "'{\"metric\": \"account_balance\", \"threshold\": 20}', ARRAY['b@practice.example'])",
        # whatever the reason, the store refuses this one rule's rows
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"IF NEW.rule = '{BALANCE}' THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$",
        "CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON sms_monitor_alert_state "
        "FOR EACH ROW EXECUTE FUNCTION refuse()")
    state.set_scenario("out_of_credit")
    m = monitor(settings(app, server, smtp, app), clock)
    with structlog.testing.capture_logs() as logs:
        snap = published(m)
        clock.advance(60)
        m.run_cycle()
    assert snap.alerts is not None and snap.alerts.store_ok
    assert len(subjects(smtp, "Balance Copy")) == 1  # the other rules page
    assert subjects(smtp, BALANCE) == []  # its decision and notification went together
    failed = [e for e in logs if e["event"] == "alert_rule_save_failed"]
    assert [e["rule"] for e in failed] == [BALANCE]  # logged once per change
    registry = build_registry(m.holder, m.areas)
    assert registry.get_sample_value("sms_alert_rule_save_failures_total",
                                     {"rule": BALANCE}) == 2
    assert registry.get_sample_value("sms_alert_rule_save_failures_total",
                                     {"rule": "Balance Copy"}) == 0  # counted from 0

    sql(app, "DROP TRIGGER refuse ON sms_monitor_alert_state")
    clock.advance(60)
    m.run_cycle()
    assert [x.split("]")[0] for x in subjects(smtp, BALANCE)] == ["[FIRING"]
    m.close()


# -- the store's layout ----------------------------------------------------------------------

LAYOUT_1 = (
    "CREATE TABLE sms_monitor_schema_version (version INTEGER NOT NULL)",
    "INSERT INTO sms_monitor_schema_version VALUES (1)",
    "CREATE TABLE sms_monitor_alert_state (rule VARCHAR(200) NOT NULL, target VARCHAR(100) "
    "NOT NULL, state VARCHAR(20) NOT NULL, since FLOAT, level INTEGER NOT NULL, "
    "last_notified FLOAT, last_value FLOAT, updated FLOAT NOT NULL, PRIMARY KEY (rule, target))",
    "CREATE TABLE sms_monitor_alert_history (id SERIAL PRIMARY KEY, rule VARCHAR(200) NOT NULL, "
    "target VARCHAR(100) NOT NULL, event VARCHAR(20) NOT NULL, level INTEGER NOT NULL, "
    "value FLOAT, at FLOAT NOT NULL)",
    "INSERT INTO sms_monitor_alert_state VALUES ('Old Rule', 'primary', 'firing', 10, 1, 10, "
    "5.0, 10)",
)


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_a_layout_1_store_is_migrated_in_place(dialect: str, pg_url: str, tmp_path: Any) -> None:
    from sms_monitor.alerts.store import SCHEMA_VERSION, RuleChanges

    url = pg_url if dialect == "postgresql" else f"sqlite:///{tmp_path / 'alerts.db'}"
    layout = LAYOUT_1 if dialect == "postgresql" else tuple(
        s.replace("id SERIAL PRIMARY KEY", "id INTEGER PRIMARY KEY AUTOINCREMENT") for s in LAYOUT_1)
    sql(url, *layout)
    store = AlertStore(url)
    store.migrate()
    assert SCHEMA_VERSION == 4  # 2: TEXT rule names and definitions; 3: outbox claims; 4: mutes
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT version FROM sms_monitor_schema_version")
                            ).scalars().all() == [4]
        outbox = {c["name"] for c in inspect(conn).get_columns("sms_monitor_outbox")}
        assert {"claimed_by", "claim_until"} <= outbox  # every upgrade ran, in order
        audit = {c["name"] for c in inspect(conn).get_columns("sms_monitor_alert_history")}
        assert {"actor", "note"} <= audit
        assert "sms_monitor_alert_mute" in inspect(conn).get_table_names()
        columns = {c["name"]: str(c["type"]) for c in
                   inspect(conn).get_columns("sms_monitor_alert_state")}
        history = {c["name"]: str(c["type"]) for c in
                   inspect(conn).get_columns("sms_monitor_alert_history")}
    assert "definition" in columns
    if dialect == "postgresql":
        assert (columns["rule"], columns["target"], history["rule"], history["target"]) == \
            ("TEXT",) * 4
    assert store.load_states()[("Old Rule", "primary")].state == "firing"  # kept
    name, target = "R" * 5000, "t" * 500
    store.save_rule(RuleChanges(name, states=[AlertState(name, target, "firing", 1.0, 1)],
                                history=[(name, target, "firing", 1, 2.0, 1.0)],
                                definition="{}"), 1.0)
    assert store.load_states()[(name, target)].state == "firing"
    store.migrate()  # again: nothing to do
    store.close()
    assert AlertStore(url).load_definitions() == {name: "{}"}
