"""Benchmark of Twilio status callbacks (``POST /twilio/status``) on loopback, signatures on.

Target: at least 500 callbacks per second at p99 < 50 ms, the server on one core.

Server (a child process, ``multiprocessing`` with ``spawn``): pinned to one core
(``--cpu``, default 0) with ``os.sched_setaffinity`` where the platform has it, it runs
``ExporterServer(("127.0.0.1", 0), SnapshotHolder(), callbacks=CallbackInbox(...))`` with
one account, so every request's signature is checked by twilio's ``RequestValidator``. The
per-source rate limit is set high enough never to bite (``--rate-limit``; the daemon's own
is 1,200 a minute). A thread drains the inbox every 0.5 s, as the daemon's cycle would, so
its queue stays short. The parent asks the child over a pipe for its CPU time
(``getrusage(RUSAGE_SELF)``, all threads) and ``inbox.counts()`` at the start and end of
each timed run, so the CPU figure covers the run alone.

Load generator (``--procs`` child processes, default one per core not given to the server,
at most ``--connections``): ``--connections`` (default 8) keep-alive
``http.client.HTTPConnection``s in all, one thread each, pinned to the cores the server does
not use when there are any. Each connection is opened and used once (``GET /healthz``)
before the timed part, one after another, so the timed part runs on warm connections;
failed tries there are printed with the machine's listen-queue overflows. Every request is
a form-encoded callback as Twilio sends it (``AccountSid``, ``MessageSid`` unique per
request, ``MessageStatus`` cycling queued/sent/delivered, ``From``, ``To``, ``ApiVersion``)
with its ``X-Twilio-Signature`` computed by ``RequestValidator(token).compute_signature``
over the URL and parameters *before* the timed part (should a pool run out, the rest are
signed on the fly and counted as "signed live").

Runs, each printed as a block of figures:

1. warm-up (``--warmup`` s, closed loop): not judged; sizes the closed loop's pools.
2. closed loop (``--duration`` s): every connection sends its next request as soon as the
   previous answer is in: the maximum throughput. Latency = send to answer.
3. open loop at ``--rate`` requests/s (default 500, 0 to skip), spread evenly over the
   connections: each request has a due time and latency is measured from it, so a server
   that falls behind is charged for the wait (no coordinated omission); send to answer
   ("service") is printed beside it. PASS/FAIL: achieved >= 99 % of the offered rate,
   p99 < 50 ms, no non-2xx, no transport errors.

Beside the server's CPU time, the generator's and how busy both sides' cores were (all
processes, Linux ``/proc/stat``) are printed: with the server's core near 100 % the server
is the limit; the machine's other load shows as the difference. On a virtual machine the
server's CPU time can include time the hypervisor stole from its core (printed apart).

Exit status 1 if any request failed with a transport error (connection refused or reset,
timeout, malformed answer) or a child failed to start, answer or report; else 0, whatever
PASS/FAIL says.

    python benchmarks/callback_benchmark.py [--duration 10] [--connections 8] [--rate 500]
                                            [--cpu 0] [--procs N] [--warmup 2]
                                            [--rate-limit N] [--no-closed] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import resource
import secrets
import sys
import threading
import time
from array import array
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlencode

from twilio.request_validator import RequestValidator

from sms_monitor.core.snapshot import SnapshotHolder
from sms_monitor.inputs.webhooks import STATUS_PATH, CallbackInbox
from sms_monitor.outputs.http import ExporterServer

HOST = "127.0.0.1"
ACCOUNT_SID = "AC" + "b3" * 16
FROM = "+15005550006"
TO = "+15558675310"
STATUSES = ("queued", "sent", "delivered")
RATE_LIMIT = 10**9  # per source per minute: never reached (--rate-limit)
DRAIN_EVERY = 0.5  # seconds, as the daemon's cycle would
REQUEST_TIMEOUT = 10.0  # seconds for one request (connect, send, answer)
START_TIMEOUT = 30.0  # seconds for a child to start (spawn, imports) and report ready
CONTROL_TIMEOUT = 10.0  # seconds for the server to answer a control message
PREPARE_TIMEOUT = 300.0  # seconds for a generator to sign its pool
START_DELAY = 0.3  # seconds between "go" and the first request, so all start together
SETUP_TRIES = 5  # attempts to open each connection before the timed part
MAX_CONSECUTIVE_ERRORS = 50  # a connection gives up after this many transport errors in a row
WARMUP_POOL_RATE = 5_000  # requests/s the warm-up's pools are sized for
POOL_HEADROOM = 3.0  # closed-loop pools: warm-up rate times this (connections are not served evenly)
POOL_EXTRA = 200  # and this many more per connection

TARGET_RATE = 500.0
TARGET_P99_MS = 50.0


# --------------------------------------------------------------------------- server child


def outcome_name(key: Any) -> str:
    """``inbox.counts()`` keys: an outcome, or (endpoint, outcome) in newer versions."""
    return "/".join(map(str, key)) if isinstance(key, tuple) else str(key)


def accepted_of(counts: dict[str, int]) -> int:
    """Accepted status callbacks in counts keyed by :func:`outcome_name`."""
    return counts.get("accepted", 0) + counts.get("status/accepted", 0)


def server_main(pipe: multiprocessing.connection.Connection, cpu: int | None, token: str,
                rate_limit: int) -> None:
    """The server child: serve until told to stop, answering control messages on ``pipe``."""
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    inbox = CallbackInbox({ACCOUNT_SID: token}, rate_per_minute=rate_limit)
    server = ExporterServer((HOST, 0), SnapshotHolder(), callbacks=inbox).start()
    drained = 0
    lock = threading.Lock()
    stopping = threading.Event()

    def drain() -> None:
        nonlocal drained
        while not stopping.wait(DRAIN_EVERY):
            n = len(inbox.drain())
            with lock:
                drained += n

    drainer = threading.Thread(target=drain, name="drain", daemon=True)
    drainer.start()

    def stats() -> dict[str, Any]:
        use = resource.getrusage(resource.RUSAGE_SELF)
        with lock:
            n = drained
        counts = {outcome_name(k): v for k, v in inbox.counts().items()}
        return {"cpu_s": use.ru_utime + use.ru_stime, "counts": counts, "drained": n,
                "peak_rss_mb": use.ru_maxrss / 1024.0,
                "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                else None}

    pipe.send({"port": server.server_address[1], "pid": os.getpid()})
    try:
        while True:
            try:
                command = pipe.recv()
            except EOFError:  # the parent is gone
                break
            if command == "stats":
                pipe.send(stats())
            elif command == "stop":
                break
    finally:
        server.stop()
        stopping.set()
        drainer.join(timeout=5)
        drained += len(inbox.drain())
        with contextlib.suppress(OSError):
            pipe.send(stats())


def receive(pipe: multiprocessing.connection.Connection, proc: Any, timeout: float,
            who: str) -> Any:
    """The next message from a child, or RuntimeError if it dies or times out first."""
    deadline = time.monotonic() + timeout
    while not pipe.poll(0.2):
        if not proc.is_alive():
            if pipe.poll(0):  # it said something before it went
                break
            raise RuntimeError(f"{who} exited with {proc.exitcode} before answering")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{who} did not answer within {timeout:.0f} s")
    try:
        return pipe.recv()
    except EOFError:
        raise RuntimeError(f"{who} closed its pipe (exit code {proc.exitcode})") from None


class ServerProcess:
    def __init__(self, ctx: Any, cpu: int | None, token: str, rate_limit: int) -> None:
        self._pipe, child = ctx.Pipe()
        self.proc = ctx.Process(target=server_main, args=(child, cpu, token, rate_limit),
                                name="callback-server", daemon=True)
        self.proc.start()
        child.close()
        try:
            hello = self._recv(START_TIMEOUT, "start")
        except BaseException:
            self.stop()
            raise
        self.port = int(hello["port"])
        self.pid = int(hello["pid"])

    def _recv(self, timeout: float, what: str) -> Any:
        return receive(self._pipe, self.proc, timeout, f"server child ({what})")

    def stats(self) -> dict[str, Any]:
        self._pipe.send("stats")
        return dict(self._recv(CONTROL_TIMEOUT, "stats"))

    def stop(self) -> dict[str, Any] | None:
        """Stop the child and reap it; returns its final stats (None if it could not say)."""
        final: dict[str, Any] | None = None
        if self.proc.is_alive():
            try:
                self._pipe.send("stop")
                final = dict(self._recv(CONTROL_TIMEOUT, "stop"))
            except (OSError, EOFError, RuntimeError):
                final = None
        self.proc.join(timeout=5)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(timeout=5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout=5)
        self._pipe.close()
        return final


# ------------------------------------------------------------------------ generator child


@dataclass
class GenSpec:
    port: int
    token: str
    tag: int  # distinguishes runs in the MessageSids
    first_conn: int  # global index of this process's first connection
    conns: int  # connections in this process
    total_conns: int  # connections in all processes
    duration: float
    rate: float  # requests/s over all connections; 0 = closed loop
    pool_per_conn: int
    cpus: list[int] | None


@dataclass
class ConnResult:
    latency: array[float] = field(default_factory=lambda: array("d"))  # from due time, seconds
    service: array[float] = field(default_factory=lambda: array("d"))  # send to answer, seconds
    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    signed_live: int = 0
    gave_up: bool = False


class Signer:
    """Builds the signed callbacks of one connection."""

    def __init__(self, spec: GenSpec, conn: int) -> None:
        self.url = f"http://{HOST}:{spec.port}{STATUS_PATH}"
        self.validator = RequestValidator(spec.token)
        self.prefix = f"SM{spec.tag:02x}{conn:04x}"

    def make(self, i: int) -> tuple[bytes, str]:
        params = {
            "AccountSid": ACCOUNT_SID,
            "MessageSid": f"{self.prefix}{i:026x}",  # 34 characters, unique per request
            "MessageStatus": STATUSES[i % len(STATUSES)],
            "From": FROM,
            "To": TO,
            "ApiVersion": "2010-04-01",
        }
        return urlencode(params).encode(), self.validator.compute_signature(self.url, params)


def open_connection(port: int) -> tuple[http.client.HTTPConnection, int]:
    """A keep-alive connection that has answered one ``GET /healthz``, and the failed tries.

    Opened before the timed part, one after another, so the timed part starts on warm
    connections; a connection reset here is usually the server's listen backlog overflowing.
    """
    failures = 0
    while True:
        conn = http.client.HTTPConnection(HOST, port, timeout=REQUEST_TIMEOUT)
        try:
            conn.request("GET", "/healthz")
            resp = conn.getresponse()
            resp.read()
            if resp.status == 200 and not resp.will_close:
                return conn, failures
            raise http.client.HTTPException(f"GET /healthz: HTTP {resp.status}")
        except (OSError, http.client.HTTPException):
            conn.close()
            failures += 1
            if failures >= SETUP_TRIES:
                raise
            time.sleep(0.05 * failures)


def run_connection(spec: GenSpec, conn_index: int, conn: http.client.HTTPConnection,
                   pool: list[tuple[bytes, str]], signer: Signer, start: float,
                   out: ConnResult) -> None:
    """One keep-alive connection: closed loop, or paced at rate/total_conns when rate > 0."""
    end = start + spec.duration
    interval = spec.total_conns / spec.rate if spec.rate > 0 else 0.0
    offset = conn_index / spec.rate if spec.rate > 0 else 0.0  # spread the connections' phases
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": ""}
    consecutive = 0
    i = 0
    delay = start - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    try:
        while True:
            if interval:
                due = start + offset + i * interval
                if due >= end:
                    break
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            else:
                due = time.monotonic()
                if due >= end:
                    break
            if i < len(pool):
                body, signature = pool[i]
            else:
                body, signature = signer.make(i)
                out.signed_live += 1
            i += 1
            headers["X-Twilio-Signature"] = signature
            sent = time.monotonic()
            try:
                conn.request("POST", STATUS_PATH, body=body, headers=headers)
                resp = conn.getresponse()
                resp.read()
                status = resp.status
            except (OSError, http.client.HTTPException) as exc:
                out.transport_errors += 1
                if len(out.error_samples) < 5:
                    out.error_samples.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                conn = http.client.HTTPConnection(HOST, spec.port, timeout=REQUEST_TIMEOUT)
                consecutive += 1
                if consecutive >= MAX_CONSECUTIVE_ERRORS:
                    out.gave_up = True
                    break
                time.sleep(0.01)
                continue
            done = time.monotonic()
            consecutive = 0
            out.latency.append(done - due)
            out.service.append(done - sent)
            out.statuses[status] += 1
            if resp.will_close:  # the server closed it: open another for the next request
                conn.close()
                conn = http.client.HTTPConnection(HOST, spec.port, timeout=REQUEST_TIMEOUT)
    finally:
        conn.close()


def generator_main(pipe: multiprocessing.connection.Connection, spec: GenSpec) -> None:
    """A generator child: sign the pools, say ready, wait for the start time, run, report."""
    if spec.cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(spec.cpus))
    signers = [Signer(spec, spec.first_conn + k) for k in range(spec.conns)]
    pools = [[s.make(i) for i in range(spec.pool_per_conn)] for s in signers]
    conns: list[http.client.HTTPConnection] = []
    setup_failures = 0
    for _ in range(spec.conns):
        conn, failures = open_connection(spec.port)
        conns.append(conn)
        setup_failures += failures
    pipe.send("ready")
    if not pipe.poll(PREPARE_TIMEOUT + START_TIMEOUT):
        return
    start_wall = pipe.recv()
    if start_wall is None:  # cancelled
        for conn in conns:
            conn.close()
        return
    start = time.monotonic() + (float(start_wall) - time.time())
    results = [ConnResult() for _ in range(spec.conns)]
    use0 = resource.getrusage(resource.RUSAGE_SELF)
    threads = [threading.Thread(target=run_connection, name=f"conn-{k}",
                                args=(spec, spec.first_conn + k, conns[k], pools[k], signers[k],
                                      start, results[k]), daemon=True)
               for k in range(spec.conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(spec.duration + START_DELAY + REQUEST_TIMEOUT * 2 + 30)
    use1 = resource.getrusage(resource.RUSAGE_SELF)
    merged = ConnResult()
    for r in results:
        merged.latency.extend(r.latency)
        merged.service.extend(r.service)
        merged.statuses.update(r.statuses)
        merged.transport_errors += r.transport_errors
        merged.error_samples.extend(r.error_samples[: 5 - len(merged.error_samples)])
        merged.signed_live += r.signed_live
        merged.gave_up = merged.gave_up or r.gave_up
    pipe.send({
        "latency": merged.latency.tobytes(),
        "service": merged.service.tobytes(),
        "statuses": dict(merged.statuses),
        "transport_errors": merged.transport_errors,
        "error_samples": merged.error_samples,
        "signed_live": merged.signed_live,
        "gave_up": merged.gave_up,
        "stuck_threads": sum(t.is_alive() for t in threads),
        "setup_failures": setup_failures,
        "cpu_s": (use1.ru_utime + use1.ru_stime) - (use0.ru_utime + use0.ru_stime),
    })


# ------------------------------------------------------------------------------ parent


@dataclass
class RunFigures:
    name: str
    mode: str  # closed or open
    connections: int
    procs: int
    duration_s: float
    offered_rate: float | None
    requests: int
    achieved_rate: float
    latency_ms: dict[str, float]
    service_ms: dict[str, float]
    statuses: dict[str, int]
    non_2xx: int
    transport_errors: int
    error_samples: list[str]
    server_accepted: int
    server_outcomes: dict[str, int]
    server_cpu_s: float
    server_core_pct: float
    server_core_busy_pct: float | None  # the whole core, whoever used it (Linux /proc/stat)
    steal_pct: float | None  # of the server's core: time the hypervisor gave elsewhere
    generator_cpu_s: float
    generator_cores: int
    generator_pct: float
    generator_cores_busy_pct: float | None
    signed_live: int
    pool_per_conn: int
    setup_failures: int  # failed tries to open the connections before the timed part
    listen_overflows: int | None  # the machine's, during the timed part
    problems: list[str]
    verdict: bool | None = None


def percentiles(seconds: array[float]) -> dict[str, float]:
    """p50/p90/p99/max in ms (nearest rank)."""
    if not seconds:
        return {"p50": math.nan, "p90": math.nan, "p99": math.nan, "max": math.nan}
    ms = sorted(x * 1000.0 for x in seconds)

    def rank(p: float) -> float:
        return ms[max(0, math.ceil(p / 100.0 * len(ms)) - 1)]

    return {"p50": rank(50), "p90": rank(90), "p99": rank(99), "max": ms[-1]}


def listen_overflows() -> int | None:
    """The machine's TcpExt ListenOverflows so far (Linux ``/proc/net/netstat``), or None."""
    try:
        with open("/proc/net/netstat") as f:
            lines = [line.split() for line in f if line.startswith("TcpExt:")]
        return int(dict(zip(lines[0], lines[1], strict=True))["ListenOverflows"])
    except (OSError, IndexError, KeyError, ValueError):
        return None


