"""Benchmark of the Twilio poller, the message window and the /metrics endpoint.

The project's Twilio simulator runs in a child process (``sms-monitor simulate``
with no background traffic), so every figure below describes the monitor alone:
its CPU time, its requests and its memory. The simulator's clock is fast-forwarded
through its control endpoints; the monitor's clock is ``time.time()`` plus the same
offset, so both agree on "now" without waiting:

1. Setup: ``POST /_simulator/load`` creates ``--messages`` (default 100,000) outbound
   messages spread over the last 3,500 s; ``POST /_simulator/clock`` then moves both
   clocks on 60 s so every message is final (delivered/undelivered) but still inside
   the 3,600 s window.
2. Backfill: the first ``App.run_cycle()`` reads the whole window. Reported:
   Twilio requests (total and per endpoint), wall and CPU time, records in the window.
3. Steady state: ``--new`` (default 1,000) messages are created over the last ~50 s
   (all newer than the newest message the monitor holds), both clocks move on 60 s,
   and one more cycle runs. Reported: requests made by that cycle, wall and CPU time.
   Target: ``requests <= ceil(new_or_changed / page_size) + 3 probes + 1``.
4. Memory: peak RSS (``ru_maxrss``) of this process, i.e. the monitor, its window and
   the benchmark's own small overhead; the simulator is not in it. Target: < 150 MB.
5. /metrics: ``--scrapes`` (default 1,000) GETs over one keep-alive connection to
   the exporter serving the last snapshot. Target: p99 < 20 ms.

CPU time is ``time.process_time`` of this process (the monitor). Wall time also
includes the simulator building its answers; the simulator's own CPU time per cycle
and its peak RSS (``VmHWM`` from Linux ``/proc``; elsewhere ``RUSAGE_CHILDREN`` once
it has exited) are printed for information only and are not part of any target.
"In flight" and "changed" counts are as seen by the monitor (its window); "new" is
the simulator's own count of messages created (the monitor's count is shown beside it).

The script never asserts: it prints figures and PASS/FAIL lines and exits 0.
The child simulator is stopped at the end, also on error (SIGINT, then SIGTERM, SIGKILL).

    python benchmarks/poller_benchmark.py [--json] [--messages N] [--new N] [--scrapes N]
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, Any
from urllib.parse import urlencode

from sms_monitor.app import App, build
from sms_monitor.config import load_settings
from sms_monitor.core.snapshot import Snapshot
from sms_monitor.core.window import MessageWindow
from sms_monitor.logs import configure as configure_logs
from sms_monitor.outputs.http import ExporterServer
from sms_monitor.simulator.state import (
    DEMO_ACCOUNT_SID,
    DEMO_AUTH_TOKEN,
    DEMO_PHONE_NUMBER,
)

HOST = "127.0.0.1"
LOAD_SPAN = 3500.0  # seconds over which the loaded messages are spread
SETTLE_ADVANCE = 60.0  # clock step after creating messages, so that all are final
NEW_SPAN = 50.0  # seconds (ending at "now") over which the steady-state messages are created
PROBES = 3  # balance, account, incoming_phone_numbers: one request each per cycle
START_TIMEOUT = 30.0  # seconds to wait for the simulator to answer
CONTROL_TIMEOUT = 120.0  # seconds for one control request (loading 100k takes a second or two)

RSS_TARGET_MB = 150.0
STEADY_SLACK = 1  # the "+1" of the steady-state request target
P99_TARGET_MS = 20.0


class SimulatorProcess:
    """``sms-monitor simulate`` in a child process, driven over its control endpoints."""

    def __init__(self, stderr: IO[bytes]) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self._stderr = stderr  # the child's stderr, shown if it fails to start

    def start(self) -> SimulatorProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sms_monitor.cli", "simulate",
             "--listen", f"{HOST}:{self.port}", "--rate", "0", "--history", "0"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                self._call("GET", "/_simulator/state", timeout=2.0)
                return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"simulator exited with {self.proc.returncode} at "
                                       f"start:\n{self.stderr_text()}") from None
                if time.monotonic() > deadline:
                    raise RuntimeError(f"simulator did not answer on {self.url} within "
                                       f"{START_TIMEOUT:.0f} s:\n{self.stderr_text()}") from None
                time.sleep(0.05)

    def stderr_text(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-2000:]

    def _call(self, method: str, path: str, fields: dict[str, Any] | None = None,
              timeout: float = CONTROL_TIMEOUT) -> Any:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=timeout)
        try:
            body = urlencode(fields or {}) if method == "POST" else None
            headers = {"Content-Type": "application/x-www-form-urlencoded"} if body else {}
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        if resp.status != 200:
            raise RuntimeError(f"simulator {method} {path}: HTTP {resp.status}: {data[:300]!r}")
        return json.loads(data)

    def state(self) -> dict[str, Any]:
        return self._call("GET", "/_simulator/state")

    def messages(self) -> int:
        return int(self.state()["accounts"][DEMO_ACCOUNT_SID])

    def load(self, count: int, span: float, before: float = 0.0) -> dict[str, Any]:
        return self._call("POST", "/_simulator/load",
                          {"count": count, "span": span, "before": before})

    def fast_forward(self, seconds: float) -> float:
        """Move the simulator's clock on; returns its new "now"."""
        return float(self._call("POST", "/_simulator/clock", {"advance": seconds})["now"])

    def cpu_seconds(self) -> float | None:
        """User + system CPU time of the child so far (Linux /proc), or None."""
        if self.proc is None:
            return None
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        # after "pid (comm)": state is fields[0]; utime and stime are stat fields 14 and 15
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mb(self) -> float | None:
        """The child's own peak RSS while it runs (VmHWM in Linux /proc), or None."""
        if self.proc is None:
            return None
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024.0  # kB
        except (OSError, ValueError, IndexError):
            pass
        return None

    def stop(self) -> int | None:
        """Stop the child and reap it; returns its exit status (0 after a clean SIGINT).

        SIGINT lets ``simulate`` close its socket and exit 0; SIGTERM, then SIGKILL, if not.
        """
        if self.proc is None:
            return None
        for stop in (lambda p: p.send_signal(signal.SIGINT), subprocess.Popen.terminate,
                     subprocess.Popen.kill):
            if self.proc.poll() is not None:
                break
            stop(self.proc)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                continue
        return self.proc.returncode


