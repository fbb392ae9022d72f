"""Webhook requests against the real HTTP server: what Twilio's signature does and does not
allow, idempotent updates under replays and races, and a fuzz over request bodies."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from sms_monitor.app import App, build
from sms_monitor.config import load_settings
from sms_monitor.core.snapshot import SnapshotHolder
from sms_monitor.inputs.webhooks import CallbackInbox
from sms_monitor.outputs.http import ExporterServer, build_registry
from sms_monitor.simulator.server import SimulatorServer
from sms_monitor.simulator.state import DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN, SimState
from tests.conftest import FakeClock, SleepRecorder, demo_env

SIGNER = RequestValidator(DEMO_AUTH_TOKEN)
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def status(sid: str, value: str) -> dict[str, str]:
    return {"AccountSid": DEMO_ACCOUNT_SID, "MessageSid": sid, "MessageStatus": value,
            "ApiVersion": "2010-04-01"}


def send(target: str, params: dict[str, str], signed_url: str | None = None,
         signed_params: dict[str, str] | None = None) -> int:
    sig = SIGNER.compute_signature(signed_url or target, signed_params or params)
    return requests.post(target, data=urlencode(params), headers={**FORM,
                         "X-Twilio-Signature": sig}, timeout=5).status_code


@pytest.fixture
def inbox_server() -> Iterator[tuple[CallbackInbox, ExporterServer]]:
    inbox = CallbackInbox({DEMO_ACCOUNT_SID: DEMO_AUTH_TOKEN})
    server = ExporterServer(("127.0.0.1", 0), SnapshotHolder(), callbacks=inbox).start()
    yield inbox, server
    server.stop()


def test_what_the_signature_covers(inbox_server: tuple[CallbackInbox, ExporterServer]) -> None:
    inbox, server = inbox_server
    url = server.url + "/twilio/status"
    params = status("SM" + "1" * 32, "delivered")
    assert send(url, params) == 204
    # a tampered parameter
    assert send(url, {**params, "MessageStatus": "undelivered"}, signed_params=params) == 403
    # a replay of a request signed for the other endpoint
    assert send(url, params, signed_url=server.url + "/twilio/inbound") == 403
    # a replay signed for another host
    assert send(url, params, signed_url="https://attacker.example/twilio/status") == 403
    # a query string is part of what Twilio signs
    assert send(url + "?tenant=a", params) == 204
    assert send(url + "?tenant=b", params, signed_url=url + "?tenant=a") == 403
    assert inbox.counts() == {("status", "accepted"): 2, ("status", "bad_signature"): 4}


def test_behind_a_proxy_the_public_url_is_what_counts() -> None:
    inbox = CallbackInbox({DEMO_ACCOUNT_SID: DEMO_AUTH_TOKEN},
                          public_url="https://sms.practice.example/")
    params = status("SM" + "2" * 32, "delivered")
    body = urlencode(params).encode()

    def handle(signed_url: str) -> int:
        sig = SIGNER.compute_signature(signed_url, params)
        return inbox.handle("/twilio/status", "http://10.0.0.7:9839", body, sig, "10.0.0.1")

    assert handle("https://sms.practice.example/twilio/status") == 204
    # Twilio may sign with or without the default port: both are the same URL
    assert handle("https://sms.practice.example:443/twilio/status") == 204
    assert handle("http://10.0.0.7:9839/twilio/status") == 403  # what we see is not it
    assert handle("https://sms.practice.example:8443/twilio/status") == 403


def test_refusals_are_rate_limited_per_source_and_twilio_never_is() -> None:
    now = [1000.0]
    inbox = CallbackInbox({DEMO_ACCOUNT_SID: DEMO_AUTH_TOKEN}, rate_per_minute=3,
                          clock=lambda: now[0])
    params = status("SM" + "3" * 32, "sent")
    body = urlencode(params).encode()
    sig = SIGNER.compute_signature("http://h/twilio/status", params)

    def handle(source: str, signature: str | None = sig) -> int:
        return inbox.handle("/twilio/status", "http://h", body, signature, source)

    # Twilio's traffic, all through one proxy address, is never slowed down
    assert {handle("10.0.0.1") for _ in range(50)} == {204}
    # a source sending unsigned requests is cut off after three refusals a minute
    assert [handle("198.51.100.1", None) for _ in range(4)] == [403, 403, 403, 429]
    assert handle("198.51.100.1", "forged") == 429
    # ... while validly signed requests from it (Twilio behind the same proxy) still pass
    assert handle("198.51.100.1") == 204
    assert handle("198.51.100.2", None) == 403
    now[0] += 61  # a minute later the refusals are forgotten, and so are idle sources
    assert handle("198.51.100.1", None) == 403
    assert set(inbox._hits) == {"198.51.100.1"}
    assert inbox.counts()[("status", "rate_limited")] == 2


# -- idempotency through the monitor --------------------------------------------------------

@pytest.fixture
def quiet(clock: FakeClock) -> Iterator[tuple[SimulatorServer, SimState]]:
    state = SimState(clock=clock, rate_per_minute=0.0, history_seconds=600.0)
    state.add_account(DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN, "+15005550006")
    server = SimulatorServer(("127.0.0.1", 0), state).start()
    yield server, state
    server.stop()


@pytest.fixture
def monitored(quiet: tuple[SimulatorServer, SimState], clock: FakeClock
              ) -> Iterator[tuple[App, ExporterServer, SimState]]:
    sim, state = quiet
    settings = load_settings(demo_env(sim.url), {"number_type": "toll_free", "window": "10m"})
    monitor = build(settings, clock=clock, sleep=SleepRecorder())
    server = monitor.exporter(("127.0.0.1", 0)).start()
    yield monitor, server, state
    server.stop()


def make_messages(state: SimState, clock: FakeClock, n: int) -> list[str]:
    acc = state.accounts[DEMO_ACCOUNT_SID]
    with state.lock:
        return [state.create_message(acc, clock() - 0.5, to="+15550109999").sid
                for i in range(n)]


def test_the_same_callback_ten_times_and_reverse_order_count_once(
        monitored: tuple[App, ExporterServer, SimState], clock: FakeClock) -> None:
    monitor, server, state = monitored
    first, second = make_messages(state, clock, 2)
    monitor.run_cycle()
    url = server.url + "/twilio/status"
    for _ in range(10):
        assert send(url, status(first, "delivered")) == 204
    for value in ("delivered", "sent", "queued"):  # newest first
        assert send(url, status(second, value)) == 204
    monitor.run_cycle()
    window = monitor.accounts[0].window
    assert window.records[first].status == window.records[second].status == "delivered"
    assert window.latency.count == 2
    assert window.timed == {"callback": 2}
    registry = build_registry(monitor.holder, monitor.areas)
    assert registry.get_sample_value("sms_delivery_latency_seconds_count",
                                     {"account": "primary"}) == 2
    assert registry.get_sample_value("sms_delivery_latency_source_total",
                                     {"account": "primary", "source": "callback"}) == 2


def test_callbacks_racing_polls_count_each_delivery_once(
        monitored: tuple[App, ExporterServer, SimState], clock: FakeClock) -> None:
    monitor, server, state = monitored
    sids = make_messages(state, clock, 40)
    monitor.run_cycle()
    clock.advance(600 - 60)  # every one settled at the simulator; still inside the window
    delivered = {m.sid for m in state.accounts[DEMO_ACCOUNT_SID].messages
                 if m.final_status == "delivered"}
    url = server.url + "/twilio/status"

    def post_all() -> None:
        session = requests.Session()
        for sid in sids:
            final = "delivered" if sid in delivered else "undelivered"
            sig = SIGNER.compute_signature(url, status(sid, final))
            session.post(url, data=urlencode(status(sid, final)),
                         headers={**FORM, "X-Twilio-Signature": sig}, timeout=5)

    poster = threading.Thread(target=post_all)
    poster.start()
    for _ in range(3):  # polls that see the same deliveries while callbacks arrive
        monitor.run_cycle()
    poster.join()
    monitor.run_cycle()
    window = monitor.accounts[0].window
    assert window.latency.count == len(delivered)
    assert sum(window.timed.values()) == len(delivered)
    assert {window.records[s].status for s in sids} <= {"delivered", "undelivered"}


# -- fuzz ------------------------------------------------------------------------------------

_text = st.text(max_size=40)


@pytest.fixture(scope="module")
def fuzz_target() -> Iterator[tuple[CallbackInbox, ExporterServer]]:
    inbox = CallbackInbox({DEMO_ACCOUNT_SID: DEMO_AUTH_TOKEN}, rate_per_minute=10**9)
    server = ExporterServer(("127.0.0.1", 0), SnapshotHolder(), callbacks=inbox).start()
    yield inbox, server
    server.stop()


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(params=st.dictionaries(st.sampled_from(
           ["AccountSid", "MessageSid", "MessageStatus", "ErrorCode", "SmsSid", "From", "Body",
            "RawDlrDoneDate"]) | _text, _text, max_size=8),
       raw=st.one_of(st.none(), st.binary(max_size=300)),
       endpoint=st.sampled_from(["/twilio/status", "/twilio/inbound"]),
       sign=st.booleans(), account=st.booleans(),
       host=st.one_of(st.none(), st.sampled_from(["[", "a:99999", "a:xyz", "", "é.example",
                                                   "x" * 300]), st.text(max_size=20)))
def test_any_body_gets_an_answer_and_a_count(
        fuzz_target: tuple[CallbackInbox, ExporterServer], params: dict[str, str],
        raw: bytes | None, endpoint: str, sign: bool, account: bool, host: str | None) -> None:
    inbox, server = fuzz_target
    url = server.url + endpoint
    if account:
        params = {**params, "AccountSid": DEMO_ACCOUNT_SID}
    headers = dict(FORM)
    if host is not None:
        headers["Host"] = host.encode("latin-1", "replace").decode("latin-1").replace(
            "\r", "").replace("\n", "")
    if sign:
        headers["X-Twilio-Signature"] = SIGNER.compute_signature(url, params)
    def counted() -> int:  # by the webhook handler, or by the server before it (not HTTP)
        return sum(inbox.counts().values()) + sum(server.listeners[0].bad_requests.values())

    before = counted()
    body = raw if raw is not None else urlencode(params).encode()
    try:
        answer = requests.post(url, data=body, headers=headers, timeout=5)
    except ValueError:  # a header value requests itself refuses to send
        return
    assert answer.status_code in (200, 204, 400, 403, 413)
    assert counted() == before + 1
    inbox.drain()


def test_a_full_event_queue_drops_the_oldest_and_counts_it() -> None:
    inbox = CallbackInbox({DEMO_ACCOUNT_SID: DEMO_AUTH_TOKEN}, rate_per_minute=10**9)
    inbox._events = deque(maxlen=3)
    for i in range(5):
        params = status(f"SM{i:032d}", "sent")
        sig = SIGNER.compute_signature("http://h/twilio/status", params)
        assert inbox.handle("/twilio/status", "http://h", urlencode(params).encode(), sig,
                            "10.0.0.1") == 204
    assert inbox.dropped == 2
    assert [e.sid for e in inbox.drain()] == [f"SM{i:032d}" for i in (2, 3, 4)]
