"""Benchmark of basic auth (``sms_monitor.outputs.basic_auth.Authenticator``), in process.

Prints:

1. ``quick()`` on a cached credential (what a good scrape pays once verified), per call.
2. ``verify()`` at ``--cost`` (default 10) for a good password (cache expired each time), a
   wrong one, an unknown user and a 73-byte password: the last three must cost the same.
3. ``--attackers`` (default 100) concurrent wrong passwords for ``--duration`` seconds while a
   good scraper asks ``quick()`` with its cached credential every millisecond. Each attacker
   is a connection: ``quick()`` itself, then ``verify()`` on a shared pool of ``--workers``
   threads (as the server runs it off the event loop; more than ``MAX_PENDING``, so shedding
   answers at once), then ``--rtt`` (5 ms) before the next try. At ``--login-at`` of the
   run (half-way), a second user not yet cached logs in from an address with no failures
   (retrying after 50 ms while shed): its wait is printed. With 100 sources, each address's
   first try counts as clean until it has one on record (about 100 hashes, 8 s at cost 10):
   a login in that window waits seconds; ``--duration 30`` shows the steady state after.
   Scenarios: nobody attacking (baseline); all from one source, throttled at 10 failures a
   minute; each from its own source (100 budgets: the one-hash-at-a-time lock is
   the bound); one source with the throttle off, for comparison. For each: attempts
   answered per second by outcome, hashes per second, the process's CPU (cores busy), the
   good scraper's quick() p50/p99/max and how many it got through. The attackers' own loops
   run in this process too, under its GIL: the CPU and the scraper's rate include them.

Usage: ``python benchmarks/basic_auth_benchmark.py [--cost 10] [--duration 5] [--attackers 100]``
"""

from __future__ import annotations

import argparse
import base64
import resource
import statistics
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import bcrypt

from sms_monitor.outputs import basic_auth
from sms_monitor.outputs.basic_auth import Authenticator, AuthOutcome


def basic(user: bytes, password: bytes) -> str:
    return "Basic " + base64.b64encode(user + b":" + password).decode()


GOOD = basic(b"prometheus", b"s3cret")


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bench_quick(auth: Authenticator, n: int = 200_000) -> None:
    assert auth.verify(GOOD, "10.0.0.1").outcome is AuthOutcome.OK
    start = time.perf_counter()
    for _ in range(n):
        auth.quick(GOOD, "10.0.0.1")
    per = (time.perf_counter() - start) / n
    print(f"quick(), cached credential: {per * 1e6:.2f} us/call ({n} calls)")


def bench_verify(hashed: bytes, cost: int, rounds: int = 8) -> None:
    now = [0.0]
    auth = Authenticator({"prometheus": hashed}, clock=lambda: now[0], failures_per_minute=10**6)
    cases = {"good password": GOOD, "wrong password": basic(b"prometheus", b"wrong"),
             "unknown user": basic(b"nobody", b"s3cret"),
             "73-byte password": basic(b"prometheus", b"x" * 73)}
    print(f"verify() at cost {cost}, median of {rounds} (min-max):")
    for name, header in cases.items():
        times = []
        for _ in range(rounds):
            now[0] += 10_000  # past the cache's ttl: a good password is hashed again
            start = time.perf_counter()
            outcome = auth.verify(header, "10.0.0.1").outcome
            times.append(time.perf_counter() - start)
        print(f"  {name:17} {outcome.value:13} {statistics.median(times) * 1e3:7.1f} ms "
              f"({min(times) * 1e3:.1f}-{max(times) * 1e3:.1f})")


