"""Twilio's status page: parsing, the twilio_status check, metrics, failure isolation."""

from __future__ import annotations

import pytest
import requests

from sms_monitor.app import build
from sms_monitor.config import load_settings
from sms_monitor.core.classify import Status
from sms_monitor.core.facts import StatusPageFacts
from sms_monitor.core.statuspage import statuspage_check
from sms_monitor.inputs.statuspage import parse_summary
from sms_monitor.outputs.http import build_registry
from sms_monitor.simulator.server import SimulatorServer, statuspage_summary
from sms_monitor.simulator.state import SimState
from tests.conftest import FakeClock, SleepRecorder, demo_env, settings_for


def test_only_sms_components_count_and_incidents_are_open_ones() -> None:
    doc = statuspage_summary("degraded_performance", "Delays to US carriers", 1_780_000_000)
    facts = parse_summary(doc)
    assert facts.components == {"SMS Delivery": "degraded_performance",
                                "Messaging API": "degraded_performance",
                                "REST API": "operational"}  # not Voice, not the group row
    assert facts.open_incidents == 1 and facts.incident_names == ("Delays to US carriers",)
    doc["incidents"][0]["status"] = "resolved"
    assert parse_summary(doc).open_incidents == 0
    with pytest.raises(ValueError):
        parse_summary({"page": {}})


@pytest.mark.parametrize(("state", "incident", "expected"), [
    ("operational", "", Status.GREEN),
    ("operational", "Investigating", Status.YELLOW),
    ("degraded_performance", "", Status.YELLOW),
    ("under_maintenance", "", Status.YELLOW),
    ("partial_outage", "", Status.RED),
    ("major_outage", "SMS down", Status.RED),
])
def test_twilio_status_check(state: str, incident: str, expected: Status) -> None:
    check = statuspage_check(parse_summary(statuspage_summary(state, incident, 0)))
    assert check.status is expected and check.account == "twilio"
    assert statuspage_check(StatusPageFacts(ok=False, error="timeout")).status is Status.UNKNOWN


def test_monitor_reads_it_shows_it_and_keeps_it_out_of_overall(
        simulator: SimulatorServer, sim_state: SimState, clock: FakeClock) -> None:
    settings = settings_for(simulator.url, statuspage_interval="2m")
    settings = settings.model_copy(update={"statuspage_url": simulator.url + "/statuspage"})
    monitor = build(settings, clock=clock, sleep=SleepRecorder())
    registry = build_registry(monitor.holder, monitor.areas)
    snap = monitor.run_cycle()
    assert snap.statuspage_check is not None and snap.statuspage_check.status is Status.GREEN
    assert registry.get_sample_value("twilio_statuspage_up") == 1
    assert registry.get_sample_value("twilio_statuspage_component_status",
                                     {"component": "SMS Delivery", "status": "operational"}) == 1

    requests.post(simulator.url + "/_simulator/statuspage",
                  data={"component_status": "major_outage", "incident": "SMS outage"}, timeout=5)
    clock.advance(60)
    snap = monitor.run_cycle()  # inside the 2-minute interval: not re-read yet
    assert snap.statuspage_check is not None and snap.statuspage_check.status is Status.GREEN
    clock.advance(61)
    snap = monitor.run_cycle()
    assert snap.statuspage_check is not None and snap.statuspage_check.status is Status.RED
    assert "SMS outage" in snap.statuspage_check.detail
    assert snap.overall is Status.GREEN  # Twilio's page informs; our own checks decide
    assert registry.get_sample_value("twilio_statuspage_open_incidents") == 1
    assert registry.get_sample_value("sms_health_status",
                                     {"account": "twilio", "check": "twilio_status"}) == 2

    for broken in ("down", "malformed"):
        requests.post(simulator.url + "/_simulator/statuspage",
                      data={"component_status": broken}, timeout=5)
        clock.advance(121)
        snap = monitor.run_cycle()
        assert snap.statuspage_check is not None
        assert snap.statuspage_check.status is Status.UNKNOWN
        assert registry.get_sample_value("twilio_statuspage_up") == 0
        assert snap.accounts[0].overall is Status.GREEN  # nothing else is affected


@pytest.mark.parametrize("given", ["/statuspage", "/statuspage/", "/statuspage/api/v2",
                                   "/statuspage/api/v2/summary.json"])
def test_the_url_may_be_the_api_base_or_the_summary(simulator: SimulatorServer,
                                                    clock: FakeClock, given: str) -> None:
    settings = load_settings(demo_env(simulator.url)
                             | {"SMS_MONITOR_STATUSPAGE_URL": simulator.url + given},
                             {"number_type": "toll_free"})
    snap = build(settings, clock=clock, sleep=SleepRecorder()).run_cycle()
    assert snap.statuspage is not None and snap.statuspage.ok
    assert snap.last_success["statuspage"] == clock()


def test_an_empty_url_disables_the_status_page(simulator: SimulatorServer) -> None:
    assert settings_for(simulator.url).statuspage_url is None  # demo_env sets it empty
    assert load_settings({}, {"statuspage_url": ""}, require_accounts=False).statuspage_url is None


def test_a_failed_read_is_tried_again_on_the_next_cycle_not_cached(
        simulator: SimulatorServer) -> None:
    from sms_monitor.inputs.statuspage import StatusPageSource

    source = StatusPageSource("http://127.0.0.1:9/", timeout=1.0, interval=120.0)
    assert not source.poll(1000.0).ok
    source.url = simulator.url + "/statuspage/api/v2/summary.json"
    assert source.poll(1001.0).ok  # within the interval, but the failure was not kept
    source.url = "http://127.0.0.1:9/"
    assert source.poll(1002.0).ok  # a success is kept for the interval


def test_check_leaves_the_embedded_alert_store_to_the_daemon() -> None:
    from sms_monitor.app import build
    from sms_monitor.config import load_settings
    from sms_monitor.inputs.stores import StoresInput

    env = {"TWILIO_ACCOUNT_SID": "AC" + "0" * 32, "TWILIO_AUTH_TOKEN": "t",
           "SMS_MONITOR_TWILIO_API_URL": "http://127.0.0.1:9", "SMS_MONITOR_STATUSPAGE_URL": "",
           "SMS_MONITOR_DATABASE_URL": "sqlite:///practice.db"}
    embedded = load_settings(env)
    server = load_settings(env | {"SMS_MONITOR_ALERT_STORE_URL":
                                  "postgresql+psycopg://monitor@127.0.0.1:9/alerts"})

    def has_stores(app_inputs: object) -> bool:
        return any(isinstance(i, StoresInput) for i in app_inputs)  # type: ignore[attr-defined]

    assert has_stores(build(embedded).inputs)  # the daemon watches its own file
    assert not has_stores(build(embedded, alerts=False).inputs)  # `check` does not
    assert has_stores(build(server, alerts=False).inputs)  # a store server is a source
