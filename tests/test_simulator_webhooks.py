"""The simulator's signed status callbacks and inbound-message webhooks, over real HTTP.

A small receiver on loopback records every request; the simulated clock is injected and moved
with ``fast_forward``, and the sender's passes are run with ``tick()`` (no sleeping). Requests
are recorded before they are answered, so they are all there when ``tick()`` returns.
"""

from __future__ import annotations

import dataclasses
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs

import pytest
import requests
from structlog.testing import capture_logs
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from sms_monitor.background_server import BackgroundHTTPServer
from sms_monitor.simulator.scenarios import SCENARIOS
from sms_monitor.simulator.server import SimulatorServer
from sms_monitor.simulator.state import (
    DEMO_ACCOUNT_SID,
    DEMO_AUTH_TOKEN,
    DEMO_PHONE_NUMBER,
    SimAccount,
    SimMessage,
    SimState,
)
from sms_monitor.simulator.webhooks import WebhookSender
from tests.conftest import T0, FakeClock

PATIENT = "+15555550123"
OTHER = "+15555550177"
TIMEOUT = 10.0


# -- the receiving end ------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    params: dict[str, str]


class Receiver(BackgroundHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ReceiverHandler)
        self.received: list[Received] = []
        self.answers: dict[str, int] = {}  # path -> status to answer (default 204)
        self.lock = threading.Lock()

    def url_for(self, path: str) -> str:
        return self.url + path

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.path == path]


class _ReceiverHandler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode()
        params = {k: v[-1] for k, v in parse_qs(raw, keep_blank_values=True).items()}
        with self.server.lock:
            self.server.received.append(Received(self.path, dict(self.headers.items()), params))
            code = self.server.answers.get(self.path, 204)
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


def closed_port_url(path: str) -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"  # nothing listens there any more


# -- the simulator ----------------------------------------------------------------------------


def quiet_state(clock: FakeClock, *, delivered: float = 1.0, **kwargs: Any) -> SimState:
    """A simulator that creates no messages by itself, with a chosen delivery rate."""
    state = SimState(clock=clock, rate_per_minute=0, history_seconds=0, **kwargs)
    state.add_account(DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN, DEMO_PHONE_NUMBER)
    state.scenario = dataclasses.replace(SCENARIOS["healthy"], delivered=delivered,
                                         failure_codes=((30003, 1.0),))
    return state


def account(state: SimState) -> SimAccount:
    return state.accounts[DEMO_ACCOUNT_SID]


def send(state: SimState, **kwargs: Any) -> SimMessage:
    with state.lock:
        return state.create_message(account(state), state.clock(), to=PATIENT, **kwargs)


def assert_signed(receiver: Receiver, req: Received) -> None:
    signature = req.headers["X-Twilio-Signature"]
    url = receiver.url_for(req.path)
    assert RequestValidator(DEMO_AUTH_TOKEN).validate(url, req.params, signature)
    assert not RequestValidator("0" * 32).validate(url, req.params, signature)
    assert req.headers["Content-Type"] == "application/x-www-form-urlencoded"


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[tuple[SimulatorServer, SimState]]:
    """A real simulator server whose webhook thread is stopped, so the test ticks by hand."""
    state = quiet_state(clock)
    server = SimulatorServer(("127.0.0.1", 0), state).start()
    assert server.webhooks.running  # it runs by default ...
    server.webhooks.stop()  # ... but these tests drive it
    assert not server.webhooks.running
    yield server, state
    server.stop()


def control(server: SimulatorServer, path: str, **data: Any) -> requests.Response:
    return requests.post(f"{server.url}/_simulator/{path}", data=data, timeout=TIMEOUT)


# -- status callbacks -------------------------------------------------------------------------


def test_a_message_reports_queued_sent_delivered_once_each_signed(
        clock: FakeClock, receiver: Receiver) -> None:
    state = quiet_state(clock)
    sender = WebhookSender(state, status_url=receiver.url_for("/status"))
    msg = send(state)
    assert msg.final_status == "delivered"

    assert sender.tick() == 1
    assert sender.tick() == 0  # the clock did not move: nothing new, nothing twice
    state.fast_forward(1.0)
    assert sender.tick() == 1
    state.fast_forward(msg.settle_after)
    assert sender.tick() == 1
    state.fast_forward(3600)
    assert sender.tick() == 0

    got = receiver.at("/status")
    assert [r.params["MessageStatus"] for r in got] == ["queued", "sent", "delivered"]
    for req in got:
        assert_signed(receiver, req)
        p = req.params
        assert p["MessageSid"] == p["SmsSid"] == msg.sid
        assert p["SmsStatus"] == p["MessageStatus"]
        assert p["AccountSid"] == DEMO_ACCOUNT_SID and p["ApiVersion"] == "2010-04-01"
        assert p["From"] == DEMO_PHONE_NUMBER and p["To"] == PATIENT
        assert "ErrorCode" not in p and "Body" not in p
    assert "RawDlrDoneDate" not in got[0].params and "RawDlrDoneDate" not in got[1].params
    done = datetime.fromtimestamp(msg.created + msg.settle_after, UTC).strftime("%y%m%d%H%M")
    assert got[2].params["RawDlrDoneDate"] == done
    assert sender.sent["status"] == 3 and not sender.failed
    assert sender.last_status["status"] == 204


