"""The synthetic canary: probes sent through the simulator, followed to delivered, kept out of
the statistics."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
from twilio.request_validator import RequestValidator

from sms_monitor.app import App, build
from sms_monitor.config import ConfigError, load_settings
from sms_monitor.core.canary import CanaryTracker
from sms_monitor.daemon import Daemon
from sms_monitor.inputs.canary import CanaryProber
from sms_monitor.outputs.http import build_registry
from sms_monitor.simulator.server import SimulatorServer
from sms_monitor.simulator.state import DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN, SimState
from tests.conftest import FakeClock, SleepRecorder, demo_env

HANDSET = "+15558675310"
TEST_SID = "AC" + "7e" * 16
TEST_TOKEN = "c0ffee" * 5 + "00"


# -- the bookkeeping, without a network -------------------------------------------------------

def test_a_callback_settles_a_probe_with_its_end_to_end_latency() -> None:
    t = CanaryTracker("primary", timeout=180)
    t.sent("SM1", at=1000.0, api_seconds=0.2)
    assert t.owns("SM1") and not t.owns("SM2")
    assert t.observe("SM1", "sent", 1001.0)  # ours, not final yet
    assert t.view().success is None and t.view().in_flight == 1
    assert t.observe("SM1", "delivered", 1004.5)
    v = t.view()
    assert (v.success, v.latency, v.last_success, v.in_flight) == (True, 4.5, 1004.5, 0)
    assert t.observe("SM1", "sent", 1006.0)  # late and out of order: changes nothing
    assert t.view().results == {"delivered": 1}
    assert not t.observe("SM9", "delivered", 1007.0)  # not a probe: the window's business


def test_undelivered_and_late_probes_fail_at_the_timeout_boundary() -> None:
    t = CanaryTracker("primary", timeout=180)
    t.sent("SM1", at=1000.0, api_seconds=0.1)
    t.observe("SM1", "undelivered", 1010.0)
    assert (t.view().success, t.view().latency) == (False, None)
    t.sent("SM2", at=2000.0, api_seconds=0.1)
    assert t.expire(2179.9) == 0  # 1 ms short of the timeout: still in flight
    assert t.expire(2180.0) == 1
    v = t.view()
    assert v.results == {"failed": 1, "timeout": 1}
    assert (v.success, v.last_result, v.in_flight, v.last_success) == (False, "timeout", 0, None)
    t.send_failed(2200.0)
    assert t.view().results["send_error"] == 1


def test_the_latency_shown_is_the_last_successful_probes() -> None:
    t = CanaryTracker("primary", timeout=180)
    t.sent("SM1", at=1000.0, api_seconds=0.1)
    t.observe("SM1", "delivered", 1006.0)
    t.sent("SM2", at=2000.0, api_seconds=0.1)
    t.observe("SM2", "undelivered", 2003.0)
    v = t.view()
    assert (v.success, v.latency, v.last_success, v.last_result) == (False, 6.0, 1006.0,
                                                                       "failed")


def test_api_only_probes_succeed_when_the_api_accepts_them() -> None:
    t = CanaryTracker("primary", timeout=180, api_only=True)
    t.sent("SM1", at=1000.0, api_seconds=0.25)
    v = t.view()
    assert (v.success, v.latency, v.in_flight, v.results) == (True, 0.25, 0, {"accepted": 1})


# -- through the simulator -------------------------------------------------------------------

@pytest.fixture
def sim(clock: FakeClock) -> Iterator[tuple[SimulatorServer, SimState]]:
    state = SimState(clock=clock, rate_per_minute=6.0, history_seconds=600.0)
    state.add_account(DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN, "+15005550006")
    state.add_account(TEST_SID, TEST_TOKEN, "+15005550006")
    server = SimulatorServer(("127.0.0.1", 0), state).start()
    yield server, state
    server.stop()


def canary_monitor(url: str, clock: FakeClock, env: dict[str, str] | None = None,
                   **canary: Any) -> App:
    settings = load_settings(demo_env(url) | (env or {}),
                             {"number_type": "toll_free", "window": "10m",
                              "canary": {"to": HANDSET, "interval": "1m", **canary}})
    return build(settings, clock=clock, sleep=SleepRecorder())


def sample(monitor: App, name: str, **labels: str) -> float | None:
    return build_registry(monitor.holder, monitor.areas).get_sample_value(
        name, {"account": "primary", "mode": "delivery", **labels})


@pytest.fixture
def probing(sim: tuple[SimulatorServer, SimState], clock: FakeClock
            ) -> tuple[App, CanaryProber, SimState]:
    """A monitor with a canary, after its first cycle."""
    server, state = sim
    monitor = canary_monitor(server.url, clock)
    monitor.run_cycle()
    assert monitor.canary is not None
    return monitor, monitor.canary, state


def test_a_probe_is_followed_to_delivered_and_kept_out_of_the_statistics(
        probing: tuple[App, CanaryProber, SimState], clock: FakeClock) -> None:
    monitor, canary, state = probing
    sid = canary.send()
    assert sid is not None
    msg = state.accounts[DEMO_ACCOUNT_SID].messages[state.accounts[DEMO_ACCOUNT_SID].index[sid]]
    assert msg.to == HANDSET and msg.final_status == "delivered"
    clock.advance(msg.settle_after + 10)  # delivered by now; no callback can reach us here
    snap = monitor.run_cycle()
    assert sample(monitor, "sms_canary_success") == 1
    assert sample(monitor, "sms_canary_latency_seconds") == pytest.approx(
        int(msg.created + msg.settle_after) - int(msg.created))  # Twilio dates: whole seconds
    assert sample(monitor, "sms_canary_probes_total", result="delivered") == 1
    assert sample(monitor, "sms_canary_in_flight") == 0
    assert snap.requests.counts[("primary", "message", "200")] == 1  # read once, by SID
    window = monitor.accounts[0].window
    assert sid not in window.records  # the poll read it, the window never took it
    stats = snap.accounts[0].stats
    assert stats is not None
    practice_sent = sum(1 for m in state.accounts[DEMO_ACCOUNT_SID].messages
                        if m.outbound and m.sid != sid and m.created >= clock() - 600)
    assert sum(n for (d, _), n in stats.by_status.items() if d == "outbound") == practice_sent


def test_a_signed_callback_settles_the_probe_before_any_read(
        sim: tuple[SimulatorServer, SimState], clock: FakeClock) -> None:
    server, state = sim
    monitor = canary_monitor(server.url, clock)
    exporter = monitor.exporter(("127.0.0.1", 0)).start()
    try:
        assert monitor.canary is not None
        sid = monitor.canary.send()
        assert sid is not None
        clock.advance(4)
        url = exporter.url + "/twilio/status"
        params = {"AccountSid": DEMO_ACCOUNT_SID, "MessageSid": sid, "MessageStatus": "delivered"}
        sig = RequestValidator(DEMO_AUTH_TOKEN).compute_signature(url, params)
        assert requests.post(url, data=urlencode(params), timeout=5, headers={
            "X-Twilio-Signature": sig, "Content-Type": "application/x-www-form-urlencoded"}
        ).status_code == 204
        snap = monitor.run_cycle()
        assert sample(monitor, "sms_canary_latency_seconds") == pytest.approx(4.0)
        assert sample(monitor, "sms_canary_success") == 1
        # settled by the callback: never read by SID
        assert not [k for k in snap.requests.counts if k[1] == "message"]
        assert sid not in monitor.accounts[0].window.pending  # not left waiting for a poll
    finally:
        exporter.stop()


def test_a_refused_send_is_a_failed_probe_and_is_not_retried(
        probing: tuple[App, CanaryProber, SimState]) -> None:
    monitor, canary, state = probing
    state.faults.server_error_every = 1
    before = state.requests
    assert canary.send() is None
    assert state.requests - before == 1  # a retried create could send twice
    state.faults.server_error_every = 0
    monitor.run_cycle()
    assert sample(monitor, "sms_canary_success") == 0
    assert sample(monitor, "sms_canary_probes_total", result="send_error") == 1


def test_a_probe_that_never_settles_times_out(
        sim: tuple[SimulatorServer, SimState], clock: FakeClock) -> None:
    server, state = sim
    monitor = canary_monitor(server.url, clock, timeout="2m")
    assert monitor.canary is not None
    sid = monitor.canary.send()
    assert sid is not None
    state.faults.server_error_every = 1  # Twilio cannot be read while the probe is out
    clock.advance(120)
    monitor.run_cycle()
    state.faults.server_error_every = 0
    assert sample(monitor, "sms_canary_probes_total", result="timeout") == 1
    assert sample(monitor, "sms_canary_success") == 0


def test_test_credentials_exercise_the_api_without_following(
        sim: tuple[SimulatorServer, SimState], clock: FakeClock) -> None:
    server, state = sim
    monitor = canary_monitor(server.url, clock, env={"TWILIO_TEST_AUTH_TOKEN": TEST_TOKEN},
                             test_account_sid=TEST_SID)
    assert monitor.canary is not None
    sid = monitor.canary.send()
    assert sid is not None and sid in state.accounts[TEST_SID].index
    assert sid not in state.accounts[DEMO_ACCOUNT_SID].index
    monitor.run_cycle()
    registry = build_registry(monitor.holder, monitor.areas)
    labels = {"account": "primary", "mode": "api"}
    assert registry.get_sample_value("sms_canary_success", labels) == 1
    assert registry.get_sample_value("sms_canary_probes_total", {**labels, "result": "accepted"}
                                     ) == 1
    assert 0 < (registry.get_sample_value("sms_canary_latency_seconds", labels) or 0) < 5
    assert registry.get_sample_value("sms_canary_in_flight", labels) == 0


def test_canary_configuration_errors_name_the_key(sim: tuple[SimulatorServer, SimState]) -> None:
    server, _ = sim
    env = demo_env(server.url)
    for canary, key in (({"to": "5558675310"}, "canary.to"),
                        ({"to": HANDSET, "account": "nope"}, "canary.account"),
                        ({"to": HANDSET, "interval": "soon"}, "canary.interval"),
                        ({"to": HANDSET, "test_account_sid": TEST_SID},
                         "canary.test_auth_token_env"),
                        ({"to": HANDSET, "colour": "red"}, "canary.colour"),
                        ({"to": HANDSET, "enabled": "no"}, "canary.enabled"),
                        ({"to": HANDSET, "timeout": "5s"}, "canary.timeout"),
                        ({"to": HANDSET, "interval": "10s", "timeout": "2m"}, "canary.timeout")):
        with pytest.raises(ConfigError) as err:
            load_settings(env, {"canary": canary})
        assert err.value.key == key
    assert load_settings(env, {"canary": {"to": HANDSET, "enabled": False}}).canary is None
    # Twilio's test credentials send only from its magic numbers
    test_env = env | {"TWILIO_TEST_AUTH_TOKEN": TEST_TOKEN}
    api = load_settings(test_env, {"canary": {"to": HANDSET, "test_account_sid": TEST_SID}})
    assert api.canary is not None and api.canary.from_number == "+15005550006"
    with pytest.raises(ConfigError) as err:
        load_settings(test_env, {"canary": {"to": HANDSET, "test_account_sid": TEST_SID,
                                            "from": "+14155550100"}})
    assert err.value.key == "canary.from"
    # a keyword has one meaning
    for data, key in (({"inbound": {"optin_keywords": ["STOP"]}}, "inbound.optin_keywords"),
                      ({"inbound": {"help_keywords": ["START"]}}, "inbound.help_keywords")):
        with pytest.raises(ConfigError) as err:
            load_settings(env, data)
        assert err.value.key == key
    assert load_settings(env, {}).canary is None
    settings = load_settings(env | {"SMS_MONITOR_CANARY_TO": HANDSET}, {})
    assert settings.canary is not None and settings.canary.interval == 300
    assert HANDSET not in repr(settings)


def test_the_daemon_sends_a_probe_every_interval(
        sim: tuple[SimulatorServer, SimState], clock: FakeClock) -> None:
    server, _ = sim
    monitor = canary_monitor(server.url, clock)
    exporter = monitor.exporter(("127.0.0.1", 0))
    daemon = Daemon(monitor, exporter)
    daemon.add_jobs()
    daemon.scheduler.start(paused=True)
    try:
        job = daemon.scheduler.get_job("canary")
        assert job is not None and job.trigger.interval.total_seconds() == 60
        daemon.probe()  # what the job runs
        assert monitor.canary is not None and monitor.canary.tracker.view().in_flight == 1
    finally:
        daemon.scheduler.shutdown(wait=False)
        exporter.stop()
