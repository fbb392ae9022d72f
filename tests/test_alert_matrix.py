"""The alert path's fault matrix: the real daemon (``sms-monitor run`` in a child process)
pages through receivers that fail, hang, answer late or restart, and every receiver's
intake is checked against what the alert store says was decided.

Each case runs its own daemon (1 s poll, ``[alerts] retry_base = "1s"``) against the
built-in simulator and a practice database (a fresh PostgreSQL database) whose
``notification_rules`` holds one rule that fires while the simulator's balance is below 50:
the ``low_balance`` scenario (35.00) fires it, ``healthy`` (120.00) resolves it. The
receivers: an aiosmtpd server (which can also be down, or accept connections and never
answer), a webhook receiver (which can answer 500 or answer late) and an Alertmanager stub
recording the posts to ``/api/v2/alerts``.

For each case: every FIRING and RESOLVED in the store's outbox reached each recipient (no
loss), once by its notification key - the e-mail's ``Message-ID``, the webhook's
``Idempotency-Key`` - (no duplicate), FIRING before RESOLVED (order). Alertmanager merges
posts of one alert's labels by itself, and the engine re-posts a firing alert every cycle,
so there only loss and order count. The counts are taken after the daemon has stopped, so
nothing can arrive later.

Rows whose send is abandoned (SIGTERM during a hang) wait for the claim to expire: three
times the longer receiver timeout plus a minute, so they shorten ``smtp_timeout`` and take
about 80 s. The kill -9 row kills as soon as the SMTP server has accepted; the daemon has
then usually marked the row sent already, and a second copy (killed in between) is allowed
and shown as "at-least-once (documented)".

The matrix is printed at the end of the run (``pytest_terminal_summary`` in conftest) and
written to ``$SMS_MONITOR_ALERT_MATRIX`` when that is set.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import create_engine, insert, select, text

from sms_monitor.alerts.leader import LOCK_KEY
from sms_monitor.alerts.notify import event_id, message_id
from sms_monitor.alerts.store import AlertStore
from sms_monitor.simulator.practice_db import create_runbook_schema, runbook_metadata
from sms_monitor.simulator.server import SimulatorServer
from sms_monitor.simulator.state import DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN, DEMO_PHONE_NUMBER, SimState
from tests.conftest import demo_env
from tests.pg_cluster import free_port
from tests.test_fault_matrix import Daemon

RULE = "Balance Below 50"
EMAIL = "oncall@practice.example"
STEP = 0.1  # seconds between looks at a receiver, the store or /metrics

CONFIG = """\
poll_interval = "1s"
request_timeout = "1s"
max_retries = 1
number_type = "toll_free"

[database]
statement_timeout = "1s"
connect_timeout = "1s"

[alerts]
retry_base = "1s"
alertmanager_url = "{alertmanager}"
# the webhook receiver is on loopback, over plain http: allowed as an operator would
webhook_allow = ["127.0.0.1"]
webhook_allow_http = true
webhook_allow_networks = ["127.0.0.0/8"]
{extra}
"""


def wait_for(what: str, condition: Callable[[], bool], timeout: float) -> None:
    """Look every STEP until ``condition()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(STEP)  # the next look


# -- receivers ---------------------------------------------------------------------------

@dataclass
class Received:
    key: str  # the notification key: Message-ID / Idempotency-Key / "firing" | "resolved"
    event: str  # "firing", "resolved", ...
    at: float = field(default_factory=time.monotonic)


class _Mailbox:
    def __init__(self, mail: Mail) -> None:
        self.mail = mail

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        import email

        msg = email.message_from_bytes(envelope.content)
        self.mail.seen.set()
        if self.mail.delay:
            await asyncio.sleep(self.mail.delay)  # a slow final reply
        key = str(msg.get("X-SMS-Monitor-Key", ""))
        self.mail.got.append(Received(str(msg["Message-ID"]), key.split("|")[2] if
                                      key.count("|") >= 2 else "?"))
        return "250 OK"


