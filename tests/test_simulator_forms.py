"""The simulator's control endpoints parse posted booleans and numbers strictly."""

from __future__ import annotations

import pytest
import requests

from sms_monitor.simulator.forms import form_bool, form_number
from sms_monitor.simulator.server import SimulatorServer
from sms_monitor.simulator.state import SimState

TIMEOUT = 10.0


@pytest.mark.parametrize(("raw", "expected"), [
    ("true", True), ("True", True), ("1", True), ("yes", True), ("on", True), (" ON ", True),
    ("false", False), ("FALSE", False), ("0", False), ("no", False), ("off", False),
    (True, True), (False, False), (1, True), (0, False),
])
def test_form_bool(raw: object, expected: bool) -> None:
    assert form_bool(raw) is expected


@pytest.mark.parametrize("raw", ["", "maybe", "2", "tru", 2, None, 0.5, [True]])
def test_form_bool_refuses_other_values(raw: object) -> None:
    with pytest.raises(ValueError):
        form_bool(raw)


def test_form_number() -> None:
    assert form_number("3", int) == 3 and form_number(0.5, float) == 0.5
    for raw, kind in [("-1", int), ("1.5", int), (2.5, int), ("nan", float), ("inf", float),
                      (True, int), ("x", float), (None, float)]:
        with pytest.raises(ValueError):
            form_number(raw, kind)


def post_faults(sim: SimulatorServer, **kwargs: object) -> requests.Response:
    return requests.post(f"{sim.url}/_simulator/faults", timeout=TIMEOUT, **kwargs)


def test_a_posted_false_switches_a_fault_off(simulator: SimulatorServer,
                                             sim_state: SimState) -> None:
    assert post_faults(simulator, data={"endless_paging": "true"}).status_code == 200
    assert sim_state.faults.endless_paging is True
    resp = post_faults(simulator, data={"endless_paging": "false"})
    assert resp.status_code == 200 and resp.json()["endless_paging"] is False
    assert sim_state.faults.endless_paging is False  # not bool("false")
    post_faults(simulator, json={"malformed_messages": True, "server_error_every": 3})
    assert sim_state.faults.malformed_messages is True
    assert sim_state.faults.server_error_every == 3
    post_faults(simulator, data={"malformed_messages": "0", "server_error_every": "0"})
    assert sim_state.faults.malformed_messages is False
    assert sim_state.faults.server_error_every == 0


@pytest.mark.parametrize("form", [{"endless_paging": "maybe"}, {"server_error_every": "x"},
                                  {"delay": "-1"}, {"malformed_messages": "yes", "delay": "nan"}])
def test_a_bad_value_is_a_twilio_style_400_and_changes_nothing(
        simulator: SimulatorServer, sim_state: SimState, form: dict[str, str]) -> None:
    before = dict(vars(sim_state.faults))
    resp = post_faults(simulator, data=form)
    assert resp.status_code == 400
    body = resp.json()
    assert body["status"] == 400 and body["code"] == 20001
    assert body["more_info"].endswith("/20001") and body["message"].startswith("Invalid ")
    assert vars(sim_state.faults) == before


def test_an_unknown_fault_is_refused(simulator: SimulatorServer) -> None:
    for name in ("no_such_fault", "__class__"):
        resp = post_faults(simulator, data={name: "1"})
        assert resp.status_code == 400 and "unknown fault" in resp.json()["error"]
