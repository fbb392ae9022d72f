"""Status callbacks: signatures, rejections by reason, and one record per message."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlencode

import pytest
import requests
from twilio.request_validator import RequestValidator

from sms_monitor.app import App, build
from sms_monitor.core.classify import Status
from sms_monitor.outputs.http import ExporterServer, build_registry
from sms_monitor.simulator.server import SimulatorServer
from sms_monitor.simulator.state import DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN, SimState
from tests.conftest import FakeClock, SleepRecorder, settings_for


@pytest.fixture
def setup(simulator: SimulatorServer, clock: FakeClock
          ) -> Iterator[tuple[App, ExporterServer, FakeClock]]:
    monitor = build(settings_for(simulator.url), clock=clock, sleep=SleepRecorder())
    server = monitor.exporter(("127.0.0.1", 0)).start()
    yield monitor, server, clock
    server.stop()


def post(server: ExporterServer, params: dict[str, str], token: str | None = DEMO_AUTH_TOKEN,
         signature: str | None = None) -> int:
    url = server.url + "/twilio/status"
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if token is not None:
        headers["X-Twilio-Signature"] = signature or RequestValidator(token).compute_signature(
            url, params)
    return requests.post(url, data=urlencode(params), headers=headers, timeout=5).status_code


def callback(sid: str, status: str, **extra: str) -> dict[str, str]:
    return {"AccountSid": DEMO_ACCOUNT_SID, "MessageSid": sid, "MessageStatus": status,
            "SmsSid": sid, "ApiVersion": "2010-04-01", "RawDlrDoneDate": "2611281200", **extra}


def test_signed_callbacks_update_the_same_records_and_never_go_back(
        setup: tuple[App, ExporterServer, FakeClock], sim_state: SimState) -> None:
    monitor, server, clock = setup
    monitor.run_cycle()
    window = monitor.accounts[0].window
    clock.advance(1)
    with sim_state.lock:
        msg = sim_state.create_message(sim_state.accounts[DEMO_ACCOUNT_SID], clock())
    monitor.run_cycle()  # the poll sees it queued
    assert window.records[msg.sid].status == "queued"

    clock.advance(2)
    assert post(server, callback(msg.sid, "delivered", FutureParameter="x")) == 204
    assert post(server, callback(msg.sid, "sent")) == 204  # late, out of order
    monitor.run_cycle()
    rec = window.records[msg.sid]
    assert rec.status == "delivered"
    callback_time = clock()
    assert rec.updated == callback_time  # delivery time is the callback's arrival
    clock.advance(120)  # the poll later sees it delivered too: it keeps the first delivery
    monitor.run_cycle()
    assert window.records[msg.sid].updated == callback_time  # so it was observed only once

    assert post(server, callback("SM" + "f" * 32, "undelivered", ErrorCode="30003")) == 204
    monitor.run_cycle()
    assert window.pending["SM" + "f" * 32][1] == 30003  # unknown SIDs are kept for the poll


def test_rejections_are_counted_by_reason(setup: tuple[App, ExporterServer, FakeClock]
                                          ) -> None:
    monitor, server, _ = setup
    sid = "SM" + "a" * 32
    assert post(server, callback(sid, "delivered"), token=None) == 403
    assert post(server, callback(sid, "delivered"), signature="bm9wZQ==") == 403
    assert post(server, callback(sid, "delivered"), token="another-accounts-token") == 403
    assert post(server, {**callback(sid, "delivered"), "AccountSid": "AC" + "9" * 32}) == 403
    assert post(server, {"AccountSid": DEMO_ACCOUNT_SID}) == 400
    url = server.url + "/twilio/status"
    assert requests.post(url, data=b"%zz=\xff", timeout=5).status_code == 400
    assert requests.post(url, data=b"a=" + b"x" * 70_000, timeout=5).status_code == 413
    assert requests.post(server.url + "/elsewhere", data=b"", timeout=5).status_code == 404
    monitor.run_cycle()
    registry = build_registry(monitor.holder, monitor.areas)

    def n(outcome: str) -> float | None:
        return registry.get_sample_value("sms_monitor_webhook_requests_total",
                                         {"endpoint": "status", "outcome": outcome})

    assert (n("unsigned"), n("bad_signature"), n("unknown_account"), n("malformed"),
            n("too_large")) == (1, 2, 1, 2, 1)
    assert n("accepted") == 0
    assert monitor.holder.current is not None
    assert monitor.holder.current.overall is Status.GREEN