def cpu_ticks() -> dict[int, tuple[int, int, int]]:
    """Per core from Linux ``/proc/stat``: (busy, steal, total) ticks; {} elsewhere."""
    out: dict[int, tuple[int, int, int]] = {}
    try:
        with open("/proc/stat") as f:
            for line in f:
                name, *values = line.split()
                if not name.startswith("cpu") or name == "cpu":
                    continue
                v = [int(x) for x in values[:8]]  # user nice system idle iowait irq softirq steal
                v += [0] * (8 - len(v))
                idle = v[3] + v[4]
                out[int(name[3:])] = (sum(v) - idle - v[7], v[7], sum(v))
    except (OSError, ValueError):
        return {}
    return out


def core_use(before: dict[int, tuple[int, int, int]], after: dict[int, tuple[int, int, int]],
             cores: list[int]) -> tuple[float, float] | None:
    """(busy %, steal %) of ``cores`` together between two :func:`cpu_ticks` readings."""
    busy = steal = total = 0
    for c in cores:
        if c not in before or c not in after:
            return None
        busy += after[c][0] - before[c][0]
        steal += after[c][1] - before[c][1]
        total += after[c][2] - before[c][2]
    return (100.0 * busy / total, 100.0 * steal / total) if total > 0 else None


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if k < total % parts else 0) for k in range(parts)]