def test_undelivered_carries_the_error_code_and_a_long_jump_keeps_the_order(
        clock: FakeClock, receiver: Receiver) -> None:
    state = quiet_state(clock, delivered=0.0)
    sender = WebhookSender(state, status_url=receiver.url_for("/status"))
    first = send(state)
    state.fast_forward(0.5)
    second = send(state)
    state.fast_forward(600)  # both settle within one pass
    assert sender.tick() == 6
    got = [(r.params["MessageSid"], r.params["MessageStatus"]) for r in receiver.at("/status")]
    for msg in (first, second):
        assert [st for sid, st in got if sid == msg.sid] == ["queued", "sent", "undelivered"]
    # in the order the transitions happened on the simulated clock
    moments = {(m.sid, st): at for m in (first, second) for st, at in m.transitions()}
    times = [moments[key] for key in got]
    assert times == sorted(times)
    for req in receiver.at("/status"):
        assert_signed(receiver, req)
        if req.params["MessageStatus"] == "undelivered":
            assert req.params["ErrorCode"] == "30003"
            assert re.fullmatch(r"\d{10}", req.params["RawDlrDoneDate"])
        else:
            assert "ErrorCode" not in req.params


def test_a_failed_message_reports_failed_once_with_its_code(
        clock: FakeClock, receiver: Receiver) -> None:
    state = quiet_state(clock)
    sender = WebhookSender(state, status_url=receiver.url_for("/status"))
    msg = send(state)
    msg.final_status, msg.error_code = "failed", 30007
    assert sender.tick() == 1
    state.fast_forward(60)
    assert sender.tick() == 0
    [req] = receiver.at("/status")
    assert req.params["MessageStatus"] == "failed" and req.params["ErrorCode"] == "30007"
    assert "RawDlrDoneDate" not in req.params
    assert_signed(receiver, req)


def test_history_is_not_replayed_on_the_first_tick(clock: FakeClock, receiver: Receiver) -> None:
    state = quiet_state(clock)
    acc = account(state)
    with state.lock:
        for ago in (3000.0, 100.0, 50.0):
            state.create_message(acc, clock() - ago, to=PATIENT)
        state.create_message(acc, clock() - 10, outbound=False, to=OTHER, body="YES")
        recent = state.create_message(acc, clock() - 0.5, to=PATIENT)  # still queued
    sender = WebhookSender(state, status_url=receiver.url_for("/status"),
                           inbound_url=receiver.url_for("/sms"))
    assert sender.tick() == 0
    state.fast_forward(1.0)
    assert sender.tick() == 1  # only what happened since: the recent message was sent
    [req] = receiver.received
    assert (req.params["MessageSid"], req.params["MessageStatus"]) == (recent.sid, "sent")


def test_a_url_switched_on_later_gets_only_what_follows(
        clock: FakeClock, receiver: Receiver) -> None:
    state = quiet_state(clock)
    sender = WebhookSender(state)  # nothing configured: nothing sent
    old = send(state)
    state.fast_forward(2.0)
    assert sender.tick() == 0
    state.fast_forward(300)  # the old message settles meanwhile, unseen
    sender.configure(status_url=receiver.url_for("/status"))
    assert sender.tick() == 0
    new = send(state)
    assert sender.tick() == 1
    assert [r.params["MessageSid"] for r in receiver.received] == [new.sid]
    assert old.sid != new.sid
    sender.configure(status_url=None)
    state.fast_forward(1.0)
    assert sender.tick() == 0  # switched off


def test_messages_created_at_the_edge_of_a_pass_are_sent_once(
        clock: FakeClock, receiver: Receiver) -> None:
    state = quiet_state(clock)
    sender = WebhookSender(state, status_url=receiver.url_for("/status"))
    first = send(state)
    assert sender.tick() == 1
    second = send(state)  # the same simulated instant the previous pass ended at
    assert sender.tick() == 1
    assert sender.tick() == 0
    state.fast_forward(1.0)
    assert sender.tick() == 2
    got = [(r.params["MessageSid"], r.params["MessageStatus"]) for r in receiver.received]
    assert got == [(first.sid, "queued"), (second.sid, "queued"), (first.sid, "sent"),
                   (second.sid, "sent")]


