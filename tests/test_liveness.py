"""/healthz means something: it fails when no cycle has finished for liveness_intervals ×
poll_interval, so Docker and Kubernetes restart a wedged daemon. Time is an injected
monotonic clock; nothing sleeps."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from sms_monitor.config import load_settings
from sms_monitor.core.snapshot import SnapshotHolder
from sms_monitor.outputs.http import ExporterServer
from tests.snapshots import sample_snapshot


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def served() -> Iterator[tuple[ExporterServer, SnapshotHolder, Monotonic]]:
    clock = Monotonic()
    holder = SnapshotHolder(monotonic=clock)
    server = ExporterServer(("127.0.0.1", 0), holder, max_cycle_age=180.0).start()
    yield server, holder, clock
    server.stop()


def healthz(server: ExporterServer) -> tuple[int, str]:
    r = requests.get(server.url + "/healthz", timeout=5)
    return r.status_code, r.text


def test_healthz_fails_when_no_cycle_finishes_and_recovers_when_one_does(
        served: tuple[ExporterServer, SnapshotHolder, Monotonic]) -> None:
    server, holder, clock = served
    assert healthz(server) == (200, "ok\n")  # starting: the first cycle has 180 s
    clock.now += 180.0
    assert healthz(server) == (200, "ok\n")  # exactly at the limit: still alive
    clock.now += 1.0
    assert healthz(server) == (503, "no poll cycle has finished for 181s (limit 180s)\n")
    holder.publish(sample_snapshot())
    assert healthz(server) == (200, "ok\n")
    clock.now += 179.0
    assert healthz(server)[0] == 200
    clock.now += 2.0  # the loop wedged after that cycle
    assert healthz(server) == (503, "no poll cycle has finished for 181s (limit 180s)\n")
    assert requests.get(server.url + "/readyz", timeout=5).status_code == 200  # ready is not live


def test_without_a_limit_healthz_is_plain_ok() -> None:
    clock = Monotonic()
    server = ExporterServer(("127.0.0.1", 0), SnapshotHolder(monotonic=clock)).start()
    try:
        clock.now += 10 ** 6
        assert healthz(server) == (200, "ok\n")
    finally:
        server.stop()


def test_the_app_sets_the_limit_from_the_settings() -> None:
    from sms_monitor.app import build

    env = {"TWILIO_ACCOUNT_SID": "AC" + "0" * 32, "TWILIO_AUTH_TOKEN": "t",
           "SMS_MONITOR_TWILIO_API_URL": "http://127.0.0.1:9", "SMS_MONITOR_STATUSPAGE_URL": ""}
    settings = load_settings(env, {"poll_interval": "20s", "liveness_intervals": 4})
    app = build(settings)
    server = app.exporter(("127.0.0.1", 0))
    try:
        from sms_monitor.app import worst_cycle

        # 4 intervals, plus a cycle in which everything hangs as long as it may: the Twilio
        # budget (15 s), one more request (10 s), the status page and the store (5 s each)
        assert worst_cycle(settings) == 35.0
        assert server.max_cycle_age == 80.0 + 35.0
    finally:
        server.stop()
        app.close()