def run_load(ctx: Any, server: ServerProcess, args: argparse.Namespace, token: str, *, name: str,
             tag: int, duration: float, rate: float, pool_per_conn: int,
             gen_cpus: list[int] | None) -> RunFigures:
    procs = max(1, min(args.procs, args.connections))
    conns = split(args.connections, procs)
    gens: list[tuple[Any, multiprocessing.connection.Connection]] = []
    problems: list[str] = []
    first = 0
    try:
        for p, n in enumerate(conns):
            spec = GenSpec(port=server.port, token=token, tag=tag, first_conn=first,
                           conns=n, total_conns=args.connections, duration=duration, rate=rate,
                           pool_per_conn=pool_per_conn, cpus=gen_cpus)
            first += n
            parent_end, child_end = ctx.Pipe()
            proc = ctx.Process(target=generator_main, args=(child_end, spec), name=f"gen-{p}",
                               daemon=True)
            proc.start()
            child_end.close()
            gens.append((proc, parent_end))
        for proc, pipe in gens:
            if receive(pipe, proc, START_TIMEOUT + PREPARE_TIMEOUT, f"generator {proc.name}") != "ready":
                raise RuntimeError(f"generator {proc.name} did not get ready")
        before = server.stats()
        overflows0 = listen_overflows()
        start_wall = time.time() + START_DELAY
        for _, pipe in gens:
            pipe.send(start_wall)
        time.sleep(max(0.0, start_wall - time.time()))
        at_start = server.stats()
        ticks0 = cpu_ticks()
        time.sleep(max(0.0, start_wall + duration - time.time()))
        ticks1 = cpu_ticks()
        at_end = server.stats()
        replies: list[dict[str, Any]] = []
        deadline = time.monotonic() + REQUEST_TIMEOUT * 2 + 60
        for proc, pipe in gens:
            replies.append(receive(pipe, proc, max(0.1, deadline - time.monotonic()),
                                   f"generator {proc.name}"))
        after = server.stats()
        overflows1 = listen_overflows()
    finally:
        for proc, pipe in gens:
            with contextlib.suppress(OSError):
                if proc.is_alive() and not pipe.poll(0):
                    pipe.send(None)  # cancel one still waiting for its start time
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
            pipe.close()

    latency: array[float] = array("d")
    service: array[float] = array("d")
    statuses: Counter[int] = Counter()
    errors = signed_live = 0
    samples: list[str] = []
    gen_cpu = 0.0
    setup_failures = 0
    for r in replies:
        latency.frombytes(r["latency"])
        service.frombytes(r["service"])
        statuses.update(r["statuses"])
        errors += r["transport_errors"]
        samples.extend(r["error_samples"])
        signed_live += r["signed_live"]
        gen_cpu += r["cpu_s"]
        setup_failures += r["setup_failures"]
        if r["gave_up"]:
            problems.append("a connection gave up after repeated transport errors")
        if r["stuck_threads"]:
            problems.append(f"{r['stuck_threads']} connection thread(s) still running at the end")
    outcomes = Counter(after["counts"])
    outcomes.subtract(before["counts"])
    server_cpu = at_end["cpu_s"] - at_start["cpu_s"]
    n_gen_cores = len(gen_cpus) if gen_cpus else (os.cpu_count() or 1)
    server_core = core_use(ticks0, ticks1, at_start["affinity"] or []) \
        if at_start["affinity"] and len(at_start["affinity"]) == 1 else None
    gen_cores = core_use(ticks0, ticks1, gen_cpus) if gen_cpus else None
    return RunFigures(
        name=name,
        mode="open" if rate > 0 else "closed",
        connections=args.connections,
        procs=procs,
        duration_s=duration,
        offered_rate=rate if rate > 0 else None,
        requests=len(latency),
        achieved_rate=len(latency) / duration,
        latency_ms=percentiles(latency),
        service_ms=percentiles(service),
        statuses={str(k): v for k, v in sorted(statuses.items())},
        non_2xx=sum(v for k, v in statuses.items() if not 200 <= k < 300),
        transport_errors=errors,
        error_samples=samples[:5],
        server_accepted=accepted_of(outcomes),
        server_outcomes={k: v for k, v in sorted(outcomes.items()) if v},
        server_cpu_s=server_cpu,
        server_core_pct=100.0 * server_cpu / duration,
        server_core_busy_pct=server_core[0] if server_core else None,
        steal_pct=server_core[1] if server_core else None,
        generator_cpu_s=gen_cpu,
        generator_cores=min(n_gen_cores, procs),
        generator_pct=100.0 * gen_cpu / duration / max(1, min(n_gen_cores, procs)),
        generator_cores_busy_pct=gen_cores[0] if gen_cores else None,
        signed_live=signed_live,
        pool_per_conn=pool_per_conn,
        setup_failures=setup_failures,
        listen_overflows=None if overflows0 is None or overflows1 is None else overflows1 - overflows0,
        problems=problems,
    )


