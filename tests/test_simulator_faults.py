"""The simulator's faults, each switched on and off through ``POST /_simulator/faults``."""

from __future__ import annotations

import json
import threading
import time
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
import requests

from sms_monitor.simulator.server import SimulatorServer
from sms_monitor.simulator.state import (
    DEMO_ACCOUNT_SID,
    DEMO_AUTH_TOKEN,
    DEMO_PHONE_NUMBER,
    Faults,
    SimState,
)

TIMEOUT = 10.0
AUTH = (DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN)
BASE = f"/2010-04-01/Accounts/{DEMO_ACCOUNT_SID}"


def set_faults(sim: SimulatorServer, **values: object) -> dict[str, Any]:
    resp = requests.post(f"{sim.url}/_simulator/faults", json=values, timeout=TIMEOUT)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def api(sim: SimulatorServer, path: str, timeout: float = TIMEOUT, **params: str
        ) -> requests.Response:
    return requests.get(f"{sim.url}{BASE}{path}", params=params, auth=AUTH, timeout=timeout)


def test_every_fault_is_off_by_default_and_cleared_by_posting_its_default(
        simulator: SimulatorServer, sim_state: SimState) -> None:
    defaults = vars(Faults())
    on = {"malformed_messages": True, "truncated_json": True, "endless_paging": True,
          "server_error_every": 2, "number_not_found": True, "rate_limit_every": 3,
          "retry_after": 7, "clock_skew": 3600.0, "delay": 0.5,
          "concurrency_limit": 5}
    assert set(on) == set(defaults)  # a new fault gets a row here
    assert set_faults(simulator, **on) == on
    assert set_faults(simulator, **defaults) == defaults
    assert vars(sim_state.faults) == defaults


def test_truncated_json_is_a_200_whose_body_stops_half_way(simulator: SimulatorServer) -> None:
    whole = api(simulator, "/Messages.json", PageSize="20")
    assert whole.status_code == 200 and len(whole.json()["messages"]) == 20
    set_faults(simulator, truncated_json=True)
    cut = api(simulator, "/Messages.json", PageSize="20")
    assert cut.status_code == 200
    assert cut.headers["Content-Type"] == "application/json"
    assert int(cut.headers["Content-Length"]) == len(cut.content)  # a whole answer, cut body
    assert cut.content.startswith(b'{"messages": [{')
    with pytest.raises(json.JSONDecodeError):
        json.loads(cut.content)
    assert api(simulator, "/Balance.json").json()["currency"] == "USD"  # only the log is cut
    set_faults(simulator, truncated_json=False)
    assert len(api(simulator, "/Messages.json", PageSize="20").json()["messages"]) == 20


def test_number_not_found_is_twilio_404_20404(simulator: SimulatorServer) -> None:
    set_faults(simulator, number_not_found=True)
    resp = api(simulator, "/IncomingPhoneNumbers.json", PhoneNumber=DEMO_PHONE_NUMBER)
    assert resp.status_code == 404
    body = resp.json()
    assert (body["status"], body["code"]) == (404, 20404)
    assert body["more_info"].endswith("/20404")
    assert api(simulator, "/Balance.json").status_code == 200
    set_faults(simulator, number_not_found=False)
    numbers = api(simulator, "/IncomingPhoneNumbers.json", PhoneNumber=DEMO_PHONE_NUMBER)
    assert numbers.json()["incoming_phone_numbers"][0]["phone_number"] == DEMO_PHONE_NUMBER


def test_rate_limit_every_nth_request_with_retry_after(simulator: SimulatorServer) -> None:
    set_faults(simulator, rate_limit_every=3, retry_after=4)
    codes = [api(simulator, "/Balance.json") for _ in range(6)]
    limited = [r for r in codes if r.status_code == 429]
    assert len(limited) == 2 and sum(r.status_code == 200 for r in codes) == 4
    for resp in limited:
        assert resp.headers["Retry-After"] == "4"
        assert (resp.json()["status"], resp.json()["code"]) == (429, 20429)
    set_faults(simulator, rate_limit_every=1, retry_after=1)  # a storm: every request
    storm = [api(simulator, p) for p in ("/Balance.json", ".json", "/Messages.json")]
    assert [r.status_code for r in storm] == [429, 429, 429]
    assert {r.headers["Retry-After"] for r in storm} == {"1"}
    set_faults(simulator, rate_limit_every=0)
    assert all(api(simulator, "/Balance.json").status_code == 200 for _ in range(3))


def test_clock_skew_future_dates_every_message_date(simulator: SimulatorServer,
                                                    sim_state: SimState) -> None:
    def dates(msg: dict[str, Any]) -> list[float]:
        return [parsedate_to_datetime(msg[k]).timestamp()
                for k in ("date_created", "date_sent", "date_updated") if msg[k]]

    plain = api(simulator, "/Messages.json", PageSize="5").json()["messages"]
    set_faults(simulator, clock_skew=3600)
    skewed = api(simulator, "/Messages.json", PageSize="5").json()["messages"]
    assert [m["sid"] for m in skewed] == [m["sid"] for m in plain]
    for before, after in zip(plain, skewed, strict=True):
        assert [b + 3600 for b in dates(before)] == dates(after)
        assert min(dates(after)) > sim_state.clock()  # dated in the future
    one = api(simulator, f"/Messages/{plain[0]['sid']}.json").json()
    assert dates(one) == dates(skewed[0])
    set_faults(simulator, clock_skew=0)
    assert api(simulator, "/Messages.json", PageSize="5").json()["messages"] == plain


def test_delay_past_a_client_timeout_is_a_hang_that_ends_when_cleared(
        simulator: SimulatorServer) -> None:
    set_faults(simulator, delay=30.0)
    started = time.monotonic()
    with pytest.raises(requests.Timeout):
        api(simulator, "/Balance.json", timeout=0.3)
    assert time.monotonic() - started < 5

    # an answer waiting out the delay goes out as soon as the delay is cleared
    answers: list[int] = []
    waiting = threading.Thread(
        target=lambda: answers.append(api(simulator, "/Balance.json").status_code))
    waiting.start()
    deadline = time.monotonic() + 5
    while simulator.state.requests < 2 and time.monotonic() < deadline:
        time.sleep(0.05)  # until the simulator holds the request
    cleared = time.monotonic()
    set_faults(simulator, delay=0.0)
    waiting.join(TIMEOUT)
    assert answers == [200] and time.monotonic() - cleared < 2


def test_a_waiting_answer_is_released_when_the_simulator_stops(sim_state: SimState) -> None:
    server = SimulatorServer(("127.0.0.1", 0), sim_state).start()
    sim_state.set_faults({"delay": 60.0})
    errors: list[BaseException] = []

    def call() -> None:
        try:
            api(server, "/Balance.json")
        except requests.RequestException as exc:
            errors.append(exc)

    waiting = threading.Thread(target=call)
    waiting.start()
    deadline = time.monotonic() + 5
    while sim_state.requests < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    stopped = time.monotonic()
    server.stop()
    waiting.join(TIMEOUT)
    assert not waiting.is_alive() and time.monotonic() - stopped < 3
