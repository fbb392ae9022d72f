"""Delivering the outbox: claimed and fenced sends between two replicas, the order of one
alert's events, receivers slower than Twilio's timeout, and sending off the poll path.

Real peers: PostgreSQL (the shared store, the advisory lock), an aiosmtpd server, local
HTTP receivers, a mail server that accepts connections and never answers.
"""

from __future__ import annotations

import json
import random
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, insert, inspect, select, text

from sms_monitor.alerts.engine import AlertEngine
from sms_monitor.alerts.notify import Notification, message_id
from sms_monitor.alerts.store import SCHEMA_VERSION, AlertStore
from sms_monitor.app import App, build, build_alert_engine
from sms_monitor.background_server import BackgroundHTTPServer
from sms_monitor.config import Settings, load_settings
from sms_monitor.core.backoff import Backoff
from sms_monitor.daemon import Daemon
from sms_monitor.simulator.server import SimulatorServer
from sms_monitor.simulator.state import SimState
from tests.conftest import FakeClock, SleepRecorder, Smtp, demo_env
from tests.loopback import LOOPBACK_ALERTS

BALANCE = "Low Twilio Balance"


def settings(app: str, sim_url: str, smtp_url: str, store: str, **alerts: Any) -> Settings:
    env = demo_env(sim_url) | {"SMS_MONITOR_DATABASE_URL": app, "SMS_MONITOR_SMTP_URL": smtp_url,
                               "SMS_MONITOR_ALERT_FROM": "sms-monitor@practice.example",
                               "SMS_MONITOR_ALERT_STORE_URL": store}
    return load_settings(env, {"alerts": alerts})


def monitor(s: Settings, clock: FakeClock) -> App:
    return build(s, clock=clock, sleep=SleepRecorder())


def balance_subjects(smtp: Smtp) -> list[str]:
    return [x for x in smtp.inbox.subjects() if BALANCE in x]


# -- 1. split brain: a leader whose lock is cut mid-drain -----------------------------------

def queue(store: AlertStore, n: Notification, recipient: str, now: float) -> None:
    with store.engine.begin() as conn:
        conn.execute(insert(store.outbox).values(
            key=n.key, recipient=recipient, payload=json.dumps(n.__dict__), created=now,
            attempts=0, next_attempt=now))


def event(i: int, now: float) -> Notification:
    rule = f"Rule {i}"
    return Notification(rule=rule, account="primary", event="firing", severity="critical",
                        metric="sms_error_rate", value=9.0, threshold=5.0, operator=">",
                        since=now, at=now, level=1, runbook_section="Issue 1",
                        key=f"{rule}|primary|firing|{now:.0f}|1|{now:.0f}")


def cut_lock(pg_admin: Engine, url: str) -> None:
    """What a network partition does to the leader: its lock's session is gone."""
    with pg_admin.connect() as conn:
        n = conn.execute(text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE locktype = 'advisory' "
            "AND database = (SELECT oid FROM pg_database WHERE datname = :d)"),
            {"d": url.rsplit("/", 1)[1]}).scalar()
    assert n == 1


@pytest.mark.parametrize("takeover_mid_send", [True, False])
def test_a_leader_cut_from_its_lock_mid_drain_stops_and_each_page_goes_once(
        pg_url: str, pg_admin: Engine, smtp: Smtp, clock: FakeClock,
        monkeypatch: pytest.MonkeyPatch, takeover_mid_send: bool) -> None:
    s = settings(pg_url, "http://127.0.0.1:9", smtp.url, pg_url)
    a, b = build_alert_engine(s, clock), build_alert_engine(s, clock)
    a.store.migrate()
    b.store.migrate()
    for i in range(6):
        queue(a.store, event(i, clock()), f"oncall{i}@practice.example", clock())
    assert a.leadership.check() and not b.leadership.check()

    real_send = a.notifier.send
    sent_by_a: list[str] = []

    def send_then_lose_the_lock(recipient: str, n: Notification) -> None:
        real_send(recipient, n)
        sent_by_a.append(recipient)
        if len(sent_by_a) == 1:  # the lock's connection dies while A is sending its first
            cut_lock(pg_admin, pg_url)
            if takeover_mid_send:  # and B takes over before A's send returns
                assert b.leadership.check()
                b.drain(clock())

    monkeypatch.setattr(a.notifier, "send", send_then_lose_the_lock)
    a.drain(clock())
    assert sent_by_a == ["oncall0@practice.example"]  # A stopped at once
    if not takeover_mid_send:
        clock.advance(60)
        assert b.leadership.check()
        b.drain(clock())
    rcpts = sorted(r for rs, _ in smtp.inbox.messages for r in rs)
    assert rcpts == [f"oncall{i}@practice.example" for i in range(6)]  # each once: 6, not 12
    assert len({m["Message-ID"] for _, m in smtp.inbox.messages}) == 6
    assert a.store.pending_count() == 0
    a.close()
    b.close()


