"""Benchmark of the Twilio poller, the message window and the /metrics endpoint.

Everything runs in one process against the project's own Twilio simulator, on a
fake clock shared by the simulator and the monitor, so time can be moved forward
without waiting:

1. Setup: the simulator holds ``--messages`` (default 100,000) settled outbound
   messages spread over the last 3,500 s; the clock then moves on 60 s so every
   message is final (delivered/undelivered) but still inside the 3,600 s window.
2. Backfill: the first ``Monitor.run_cycle()`` reads the whole window. Reported:
   Twilio requests (total and per endpoint), wall and CPU time, records in the window.
3. Steady state: ``--new`` (default 1,000) messages are created just after the
   previous poll, the clock moves on 60 s, and one more cycle runs. Reported:
   requests made by that cycle, wall and CPU time. Target:
   ``requests <= ceil(new_or_changed / page_size) + 3 probes + 1``.
4. Memory: peak RSS of the whole process (simulator included). Target: < 150 MB.
5. /metrics: ``--scrapes`` (default 1,000) GETs over one keep-alive connection to
   the exporter serving the last snapshot. Target: p99 < 20 ms.

CPU time is reported twice: ``process`` (``time.process_time``, all threads, so it
includes the in-process simulator serialising JSON) and ``monitor thread``
(``time.thread_time`` of the thread running the cycle, i.e. the poller, the twilio
client and the window, without the simulator's server threads).

The script never asserts: it prints figures and PASS/FAIL lines and exits 0.

    python benchmarks/poller_benchmark.py [--json] [--messages N] [--new N] [--scrapes N]
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import resource
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sms_monitor.config import load_settings
from sms_monitor.core.records import FINAL_STATUSES
from sms_monitor.core.snapshot import Snapshot
from sms_monitor.export.http import ExporterServer
from sms_monitor.logs import configure as configure_logs
from sms_monitor.monitor import Monitor
from sms_monitor.simulator.server import SimulatorServer
from sms_monitor.simulator.state import (
    DEMO_ACCOUNT_SID,
    DEMO_AUTH_TOKEN,
    DEMO_PHONE_NUMBER,
    SimState,
)

T0 = 1_780_000_000.0  # simulated "now" at load time (fixed, for reproducible figures)
LOAD_SPAN = 3500.0  # seconds over which the loaded messages are spread
SETTLE_ADVANCE = 60.0  # clock step after creating messages, so that all are final
NEW_SPAN = 30.0  # seconds after the previous poll over which the new messages are created
PROBES = 3  # balance, account, incoming_phone_numbers: one request each per cycle

RSS_TARGET_MB = 150.0
STEADY_SLACK = 1  # the "+1" of the steady-state request target
P99_TARGET_MS = 20.0


class FakeClock:
    """A callable clock that only moves when told to."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class CycleFigures:
    requests: int
    by_endpoint: dict[str, int]
    request_s: dict[str, float]  # time inside Twilio requests, per endpoint
    wall_s: float
    cpu_process_s: float
    cpu_thread_s: float
    window_records: int
    overall: str
    messages_ok: bool


@dataclass
class Results:
    setup: dict[str, Any] = field(default_factory=dict)
    backfill: dict[str, Any] = field(default_factory=dict)
    steady: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)


