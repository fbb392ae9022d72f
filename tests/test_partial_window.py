"""No verdict on part of a window: a read that stops early leaves the window's checks
unknown, says how much was read, and is resumed on later cycles until the window is whole.
Against the simulator through the real twilio client; time is a FakeClock."""

from __future__ import annotations

import time
from dataclasses import replace

from prometheus_client import CollectorRegistry

from sms_monitor.app import App, build
from sms_monitor.core.classify import Status
from sms_monitor.core.records import MessageRecord
from sms_monitor.core.snapshot import Snapshot
from sms_monitor.inputs.twilio import PollResult
from sms_monitor.outputs.http import build_registry
from sms_monitor.simulator.server import SimulatorServer
from sms_monitor.simulator.state import DEMO_ACCOUNT_SID, SimState
from tests.conftest import FakeClock, SleepRecorder, settings_for

WINDOW_CHECKS = ("delivery_rate", "error_rate", "delivery_latency", "carrier_filtering",
                 "throughput", "unregistered_10dlc")


def app_for(url: str, clock: FakeClock, **file: object) -> App:
    return build(settings_for(url, **file), clock=clock, sleep=SleepRecorder())


def window_statuses(snap: Snapshot) -> set[Status]:
    return {c.status for c in snap.checks() if c.name in WINDOW_CHECKS}


def registry(app: App) -> CollectorRegistry:
    return build_registry(app.holder, app.areas)


def truth(state: SimState, now: float) -> int:
    """Outbound messages the simulator holds in the window."""
    acc = state.accounts[DEMO_ACCOUNT_SID]
    return sum(1 for m in acc.messages if m.outbound and m.created >= now - 3600)


def test_a_capped_read_is_unknown_until_resumed_whole_then_exact(
        simulator: SimulatorServer, sim_state: SimState, clock: FakeClock) -> None:
    app = app_for(simulator.url, clock, page_size=100, max_pages=5)  # 500 a cycle, ~3,600 held
    partial_cycles = 0
    for _ in range(20):
        snap = app.run_cycle()
        account = snap.accounts[0]
        r = registry(app)
        if account.window_complete:
            break
        partial_cycles += 1
        # never a verdict on part of the data: unknown, with how much was read
        assert window_statuses(snap) == {Status.UNKNOWN}
        detail = next(c.detail for c in snap.checks() if c.name == "delivery_rate")
        assert detail.startswith("window read back ") and "read on the next cycles" in detail
        assert snap.overall is Status.UNKNOWN
        assert r.get_sample_value("sms_window_complete", {"account": "primary"}) == 0
        assert r.get_sample_value("sms_window_unread_seconds", {"account": "primary"}) > 0
        assert r.get_sample_value("sms_delivery_success_ratio", {"account": "primary"}) is None
        assert r.get_sample_value("sms_window_messages", {
            "account": "primary", "direction": "outbound", "status": "delivered"}) is None
        # reading a backlog is progress: unknown, but not counting toward red
        assert account.sources[0].failing_cycles == 0
        clock.advance(5)
    else:
        raise AssertionError("the window was never read whole")
    assert partial_cycles >= 6  # ~3,600 messages at 500 a cycle
    assert account.stats is not None and account.stats.outbound == truth(sim_state, clock())
    assert window_statuses(snap) - {Status.UNKNOWN} and snap.overall is Status.GREEN
    assert r.get_sample_value("sms_window_complete", {"account": "primary"}) == 1
    assert r.get_sample_value("sms_window_unread_seconds", {"account": "primary"}) == 0
    pages = [n for (_, ep, code), n in snap.requests.counts.items() if ep == "messages"]
    assert sum(pages) <= 5 * (partial_cycles + 1)  # the cap held on every cycle


def test_a_read_that_fails_part_way_keeps_its_pages_and_resumes_there(
        simulator: SimulatorServer, sim_state: SimState, clock: FakeClock) -> None:
    app = app_for(simulator.url, clock, page_size=500, max_retries=0)
    # requests: balance, account, numbers, two Usage Records, then the message pages: the
    # 7th request (the second page) is refused
    sim_state.faults.server_error_every = 7
    snap = app.run_cycle()
    sim_state.faults.server_error_every = 0
    account = snap.accounts[0]
    assert account.facts.messages_ok  # the first page was read and is kept
    assert account.window_records == 500 and not account.window_complete
    assert window_statuses(snap) == {Status.UNKNOWN}
    gap = app.accounts[0].window.gaps[0]
    assert "PageToken=" in gap.resume
    clock.advance(5)
    snap = app.run_cycle()
    account = snap.accounts[0]
    assert account.window_complete
    assert account.stats is not None and account.stats.outbound == truth(sim_state, clock())
    assert snap.overall is Status.GREEN