def test_a_receiver_that_is_down_or_failing_is_counted_and_the_next_tick_works(
        clock: FakeClock, receiver: Receiver) -> None:
    state = quiet_state(clock)
    sender = WebhookSender(state, status_url=closed_port_url("/status"), timeout=2.0)
    msg = send(state)
    with capture_logs() as logs:
        assert sender.tick() == 1  # attempted, refused
    assert sender.failed["status"] == 1 and not sender.sent
    assert sender.last_status["status"] is None
    assert [e["event"] for e in logs] == ["simulator_webhook_failed"]
    assert logs[0]["error"] == "ConnectionRefusedError"
    text = repr(logs)
    assert PATIENT not in text and DEMO_PHONE_NUMBER not in text and DEMO_AUTH_TOKEN not in text
    assert msg.body not in text

    receiver.answers["/broken"] = 500
    sender.configure(status_url=receiver.url_for("/broken"))
    state.fast_forward(1.0)
    assert sender.tick() == 1  # no retry of the refused one: only "sent" goes out
    assert sender.failed["status"] == 2 and sender.last_status["status"] == 500

    sender.configure(status_url=receiver.url_for("/status"))
    state.fast_forward(600)
    with capture_logs() as logs:
        assert sender.tick() == 1
    assert [r.params["MessageStatus"] for r in receiver.at("/status")] == ["delivered"]
    assert sender.sent["status"] == 1 and sender.last_status["status"] == 204
    assert "simulator_webhook_failed" not in [e["event"] for e in logs]


# -- through the simulator's HTTP API ---------------------------------------------------------


def test_status_callback_given_on_create_wins_over_the_default(
        sim: tuple[SimulatorServer, SimState], receiver: Receiver) -> None:
    server, state = sim
    resp = control(server, "webhooks", status_url=receiver.url_for("/default"))
    assert resp.status_code == 200
    assert resp.json()["status_url"] == receiver.url_for("/default")

    client = Client(DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN, environment={})
    client.api.base_url = server.url
    own = client.messages.create(to=PATIENT, from_=DEMO_PHONE_NUMBER, body="Reminder",
                                 status_callback=receiver.url_for("/own?practice=1"))
    plain = client.messages.create(to=OTHER, from_=DEMO_PHONE_NUMBER, body="Reminder")
    assert own.status == plain.status == "queued"
    assert account(state).messages[-2].status_callback == receiver.url_for("/own?practice=1")

    assert server.webhooks.tick() == 2
    [mine] = receiver.at("/own?practice=1")
    [other] = receiver.at("/default")
    assert (mine.params["MessageSid"], mine.params["To"]) == (own.sid, PATIENT)
    assert (other.params["MessageSid"], other.params["To"]) == (plain.sid, OTHER)
    assert_signed(receiver, mine)  # the query string is part of the signed URL
    assert_signed(receiver, other)

    bad = requests.post(f"{server.url}/2010-04-01/Accounts/{DEMO_ACCOUNT_SID}/Messages.json",
                        data={"To": PATIENT, "Body": "x", "StatusCallback": "not a url"},
                        auth=(DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN), timeout=TIMEOUT)
    assert bad.status_code == 400 and bad.json()["code"] == 21609


def test_an_inbound_message_is_posted_to_the_inbound_webhook(
        sim: tuple[SimulatorServer, SimState], receiver: Receiver) -> None:
    server, state = sim
    assert control(server, "webhooks", inbound_url=receiver.url_for("/sms")).status_code == 200
    resp = control(server, "inbound", **{"from": OTHER, "body": "STOP"})
    assert resp.status_code == 200
    sid = resp.json()["sid"]
    msg = account(state).messages[account(state).index[sid]]
    assert (msg.outbound, msg.from_, msg.to, msg.body) == (False, OTHER, DEMO_PHONE_NUMBER, "STOP")

    assert server.webhooks.tick() == 1
    [req] = receiver.at("/sms")
    assert_signed(receiver, req)
    assert req.params == {
        "AccountSid": DEMO_ACCOUNT_SID, "ApiVersion": "2010-04-01", "Body": "STOP",
        "From": OTHER, "MessageSid": sid, "NumMedia": "0", "NumSegments": "1",
        "SmsMessageSid": sid, "SmsSid": sid, "SmsStatus": "received", "To": DEMO_PHONE_NUMBER,
    }
    # the API lists it as Twilio would
    api = requests.get(f"{server.url}/2010-04-01/Accounts/{DEMO_ACCOUNT_SID}/Messages/{sid}.json",
                       auth=(DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN), timeout=TIMEOUT).json()
    assert api["direction"] == "inbound" and api["status"] == "received"

    assert control(server, "inbound", **{"from": "5551234", "body": "STOP"}).status_code == 400
    assert control(server, "inbound", **{"from": OTHER, "body": "x",
                                         "account": "AC" + "0" * 32}).status_code == 400
    assert server.webhooks.tick() == 0