class Mail:
    """An SMTP server on a fixed port that is up (aiosmtpd), down (nothing listens) or
    hanging (accepts connections and never says a word)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.got: list[Received] = []
        self.delay = 0.0
        self.seen = threading.Event()  # a message's DATA arrived
        self._controller: Controller | None = None
        self._hang: socket.socket | None = None
        self._held: list[socket.socket] = []
        self._hang_thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def up(self) -> None:
        self.stop()
        self._controller = Controller(_Mailbox(self), hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def hang(self) -> None:
        self.stop()
        listener = socket.create_server(("127.0.0.1", self.port))
        listener.settimeout(0.2)
        self._hang = listener

        def accept() -> None:
            while self._hang is listener:
                try:
                    conn, _ = listener.accept()
                except (TimeoutError, OSError):
                    continue
                self._held.append(conn)  # held open, never answered

        self._hang_thread = threading.Thread(target=accept, daemon=True)
        self._hang_thread.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
        if self._hang is not None:
            listener, self._hang = self._hang, None
            if self._hang_thread is not None:
                self._hang_thread.join(2)
            listener.close()
            for conn in self._held:
                conn.close()  # the client waiting on it sees the connection end
            self._held.clear()

    @property
    def held(self) -> int:
        return len(self._held)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client gone mid-answer (a killed daemon, a timed-out post) is part of the test


class Hooks:
    """A local HTTP receiver: the webhook (any path) and the Alertmanager stub
    (``/api/v2/alerts``), answering ``status`` after ``delay`` seconds."""

    def __init__(self) -> None:
        self.status = 200
        self.delay = 0.0
        self.am_status = 200  # the Alertmanager stub's answer (503: down)
        self.webhook: list[Received] = []
        self.alertmanager: list[Received] = []
        self.refused = 0
        self.am_refused = 0
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                if self.path == "/api/v2/alerts":
                    if hooks.am_status != 200:  # Alertmanager down: nothing is taken
                        hooks.am_refused += 1
                        self._answer(hooks.am_status)
                        return
                    for alert in body:
                        kind = "resolved" if "endsAt" in alert else "firing"
                        hooks.alertmanager.append(Received(kind, kind))
                    self._answer(200)
                    return
                if hooks.delay:
                    time.sleep(hooks.delay)  # a receiver answering late
                status = hooks.status
                if 200 <= status < 300:
                    hooks.webhook.append(Received(str(self.headers.get("Idempotency-Key")),
                                                  str(body.get("event"))))
                else:
                    hooks.refused += 1
                self._answer(status)

            def _answer(self, status: int) -> None:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- the rig: simulator, practice database, receivers, daemon ----------------------------

def rule_row(name: str, recipients: list[str]) -> dict[str, object]:
    return {"rule_name": name, "rule_type": "alert", "recipients": recipients,
            "trigger_conditions": {"metric": "account_balance", "threshold": 50,
                                   "severity": "critical"}}


class Rig:
    def __init__(self, workdir: Path, app_url: str, mail: Mail, hooks: Hooks,
                 sim: SimulatorServer) -> None:
        self.workdir = workdir
        self.app_url = app_url
        self.mail = mail
        self.hooks = hooks
        self.sim = sim
        self.daemon: Daemon | None = None
        self.others: list[Daemon] = []  # more replicas, stopped with the first
        self.store_url = f"sqlite:///{workdir}/alerts.db"
        self.webhook_url = f"{hooks.url}/page"
        self.app = create_engine(app_url)

    def rules(self, *rows: dict[str, object]) -> None:
        table = runbook_metadata().tables["notification_rules"]
        with self.app.begin() as conn:
            conn.execute(insert(table), list(rows))

    def sql(self, statement: str) -> None:
        with self.app.begin() as conn:
            conn.execute(text(statement))

    def start(self, extra: str = "", store_url: str | None = None) -> Daemon:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "SMS_MONITOR_"))}
        env.update(demo_env(self.sim.url))
        env.update({"SMS_MONITOR_STATE_DIR": str(self.workdir),
                    "SMS_MONITOR_DATABASE_URL": self.app_url,
                    "SMS_MONITOR_SMTP_URL": self.mail.url,
                    "SMS_MONITOR_ALERT_FROM": "sms-monitor@practice.example"})
        if store_url is not None:
            self.store_url = store_url
            env["SMS_MONITOR_ALERT_STORE_URL"] = store_url
        self.daemon = Daemon(self.workdir, env, CONFIG.format(
            alertmanager=self.hooks.url, extra=extra))
        return self.daemon

    def scenario(self, name: str) -> None:
        self.sim.state.set_scenario(name)

    def outbox(self) -> list[dict[str, Any]]:
        """Every outbox row of the store (sent or not), oldest first; [] before it exists."""
        store = AlertStore(self.store_url)
        try:
            if "outbox" not in store.tables():
                return []
            with store.engine.connect() as conn:
                rows = conn.execute(select(store.outbox).order_by(store.outbox.c.id))
                return [dict(r) for r in rows.mappings()]
        finally:
            store.close()

    def decided(self, event: str, recipient: str = EMAIL) -> bool:
        return any(r["recipient"] == recipient and r["key"].split("|")[2] == event
                   for r in self.outbox())

    def all_sent(self) -> bool:
        rows = self.outbox()
        return bool(rows) and all(r["sent_at"] is not None for r in rows)

    def metric(self, name: str, **labels: str) -> float | None:
        assert self.daemon is not None
        try:
            return self.daemon.samples().get((name, tuple(sorted(labels.items()))))
        except OSError:
            return None

    def cycles(self) -> float:
        return self.metric("sms_monitor_poll_cycles_total") or 0.0

    def fire_and_resolve(self, timeout: float = 30.0) -> None:
        """Fire the rule, wait until its FIRING is decided, resolve it and wait until its
        RESOLVED is decided (whether or not the receivers could take them)."""
        self.scenario("low_balance")
        wait_for("FIRING decided", lambda: self.decided("firing"), timeout)
        self.scenario("healthy")
        wait_for("RESOLVED decided", lambda: self.decided("resolved"), timeout)

    def stop(self) -> int:
        """Stop every replica (SIGTERM); the worst exit status, 0 when all were clean."""
        codes = [d.stop() for d in [*self.others, *([self.daemon] if self.daemon else [])]]
        return next((c for c in codes if c != 0), 0)

    def replica(self, store_url: str) -> Daemon:
        """Another daemon on the same store, receivers and practice database."""
        first = self.daemon
        second = self.start(store_url=store_url)
        self.daemon = first
        self.others.append(second)
        return second


@pytest.fixture
def mail() -> Iterator[Mail]:
    m = Mail()
    try:
        yield m
    finally:
        m.stop()


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    h = Hooks()
    try:
        yield h
    finally:
        h.stop()


@pytest.fixture
def rig(tmp_path: Path, pg_url: str, mail: Mail, hooks: Hooks) -> Iterator[Rig]:
    engine = create_engine(pg_url)
    create_runbook_schema(engine)
    engine.dispose()
    state = SimState(rate_per_minute=30.0, history_seconds=600.0)
    state.add_account(DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN, DEMO_PHONE_NUMBER)
    state.advance()
    sim = SimulatorServer(("127.0.0.1", 0), state).start()
    r = Rig(tmp_path, pg_url, mail, hooks, sim)
    try:
        yield r
    finally:
        try:
            r.stop()
        finally:
            r.app.dispose()
            sim.stop()


# -- the tally ---------------------------------------------------------------------------

@dataclass
class Tally:
    lines: dict[str, str] = field(default_factory=dict)  # receiver -> what it got
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    extra_allowed: int = 0  # documented at-least-once copies
    decided: list[str] = field(default_factory=list)  # the store's events for the e-mail


def _check(tally: Tally, name: str, expected: list[tuple[str, str]], got: list[Received],
           allow_extra: int = 0) -> None:
    """``expected``: (key at the receiver, event) in decision order."""
    counts = Counter(g.key for g in got)
    lost = [k for k, _ in expected if counts[k] == 0]
    extra = sum(n - 1 for n in counts.values() if n > 1)
    allowed = min(extra, allow_extra)
    first: dict[str, int] = {}
    for i, g in enumerate(got):
        first.setdefault(g.key, i)
    arrived = [k for k, _ in expected if k in first]
    disorder = sum(first[a] > first[b] for a, b in zip(arrived, arrived[1:], strict=False))
    tally.lost += len(lost)
    tally.duplicated += extra - allowed
    tally.extra_allowed += allowed
    tally.out_of_order += disorder
    events = " → ".join(g.event for g in got) or "nothing"
    tally.lines[name] = f"{events} ({len(got)} of {len(expected)})"


def tally(rig: Rig, allow_extra: int = 0) -> Tally:
    """``allow_extra``: copies each receiver may get twice (the documented window)."""
    rows = rig.outbox()
    t = Tally(decided=[r["key"].split("|")[2] for r in rows
                       if r["recipient"] == EMAIL and r["key"].startswith(f"{RULE}|")])
    for name, recipient, got, key_of in (
            ("e-mail", EMAIL, rig.mail.got, message_id),
            ("webhook", rig.webhook_url, rig.hooks.webhook, event_id)):
        expected = [(key_of(r["key"]), r["key"].split("|")[2]) for r in rows
                    if r["recipient"] == recipient]
        if expected or got:
            _check(t, name, expected, got, allow_extra)
    # Alertmanager: each decided event at least once, no firing after the first resolved
    am = rig.hooks.alertmanager
    decided = [r["key"].split("|")[2] for r in rows if r["recipient"] == "alertmanager"]
    kinds = [a.event for a in am]
    t.lost += sum(1 for e in set(decided) if e not in kinds)
    if "resolved" in kinds:
        t.out_of_order += kinds[kinds.index("resolved"):].count("firing")
    t.lines["Alertmanager"] = (f"{kinds.count('firing')} firing posts (re-posted each cycle), "
                               f"{kinds.count('resolved')} resolved")
    return t


# -- the matrix --------------------------------------------------------------------------

@dataclass
class Row:
    case: str
    tally: Tally | None = None
    verdict: str = "FAILED"
    note: str = ""
    allow_extra: int = 0  # copies the receiver may get again (documented at-least-once)


MATRIX: dict[str, Row] = {}
ORDER = ["smtp_down", "smtp_slow", "smtp_hang", "alertmanager_down", "webhook_500", "webhook_late",
         "rules_unreadable", "long_rule", "kill_before_accept", "kill_after_accept",
         "sigterm_mid_drain",
         "leader_killed", "lock_terminated"]


def matrix_markdown() -> str:
    lines = ["| case | decided (store) | e-mail got | webhook got | Alertmanager got | lost "
             "| duplicated | out of order | verdict |", "|---|---|---|---|---|---|---|---|---|"]
    for key in ORDER:
        r = MATRIX.get(key)
        if r is None:
            continue
        t = r.tally or Tally()
        verdict = r.verdict + (f": {r.note}" if r.note else "")
        lines.append(f"| {r.case} | {' → '.join(t.decided) or '-'} "
                     f"| {t.lines.get('e-mail', '-')} | {t.lines.get('webhook', '-')} "
                     f"| {t.lines.get('Alertmanager', '-')} | {t.lost} | {t.duplicated} "
                     f"| {t.out_of_order} | {verdict} |")
    return "\n".join(lines)


def write_matrix() -> None:
    target = os.environ.get("SMS_MONITOR_ALERT_MATRIX")
    if target and MATRIX:
        Path(target).write_text(matrix_markdown() + "\n")


@contextmanager
def case(key: str, title: str, rig: Rig) -> Iterator[Row]:
    """Record one row: the body drives the daemon; then it is stopped (nothing arrives
    after), every receiver's intake is counted against the outbox and asserted."""
    row = MATRIX[key] = Row(title)
    try:
        yield row
        rc = rig.stop()
        t = row.tally = tally(rig, row.allow_extra)
        assert rc == 0, f"daemon exit {rc}"
        assert (t.lost, t.duplicated, t.out_of_order) == (0, 0, 0), t
        assert t.decided == ["firing", "resolved"], f"decided: {t.decided}"
        row.verdict = "at-least-once (documented)" if t.extra_allowed else "ok"
    finally:
        if row.tally is None:
            rig.stop()
            row.tally = tally(rig, row.allow_extra)
        write_matrix()