def test_a_message_dated_in_the_future_is_counted_and_left_out(
        simulator: SimulatorServer, clock: FakeClock) -> None:
    app = app_for(simulator.url, clock)
    app.run_cycle()  # a whole, healthy window
    account_input = app.accounts[0]
    real_poll = account_input.poller.poll
    future = MessageRecord(sid="SMfuture", outbound=True, status="delivered", error_code=None,
                           created=clock() + 3600, updated=clock() + 3601)

    def with_one_ahead(*args: object, **kwargs: object) -> PollResult:
        result = real_poll(*args, **kwargs)  # type: ignore[arg-type]
        result.records.insert(0, future)
        return result

    account_input.poller.poll = with_one_ahead  # type: ignore[method-assign]
    for _ in (1, 2):
        clock.advance(5)
        snap = app.run_cycle()
        account = snap.accounts[0]
        assert account.future_dated_records == 1  # the same message seen twice counts once
        assert "SMfuture" not in {r.sid for r in account.records}
        assert snap.overall is Status.GREEN  # the rest of the window is judged as usual
    assert registry(app).get_sample_value("sms_monitor_future_dated_records_total",
                                          {"account": "primary"}) == 1


def test_a_read_mostly_dated_in_the_future_is_a_clock_off_never_judged(
        simulator: SimulatorServer, clock: FakeClock) -> None:
    app = app_for(simulator.url, clock)
    app.run_cycle()
    account_input = app.accounts[0]
    real_poll = account_input.poller.poll

    def skewed(*args: object, **kwargs: object) -> PollResult:
        result = real_poll(*args, **kwargs)  # type: ignore[arg-type]
        result.records = [replace(r, created=r.created + 3600) for r in result.records]
        return result

    account_input.poller.poll = skewed  # type: ignore[method-assign]
    for cycle in (1, 2):
        clock.advance(5)
        snap = app.run_cycle()
        assert window_statuses(snap) == {Status.UNKNOWN}
        assert "dated more than 300s in the future" in next(
            c.detail for c in snap.checks() if c.name == "delivery_rate")
        assert snap.overall is Status.UNKNOWN
        assert snap.accounts[0].sources[0].failing_cycles == cycle  # not progress: toward red
    account_input.poller.poll = real_poll  # type: ignore[method-assign]
    clock.advance(5)
    assert app.run_cycle().overall is Status.GREEN


class SteppingTime:
    """time.monotonic plus what the retry sleeps 'waited', so a deadline can pass."""

    def __init__(self) -> None:
        self.slept = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return time.monotonic() + self.slept

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.slept += seconds


def test_a_503_storm_never_holds_a_cycle_past_its_budget(
        simulator: SimulatorServer, sim_state: SimState, clock: FakeClock) -> None:
    steps = SteppingTime()
    settings = settings_for(simulator.url, poll_interval="8s", request_timeout="2s",
                            max_retries=3)
    app = build(settings, clock=clock, sleep=steps.sleep, monotonic=steps.monotonic)
    sim_state.faults.server_error_every = 1  # every request: 503
    started = time.monotonic()
    snap = app.run_cycle()
    waited = steps.slept + (time.monotonic() - started)
    assert waited <= 0.75 * 8 + 0.5  # the budget (6 s) and the requests' own time
    failures = snap.accounts[0].facts.failures
    assert failures["balance"] == "server_error"
    assert len(steps.sleeps) < 3 * 5  # without the budget: 3 retries for each of 5 parts
    assert snap.overall is Status.UNKNOWN  # blind, not green; red after unreachable_cycles


def test_a_blind_account_turns_red_after_unreachable_cycles(
        simulator: SimulatorServer, sim_state: SimState, clock: FakeClock) -> None:
    app = app_for(simulator.url, clock, max_retries=0, unreachable_cycles=2)
    sim_state.faults.server_error_every = 1
    first = app.run_cycle()
    clock.advance(5)
    second = app.run_cycle()
    assert first.overall is Status.UNKNOWN and second.overall is Status.RED
    api = next(c for c in second.checks() if c.name == "api_response_time")
    assert api.status is Status.RED and api.detail.startswith("Twilio unreadable for 2 cycles")
    sim_state.faults.server_error_every = 0
    clock.advance(5)
    assert app.run_cycle().overall is Status.GREEN


def test_the_join_waits_for_a_whole_window() -> None:
    from sms_monitor.core.joins import database_view
    from tests.snapshots import T0, account, message

    whole = account("a", [message("SM1", T0 - 60)])
    part = replace(account("b", [message("SM2", T0 - 60)]), window_unread_seconds=1200.0)
    view = database_view([whole, part], [], now=T0, window=3600, grace=300, reconcile_lag=0)
    assert not view.messages_ok  # opt-out and reconciliation checks stay unknown


def test_no_request_starts_once_the_budget_is_spent() -> None:
    import pytest

    from sms_monitor.inputs.telemetry import RequestLog
    from sms_monitor.inputs.twilio_errors import BudgetSpent, failure_kind
    from sms_monitor.inputs.twilio_http import MonitoredHttpClient

    log = RequestLog()
    client = MonitoredHttpClient("primary", log, timeout=1.0, monotonic=lambda: 100.0)
    client.deadline = 100.0
    with pytest.raises(BudgetSpent) as raised:
        client.request("GET", "http://127.0.0.1:9/2010-04-01/Accounts/AC1/Balance.json")
    assert failure_kind(raised.value) == "budget"
    assert log.freeze().counts == {}  # nothing was sent, so nothing is counted as a request
