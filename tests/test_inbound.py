"""Incoming messages: signed keyword webhooks, the audit table, and opt-outs checked on time."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
from sqlalchemy import create_engine, text
from twilio.request_validator import RequestValidator

from sms_monitor.app import App, build
from sms_monitor.config import load_settings
from sms_monitor.core.classify import Status
from sms_monitor.daemon import DEADLINE_GAP, Daemon
from sms_monitor.outputs.http import ExporterServer, build_registry
from sms_monitor.simulator.server import SimulatorServer
from sms_monitor.simulator.state import DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN, SimState
from tests.conftest import FakeClock, SleepRecorder, demo_env
from tests.test_database import db_checks, practice

STOPPER = "+15550100001"  # client 1 of the practice: opted in, sends STOP


@pytest.fixture
def quiet(clock: FakeClock) -> Iterator[SimulatorServer]:
    """A simulator that sends nothing on its own: the STOP reaches us only by webhook."""
    from sms_monitor.simulator.state import DEMO_PHONE_NUMBER

    state = SimState(clock=clock, rate_per_minute=0.0, history_seconds=3600.0)
    state.add_account(DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN, DEMO_PHONE_NUMBER)
    server = SimulatorServer(("127.0.0.1", 0), state).start()
    yield server
    server.stop()


def make_monitor(pg_url: str, sim: SimulatorServer, clock: FakeClock, audit_url: str,
                 **extra: Any) -> App:
    env = demo_env(sim.url) | {"SMS_MONITOR_DATABASE_URL": pg_url,
                               "SMS_MONITOR_AUDIT_URL": audit_url}
    settings = load_settings(env, {"number_type": "toll_free", "alerts": {"enabled": False},
                                   **extra})
    return build(settings, clock=clock, sleep=SleepRecorder())


@pytest.fixture
def served(pg_url: str, quiet: SimulatorServer, clock: FakeClock, tmp_path: Path
           ) -> Iterator[tuple[App, ExporterServer, list[float], str]]:
    practice(pg_url, datetime.fromtimestamp(clock(), UTC))
    audit_url = f"sqlite:///{tmp_path / 'audit.db'}"
    monitor = make_monitor(pg_url, quiet, clock, audit_url)
    deadlines: list[float] = []
    monitor.on_deadline = deadlines.append
    server = monitor.exporter(("127.0.0.1", 0)).start()
    yield monitor, server, deadlines, audit_url
    server.stop()
    monitor.close()


def inbound(server: ExporterServer, body: str, sender: str = STOPPER, sid: str = "SM" + "1" * 32,
            token: str | None = DEMO_AUTH_TOKEN) -> requests.Response:
    url = server.url + "/twilio/inbound"
    params = {"AccountSid": DEMO_ACCOUNT_SID, "MessageSid": sid, "SmsMessageSid": sid,
              "From": sender, "To": "+15005550006", "Body": body, "NumMedia": "0",
              "ApiVersion": "2010-04-01"}
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if token is not None:
        headers["X-Twilio-Signature"] = RequestValidator(token).compute_signature(url, params)
    return requests.post(url, data=urlencode(params), headers=headers, timeout=5)


def audit_rows(url: str) -> list[dict[str, Any]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [dict(r) for r in conn.execute(text(
                "SELECT received_at, account, message_sid, kind, keyword, number_masked "
                "FROM sms_monitor_keyword_events ORDER BY id")).mappings()]
    finally:
        engine.dispose()


def test_stop_by_webhook_turns_red_exactly_when_the_grace_period_ends(
        served: tuple[App, ExporterServer, list[float], str], clock: FakeClock) -> None:
    monitor, server, deadlines, audit_url = served
    assert db_checks(monitor.run_cycle())["optout_unprocessed"].status is Status.GREEN
    stop_at = clock()
    answer = inbound(server, " Stop ")
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/xml")
    assert answer.content == b'<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
    assert deadlines == [stop_at + 300]  # the daemon is asked to check at the deadline

    clock.advance(299.9)  # a cycle just before the deadline: still the application's time
    assert db_checks(monitor.run_cycle())["optout_unprocessed"].status is Status.GREEN
    clock.now = deadlines[0]  # the cycle the daemon runs at the deadline
    assert monitor.audit is not None
    monitor.audit.flush()  # wait for the audit's writer thread
    check = db_checks(monitor.run_cycle())["optout_unprocessed"]
    assert check.status is Status.RED
    assert check.value == 1

    rows = audit_rows(audit_url)
    assert rows == [{"received_at": stop_at, "account": "primary",
                     "message_sid": "SM" + "1" * 32, "kind": "optout", "keyword": "STOP",
                     "number_masked": "+*********01"}]
    registry = build_registry(monitor.holder, monitor.areas)
    assert registry.get_sample_value("sms_inbound_keywords_total",
                                     {"account": "primary", "kind": "optout"}) == 1
    assert registry.get_sample_value("sms_monitor_webhook_requests_total",
                                     {"endpoint": "inbound", "outcome": "accepted"}) == 1
    assert registry.get_sample_value("sms_monitor_keyword_audit_rows_total") == 1


def test_only_whole_body_keywords_count_and_start_cancels_a_stop(
        served: tuple[App, ExporterServer, list[float], str], clock: FakeClock) -> None:
    monitor, server, deadlines, audit_url = served
    assert inbound(server, "please don't stop my reminders", sid="SM" + "2" * 32
                   ).status_code == 200
    assert deadlines == []
    assert inbound(server, "STOP", sid="SM" + "3" * 32).status_code == 200
    clock.advance(10)
    assert inbound(server, "unstop", sid="SM" + "4" * 32).status_code == 200
    assert inbound(server, "HELP", sender="+15550100003", sid="SM" + "5" * 32
                   ).status_code == 200
    clock.advance(400)
    assert monitor.audit is not None
    monitor.audit.flush()
    assert db_checks(monitor.run_cycle())["optout_unprocessed"].status is Status.GREEN
    assert [(r["kind"], r["keyword"]) for r in audit_rows(audit_url)] == [
        ("optout", "STOP"), ("optin", "UNSTOP"), ("help", "HELP")]
    registry = build_registry(monitor.holder, monitor.areas)
    for kind, n in (("optout", 1), ("optin", 1), ("help", 1)):
        assert registry.get_sample_value("sms_inbound_keywords_total",
                                         {"account": "primary", "kind": kind}) == n


def test_unsigned_and_forged_inbound_requests_are_refused_and_counted(
        served: tuple[App, ExporterServer, list[float], str], clock: FakeClock) -> None:
    monitor, server, deadlines, _ = served
    assert inbound(server, "STOP", token=None).status_code == 403
    assert inbound(server, "STOP", token="0" * 32).status_code == 403
    assert deadlines == []
    monitor.run_cycle()
    registry = build_registry(monitor.holder, monitor.areas)
    for outcome in ("unsigned", "bad_signature"):
        assert registry.get_sample_value("sms_monitor_webhook_requests_total",
                                         {"endpoint": "inbound", "outcome": outcome}) == 1
    assert registry.get_sample_value("sms_inbound_keywords_total",
                                     {"account": "primary", "kind": "optout"}) == 0


def test_an_unwritable_audit_store_loses_nothing(
        pg_url: str, quiet: SimulatorServer, clock: FakeClock, tmp_path: Path) -> None:
    practice(pg_url, datetime.fromtimestamp(clock(), UTC))
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the store's directory should be")
    audit_url = f"sqlite:///{blocker / 'audit.db'}"
    monitor = make_monitor(pg_url, quiet, clock, audit_url)
    server = monitor.exporter(("127.0.0.1", 0)).start()
    try:
        assert inbound(server, "STOP").status_code == 200  # Twilio still gets its answer
        assert monitor.audit is not None
        assert not monitor.audit.flush()  # the store cannot be written
        clock.advance(301)
        snap = monitor.run_cycle()
        assert db_checks(snap)["optout_unprocessed"].status is Status.RED  # seen in memory
        registry = build_registry(monitor.holder, monitor.areas)
        assert registry.get_sample_value("sms_monitor_keyword_audit_queued_rows") == 1
        assert registry.get_sample_value("sms_monitor_keyword_audit_write_failures_total") >= 1
        blocker.unlink()  # the operator fixes the store
        assert monitor.audit.flush()
        monitor.run_cycle()
        registry = build_registry(monitor.holder, monitor.areas)
        assert registry.get_sample_value("sms_monitor_keyword_audit_queued_rows") == 0
        assert [r["kind"] for r in audit_rows(audit_url)] == ["optout"]
    finally:
        server.stop()
        monitor.close()


def test_deadlines_share_cycles_and_a_wave_of_stops_is_paced(
        pg_url: str, quiet: SimulatorServer, clock: FakeClock, tmp_path: Path) -> None:
    monitor = make_monitor(pg_url, quiet, clock, f"sqlite:///{tmp_path / 'a.db'}")
    server = monitor.exporter(("127.0.0.1", 0))
    daemon = Daemon(monitor, server, clock=clock)
    daemon.scheduler.start(paused=True)

    def next_run() -> float | None:
        job = daemon.scheduler.get_job("optout-deadline")
        return None if job is None else job.trigger.run_date.timestamp()

    try:
        t0 = clock()
        daemon.schedule_deadline(t0 + 300.2)
        daemon.schedule_deadline(t0 + 300.7)  # the same second: one run
        daemon.schedule_deadline(t0 + 302.0)
        assert next_run() == math.ceil(t0 + 300.2)
        clock.now = math.ceil(t0 + 300.2)
        daemon.deadline_cycle()  # what the job runs
        assert monitor.cycles == 1
        # the 302.0 deadline waits for the gap after the previous deadline cycle
        assert next_run() == math.ceil(clock.now + DEADLINE_GAP)
        clock.now += DEADLINE_GAP
        daemon.cycle()  # a regular poll started after the deadline: it covered it
        daemon.deadline_cycle()
        assert monitor.cycles == 2  # no extra deadline cycle
        assert next_run() is None
        # a wave of 30 STOPs, one a second: cycles at most every DEADLINE_GAP seconds
        start = clock.now
        for i in range(30):
            daemon.schedule_deadline(start + 10 + i)
        runs = 0
        while next_run() is not None:
            at = next_run()
            assert at is not None
            clock.now = at
            daemon.deadline_cycle()
            runs += 1
        assert monitor.cycles - 2 <= 30 / DEADLINE_GAP + 1
        assert runs <= 30 / DEADLINE_GAP + 1
        assert not daemon._deadlines
    finally:
        daemon.scheduler.shutdown(wait=False)
        server.stop()
        monitor.close()


def test_the_audit_table_on_postgresql(pg_url: str) -> None:
    from sms_monitor.inputs.webhooks import InboundEvent
    from sms_monitor.storage.audit import KeywordAudit

    audit = KeywordAudit(pg_url, "smsm_", accounts={DEMO_ACCOUNT_SID: "primary"})
    try:
        for i, (kind, word) in enumerate((("optout", "STOP"), ("optin", "START"))):
            audit.record(InboundEvent(DEMO_ACCOUNT_SID, f"SM{i}", STOPPER, kind, word,
                                      1_800_000_000.0 + i))
        assert audit.flush()
        assert (audit.queued, audit.written, audit.dropped) == (0, 2, 0)
    finally:
        audit.close()
    engine = create_engine(pg_url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT account, kind, keyword, number_masked "
                                 "FROM smsm_keyword_events ORDER BY id")).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [("primary", "optout", "STOP", "+*********01"),
                                        ("primary", "optin", "START", "+*********01")]


def test_a_hung_audit_store_never_delays_twilio_or_the_deadline(
        pg_url: str, quiet: SimulatorServer, clock: FakeClock) -> None:
    import socket
    import time

    practice(pg_url, datetime.fromtimestamp(clock(), UTC))
    hung = socket.socket()  # accepts connections, never answers
    hung.bind(("127.0.0.1", 0))
    hung.listen(16)
    port = hung.getsockname()[1]
    monitor = make_monitor(pg_url, quiet, clock,
                           f"postgresql+psycopg://postgres@127.0.0.1:{port}/audit")
    deadlines: list[float] = []
    monitor.on_deadline = deadlines.append
    server = monitor.exporter(("127.0.0.1", 0)).start()
    try:
        took = []
        for i in range(3):
            started = time.monotonic()
            assert inbound(server, "STOP", sid=f"SM{i:032d}").status_code == 200
            took.append(time.monotonic() - started)
        # the store's 5 s connect timeout is not ours: the first request waits CLAIM_WAIT
        # (1 s) to learn whether its SID is new, then a store that did not answer is not
        # waited for again until a write succeeds
        assert took[0] < 1.8 and max(took[1:]) < 0.5, took
        assert len(deadlines) == 3
        assert monitor.audit is not None and monitor.audit.queued == 3
    finally:
        server.stop()
        monitor.close()
        hung.close()


def test_a_row_the_store_refuses_does_not_hold_back_the_others(tmp_path: Path) -> None:
    from sms_monitor.inputs.webhooks import InboundEvent
    from sms_monitor.storage.audit import KeywordAudit

    audit = KeywordAudit(f"sqlite:///{tmp_path / 'a.db'}")
    audit._ensure_table()
    with audit.engine.begin() as conn:  # a constraint the second row breaks
        conn.exec_driver_sql("CREATE UNIQUE INDEX one_word ON sms_monitor_keyword_events "
                             "(keyword)")
    for sid, word in (("SM1", "STOP"), ("SM2", "STOP"), ("SM3", "HELP"), ("SM1", "STOP")):
        audit.record(InboundEvent(DEMO_ACCOUNT_SID, sid, STOPPER, "optout", word, 1.0))
    assert audit.flush()
    # SM2 refused for good; the second SM1 is a duplicate: not written, not lost
    assert (audit.written, audit.dropped, audit.queued) == (2, 1, 0)
    audit.close()


def test_a_retried_or_replayed_inbound_message_counts_once(
        served: tuple[App, ExporterServer, list[float], str]) -> None:
    monitor, server, deadlines, _ = served
    for _ in range(3):
        answer = inbound(server, "STOP", sid="SM" + "6" * 32)
        assert answer.status_code == 200 and answer.content.endswith(b"<Response></Response>")
    assert len(deadlines) == 1
    monitor.run_cycle()
    registry = build_registry(monitor.holder, monitor.areas)
    assert registry.get_sample_value("sms_inbound_keywords_total",
                                     {"account": "primary", "kind": "optout"}) == 1
    assert registry.get_sample_value("sms_monitor_webhook_requests_total",
                                     {"endpoint": "inbound", "outcome": "duplicate"}) == 2
