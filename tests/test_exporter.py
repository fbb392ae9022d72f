"""/metrics, /healthz, /readyz and the landing page, from a real poll of the simulator."""

from __future__ import annotations

import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sms_monitor.app import App, build
from sms_monitor.outputs.http import ExporterServer, build_registry
from sms_monitor.simulator.server import SimulatorServer
from sms_monitor.simulator.state import SimState
from tests.conftest import FakeClock, SleepRecorder, settings_for

# name -> (type, labels), as the contract's table fixes them
CONTRACT_METRICS = {
    "sms_health_status": ("gauge", {"account", "check"}),
    "sms_delivery_success_ratio": ("gauge", {"account"}),
    "sms_error_ratio": ("gauge", {"account"}),
    "sms_delivery_latency_seconds": ("histogram", {"account"}),
    "sms_window_messages": ("gauge", {"account", "direction", "status"}),
    "sms_window_error_messages": ("gauge", {"account", "error_code"}),
    "twilio_account_balance": ("gauge", {"account", "currency"}),
    "twilio_account_status": ("gauge", {"account", "status"}),
    "twilio_phone_number_sms_capable": ("gauge", {"account", "phone_number"}),
    "twilio_api_request_duration_seconds": ("histogram", {"account", "endpoint"}),
    "twilio_api_requests": ("counter", {"account", "endpoint", "code"}),  # ..._total
    "twilio_up": ("gauge", {"account"}),
    "sms_monitor_last_success_timestamp_seconds": ("gauge", {"source"}),
    "sms_monitor_build_info": ("gauge", {"version"}),
}
CONTRACT_DATABASE_METRICS = {
    "sms_clients_invalid_phone_numbers": ("gauge", {"column"}),
    "sms_optout_unprocessed_messages": ("gauge", set()),
    "sms_sent_to_opted_out_messages": ("gauge", set()),
    "sms_notification_queue_delay_seconds": ("gauge", set()),
}


def assert_contract(families: dict[str, Any], metrics: dict[str, tuple[str, set[str]]]) -> None:
    for name, (kind, labels) in metrics.items():
        assert name in families, name
        assert families[name].type == kind, name
        assert families[name].samples, name
        for sample in families[name].samples:
            assert set(sample.labels) - {"le"} == labels, (name, sample.labels)


@pytest.fixture
def monitor(simulator: SimulatorServer, clock: FakeClock) -> App:
    return build(settings_for(simulator.url), clock=clock, sleep=SleepRecorder())


@pytest.fixture
def exporter(monitor: App) -> Iterator[ExporterServer]:
    server = monitor.exporter(("127.0.0.1", 0)).start()
    yield server
    server.stop()