def print_run(f: RunFigures) -> None:
    lat, svc = f.latency_ms, f.service_ms
    print(f"== {f.name}: {f.mode} loop, {f.connections} keep-alive connections in "
          f"{f.procs} process(es), {f.duration_s:.1f} s")
    print(f"offered rate:          {f'{f.offered_rate:,.0f} req/s' if f.offered_rate else '- (closed loop)'}")
    print(f"achieved:              {f.achieved_rate:,.1f} req/s ({f.requests:,} answered "
          f"in {f.duration_s:.1f} s)")
    label = "latency from due time" if f.mode == "open" else "latency"
    print(f"{label + ':':<22} p50 {lat['p50']:.2f} / p90 {lat['p90']:.2f} / p99 {lat['p99']:.2f} / "
          f"max {lat['max']:.2f} ms")
    if f.mode == "open":
        print(f"service (send->answer): p50 {svc['p50']:.2f} / p90 {svc['p90']:.2f} / "
              f"p99 {svc['p99']:.2f} / max {svc['max']:.2f} ms")
    print(f"HTTP statuses:         {f.statuses or '{}'} ({f.non_2xx} non-2xx)")
    print(f"transport errors:      {f.transport_errors}"
          + (f" e.g. {f.error_samples[0]}" if f.error_samples else ""))
    if f.setup_failures or f.listen_overflows:
        print(f"connection setup:      {f.setup_failures} failed tries opening the connections; "
              f"{f.listen_overflows} listen queue overflows (whole machine) in the timed part")
    print(f"server accepted:       {f.server_accepted:,} (outcomes this run: {f.server_outcomes})")
    print(f"server CPU:            {f.server_cpu_s:.2f} s in {f.duration_s:.1f} s = "
          f"{f.server_core_pct:.0f} % of one core; "
          f"{f.server_cpu_s / max(1, f.requests) * 1e6:.0f} us per request")
    if f.server_core_busy_pct is not None and f.steal_pct is not None:
        print(f"server's core:         {f.server_core_busy_pct:.0f} % busy (all processes) + "
              f"{f.steal_pct:.0f} % stolen by the hypervisor")
    print(f"generator CPU:         {f.generator_cpu_s:.2f} s = {f.generator_pct:.0f} % of "
          f"{f.generator_cores} core(s)"
          + (f" (those cores {f.generator_cores_busy_pct:.0f} % busy, all processes)"
             if f.generator_cores_busy_pct is not None else "")
          + (f"; {f.signed_live:,} requests signed live (pool ran out)" if f.signed_live else ""))
    for p in f.problems:
        print(f"problem:               {p}")
    if f.verdict is not None:
        assert f.offered_rate is not None
        print(f"{'PASS' if f.verdict else 'FAIL'} {f.achieved_rate:,.0f} of {f.offered_rate:,.0f} "
              f"req/s offered, p99 {lat['p99']:.2f} ms < {TARGET_P99_MS:.0f} ms, "
              f"{f.non_2xx} non-2xx, {f.transport_errors} transport errors")