# -- the cases ---------------------------------------------------------------------------

def sent_to(rig: Rig, recipient: str, event: str) -> bool:
    return any(r["recipient"] == recipient and r["key"].split("|")[2] == event
               and r["sent_at"] is not None for r in rig.outbox())


def test_smtp_down_then_back(rig: Rig) -> None:
    with case("smtp_down", "SMTP down, then back (FIRING and RESOLVED decided while down)",
              rig):
        rig.rules(rule_row(RULE, [EMAIL, rig.webhook_url]))
        rig.start()
        rig.fire_and_resolve()
        wait_for("a failed e-mail", lambda: any(
            r["attempts"] > 0 for r in rig.outbox() if r["recipient"] == EMAIL), 10)
        assert not rig.mail.got
        rig.mail.up()
        wait_for("every notification sent", rig.all_sent, 30)


def test_smtp_slow(rig: Rig) -> None:
    with case("smtp_slow", "SMTP answering its DATA after 12 s (past the old 10 s limit)",
              rig):
        rig.mail.delay = 12.0
        rig.mail.up()
        rig.rules(rule_row(RULE, [EMAIL, rig.webhook_url]))
        rig.start()
        rig.scenario("low_balance")
        wait_for("the FIRING e-mail accepted", lambda: bool(rig.mail.got), 30)
        rig.mail.delay = 0.0
        rig.scenario("healthy")
        wait_for("every notification sent", lambda: rig.decided("resolved") and rig.all_sent(),
                 30)
        firing = [r for r in rig.outbox() if r["recipient"] == EMAIL][0]
        assert firing["attempts"] == 0, firing  # delivered by its first attempt