def attack(hashed: bytes, attackers: int, duration: float, workers: int, per_source: bool,
           failures_per_minute: int, rtt: float, login_at: float = 0.5) -> None:
    auth = Authenticator({"prometheus": hashed, "grafana": hashed},
                         failures_per_minute=failures_per_minute)
    assert auth.verify(GOOD, "10.0.0.1").outcome is AuthOutcome.OK  # the scraper is cached
    hashes = [0]
    real = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        hashes[0] += 1
        return real(password, hashed)
    basic_auth.bcrypt.checkpw = counting  # type: ignore[attr-defined]
    outcomes: Counter[str] = Counter()
    stop = threading.Event()
    pool = ThreadPoolExecutor(max_workers=workers)

    def checked(header: str, source: str) -> str:
        decision = pool.submit(auth.verify, header, source).result()
        return "shed" if decision.retry_after == basic_auth.SHED_RETRY_AFTER else decision.outcome.value

    def attacker(n: int) -> None:
        source = f"192.0.2.{n % 250}" if per_source else "192.0.2.1"
        tries = 0
        while not stop.is_set():
            tries += 1
            header = basic(b"prometheus", b"wrong%d" % tries)
            quick = auth.quick(header, source)
            outcomes[quick.outcome.value if quick else checked(header, source)] += 1
            time.sleep(rtt)

    threads = [threading.Thread(target=attacker, args=(n,)) for n in range(attackers)]
    cpu0, t0 = cpu(), time.perf_counter()
    for t in threads:
        t.start()
    latencies = []
    login = None
    while time.perf_counter() - t0 < duration:
        if login is None and time.perf_counter() - t0 > duration * login_at:
            start = time.perf_counter()
            while (outcome := checked(basic(b"grafana", b"s3cret"), "10.0.0.2")) == "shed":
                time.sleep(0.05)  # a client retrying after its 429
            login = (outcome, time.perf_counter() - start)
        start = time.perf_counter()
        assert auth.quick(GOOD, "10.0.0.1") is not None
        latencies.append(time.perf_counter() - start)
        time.sleep(0.001)
    stop.set()
    elapsed, used = time.perf_counter() - t0, cpu() - cpu0
    for t in threads:
        t.join()
    pool.shutdown()
    basic_auth.bcrypt.checkpw = real  # type: ignore[attr-defined]
    latencies.sort()
    answered = sum(outcomes.values())
    by = ", ".join(f"{k} {v / elapsed:.0f}/s" for k, v in sorted(outcomes.items())) or "-"
    print(f"  attempts {answered / elapsed:7.0f}/s ({by}); hashes {hashes[0] / elapsed:5.1f}/s; "
          f"CPU {used / elapsed:.2f} cores")
    print(f"  good scraper: {len(latencies) / elapsed:.0f} quick()/s, p50 "
          f"{latencies[len(latencies) // 2] * 1e6:.0f} us, p99 "
          f"{latencies[int(len(latencies) * 0.99)] * 1e6:.0f} us, max {latencies[-1] * 1e3:.1f} ms")
    if login is not None:
        print(f"  a new good login at {duration * login_at:.1f} s: {login[0]} after "
              f"{login[1] * 1e3:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cost", type=int, default=10)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--attackers", type=int, default=100)
    parser.add_argument("--workers", type=int, default=basic_auth.MAX_PENDING + 4,
                        help="verify() threads")
    parser.add_argument("--login-at", type=float, default=0.5)
    parser.add_argument("--rtt", type=float, default=0.005, help="seconds between an attacker's "
                        "answer and its next try")
    args = parser.parse_args()
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=args.cost))
    bench_quick(Authenticator({"prometheus": hashed}))
    bench_verify(hashed, args.cost)
    scenarios = [("nobody attacking", 0, False, 10),
                 (f"{args.attackers} wrong passwords, one source, 10 failures/min", args.attackers,
                  False, 10),
                 (f"{args.attackers} wrong passwords, {args.attackers} sources, 10 failures/min each",
                  args.attackers, True, 10),
                 (f"{args.attackers} wrong passwords, one source, throttle off", args.attackers,
                  False, 10**9)]
    for title, attackers, per_source, budget in scenarios:
        print(f"{title} ({args.duration:.0f} s, {args.workers} verify threads):")
        attack(hashed, attackers, args.duration, args.workers, per_source, budget, args.rtt,
               args.login_at)


if __name__ == "__main__":
    main()