def test_webhooks_endpoint_configures_reports_and_disables(
        sim: tuple[SimulatorServer, SimState], receiver: Receiver) -> None:
    server, state = sim
    status_url, inbound_url = receiver.url_for("/status"), receiver.url_for("/sms")
    resp = control(server, "webhooks", status_url=status_url, inbound_url=inbound_url)
    assert resp.status_code == 200
    assert resp.json()["status_url"] == status_url and resp.json()["inbound_url"] == inbound_url

    send(state)
    state.receive(DEMO_ACCOUNT_SID, OTHER, "YES")
    assert server.webhooks.tick() == 2
    report = requests.get(f"{server.url}/_simulator/state", timeout=TIMEOUT).json()["webhooks"]
    assert report["status_url"] == status_url
    assert report["sent"] == {"status": 1, "inbound": 1} and report["failed"] == {}

    # JSON works too; an empty value switches one off, a missing one is kept
    resp = requests.post(f"{server.url}/_simulator/webhooks", json={"status_url": ""},
                         timeout=TIMEOUT)
    assert resp.status_code == 200
    assert resp.json()["status_url"] is None and resp.json()["inbound_url"] == inbound_url
    assert control(server, "webhooks", status_url="ftp://example.invalid/x").status_code == 400
    assert control(server, "webhooks", inbound_url="").json()["inbound_url"] is None

    send(state)
    state.receive(DEMO_ACCOUNT_SID, OTHER, "STOP")
    state.fast_forward(600)
    assert server.webhooks.tick() == 0
    assert len(receiver.received) == 2

    page = requests.get(f"{server.url}/", timeout=TIMEOUT).text
    assert "/_simulator/inbound" in page and "STOP" in page and "/_simulator/webhooks" in page


# -- trimming ---------------------------------------------------------------------------------


def test_trimming_keeps_the_list_bounded_and_the_index_consistent(clock: FakeClock) -> None:
    state = quiet_state(clock, max_messages=100, retention_seconds=86400.0)
    acc = account(state)
    server = SimulatorServer(("127.0.0.1", 0), state).start()
    try:
        state.load(DEMO_ACCOUNT_SID, 105, 1050)
        assert len(acc.messages) == 105  # within the 10 % slack: not trimmed yet
        state.load(DEMO_ACCOUNT_SID, 50, 500)  # past it: down to the cap, oldest first
        assert len(acc.messages) == 100
        created = [m.created for m in acc.messages]
        assert created == sorted(created)
        assert acc.index == {m.sid: i for i, m in enumerate(acc.messages)}

        auth = (DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN)
        base = f"{server.url}/2010-04-01/Accounts/{DEMO_ACCOUNT_SID}/Messages"
        for msg in (acc.messages[0], acc.messages[50], acc.messages[-1]):
            resp = requests.get(f"{base}/{msg.sid}.json", auth=auth, timeout=TIMEOUT)
            assert resp.status_code == 200 and resp.json()["sid"] == msg.sid

        # by age: once the oldest is a tenth past the retention, everything older goes
        state.fast_forward(86400 * 1.05)
        new = send(state)
        assert len(acc.messages) == 101
        state.fast_forward(86400 * 0.1)
        state.advance()
        assert [m.sid for m in acc.messages] == [new.sid]
        assert acc.index == {new.sid: 0}
        resp = requests.get(f"{base}/{new.sid}.json", auth=auth, timeout=TIMEOUT)
        assert resp.status_code == 200
        assert state.trim(keep_seconds=0) == 1 and acc.messages == [] and acc.index == {}
    finally:
        server.stop()


def test_spend_reads_only_the_period_and_estimates_before_the_history(clock: FakeClock) -> None:
    state = SimState(clock=clock, rate_per_minute=60.0, history_seconds=600.0, max_messages=300,
                     inbound_share=0.0)
    state.add_account(DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN, DEMO_PHONE_NUMBER)
    acc = account(state)
    state.advance()  # ten minutes of history: 600 messages, past the cap's slack
    assert len(acc.messages) == 300  # the newest kept
    state.fast_forward(25)
    assert len(acc.messages) == 325  # within the slack: not trimmed yet
    first = acc.messages[0].created
    now = state.clock()

    def billed(start: float, end: float) -> int:
        return sum(1 for m in acc.messages if start <= m.created < end
                   and m.status_at(end)[0] not in ("queued", "failed"))

    count, _ = state.spend(acc, first + 10, now - 10)
    assert count == billed(first + 10, now - 10)
    count, price = state.spend(acc, first - 600, now)
    assert count == billed(first, now) + 600  # ten minutes before the kept list, at 60/min
    assert price > 0
    assert first > T0 - 600 and now == T0 + 25