def test_smtp_hanging(rig: Rig) -> None:
    with case("smtp_hang", "SMTP hanging (accepts, never answers), then restarted", rig) as row:
        rig.mail.hang()
        rig.rules(rule_row(RULE, [EMAIL, rig.webhook_url]))
        rig.start()
        rig.scenario("low_balance")
        wait_for("the daemon connected to the hanging server", lambda: rig.mail.held > 0, 30)
        before = rig.cycles()
        wait_for("3 more poll cycles while the send hangs", lambda: rig.cycles() >= before + 3,
                 8)
        rig.scenario("healthy")
        wait_for("RESOLVED decided while the send hangs", lambda: rig.decided("resolved"), 10)
        hung = rig.cycles() - before
        behind = not rig.hooks.webhook  # one sender thread: later rows wait for this send
        rig.mail.up()  # the held connection ends: the send fails and is retried
        wait_for("every notification sent", rig.all_sent, 30)
        row.note = (f"{hung:g} poll cycles completed during the hang"
                    + ("; the webhook's FIRING waited behind the hung e-mail" if behind else ""))


def refused_then_back(rig: Rig, knob: str, status: int, refused: Callable[[], int],
                      taken: Callable[[], list[Received]]) -> None:
    """A receiver on the hooks server answers ``status`` (``knob``: its attribute) while the
    alert fires and resolves, has refused at least twice (a retry too) and taken nothing,
    then answers 200."""
    rig.mail.up()
    setattr(rig.hooks, knob, status)
    rig.rules(rule_row(RULE, [EMAIL, rig.webhook_url]))
    rig.start()
    rig.fire_and_resolve()
    wait_for("a retry refused too", lambda: refused() >= 2, 15)
    assert not taken()
    setattr(rig.hooks, knob, 200)
    wait_for("every notification sent", rig.all_sent, 30)


