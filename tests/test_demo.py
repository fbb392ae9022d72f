"""`sms-monitor demo` end to end: one process, scenarios switched while it runs."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

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
        time.sleep(0.2)  # polling a child process, not timing our own code
    raise AssertionError(f"timed out waiting for {what}")


def test_demo_shows_each_scenario_on_the_page_and_in_metrics(tmp_path: Path) -> None:
    port = _free_port()
    err_path = tmp_path / "demo.err"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "SMS_MONITOR_"))}
    env["SMS_MONITOR_POLL_INTERVAL"] = "1"
    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sms_monitor.cli", "demo", "--scenario", "healthy",
             "--web.listen-address", f"127.0.0.1:{port}"],
            env=env, stdout=subprocess.DEVNULL, stderr=err)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for(lambda: _get(base + "/readyz").startswith("ready"), "readiness")
        sim = re.search(r"simulator at (http://127\.0\.0\.1:\d+)/", err_path.read_text())
        assert sim, err_path.read_text()
        page = _get(base + "/")
        assert "/_simulator/scenario" in page  # the demo's scenario buttons
        # the seeded practice database has problems to find, on SQLite, no server needed
        metrics = _get(base + "/metrics")
        assert 'sms_health_status{account="database",check="optout_unprocessed"} 2.0' in metrics
        assert 'sms_health_status{account="database",check="invalid_phone_numbers"} 1.0' in metrics
        assert 'sms_health_status{account="database",check="queue_delay"} 0.0' in metrics
        assert 'sms_monitor_up{source="database"} 1.0' in metrics
        assert "Overall: <b>red</b>" in page

        def switch(name: str) -> None:
            data = urllib.parse.urlencode({"name": name}).encode()
            with urllib.request.urlopen(sim.group(1) + "/_simulator/scenario", data,
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
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