def test_a_claimed_row_is_sent_and_marked_by_its_claimer_only(tmp_path: Any) -> None:
    store = AlertStore(f"sqlite:///{tmp_path / 'a.db'}")
    store.migrate()
    queue(store, event(1, 100.0), "x@practice.example", 100.0)
    (row,) = store.unsent()
    assert store.claim(row["id"], "a", now=100.0, until=400.0)
    assert not store.claim(row["id"], "b", now=200.0, until=500.0)  # A's claim is live
    assert not store.mark_sent(row["id"], 200.0, "b")
    assert store.claim(row["id"], "b", now=401.0, until=700.0)  # A's has expired: retried
    assert not store.mark_sent(row["id"], 402.0, "a")  # A came back too late
    assert store.mark_sent(row["id"], 402.0, "b")
    assert not store.mark_sent(row["id"], 403.0, "b")  # only while unsent
    assert not store.claim(row["id"], "c", now=10_000.0, until=10_300.0)
    store.close()


def test_an_outbox_of_layout_1_gets_the_claim_columns(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    with engine.begin() as conn:  # the tables as version 1 created them
        conn.exec_driver_sql("CREATE TABLE sms_monitor_schema_version (version INTEGER NOT NULL)")
        conn.exec_driver_sql("INSERT INTO sms_monitor_schema_version VALUES (1)")
        conn.exec_driver_sql(
            "CREATE TABLE sms_monitor_outbox (id INTEGER PRIMARY KEY, key VARCHAR(400) NOT NULL, "
            "recipient VARCHAR(400) NOT NULL, payload TEXT NOT NULL, created FLOAT NOT NULL, "
            "attempts INTEGER NOT NULL, next_attempt FLOAT NOT NULL, sent_at FLOAT, "
            "last_error TEXT, UNIQUE (key, recipient))")
        conn.exec_driver_sql(
            "INSERT INTO sms_monitor_outbox (key, recipient, payload, created, attempts, "
            "next_attempt) VALUES ('k', 'x@practice.example', '{}', 1, 0, 1)")
    store = AlertStore(url)
    store.migrate()
    store.migrate()  # twice: nothing to add the second time
    columns = {c["name"] for c in inspect(engine).get_columns("sms_monitor_outbox")}
    assert {"claimed_by", "claim_until"} <= columns
    with engine.connect() as conn:
        versions = conn.execute(select(store.version.c.version)).scalars().all()
    assert max(versions) == SCHEMA_VERSION == 4
    (row,) = store.unsent()
    assert store.claim(row["id"], "me", 2.0, 3.0) and store.mark_sent(row["id"], 2.0, "me")
    store.close()
    engine.dispose()


# -- 2. one alert's events in the order they happened ---------------------------------------

@pytest.mark.parametrize("seed", [None, 1, 2, 3])
def test_resolved_never_overtakes_firing_after_an_outage(
        app: str, sim: tuple[SimulatorServer, SimState], smtp: Smtp, clock: FakeClock,
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch, seed: int | None) -> None:
    if seed is not None:  # whatever the jitter of the retries
        random.seed(seed)
        monkeypatch.setattr(AlertEngine, "retry_backoff",
                            property(lambda self: Backoff(30.0, 3600.0, jitter=1.0)))
    server, state = sim
    smtp.stop()
    m = monitor(settings(app, server.url, smtp.url, f"sqlite:///{tmp_path / 'a.db'}"), clock)
    state.set_scenario("out_of_credit")
    for _ in range(10):  # FIRING fails for ten minutes: its retries back off to minutes
        m.run_cycle()
        clock.advance(60)
    state.set_scenario("healthy")
    m.run_cycle()  # RESOLVED is queued behind it
    smtp.start()
    for _ in range(60):
        clock.advance(60)
        m.run_cycle()
        if len(balance_subjects(smtp)) == 2:
            break
    subjects = balance_subjects(smtp)
    assert [x.split("]")[0] for x in subjects] == ["[FIRING", "[RESOLVED"]
    m.close()


# -- 3. receivers slower than Twilio's request timeout --------------------------------------

class Hook(BackgroundHTTPServer):
    """A webhook receiver answering after ``delay`` seconds, with ``statuses`` in turn."""

    def __init__(self, delay: float = 0.0, statuses: tuple[int, ...] = (200,)) -> None:
        self.posts: list[tuple[dict[str, str], Any]] = []
        self.delay, self.statuses = delay, list(statuses)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.posts.append((dict(self.headers), json.loads(raw)))
                time.sleep(outer.delay)  # the receiver's own pace, not an assertion
                status = outer.statuses.pop(0) if len(outer.statuses) > 1 else outer.statuses[0]
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        super().__init__(("127.0.0.1", 0), Handler)
        self.start()

    def balance(self) -> list[tuple[dict[str, str], Any]]:
        return [(h, b) for h, b in self.posts if b["rule"] == BALANCE]


def test_a_webhook_answering_after_12_seconds_gets_one_post(
        app: str, sim: tuple[SimulatorServer, SimState], smtp: Smtp, clock: FakeClock,
        tmp_path: Any) -> None:
    server, state = sim
    hook = Hook(delay=12.0)
    try:
        s = settings(app, server.url, smtp.url, f"sqlite:///{tmp_path / 'a.db'}",
                     level1=[hook.url + "/hook"], **LOOPBACK_ALERTS)
        assert (s.request_timeout, s.alerts and s.alerts.webhook_timeout) == (10.0, 30.0)
        state.set_scenario("out_of_credit")
        m = monitor(s, clock)
        m.run_cycle()
        for _ in range(3):  # past any retry's backoff
            clock.advance(120)
            m.run_cycle()
        assert len(hook.balance()) == 1
        m.close()
    finally:
        hook.stop()


def test_a_retried_webhook_carries_the_same_idempotency_key(
        app: str, sim: tuple[SimulatorServer, SimState], smtp: Smtp, clock: FakeClock,
        tmp_path: Any) -> None:
    server, state = sim
    hook = Hook(statuses=(503, 200))
    try:
        s = settings(app, server.url, smtp.url, f"sqlite:///{tmp_path / 'a.db'}",
                     level1=[hook.url + "/hook"], **LOOPBACK_ALERTS)
        state.set_scenario("out_of_credit")
        m = monitor(s, clock)
        m.run_cycle()
        clock.advance(60)
        m.run_cycle()
        (h1, b1), (h2, b2) = hook.balance()
        assert h1["Idempotency-Key"] == h2["Idempotency-Key"] == b1["event_id"] == b2["event_id"]
        state.set_scenario("healthy")
        clock.advance(60)
        m.run_cycle()
        (h3, b3) = hook.balance()[-1]
        assert b3["event"] == "resolved" and h3["Idempotency-Key"] != h1["Idempotency-Key"]
        # and the e-mails of those events carry their own stable Message-IDs
        assert [m["Message-ID"] for _, m in smtp.inbox.messages if BALANCE in str(m["Subject"])] \
            == [message_id(b1["key"]), message_id(b3["key"])]
        m.close()
    finally:
        hook.stop()


# -- 4. a mail server that never answers does not slow the poll cycle -----------------------

class SilentSmtp:
    """Accepts connections and never says a word (not even the greeting)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"smtp://127.0.0.1:{self.sock.getsockname()[1]}"
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for c in self.held:
            c.close()


@pytest.fixture
def silent_smtp() -> Iterator[SilentSmtp]:
    server = SilentSmtp()
    yield server
    server.close()


def test_a_hanging_mail_server_does_not_slow_the_cycle(
        app: str, sim: tuple[SimulatorServer, SimState], silent_smtp: SilentSmtp,
        clock: FakeClock, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    server, state = sim
    s = settings(app, server.url, silent_smtp.url, f"sqlite:///{tmp_path / 'a.db'}",
                 level1=[f"ops{i}@practice.example" for i in range(3)])
    m = monitor(s, clock)
    daemon = Daemon(m, m.exporter(("127.0.0.1", 0)), clock=clock)
    monkeypatch.setattr(daemon, "add_jobs", lambda: None)  # the test runs the cycles itself
    daemon.start()

    def timed_cycle() -> float:
        started = time.monotonic()
        daemon.cycle()
        return time.monotonic() - started

    quiet = timed_cycle()  # nothing to send
    state.set_scenario("out_of_credit")
    clock.advance(60)
    firing = timed_cycle()  # four e-mails queued to a server that never answers
    clock.advance(60)
    after = timed_cycle()
    published = m.holder.published
    assert published is not None and published.alerts is not None
    assert published.snapshot.taken_at == clock()  # the Twilio checks are on time
    assert published.snapshot.accounts[0].overall.value == "red"
    assert published.alerts.outbox_pending >= 4  # queued, waiting on the mail server
    assert max(firing, after) < quiet + 3.0, (quiet, firing, after)  # not one SMTP timeout

    started = time.monotonic()
    daemon.stop(grace=1.0)  # SIGTERM while a send hangs: the send is abandoned
    assert time.monotonic() - started < 3.0
    m.close()