def test_alertmanager_down_then_back(rig: Rig) -> None:
    with case("alertmanager_down", "Alertmanager down (503), then back", rig):
        refused_then_back(rig, "am_status", 503, lambda: rig.hooks.am_refused,
                          lambda: rig.hooks.alertmanager)
        assert rig.hooks.alertmanager  # taken once it was back


def test_webhook_500_then_200(rig: Rig) -> None:
    with case("webhook_500", "webhook answering 500, then 200", rig):
        refused_then_back(rig, "status", 500, lambda: rig.hooks.refused,
                          lambda: rig.hooks.webhook)


def test_webhook_late(rig: Rig) -> None:
    with case("webhook_late", "webhook answering after 12 s", rig):
        rig.mail.up()
        rig.hooks.delay = 12.0
        rig.rules(rule_row(RULE, [EMAIL, rig.webhook_url]))
        rig.start()
        rig.scenario("low_balance")
        wait_for("the FIRING webhook answered", lambda: bool(rig.hooks.webhook), 30)
        rig.hooks.delay = 0.0
        rig.scenario("healthy")
        wait_for("every notification sent", lambda: rig.decided("resolved") and rig.all_sent(),
                 30)


def test_rules_unreadable_while_firing(rig: Rig) -> None:
    with case("rules_unreadable", "notification_rules renamed away for a few cycles while "
              "firing, then back", rig) as row:
        rig.mail.up()
        rig.rules(rule_row(RULE, [EMAIL, rig.webhook_url]))
        rig.start()
        rig.scenario("low_balance")
        wait_for("the FIRING delivered", rig.all_sent, 30)
        rig.sql("ALTER TABLE notification_rules RENAME TO x")
        try:
            wait_for("rules unreadable", lambda: rig.metric("sms_alert_rules_readable") == 0, 10)
            failed = rig.metric("sms_alert_rules_read_failures_total") or 0.0
            wait_for("3 cycles unreadable", lambda: (
                rig.metric("sms_alert_rules_read_failures_total") or 0.0) >= failed + 2, 10)
        finally:
            rig.sql("ALTER TABLE x RENAME TO notification_rules")
        wait_for("rules readable again", lambda: rig.metric("sms_alert_rules_readable") == 1, 10)
        again = rig.cycles()
        wait_for("2 cycles with the rules back", lambda: rig.cycles() >= again + 2, 10)
        rig.scenario("healthy")
        wait_for("every notification sent", lambda: rig.decided("resolved") and rig.all_sent(),
                 30)
        row.note = "no second FIRING"


