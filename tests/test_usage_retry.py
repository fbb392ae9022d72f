"""A failed Usage Records read waits for usage_interval like a good one."""

from __future__ import annotations

from sms_monitor.simulator.server import SimulatorServer
from tests.conftest import FakeClock
from tests.test_poller import make_monitor


def test_a_failed_usage_read_waits_for_the_interval(simulator: SimulatorServer,
                                                     clock: FakeClock) -> None:
    monitor = make_monitor(simulator.url, clock, usage_interval="10m")
    poller = monitor.accounts[0].poller
    tries: list[float] = []

    def failing(failures: dict[str, str]) -> None:
        tries.append(clock())
        failures["usage"] = "server_error"
        return None

    poller.read_usage = failing  # type: ignore[method-assign]
    snap = monitor.run_cycle()
    assert len(tries) == 1 and snap.accounts[0].up  # counted, never an outage
    assert snap.accounts[0].poll_errors[("usage", "server_error")] == 1
    for _ in range(5):
        clock.advance(60)
        monitor.run_cycle()
    assert len(tries) == 1  # not retried each cycle
    clock.advance(600)
    monitor.run_cycle()
    assert len(tries) == 2


def test_usage_is_asked_again_next_cycle_when_twilio_was_unreachable(
        simulator: SimulatorServer, clock: FakeClock) -> None:
    """Skipped, not failed: the Balance probe found Twilio unreachable, nothing was asked."""
    monitor = make_monitor(simulator.url, clock, usage_interval="10m")
    account = monitor.accounts[0]
    real = account.poller.poll
    calls: list[bool] = []

    def poll(horizon: float, read_usage: bool = False, **kw: object):  # type: ignore[no-untyped-def]
        calls.append(read_usage)
        return real(horizon, read_usage=False, **kw)  # type: ignore[arg-type]

    account.poller.poll = poll  # type: ignore[method-assign,assignment]
    monitor.run_cycle()
    clock.advance(60)
    monitor.run_cycle()
    assert calls == [True, True]