def choose_cpus(server_cpu: int | None) -> list[int] | None:
    """Cores for the generators: all but the server's, when there are any."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    rest = [c for c in allowed if c != server_cpu]
    return rest or None


def run_all(ctx: Any, server: ServerProcess, args: argparse.Namespace, token: str,
            gen_cpus: list[int] | None, runs: list[RunFigures]) -> bool:
    """Warm-up, closed loop, open loop (as asked), appending to ``runs``; False if the
    warm-up had transport errors (the judged runs are checked by the caller)."""
    failed = False
    info = server.stats()
    if not args.json:
        print(f"server: pid {server.pid}, http://{HOST}:{server.port}{STATUS_PATH}, "
              f"cores {info['affinity']}; generators on cores {gen_cpus or 'any'}; "
              f"signature checks on, rate limit {args.rate_limit:,}/min per source",
              flush=True)
    tag = 0
    warm_rate = 0.0
    if args.warmup > 0 and not args.no_closed:
        tag += 1
        pool = math.ceil(WARMUP_POOL_RATE * args.warmup / args.connections) + POOL_EXTRA
        warm = run_load(ctx, server, args, token, name="warm-up", tag=tag,
                        duration=args.warmup, rate=0.0, pool_per_conn=pool, gen_cpus=gen_cpus)
        warm_rate = warm.achieved_rate
        failed |= warm.transport_errors > 0
        if not args.json:
            print(f"warm-up: {warm.achieved_rate:,.0f} req/s for {args.warmup:.1f} s "
                  f"(not judged; {warm.transport_errors} transport errors)", flush=True)
    if not args.no_closed:
        tag += 1
        per_conn_rate = (warm_rate or WARMUP_POOL_RATE) * POOL_HEADROOM / args.connections
        pool = math.ceil(per_conn_rate * args.duration) + POOL_EXTRA
        closed = run_load(ctx, server, args, token, name="max throughput", tag=tag,
                          duration=args.duration, rate=0.0, pool_per_conn=pool,
                          gen_cpus=gen_cpus)
        runs.append(closed)
        if not args.json:
            print_run(closed)
            sys.stdout.flush()
    if args.rate > 0:
        tag += 1
        pool = math.ceil(args.rate * args.duration / args.connections) + 1
        opened = run_load(ctx, server, args, token, name=f"fixed load {args.rate:,.0f}/s",
                          tag=tag, duration=args.duration, rate=args.rate, pool_per_conn=pool,
                          gen_cpus=gen_cpus)
        opened.verdict = (opened.achieved_rate >= 0.99 * args.rate
                          and opened.latency_ms["p99"] < TARGET_P99_MS
                          and opened.non_2xx == 0 and opened.transport_errors == 0)
        runs.append(opened)
        if not args.json:
            print_run(opened)
    return not failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per timed run")
    parser.add_argument("--connections", type=int, default=8, help="keep-alive connections in all")
    parser.add_argument("--rate", type=float, default=TARGET_RATE,
                        help="open-loop offered rate, requests/s (0: skip the open-loop run)")
    parser.add_argument("--cpu", type=int, default=0, help="core the server is pinned to (-1: none)")
    parser.add_argument("--procs", type=int, default=0,
                        help="generator processes (default: one per core not the server's)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of unjudged warm-up")
    parser.add_argument("--rate-limit", type=int, default=RATE_LIMIT,
                        help="CallbackInbox rate_per_minute (default: never reached; the daemon's is 1200)")
    parser.add_argument("--no-closed", action="store_true", help="skip the closed-loop run")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.connections < 1 or args.rate < 0 or args.warmup < 0:
        parser.error("--duration must be > 0, --connections >= 1, --rate and --warmup >= 0")

    server_cpu: int | None = None if args.cpu < 0 else args.cpu
    if server_cpu is not None and hasattr(os, "sched_getaffinity") \
            and server_cpu not in os.sched_getaffinity(0):
        parser.error(f"--cpu {server_cpu} is not one of this process's cores "
                     f"{sorted(os.sched_getaffinity(0))}")
    if not hasattr(os, "sched_setaffinity"):
        server_cpu = None
    gen_cpus = choose_cpus(server_cpu)
    if args.procs <= 0:
        args.procs = len(gen_cpus) if gen_cpus else 1

    ctx = multiprocessing.get_context("spawn")
    token = secrets.token_hex(16)
    runs: list[RunFigures] = []
    final: dict[str, Any] | None = None
    failed = False
    try:
        server = ServerProcess(ctx, server_cpu, token, args.rate_limit)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        failed |= not run_all(ctx, server, args, token, gen_cpus, runs)
    except RuntimeError as exc:  # a child did not start, answer or report
        print(f"error: {exc}", file=sys.stderr)
        failed = True
    finally:
        final = server.stop()

    failed |= any(r.transport_errors or r.problems for r in runs)
    if final is None:
        failed = True
    if args.json:
        print(json.dumps({"runs": [asdict(r) for r in runs], "server": final}, indent=2,
                         sort_keys=True))
    else:
        print("== server at the end")
        if final is None:
            print("server child did not report its final figures")
        else:
            print(f"events drained:        {final['drained']:,} (every {DRAIN_EVERY} s)")
            print(f"inbox.counts():        {final['counts']}")
            print(f"CPU / peak RSS:        {final['cpu_s']:.2f} s in all / "
                  f"{final['peak_rss_mb']:.1f} MB")
        if failed:
            print("transport errors or child failures: exit status 1")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