LONG_NAME = "L" * 250
LONG_EMAIL = "a" * 330 + "@practice.example"


def test_long_rule_next_to_a_normal_one(rig: Rig, pg_url: str) -> None:
    with case("long_rule", "a 250-character rule name and a 347-character recipient next to "
              "a normal rule (PostgreSQL alert store)", rig) as row:
        rig.mail.up()
        rig.rules(rule_row(RULE, [EMAIL, rig.webhook_url]), rule_row(LONG_NAME, [EMAIL]),
                  rule_row("Long Recipient", [LONG_EMAIL]))
        rig.start(store_url=pg_url)
        wait_for("both bad rows reported", lambda: rig.metric(
            "sms_alert_rule_invalid", rule=LONG_NAME) == 1 and rig.metric(
            "sms_alert_rule_invalid", rule="Long Recipient") == 1, 30)
        rig.fire_and_resolve()
        wait_for("every notification sent", rig.all_sent, 30)
        assert not any(r["recipient"] == LONG_EMAIL for r in rig.outbox())
        row.note = ("both reported by sms_alert_rule_invalid; the long recipient left out, its "
                    "rule still pages Alertmanager")


def test_kill_9_right_after_the_smtp_server_accepted(rig: Rig) -> None:
    with case("kill_after_accept", "kill -9 of the daemon as soon as the SMTP server has "
              "accepted the FIRING; restarted", rig) as row:
        row.allow_extra = 1  # killed before marking it sent: sent again (README)
        rig.mail.up()
        rig.rules(rule_row(RULE, [EMAIL, rig.webhook_url]))
        short = 'smtp_timeout = "1s"\nwebhook_timeout = "1s"'  # claims held 63 s
        first = rig.start(short)
        rig.scenario("low_balance")
        wait_for("the FIRING e-mail accepted", lambda: bool(rig.mail.got), 30)
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
        at_kill = rig.outbox()
        mail_marked = any(r["recipient"] == EMAIL and r["sent_at"] is not None for r in at_kill)
        others = sum(r["recipient"] != EMAIL and r["sent_at"] is None for r in at_kill)
        rig.start(short)
        rig.scenario("healthy")
        # a row claimed by the killed process is retried once its claim expires (63 s here)
        wait_for("every notification sent", lambda: rig.decided("resolved") and rig.all_sent(),
                 100)
        row.note = ("the accepted e-mail was " + ("already" if mail_marked else "not yet")
                    + f" marked sent at the kill; {others} other row(s) not sent yet")


def test_kill_9_before_the_smtp_server_accepted(rig: Rig) -> None:
    with case("kill_before_accept", "kill -9 of the daemon while its FIRING e-mail hangs "
              "(not accepted); restarted with SMTP up", rig) as row:
        rig.mail.hang()
        rig.rules(rule_row(RULE, [EMAIL, rig.webhook_url]))
        short = 'smtp_timeout = "1s"\nwebhook_timeout = "1s"'  # claims held 63 s
        first = rig.start(short)
        rig.scenario("low_balance")
        wait_for("the daemon connected to the hanging server", lambda: rig.mail.held > 0, 30)
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
        assert not rig.mail.got  # nothing was accepted before the kill
        rig.mail.up()
        rig.start(short)
        rig.scenario("healthy")
        # the killed process's claim expires (63 s here), then the row is sent once
        wait_for("every notification sent", lambda: rig.decided("resolved") and rig.all_sent(),
                 100)
        row.note = "the claimed row was sent once after its claim expired"


