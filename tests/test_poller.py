"""The Twilio poller through the real twilio client against the simulator."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sms_monitor.app import App, build
from sms_monitor.core.classify import Status
from sms_monitor.core.snapshot import Snapshot
from sms_monitor.simulator.server import SimulatorServer
from sms_monitor.simulator.state import DEMO_ACCOUNT_SID, SimState
from tests.conftest import FakeClock, SleepRecorder, settings_for


def statuses(snap: Snapshot) -> dict[str, Status]:
    return {c.name: c.status for c in snap.checks()}


def requests_to(snap: Snapshot, endpoint: str, code: str | None = None) -> int:
    return sum(n for (_, ep, c), n in snap.requests.counts.items()
               if ep == endpoint and (code is None or c == code))


def make_monitor(url: str, clock: FakeClock, sleep: SleepRecorder | None = None,
                 **file: object) -> App:
    return build(settings_for(url, **file), clock=clock, sleep=sleep or SleepRecorder())


def test_backfill_reads_the_window_across_pages(simulator: SimulatorServer, sim_state: SimState,
                                                clock: FakeClock) -> None:
    sim_state.advance()
    sim_state.load(DEMO_ACCOUNT_SID, 500, 3600, before=3600)  # older history beyond the window
    acc = sim_state.accounts[DEMO_ACCOUNT_SID]
    in_window = [m for m in acc.messages if m.created >= clock() - 3600]
    monitor = make_monitor(simulator.url, clock, page_size=100)
    snap = monitor.run_cycle()
    state = monitor.accounts[0]
    assert len(state.window) == len(in_window)
    pages = requests_to(snap, "messages")
    assert pages == len(in_window) // 100 + 1
    assert statuses(snap)["overall"] is Status.GREEN
    outbound = sum(1 for m in in_window if m.outbound)
    assert snap.accounts[0].stats is not None
    assert snap.accounts[0].stats.outbound == outbound


def test_incremental_cycles_fetch_only_new_and_see_statuses_change(
        simulator: SimulatorServer, sim_state: SimState, clock: FakeClock) -> None:
    monitor = make_monitor(simulator.url, clock, page_size=100)
    monitor.run_cycle()
    window = monitor.accounts[0].window
    backfill_pages = monitor.requests_log.freeze().counts[("primary", "messages", "200")]

    clock.advance(5)  # 5 new messages at 60/min, still queued or sent (they settle in ~4 s)
    snap = monitor.run_cycle()
    pages = snap.requests.counts[("primary", "messages", "200")] - backfill_pages
    assert pages == 1
    acc = sim_state.accounts[DEMO_ACCOUNT_SID]
    assert set(window.records) == {m.sid for m in acc.messages if m.created >= clock() - 3600}
    stats = snap.accounts[0].stats
    assert stats is not None
    in_flight = sum(n for (d, s), n in stats.by_status.items()
                    if d == "outbound" and s in ("queued", "sent"))
    assert in_flight >= 3

    delivered_sids = {sid for sid, r in window.records.items() if r.delivered}
    observed = window.latency.count
    clock.advance(120)  # every one of them has settled; 120 more arrived meanwhile
    snap = monitor.run_cycle()
    stats = snap.accounts[0].stats
    assert stats is not None
    in_flight = sum(n for (d, s), n in stats.by_status.items()
                    if d == "outbound" and s in ("queued", "sent"))
    assert in_flight < 10  # only the newest few seconds are still in flight
    newly_delivered = {sid for sid, r in window.records.items() if r.delivered} - delivered_sids
    assert len(newly_delivered) > 100
    # each delivered message entered the latency histogram exactly once
    assert window.latency.count - observed == len(newly_delivered)
    observed = window.latency.count
    # a poll that sees nothing new still costs one page
    pages_before = snap.requests.counts[("primary", "messages", "200")]
    snap = monitor.run_cycle()
    assert snap.requests.counts[("primary", "messages", "200")] - pages_before == 1
    assert window.latency.count == observed


def test_rate_limited_requests_are_retried_honouring_retry_after(
        simulator: SimulatorServer, sim_state: SimState, clock: FakeClock) -> None:
    sim_state.set_scenario("rate_limited")  # every second request answers 429, Retry-After: 1
    sleep = SleepRecorder()
    snap = make_monitor(simulator.url, clock, sleep).run_cycle()
    assert statuses(snap)["overall"] is Status.GREEN
    limited = sum(n for (_, _, code), n in snap.requests.counts.items() if code == "429")
    assert limited >= 2
    assert sleep.delays and all(d == 1.0 for d in sleep.delays)
    assert snap.requests.retries[("primary", "429")] == limited
    assert snap.accounts[0].up


def test_persistent_server_errors_give_up_and_leave_checks_unknown(
        simulator: SimulatorServer, sim_state: SimState, clock: FakeClock) -> None:
    sim_state.faults.server_error_every = 1
    sleep = SleepRecorder()
    snap = make_monitor(simulator.url, clock, sleep, max_retries=2).run_cycle()
    st = statuses(snap)
    assert st["balance"] is Status.UNKNOWN
    assert st["delivery_rate"] is Status.UNKNOWN
    assert st["api_response_time"] is Status.UNKNOWN  # 5xx: unknown, not red (contract)
    assert st["overall"] is Status.UNKNOWN
    assert not snap.accounts[0].up
    # 5 parts (balance, account, number, usage, messages) x (1 try + 2 retries)
    assert requests_to(snap, "balance", "503") == 3
    assert len(sleep.delays) == 10
    assert sleep.delays[1] > sleep.delays[0] * 0.99 or sleep.delays[1] >= 0.5


def test_timeout_makes_api_response_time_red(simulator: SimulatorServer, sim_state: SimState,
                                             clock: FakeClock) -> None:
    sim_state.faults.delay = 0.6
    snap = make_monitor(simulator.url, clock, request_timeout="0.2s").run_cycle()
    st = statuses(snap)
    assert st["api_response_time"] is Status.RED
    assert st["overall"] is Status.RED
    assert st["balance"] is Status.UNKNOWN
    assert snap.accounts[0].facts.failures["balance"] == "timeout"
    assert requests_to(snap, "balance", "error") == 1  # a timeout is not retried


def test_auth_failure_marks_authentication_red(simulator: SimulatorServer, sim_state: SimState,
                                               clock: FakeClock) -> None:
    sim_state.set_scenario("auth_failure")
    snap = make_monitor(simulator.url, clock).run_cycle()
    st = statuses(snap)
    assert st["authentication"] is Status.RED
    assert st["overall"] is Status.RED
    assert st["account_status"] is Status.UNKNOWN
    assert requests_to(snap, "balance", "401") == 1  # 401 is not retried


def test_malformed_message_page_leaves_message_checks_unknown_and_recovers(
        simulator: SimulatorServer, sim_state: SimState, clock: FakeClock) -> None:
    monitor = make_monitor(simulator.url, clock)
    sim_state.faults.malformed_messages = True
    snap = monitor.run_cycle()
    st = statuses(snap)
    assert st["delivery_rate"] is Status.UNKNOWN
    assert st["balance"] is Status.GREEN
    assert snap.accounts[0].facts.failures == {"messages": "malformed"}
    sim_state.faults.malformed_messages = False
    clock.advance(60)
    snap = monitor.run_cycle()
    assert statuses(snap)["delivery_rate"] is Status.GREEN


def test_endless_next_page_uri_is_caught_and_never_judged(
        simulator: SimulatorServer, sim_state: SimState, clock: FakeClock) -> None:
    sim_state.faults.endless_paging = True
    snap = make_monitor(simulator.url, clock, page_size=50, max_pages=5).run_cycle()
    # the second page goes back to the first page's messages: the read stops there
    assert requests_to(snap, "messages") == 2
    assert snap.accounts[0].window_records == 50  # the first page, counted once
    assert not snap.accounts[0].window_complete
    st = statuses(snap)
    assert st["delivery_rate"] is Status.UNKNOWN and st["error_rate"] is Status.UNKNOWN
    assert "paging went back" in next(c.detail for c in snap.checks() if c.name == "delivery_rate")
    assert snap.overall is Status.UNKNOWN


def test_outage_connection_errors_are_red_and_retried(
        simulator: SimulatorServer, sim_state: SimState, clock: FakeClock) -> None:
    sim_state.set_scenario("outage")
    sleep = SleepRecorder()
    snap = make_monitor(simulator.url, clock, sleep, max_retries=1).run_cycle()
    st = statuses(snap)
    assert st["api_response_time"] is Status.RED
    assert st["authentication"] is Status.UNKNOWN
    # the probe is retried; the other parts are not asked once Twilio is known unreachable
    assert snap.requests.retries[("primary", "connection")] == 1
    assert requests_to(snap, "balance", "error") == 2
    assert snap.accounts[0].facts.failures == {"balance": "connection", "account": "skipped",
                                               "phone_number": "skipped", "messages": "skipped"}


@pytest.fixture
def scenario_sim(request: pytest.FixtureRequest, clock: FakeClock) -> Iterator[SimulatorServer]:
    state = SimState(clock=clock, rate_per_minute=60.0, history_seconds=3600.0,
                     scenario=request.param)
    from sms_monitor.simulator.state import DEMO_AUTH_TOKEN, DEMO_PHONE_NUMBER
    state.add_account(DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN, DEMO_PHONE_NUMBER)
    server = SimulatorServer(("127.0.0.1", 0), state).start()
    yield server
    server.stop()


@pytest.mark.parametrize(
    ("scenario_sim", "check", "expected", "overall"),
    [
        ("healthy", "delivery_rate", Status.GREEN, Status.GREEN),
        ("degraded_delivery", "delivery_rate", Status.RED, Status.RED),
        ("carrier_filtering", "carrier_filtering", Status.YELLOW, Status.YELLOW),
        ("low_balance", "balance", Status.YELLOW, Status.YELLOW),
        ("out_of_credit", "balance", Status.RED, Status.RED),
        ("suspended", "account_status", Status.RED, Status.RED),
        ("number_lost", "phone_number", Status.RED, Status.RED),
    ],
    indirect=["scenario_sim"],
)
def test_scenarios_show_their_colours(scenario_sim: SimulatorServer, clock: FakeClock,
                                      check: str, expected: Status, overall: Status) -> None:
    snap = make_monitor(scenario_sim.url, clock).run_cycle()
    st = statuses(snap)
    assert st[check] is expected
    assert st["overall"] is overall


SUB_SID = "AC" + "5ab" * 10 + "5a"
SUB_TOKEN = "0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f"


def test_several_accounts_are_polled_and_one_crash_spares_the_others(
        simulator: SimulatorServer, sim_state: SimState, clock: FakeClock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    sim_state.add_account(SUB_SID, SUB_TOKEN, "+15005550009")
    sim_state.advance()
    monitor = make_monitor(simulator.url, clock, accounts=[
        {"name": "clinic-west", "account_sid": SUB_SID, "auth_token": SUB_TOKEN,
         "phone_number": "+15005550009"}])
    snap = monitor.run_cycle()
    assert [a.account for a in snap.accounts] == ["primary", "clinic-west"]
    assert all(a.overall is Status.GREEN for a in snap.accounts)
    assert snap.requests.counts[("clinic-west", "balance", "200")] == 1

    def boom(horizon: float) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(monitor.accounts[0].poller, "poll", boom)
    snap = monitor.run_cycle()
    primary, west = snap.accounts
    assert primary.overall is Status.UNKNOWN and not primary.up
    assert primary.poll_errors == {("poll", "internal"): 1}
    assert west.overall is Status.GREEN and west.up


def test_spend_is_read_every_usage_interval_and_checked_against_the_budget(
        simulator: SimulatorServer, sim_state: SimState, clock: FakeClock) -> None:
    monitor = make_monitor(simulator.url, clock, monthly_budget=0.01, usage_interval="10m")
    snap = monitor.run_cycle()
    f = snap.accounts[0].facts
    assert f.spend_month is not None and f.spend_today is not None
    assert f.spend_month >= f.spend_today > 0
    st = statuses(snap)
    assert st["budget"] is Status.RED  # a cent a month is soon spent
    assert requests_to(snap, "usage_records") == 2  # today and this month
    clock.advance(60)
    snap = monitor.run_cycle()
    assert requests_to(snap, "usage_records") == 2  # not due again yet: figures carried over
    assert snap.accounts[0].facts.spend_month == f.spend_month
    clock.advance(600)
    snap = monitor.run_cycle()
    assert requests_to(snap, "usage_records") == 4
    stats = snap.accounts[0].stats
    assert stats is not None
    assert stats.spend_by_country["1"] == pytest.approx(0.0079 * stats.settled, rel=0.05)
    assert stats.segments_per_message == 1.0 and stats.international_ratio == 0.0


def test_api_response_time_leaves_out_retry_after_waits(
        simulator: SimulatorServer, sim_state: SimState, clock: FakeClock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import time as time_module

    waited = [0.0]
    real = time_module.monotonic
    monkeypatch.setattr(time_module, "monotonic", lambda: real() + waited[0])

    def sleep(seconds: float) -> None:  # a back-off that moves the monotonic clock, instantly
        waited[0] += seconds

    sim_state.set_scenario("rate_limited")
    for _ in range(2):  # whichever parity the simulator's counter has, one cycle's balance
        snap = make_monitor(simulator.url, clock, sleep).run_cycle()  # probe is refused once
        if requests_to(snap, "balance", "429"):
            break
    assert requests_to(snap, "balance", "429") == 1 and waited[0] >= 1.0
    seconds = snap.accounts[0].facts.balance_seconds
    assert seconds is not None and seconds < 0.5  # the Retry-After second is not Twilio's
    assert statuses(snap)["api_response_time"] is Status.GREEN