def peak_rss_mb() -> float:
    """Peak resident set size of this process (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def request_counts(snap: Snapshot | None) -> Counter[str]:
    """Cumulative Twilio requests per endpoint (all accounts, all status codes)."""
    out: Counter[str] = Counter()
    if snap is not None:
        for (_account, endpoint, _code), n in snap.requests.counts.items():
            out[endpoint] += n
    return out


def request_seconds(snap: Snapshot | None) -> dict[str, float]:
    """Cumulative seconds spent in Twilio requests per endpoint, as the monitor timed them."""
    out: dict[str, float] = {}
    if snap is not None:
        for (_account, endpoint), hist in snap.requests.durations.items():
            out[endpoint] = out.get(endpoint, 0.0) + hist.total
    return out


def timed_cycle(monitor: Monitor) -> CycleFigures:
    before = request_counts(monitor.holder.current)
    seconds_before = request_seconds(monitor.holder.current)
    wall0, cpu0, thr0 = time.perf_counter(), time.process_time(), time.thread_time()
    snap = monitor.run_cycle()
    wall1, cpu1, thr1 = time.perf_counter(), time.process_time(), time.thread_time()
    delta = request_counts(snap)
    delta.subtract(before)
    by_endpoint = {k: v for k, v in sorted(delta.items()) if v}
    seconds = request_seconds(snap)
    acc = snap.accounts[0]
    return CycleFigures(
        requests=sum(by_endpoint.values()),
        by_endpoint=by_endpoint,
        request_s={k: seconds.get(k, 0.0) - seconds_before.get(k, 0.0) for k in by_endpoint},
        wall_s=wall1 - wall0,
        cpu_process_s=cpu1 - cpu0,
        cpu_thread_s=thr1 - thr0,
        window_records=acc.window_records,
        overall=acc.overall.value,
        messages_ok=acc.facts.messages_ok,
    )


def status_map(state: SimState, now: float) -> dict[str, str]:
    """SID -> status the simulator would answer at ``now``."""
    with state.lock:
        acc = state.accounts[DEMO_ACCOUNT_SID]
        return {m.sid: m.status_at(now)[0] for m in acc.messages}


def in_flight(state: SimState, now: float) -> int:
    return sum(1 for s in status_map(state, now).values() if s not in FINAL_STATUSES)


def scrape(url_host: str, port: int, count: int) -> tuple[list[float], int, int]:
    """``count`` GET /metrics on one keep-alive connection: (latencies in s, bytes, non-200)."""
    conn = http.client.HTTPConnection(url_host, port, timeout=10)
    latencies: list[float] = []
    size = errors = 0
    try:
        for _ in range(count):
            started = time.perf_counter()
            conn.request("GET", "/metrics")
            resp = conn.getresponse()
            body = resp.read()
            latencies.append(time.perf_counter() - started)
            size = len(body)
            if resp.status != 200:
                errors += 1
    finally:
        conn.close()
    return latencies, size, errors


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def run(args: argparse.Namespace) -> Results:
    res = Results()
    rss_before_load = peak_rss_mb()
    clock = FakeClock(T0)

    # -- 1. simulator with a full hour of settled messages ------------------------------
    state = SimState(clock=clock, rate_per_minute=0, history_seconds=0)
    state.add_account(DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN, DEMO_PHONE_NUMBER)
    t = time.perf_counter()
    state.load(DEMO_ACCOUNT_SID, args.messages, LOAD_SPAN)
    load_s = time.perf_counter() - t
    clock.advance(SETTLE_ADVANCE)
    res.setup = {
        "messages_loaded": args.messages,
        "load_seconds": load_s,
        "in_flight_at_backfill": in_flight(state, clock()),
        "oldest_age_s": LOAD_SPAN + SETTLE_ADVANCE,
        "peak_rss_mb_before_load": rss_before_load,
        "peak_rss_mb_after_load": peak_rss_mb(),
    }

    simulator = SimulatorServer(("127.0.0.1", 0), state).start()
    exporter: ExporterServer | None = None
    try:
        env = {
            "TWILIO_ACCOUNT_SID": DEMO_ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": DEMO_AUTH_TOKEN,
            "TWILIO_PHONE_NUMBER": DEMO_PHONE_NUMBER,
            "SMS_MONITOR_TWILIO_API_URL": simulator.url,
        }
        settings = load_settings(env, {})
        monitor = Monitor(settings, clock=clock)

        # -- 2. backfill ------------------------------------------------------------------
        backfill = timed_cycle(monitor)
        res.backfill = vars(backfill) | {
            "minimum_requests": math.ceil(args.messages / settings.page_size) + PROBES,
            "peak_rss_mb_after": peak_rss_mb(),
        }

        # -- 3. steady state --------------------------------------------------------------
        previous_poll = clock()
        before = status_map(state, previous_poll)
        with state.lock:
            acc = state.accounts[DEMO_ACCOUNT_SID]
            step = NEW_SPAN / max(1, args.new)
            for i in range(args.new):
                state.create_message(acc, previous_poll + (i + 1) * step)
        clock.advance(SETTLE_ADVANCE)
        after = status_map(state, clock())
        new = len(after.keys() - before.keys())
        changed = sum(1 for sid, s in before.items() if after.get(sid) != s)
        steady = timed_cycle(monitor)
        target = math.ceil((new + changed) / settings.page_size) + PROBES + STEADY_SLACK
        res.steady = vars(steady) | {
            "new": new,
            "changed": changed,
            "in_flight_at_poll": in_flight(state, clock()),
            "target_max_requests": target,
            "pass": steady.requests <= target,
        }

        # -- 4. memory --------------------------------------------------------------------
        rss = peak_rss_mb()
        res.memory = {"peak_rss_mb": rss, "target_mb": RSS_TARGET_MB, "pass": rss < RSS_TARGET_MB}

        # -- 5. /metrics latency ----------------------------------------------------------
        exporter = ExporterServer(("127.0.0.1", 0), monitor.holder).start()
        host, port = exporter.server_address[:2]
        latencies, size, errors = scrape(str(host), int(port), args.scrapes)
        ms = sorted(x * 1000.0 for x in latencies)
        p99 = statistics.quantiles(ms, n=100, method="inclusive")[98] if len(ms) > 1 else ms[0]
        res.metrics = {
            "scrapes": len(ms),
            "non_200": errors,
            "body_bytes": size,
            "median_ms": statistics.median(ms),
            "p99_ms": p99,
            "max_ms": ms[-1],
            "target_p99_ms": P99_TARGET_MS,
            "pass": p99 < P99_TARGET_MS,
        }
    finally:
        if exporter is not None:
            exporter.stop()
        simulator.stop()
    return res


def print_endpoints(cycle: dict[str, Any]) -> None:
    for endpoint, n in cycle["by_endpoint"].items():
        spent = cycle["request_s"][endpoint]
        print(f"  {endpoint + ':':<24} {n:>4} requests, {spent * 1000 / n:8.1f} ms mean")


def print_text(res: Results) -> None:
    s, b, st, m, x = res.setup, res.backfill, res.steady, res.memory, res.metrics
    print("== setup")
    print(f"messages loaded:           {s['messages_loaded']:,} over {LOAD_SPAN:.0f} s "
          f"({s['load_seconds']:.2f} s to build)")
    print(f"in flight at backfill:     {s['in_flight_at_backfill']} "
          f"(oldest message {s['oldest_age_s']:.0f} s old)")
    print(f"peak RSS pre/post load:   {s['peak_rss_mb_before_load']:.1f} / "
          f"{s['peak_rss_mb_after_load']:.1f} MB (interpreter + imports / + simulator data)")
    print("== backfill (first cycle)")
    print(f"twilio requests:           {b['requests']} (minimum {b['minimum_requests']})")
    print_endpoints(b)
    print(f"wall time:                 {b['wall_s']:.2f} s")
    print(f"cpu time:                  {b['cpu_process_s']:.2f} s process, "
          f"{b['cpu_thread_s']:.2f} s monitor thread")
    print(f"records in window:         {b['window_records']:,}")
    print(f"overall / messages_ok:     {b['overall']} / {b['messages_ok']}")
    print(f"peak RSS after backfill:   {b['peak_rss_mb_after']:.1f} MB")
    print("== steady state (next cycle)")
    print(f"new / changed messages:    {st['new']:,} / {st['changed']:,} "
          f"(in flight at poll: {st['in_flight_at_poll']})")
    print(f"twilio requests:           {st['requests']}")
    print_endpoints(st)
    print(f"wall time:                 {st['wall_s'] * 1000:.1f} ms")
    print(f"cpu time:                  {st['cpu_process_s'] * 1000:.1f} ms process, "
          f"{st['cpu_thread_s'] * 1000:.1f} ms monitor thread")
    print(f"records in window:         {st['window_records']:,}")
    print(f"overall / messages_ok:     {st['overall']} / {st['messages_ok']}")
    print(f"{verdict(st['pass'])} steady-state requests {st['requests']} <= "
          f"ceil({st['new'] + st['changed']}/1000) + {PROBES} + {STEADY_SLACK} = "
          f"{st['target_max_requests']}")
    print("== memory")
    print(f"{verdict(m['pass'])} peak RSS {m['peak_rss_mb']:.1f} MB < {m['target_mb']:.0f} MB "
          f"(whole process, simulator included)")
    print("== /metrics")
    print(f"scrapes:                   {x['scrapes']} ({x['non_200']} non-200, "
          f"{x['body_bytes']:,} bytes each)")
    print(f"median / p99 / max:        {x['median_ms']:.2f} / {x['p99_ms']:.2f} / "
          f"{x['max_ms']:.2f} ms")
    print(f"{verdict(x['pass'])} /metrics p99 {x['p99_ms']:.2f} ms < {x['target_p99_ms']:.0f} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    parser.add_argument("--messages", type=int, default=100_000, help="messages in the last hour")
    parser.add_argument("--new", type=int, default=1_000, help="messages added before the 2nd cycle")
    parser.add_argument("--scrapes", type=int, default=1_000, help="GET /metrics requests")
    args = parser.parse_args(argv)

    # The monitor logs one INFO line per poll; keep stdout for the figures.
    configure_logs("warning", stream=sys.stderr)
    res = run(args)
    if args.json:
        print(json.dumps(vars(res), indent=2, sort_keys=True))
    else:
        print_text(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