def test_sigterm_while_the_smtp_send_hangs(rig: Rig) -> None:
    with case("sigterm_mid_drain", "SIGTERM while the FIRING e-mail hangs; restarted with "
              "SMTP up", rig) as row:
        rig.mail.hang()
        rig.rules(rule_row(RULE, [EMAIL, rig.webhook_url]))
        # a send outliving the 3 s grace; its claim holds 3 × 5 s + 60 s
        longer = 'smtp_timeout = "5s"\nwebhook_timeout = "1s"'
        first = rig.start(longer)
        rig.scenario("low_balance")
        wait_for("the daemon connected to the hanging server", lambda: rig.mail.held > 0, 30)
        signalled = time.monotonic()
        first.proc.send_signal(signal.SIGTERM)
        rc = first.proc.wait(15)
        took = time.monotonic() - signalled
        assert rc == 0 and took < 5.0, (rc, took)
        rig.mail.up()
        rig.start(longer)
        rig.scenario("healthy")
        # the abandoned send stays claimed until its claim expires (75 s), then is sent
        wait_for("every notification sent", lambda: rig.decided("resolved") and rig.all_sent(),
                 110)
        row.note = f"exited 0 after {took:.1f} s; the abandoned row sent after its claim expired"


def leader(d: Daemon) -> float | None:
    """The replica's sms_alert_leader; None while it does not answer."""
    try:
        return d.samples().get(("sms_alert_leader", ()))
    except OSError:
        return None


def test_two_replicas_the_leader_killed(rig: Rig, pg_url: str) -> None:
    with case("leader_killed", "two replicas on one PostgreSQL store, the leader killed "
              "(kill -9) while firing", rig) as row:
        rig.mail.up()
        rig.rules(rule_row(RULE, [EMAIL, rig.webhook_url]))
        a = rig.start(store_url=pg_url)
        wait_for("replica A leads", lambda: leader(a) == 1.0, 30)
        b = rig.replica(pg_url)
        wait_for("replica B up, following", lambda: leader(b) == 0.0, 30)
        rig.scenario("low_balance")
        wait_for("the FIRING delivered", rig.all_sent, 30)
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(10)
        killed = time.monotonic()
        rig.daemon, rig.others = b, []  # the one left to stop cleanly
        wait_for("replica B takes over", lambda: leader(b) == 1.0, 15)
        took = time.monotonic() - killed
        rig.scenario("healthy")
        wait_for("every notification sent", lambda: rig.decided("resolved") and rig.all_sent(),
                 30)
        row.note = f"B led {took:.1f} s after the kill and sent the RESOLVED"


def test_two_replicas_the_lock_connection_terminated_mid_drain(rig: Rig, pg_url: str) -> None:
    with case("lock_terminated", "two replicas, the leader's advisory-lock backend "
              "terminated (pg_terminate_backend) while its FIRING e-mail is in flight", rig) as row:
        rig.mail.delay = 3.0  # the e-mail's final reply comes 3 s after its DATA
        rig.mail.up()
        rig.rules(rule_row(RULE, [EMAIL, rig.webhook_url]))
        a = rig.start(store_url=pg_url)
        wait_for("replica A leads", lambda: leader(a) == 1.0, 30)
        b = rig.replica(pg_url)
        wait_for("replica B up, following", lambda: leader(b) == 0.0, 30)
        rig.scenario("low_balance")
        wait_for("the FIRING e-mail in flight", rig.mail.seen.is_set, 30)
        rig.mail.delay = 0.0
        with rig.app.begin() as conn:
            ended = conn.execute(text(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
                "AND granted AND classid::bigint = :hi AND objid::bigint = :lo "
                "AND database = (SELECT oid FROM pg_database "
                "WHERE datname = current_database())"),
                {"hi": LOCK_KEY >> 32, "lo": LOCK_KEY & 0xFFFFFFFF}).scalars().all()
        assert ended == [True], ended
        wait_for("one replica leads again", lambda: 1.0 in (leader(a), leader(b)), 15)
        wait_for("the FIRING delivered", rig.all_sent, 30)
        rig.scenario("healthy")
        wait_for("every notification sent", lambda: rig.decided("resolved") and rig.all_sent(),
                 30)
        now = "A" if leader(a) == 1.0 else "B"
        row.note = f"the lock's backend ended mid-send; {now} leads after"
