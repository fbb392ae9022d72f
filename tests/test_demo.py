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

from sms_monitor.app import App, build
from sms_monitor.core.classify import Status
from sms_monitor.demo import Demo, start_demo
from tests.conftest import FakeClock, SleepRecorder
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


def _post(url: str, fields: dict[str, str]) -> tuple[str, str]:
    """POST a form as a browser does (same origin); follows the redirect: (final URL, page)."""
    origin = "/".join(url.split("/")[:3])
    req = urllib.request.Request(url, urllib.parse.urlencode(fields).encode(),
                                 headers={"Origin": origin, "Accept": "text/html"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.url, resp.read().decode()


def test_demo_shows_each_scenario_on_the_page_and_in_metrics(tmp_path: Path) -> None:
    # a poll cycle of the demo takes ~0.06 s: a scenario shows within a quarter second
    with running_demo(tmp_path, "0.25", "--scenario", "healthy") as (base, sim_url):
        page = _get(base + "/")
        assert "action='/demo/scenario'" in page  # the demo's scenario buttons, on this page
        assert "Scenario: <b>healthy</b> (since the demo started)" in page
        # healthy is green everywhere: every check of every group, the practice database's
        # (SQLite, no server needed) among them
        metrics = _get(base + "/metrics")
        statuses = re.findall(r'^sms_health_status\{account="(\w+)",check="(\w+)"\} (\S+)$',
                              metrics, re.M)
        assert {a for a, _, _ in statuses} >= {"primary", "database", "twilio"}
        assert not [s for s in statuses if s[2] != "0.0" and s[1] != "international_share"]
        assert 'sms_monitor_up{source="database"} 1.0' in metrics
        assert "Overall: <b>green</b>" in page

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

        def switch(name: str) -> None:  # the landing page's button: back on the landing page
            url, page = _post(base + "/demo/scenario", {"name": name})
            assert url == base + "/" and f"Scenario: <b>{name}</b> (switched at" in page

        expectations = [
            ("low_balance", "primary", "balance", "1.0"),
            ("out_of_credit", "primary", "balance", "2.0"),
            ("suspended", "primary", "account_status", "2.0"),
            ("number_lost", "primary", "phone_number", "2.0"),
            ("auth_failure", "primary", "authentication", "2.0"),
            ("optout_violations", "database", "sent_to_opted_out", "2.0"),
            ("invalid_numbers", "database", "invalid_phone_numbers", "1.0"),
            ("healthy", "primary", "api_response_time", "0.0"),
        ]
        for scenario, account, check, value in expectations:
            switch(scenario)
            sample = f'sms_health_status{{account="{account}",check="{check}"}} {value}'
            _wait_for(lambda s=sample: s in _get(base + "/metrics"), f"{scenario}: {sample}")
            group = f'sms_health_status{{account="{account}",check="overall"}} {value}'
            _wait_for(lambda s=group: s in _get(base + "/metrics"), f"{scenario}: {group}")
        # the database stories leave nothing behind
        _wait_for(lambda: 'sms_health_status{account="database",check="overall"} 0.0'
                  in _get(base + "/metrics"), "the database green again")

        # a switch on the simulator's own page is followed too, and that page leads back
        data = urllib.parse.urlencode({"name": "low_balance"}).encode()
        req = urllib.request.Request(sim_url + "/_simulator/scenario", data,
                                     headers={"Accept": "text/html"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert f"<a href='{base}/'>Back to sms-monitor</a>" in resp.read().decode()
        assert "Scenario: <b>low_balance</b> (switched at" in _get(base + "/")

        # the page's controls are forms of this origin only
        req = urllib.request.Request(base + "/demo/scenario", b"name=outage",
                                     headers={"Origin": "http://evil.example"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=5)
        assert refused.value.code == 403
        with pytest.raises(urllib.error.HTTPError) as unknown:
            _post(base + "/demo/scenario", {"name": "meteor_strike"})
        assert unknown.value.code == 400
        assert "Scenario: <b>low_balance</b>" in _get(base + "/")


def test_demo_stop_turns_red_when_the_grace_period_ends_not_at_the_next_poll(
        tmp_path: Path) -> None:
    config = tmp_path / "demo.toml"
    config.write_text('[database]\noptout_grace = "1s"\n')
    # no regular cycle during the test
    with running_demo(tmp_path, "10m", "--config", str(config)) as (base, _sim_url):
        assert "sms_optout_unprocessed_messages 0.0" in _get(base + "/metrics")  # healthy
        url, page = _post(base + "/demo/stop", {})  # the page's "a client replies STOP"
        assert url == base + "/" and "(1 sent)" in page
        _wait_for(lambda: 'sms_inbound_keywords_total{account="primary",kind="optout"} 1.0'
                  in _get(base + "/metrics"), "the STOP through the signed inbound webhook")
        # the daemon runs a cycle when the 1-second grace period ends, ten minutes before
        # the next poll
        _wait_for(lambda: "sms_optout_unprocessed_messages 1.0" in _get(base + "/metrics"),
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


# -- the landing page's controls, on the simulator's injectable clock -----------------------

POLL = 5.0  # the demo's poll interval
MINUTE = 60.0


@pytest.fixture
def demo(clock: FakeClock) -> Iterator[tuple[Demo, App, str]]:
    """The demo's simulator, practice database and monitor in this process, on ``clock``; its
    exporter serves the landing page with the demo's controls. Yields (demo, app, page URL)."""
    demo = start_demo("healthy", {}, {"alerts": {"enabled": False}}, "127.0.0.1:0",
                      clock=clock)
    demo.simulator.webhooks.configure(status_url=None, inbound_url=None)  # polls only here
    app = build(demo.settings, clock=clock, sleep=SleepRecorder())
    demo.attach(app)
    server = app.exporter(("127.0.0.1", 0), extra_html=demo.extra_html,
                          actions=demo.actions).start()
    try:
        yield demo, app, server.url
    finally:
        server.stop()
        app.close()
        demo.stop()


def _press(url: str, button: str) -> str:
    """Press a scenario button of the landing page at ``url``, as a browser would: the form
    it is in, posted there; returns the page the redirect leads to."""
    page = _get(url + "/")
    form = re.search(r"<form method='post' action='([^']+)'><p>Switch to: (.*?)</form>", page)
    assert form, "no scenario buttons on the landing page"
    assert f"<button name='name' value='{button}'" in form.group(2)
    final, after = _post(url + form.group(1), {"name": button})
    assert final == url + "/"  # back on the landing page: no dead end
    assert f"Scenario: <b>{button}</b> (switched at" in after
    return after


def _verdict(url: str) -> Status:
    m = re.search(r"^sms_health_verdict (\S+)$", _get(url + "/metrics"), re.M)
    assert m
    return {s.code: s for s in Status}[int(float(m.group(1)))]


def _poll_until(clock: FakeClock, app: App, url: str, wanted: Status,
                limit: float = MINUTE) -> float:
    """Poll every POLL seconds of simulated time until the verdict is ``wanted``; returns how
    long that took (AssertionError past ``limit``)."""
    waited = 0.0
    while waited < limit:
        clock.advance(POLL)
        waited += POLL
        app.run_cycle()
        if _verdict(url) is wanted:
            return waited
    raise AssertionError(f"not {wanted.value} {limit:g} s after the switch: "
                         f"{app.holder.current.verdict_detail()}")  # type: ignore[union-attr]


def _not_green(app: App) -> list[str]:
    snap = app.holder.current
    assert snap is not None
    return [f"{c.account}/{c.name}: {c.status.value} ({c.detail})" for c in snap.checks()
            if c.status is not Status.GREEN]


def test_healthy_is_green_everywhere_and_a_switch_shows_red_within_a_minute(
        demo: tuple[Demo, App, str], clock: FakeClock) -> None:
    _, app, url = demo
    app.run_cycle()
    clock.advance(POLL)
    app.run_cycle()  # (the international share learns its baseline on the first cycle)
    assert _not_green(app) == []  # every check of every group, the database's among them
    assert _verdict(url) is Status.GREEN
    assert "Scenario: <b>healthy</b> (since the demo started)" in _get(url + "/")

    page = _press(url, "degraded_delivery")
    assert "restarted the monitor's statistics at the switch" in page
    # the window's ten minutes of healthy messages are not what the page judges any more
    assert _poll_until(clock, app, url, Status.RED) <= MINUTE
    snap = app.holder.current
    assert snap is not None
    assert {c.name for c in snap.checks() if c.status is Status.RED} & {"delivery_rate",
                                                                        "error_rate"}

    # and back: green again within the minute, every check of it by the end of that minute
    _press(url, "healthy")
    took = _poll_until(clock, app, url, Status.GREEN)
    clock.advance(MINUTE - took)
    app.run_cycle()
    assert _not_green(app) == []


def test_database_stories_are_seeded_and_taken_out_again(
        demo: tuple[Demo, App, str], clock: FakeClock) -> None:
    _, app, url = demo
    app.run_cycle()
    page = _press(url, "optout_violations")
    assert "a client&#x27;s STOP is never processed" in page
    assert _poll_until(clock, app, url, Status.RED) <= POLL  # sent_to_opted_out at once
    snap = app.holder.current
    assert snap is not None
    red = {c.name for c in snap.checks() if c.status is Status.RED}
    assert "sent_to_opted_out" in red and "optout_unprocessed" not in red
    clock.advance(MINUTE)  # the application's grace period for the STOP ends
    app.run_cycle()
    red = {c.name for c in app.holder.current.checks()  # type: ignore[union-attr]
           if c.status is Status.RED}
    assert {"sent_to_opted_out", "optout_unprocessed"} <= red

    _press(url, "invalid_numbers")  # the opt-out story leaves nothing behind
    assert _poll_until(clock, app, url, Status.YELLOW) <= POLL
    assert [p.split(":")[0] for p in _not_green(app) if "unknown" not in p] == [
        "database/invalid_phone_numbers", "database/overall"]

    _press(url, "healthy")
    assert _poll_until(clock, app, url, Status.GREEN) <= POLL
    clock.advance(MINUTE)
    app.run_cycle()
    assert _not_green(app) == []
