"""`sms-monitor demo` end to end: one process, scenarios switched while it runs."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.test_cli import _free_port


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


def _wait_for(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.05)  # polling a child process, not timing our own code
    raise AssertionError(f"timed out waiting for {what}")


@contextmanager
def running_demo(tmp_path: Path, poll_interval: str, *args: str) -> Iterator[tuple[str, str]]:
    """`sms-monitor demo ARGS` in a child process: yields (its URL, its simulator's URL) once
    ready; stopped with SIGTERM, which must exit 0."""
    port = _free_port()
    err_path = tmp_path / "demo.err"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "SMS_MONITOR_"))}
    env["SMS_MONITOR_POLL_INTERVAL"] = poll_interval
    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sms_monitor.cli", "demo", *args,
             "--web.listen-address", f"127.0.0.1:{port}"],
            env=env, stdout=subprocess.DEVNULL, stderr=err)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for(lambda: _get(base + "/readyz").startswith("ready"), "readiness")
        sim = re.search(r"simulator at (http://127\.0\.0\.1:\d+)/", err_path.read_text())
        assert sim, err_path.read_text()
        yield base, sim.group(1)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_demo_shows_each_scenario_on_the_page_and_in_metrics(tmp_path: Path) -> None:
    # a poll cycle of the demo takes ~0.06 s: a scenario shows within a quarter second
    with running_demo(tmp_path, "0.25", "--scenario", "healthy") as (base, sim_url):
        page = _get(base + "/")
        assert "/_simulator/scenario" in page  # the demo's scenario buttons
        # the seeded practice database has problems to find, on SQLite, no server needed
        metrics = _get(base + "/metrics")
        assert 'sms_health_status{account="database",check="optout_unprocessed"} 2.0' in metrics
        assert 'sms_health_status{account="database",check="invalid_phone_numbers"} 1.0' in metrics
        assert 'sms_health_status{account="database",check="queue_delay"} 0.0' in metrics
        assert 'sms_monitor_up{source="database"} 1.0' in metrics
        assert "Overall: <b>red</b>" in page

        # real time: the simulator's signed callbacks time deliveries, the canary's probe
        # comes back delivered, and an unsigned request is refused
        def from_callbacks() -> bool:
            m = re.search(r'sms_delivery_latency_source_total\{account="primary",'
                          r'source="callback"\} (\d+)', _get(base + "/metrics"))
            return m is not None and int(m.group(1)) > 0

        _wait_for(from_callbacks, "deliveries timed by status callbacks")
        _wait_for(lambda: 'sms_canary_success{account="primary",mode="delivery"} 1.0'
                  in _get(base + "/metrics"), "a delivered canary probe")
        latency = re.search(r'sms_canary_latency_seconds\{account="primary",mode="delivery"\} '
                            r'([\d.e+-]+)', _get(base + "/metrics"))
        assert latency and 1.0 < float(latency.group(1)) < 30.0
        assert "canary (primary, end to end): last probe delivered in" in _get(base + "/")
        forged = urllib.request.Request(base + "/twilio/status", method="POST",
                                        data=b"AccountSid=AC1&MessageSid=SM1&MessageStatus=sent")
        try:
            urllib.request.urlopen(forged, timeout=5)
            raise AssertionError("an unsigned callback was accepted")
        except urllib.error.HTTPError as exc:
            assert exc.code == 403

        def switch(name: str) -> None:
            data = urllib.parse.urlencode({"name": name}).encode()
            with urllib.request.urlopen(sim_url + "/_simulator/scenario", data,
                                        timeout=5) as resp:
                assert resp.status == 200

        expectations = [
            ("low_balance", "balance", "1.0", "yellow"),
            ("out_of_credit", "balance", "2.0", "red"),
            ("suspended", "account_status", "2.0", "red"),
            ("number_lost", "phone_number", "2.0", "red"),
            ("auth_failure", "authentication", "2.0", "red"),
            ("healthy", "api_response_time", "0.0", "green"),
        ]
        for scenario, check, value, overall in expectations:
            switch(scenario)
            sample = f'sms_health_status{{account="primary",check="{check}"}} {value}'
            _wait_for(lambda s=sample: s in _get(base + "/metrics"), f"{scenario}: {sample}")
            account = f'sms_health_status{{account="primary",check="overall"}} {value}'
            _wait_for(lambda s=account: s in _get(base + "/metrics"),
                      f"{scenario}: account overall {overall}")


def test_demo_stop_turns_red_when_the_grace_period_ends_not_at_the_next_poll(
        tmp_path: Path) -> None:
    config = tmp_path / "demo.toml"
    config.write_text('[database]\noptout_grace = "1s"\n')
    # no regular cycle during the test
    with running_demo(tmp_path, "10m", "--config", str(config)) as (base, sim_url):
        assert "sms_optout_unprocessed_messages 1.0" in _get(base + "/metrics")  # the seeded one
        data = urllib.parse.urlencode({"from": "+15550100003", "body": "STOP"}).encode()
        with urllib.request.urlopen(sim_url + "/_simulator/inbound", data, timeout=5):
            pass
        _wait_for(lambda: 'sms_inbound_keywords_total{account="primary",kind="optout"} 1.0'
                  in _get(base + "/metrics"), "the STOP through the signed inbound webhook")
        # the daemon runs a cycle when the 1-second grace period ends, ten minutes before
        # the next poll
        _wait_for(lambda: "sms_optout_unprocessed_messages 2.0" in _get(base + "/metrics"),
                  "optout_unprocessed counting the new STOP", timeout=15)


def test_a_bad_demo_config_exits_2_before_anything_starts(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import glob
    import tempfile

    from sms_monitor.cli import main

    config = tmp_path / "demo.toml"
    config.write_text('[canary]\nto = "+15558675310"\ninterval = "soon"\n')
    pattern = str(Path(tempfile.gettempdir()) / "sms-monitor-demo-*")
    before = set(glob.glob(pattern))
    assert main(["demo", "--config", str(config)], env={}) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "canary.interval" in err[0]
    assert set(glob.glob(pattern)) == before  # no practice database was seeded