class SyncedClock:
    """The monitor's clock: wall time plus however far the simulator was fast-forwarded."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, sim: SimulatorProcess, seconds: float) -> float:
        """Fast-forward the simulator and this clock together; returns the skew in seconds:
        the simulator's "now" minus this clock at the middle of the request (a few ms at most,
        half the round trip being the uncertainty)."""
        t0 = time.time()
        sim_now = sim.fast_forward(seconds)
        t1 = time.time()
        self.offset += seconds
        return sim_now - ((t0 + t1) / 2 + self.offset)


@dataclass
class CycleFigures:
    requests: int
    by_endpoint: dict[str, int]
    request_s: dict[str, float]  # time inside Twilio requests, per endpoint
    wall_s: float
    cpu_s: float  # this process (the monitor)
    simulator_cpu_s: float | None  # the child, for information
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


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident set size (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(who).ru_maxrss / 1024.0


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


def timed_cycle(monitor: App, sim: SimulatorProcess) -> CycleFigures:
    before = request_counts(monitor.holder.current)
    seconds_before = request_seconds(monitor.holder.current)
    sim_cpu0 = sim.cpu_seconds()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    snap = monitor.run_cycle()
    wall1, cpu1 = time.perf_counter(), time.process_time()
    sim_cpu1 = sim.cpu_seconds()
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
        cpu_s=cpu1 - cpu0,
        simulator_cpu_s=None if sim_cpu0 is None or sim_cpu1 is None else sim_cpu1 - sim_cpu0,
        window_records=acc.window_records,
        overall=acc.overall.value,
        messages_ok=acc.facts.messages_ok,
    )


def in_flight(window: MessageWindow) -> dict[str, str]:
    """SID -> status of the records the monitor holds as not final yet."""
    return {sid: r.status for sid, r in window.records.items() if not r.final}


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
    res.setup["peak_rss_mb_at_start"] = peak_rss_mb()
    clock = SyncedClock()
    with tempfile.TemporaryFile() as sim_stderr:
        sim = SimulatorProcess(sim_stderr)
        try:
            _measure(args, res, clock, sim)
        finally:
            sim_peak = sim.peak_rss_mb()
            exit_status = sim.stop()
    # The only child this process has reaped is the simulator: RUSAGE_CHILDREN is a fallback
    # for VmHWM (it may also hold this process's RSS at the time of the fork).
    if sim_peak is None:
        sim_peak = peak_rss_mb(resource.RUSAGE_CHILDREN)
    res.memory |= {"simulator_peak_rss_mb": sim_peak, "simulator_exit_status": exit_status}
    return res


def _measure(args: argparse.Namespace, res: Results, clock: SyncedClock,
             sim: SimulatorProcess) -> None:
    exporter: ExporterServer | None = None
    try:
        # -- 1. simulator (child process) with an hour of settled messages ----------------
        sim.start()
        t = time.perf_counter()
        sim.load(args.messages, LOAD_SPAN)
        load_s = time.perf_counter() - t
        skew = clock.advance(sim, SETTLE_ADVANCE)
        res.setup |= {
            "simulator_pid": sim.proc.pid if sim.proc else None,
            "simulator_url": sim.url,
            "messages_loaded": args.messages,
            "simulator_messages": sim.messages(),
            "load_seconds": load_s,
            "clock_skew_ms": skew * 1000.0,
        }

        env = {
            "TWILIO_ACCOUNT_SID": DEMO_ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": DEMO_AUTH_TOKEN,
            "TWILIO_PHONE_NUMBER": DEMO_PHONE_NUMBER,
            "SMS_MONITOR_TWILIO_API_URL": sim.url,
        }
        # 100,000 messages an hour (28/s) is short-code traffic: say so, or `throughput` is red
        settings = load_settings({**env, "SMS_MONITOR_STATUSPAGE_URL": ""},
                                 {"number_type": "short_code"})
        monitor = build(settings, clock=clock)
        window = monitor.accounts[0].window

        # -- 2. backfill ------------------------------------------------------------------
        backfill = timed_cycle(monitor, sim)
        pending = in_flight(window)
        oldest = min((r.created for r in window.records.values()), default=clock())
        newest = max((r.created for r in window.records.values()), default=0.0)
        res.backfill = vars(backfill) | {
            # + 2: the first cycle also reads today's and this month's Usage Records (spend)
            "minimum_requests": math.ceil(args.messages / settings.page_size) + PROBES + 2,
            "in_flight_after": len(pending),
            "oldest_age_s": clock() - oldest,
            "peak_rss_mb_after": peak_rss_mb(),
        }

        # -- 3. steady state --------------------------------------------------------------
        sim_now = float(sim.state()["now"])
        # Dates are whole seconds on the wire, so the newest message held may be up to 1 s
        # later than ``newest``: keep the new ones clear of it.
        span = max(1.0, min(NEW_SPAN, sim_now - newest - 2.0))
        count_before = sim.messages()
        sim.load(args.new, span)
        new = sim.messages() - count_before
        skew = max(skew, clock.advance(sim, SETTLE_ADVANCE), key=abs)
        steady = timed_cycle(monitor, sim)
        new_seen = sum(1 for r in window.records.values() if r.created > newest)
        changed = sum(1 for sid, status in pending.items()
                      if (r := window.records.get(sid)) is not None and r.status != status)
        target = math.ceil((new + changed) / settings.page_size) + PROBES + STEADY_SLACK
        res.setup["clock_skew_ms"] = skew * 1000.0
        res.steady = vars(steady) | {
            "new": new,
            "new_seen": new_seen,
            "new_span_s": span,
            "new_after_newest_held_s": sim_now - span - newest,
            "changed": changed,
            "in_flight_after": len(in_flight(window)),
            "target_max_requests": target,
            "pass": steady.requests <= target,
        }

        # -- 4. memory --------------------------------------------------------------------
        rss = peak_rss_mb()
        res.memory = {"peak_rss_mb": rss, "target_mb": RSS_TARGET_MB, "pass": rss < RSS_TARGET_MB}

        # -- 5. /metrics latency ----------------------------------------------------------
        exporter = monitor.exporter((HOST, 0)).start()
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


def print_endpoints(cycle: dict[str, Any]) -> None:
    for endpoint, n in cycle["by_endpoint"].items():
        spent = cycle["request_s"][endpoint]
        print(f"  {endpoint + ':':<24} {n:>4} requests, {spent * 1000 / n:8.1f} ms mean")


def sim_cpu(seconds: float | None, scale: float, unit: str) -> str:
    if seconds is None:
        return ""
    return f" (simulator child: {seconds * scale:.{2 if unit == 's' else 1}f} {unit}, not counted)"


def print_text(res: Results) -> None:
    s, b, st, m, x = res.setup, res.backfill, res.steady, res.memory, res.metrics
    print("== setup (simulator in child process "
          f"pid {s['simulator_pid']}, {s['simulator_url']})")
    print(f"messages loaded:           {s['messages_loaded']:,} over {LOAD_SPAN:.0f} s "
          f"({s['load_seconds']:.2f} s to build; simulator holds {s['simulator_messages']:,})")
    print(f"clock skew monitor/sim:    {s['clock_skew_ms']:+.2f} ms (worst of the fast-forwards)")
    print(f"peak RSS at start:         {s['peak_rss_mb_at_start']:.1f} MB "
          f"(interpreter + imports)")
    print("== backfill (first cycle)")
    print(f"twilio requests:           {b['requests']} (minimum {b['minimum_requests']})")
    print_endpoints(b)
    print(f"wall time:                 {b['wall_s']:.2f} s")
    print(f"cpu time:                  {b['cpu_s']:.2f} s monitor process"
          f"{sim_cpu(b['simulator_cpu_s'], 1, 's')}")
    print(f"records in window:         {b['window_records']:,} "
          f"(oldest {b['oldest_age_s']:.0f} s old, {b['in_flight_after']} in flight)")
    print(f"overall / messages_ok:     {b['overall']} / {b['messages_ok']}")
    print(f"peak RSS after backfill:   {b['peak_rss_mb_after']:.1f} MB")
    print("== steady state (next cycle)")
    print(f"new / changed messages:    {st['new']:,} / {st['changed']:,} "
          f"(new created over {st['new_span_s']:.0f} s, from "
          f"{st['new_after_newest_held_s']:.0f} s after the newest held; "
          f"monitor saw {st['new_seen']:,} new)")
    print(f"twilio requests:           {st['requests']}")
    print_endpoints(st)
    print(f"wall time:                 {st['wall_s'] * 1000:.1f} ms")
    print(f"cpu time:                  {st['cpu_s'] * 1000:.1f} ms monitor process"
          f"{sim_cpu(st['simulator_cpu_s'], 1000, 'ms')}")
    print(f"records in window:         {st['window_records']:,} "
          f"({st['in_flight_after']} in flight)")
    print(f"overall / messages_ok:     {st['overall']} / {st['messages_ok']}")
    print(f"{verdict(st['pass'])} steady-state requests {st['requests']} <= "
          f"ceil({st['new'] + st['changed']}/1000) + {PROBES} + {STEADY_SLACK} = "
          f"{st['target_max_requests']}")
    print("== memory")
    print(f"{verdict(m['pass'])} peak RSS {m['peak_rss_mb']:.1f} MB < {m['target_mb']:.0f} MB "
          f"(monitor process only)")
    print(f"simulator child peak RSS:  {m['simulator_peak_rss_mb']:.1f} MB "
          f"(information only, not part of the target; exit status "
          f"{m['simulator_exit_status']})")
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