def get(url: str) -> tuple[int, str, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode(), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(), dict(err.headers)


def test_sample_values_match_the_snapshot(monitor: App) -> None:
    snap = monitor.run_cycle()
    registry = build_registry(monitor.holder, monitor.areas)
    acct = {"account": "primary"}
    stats = snap.accounts[0].stats
    assert stats is not None
    assert registry.get_sample_value("sms_health_status", {**acct, "check": "overall"}) == 0
    assert registry.get_sample_value("sms_health_status",
                                     {**acct, "check": "delivery_rate"}) == 0
    assert registry.get_sample_value("sms_delivery_success_ratio", acct) == stats.delivery_ratio
    assert registry.get_sample_value("sms_error_ratio", acct) == stats.error_ratio
    assert registry.get_sample_value("twilio_account_balance", {**acct, "currency": "USD"}) == 120
    assert registry.get_sample_value("twilio_account_status", {**acct, "status": "active"}) == 1
    assert registry.get_sample_value(
        "twilio_phone_number_sms_capable", {**acct, "phone_number": "+15005550006"}) == 1
    assert registry.get_sample_value("twilio_up", acct) == 1
    assert registry.get_sample_value(
        "twilio_api_requests_total", {**acct, "endpoint": "balance", "code": "200"}) == 1
    assert registry.get_sample_value(
        "sms_window_messages", {**acct, "direction": "outbound", "status": "delivered"}
    ) == stats.by_status[("outbound", "delivered")]
    latency_count = registry.get_sample_value("sms_delivery_latency_seconds_count", acct)
    assert latency_count == monitor.accounts[0].window.latency.count > 0
    assert registry.get_sample_value("sms_delivery_latency_seconds_bucket",
                                     {**acct, "le": "+Inf"}) == latency_count
    assert registry.get_sample_value("sms_monitor_last_success_timestamp_seconds",
                                     {"source": "twilio:primary"}) == snap.taken_at


def test_red_scenario_changes_the_exported_status(monitor: App, sim_state: SimState) -> None:
    registry = build_registry(monitor.holder, monitor.areas)
    monitor.run_cycle()
    sim_state.set_scenario("out_of_credit")
    monitor.run_cycle()
    assert registry.get_sample_value("sms_health_status",
                                     {"account": "primary", "check": "balance"}) == 2
    assert registry.get_sample_value("twilio_account_balance",
                                     {"account": "primary", "currency": "USD"}) == -0.42
    sim_state.set_scenario("auth_failure")
    monitor.run_cycle()
    assert registry.get_sample_value("sms_health_status",
                                     {"account": "primary", "check": "authentication"}) == 2
    assert registry.get_sample_value("sms_health_status",
                                     {"account": "primary", "check": "balance"}) == -1
    assert registry.get_sample_value("twilio_up", {"account": "primary"}) == 0


def test_poll_errors_are_counted_by_part_and_cause(monitor: App, sim_state: SimState) -> None:
    registry = build_registry(monitor.holder, monitor.areas)
    sim_state.faults.malformed_messages = True
    monitor.run_cycle()
    monitor.run_cycle()
    labels = {"account": "primary", "part": "messages", "cause": "malformed"}
    assert registry.get_sample_value("sms_monitor_poll_errors_total", labels) == 2
    assert registry.get_sample_value("sms_health_status",
                                     {"account": "primary", "check": "delivery_rate"}) == -1
    assert registry.get_sample_value("sms_delivery_success_ratio", {"account": "primary"}) is None


def test_http_endpoints_before_and_after_the_first_cycle(monitor: App,
                                                         exporter: ExporterServer) -> None:
    assert get(exporter.url + "/healthz")[0] == 200
    assert get(exporter.url + "/readyz")[0] == 503
    status, body, _ = get(exporter.url + "/metrics")
    assert status == 200 and "sms_monitor_ready 0.0" in body
    assert "Waiting for the first poll" in get(exporter.url + "/")[1]

    monitor.run_cycle()
    assert get(exporter.url + "/readyz")[0] == 200
    status, page, headers = get(exporter.url + "/")
    assert status == 200
    assert headers["X-Content-Type-Options"] == "nosniff"
    for name in ("api_response_time", "delivery_rate", "error_rate", "delivery_latency",
                 "authentication", "account_status", "balance", "phone_number",
                 "carrier_filtering", "overall"):
        assert f"<td>{name}</td>" in page
    assert "Overall: <b>green</b>" in page
    assert get(exporter.url + "/nope")[0] == 404


def test_exposition_has_every_contract_metric_and_no_private_data(
        monitor: App, exporter: ExporterServer) -> None:
    monitor.run_cycle()
    status, body, headers = get(exporter.url + "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(body)}
    assert_contract(families, CONTRACT_METRICS)
    assert "cached from the last poll" in families["sms_health_status"].documentation
    # no recipient's number and no message text in any label value
    labels = {v for f in families.values() for s in f.samples for v in s.labels.values()}
    assert not [v for v in labels if v.startswith("+1555")]
    assert "Riverside" not in body


def test_promtool_check_metrics_is_clean(monitor: App, exporter: ExporterServer) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is required (Debian package 'prometheus'; .ci/run installs it)"
    monitor.run_cycle()
    _, body, _ = get(exporter.url + "/metrics")
    result = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == ""


def test_scrape_reads_the_snapshot_and_never_polls(monitor: App, sim_state: SimState,
                                                   exporter: ExporterServer) -> None:
    monitor.run_cycle()
    before = sim_state.requests
    for _ in range(5):
        get(exporter.url + "/metrics")
        get(exporter.url + "/")
    assert sim_state.requests == before



def test_the_database_metrics_of_the_contract(simulator: SimulatorServer, clock: FakeClock,
                                              tmp_path: Any) -> None:
    from datetime import UTC, datetime

    from sqlalchemy import create_engine

    from sms_monitor.config import load_settings
    from sms_monitor.simulator.practice_db import seed_demo, seed_invalid_numbers
    from tests.conftest import demo_env

    url = f"sqlite:///{tmp_path / 'practice.db'}"
    seed_demo(create_engine(url), datetime.fromtimestamp(clock(), UTC))
    seed_invalid_numbers(create_engine(url))  # so the invalid numbers' gauge is not all 0
    settings = load_settings(demo_env(simulator.url) | {"SMS_MONITOR_DATABASE_URL": url},
                             {"number_type": "toll_free", "alerts": {"enabled": False}})
    monitor = build(settings, clock=clock, sleep=SleepRecorder())
    server = monitor.exporter(("127.0.0.1", 0)).start()
    try:
        monitor.run_cycle()
        _, body, _ = get(server.url + "/metrics")
    finally:
        server.stop()
        monitor.close()
    families = {f.name: f for f in text_string_to_metric_families(body)}
    assert_contract(families, CONTRACT_DATABASE_METRICS)
    columns = {s.labels["column"]: s.value
               for s in families["sms_clients_invalid_phone_numbers"].samples}
    assert set(columns) == {"phone", "cell_phone"} and columns["phone"] > 0
    sources = {s.labels["source"] for s in
               families["sms_monitor_last_success_timestamp_seconds"].samples}
    assert sources == {"twilio:primary", "database"}
