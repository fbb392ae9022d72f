"""Benchmark of /metrics: per-scrape rendering (before) against the exposition rendered once
per published snapshot and gzip-compressed once (after).

Snapshots are built by hand with ``tests/snapshots.py`` at 1, 100 and 1,000 accounts: each
account holds 11 messages (delivered, undelivered with an error, sent, inbound), and Twilio
request telemetry for five endpoints (counts and duration histograms), as a cycle leaves it.

For each size, an :class:`ExporterServer` on loopback serves the snapshot and ``--scrapes``
GETs over one keep-alive connection measure the scrape's wall time (request sent to body
read) and its body size:

- **before**: the exposition rendered per scrape (``choose_encoder(registry)``, as
  ``ExporterServer.page`` did), request histograms per account, no compression;
- **after, plain**: the snapshot's families from the cache, the live ones rendered per scrape;
- **after, gzip**: the same with ``Accept-Encoding: gzip`` (what Prometheus sends);
- **first scrape after a publish** (after, gzip), and ``publish()`` itself, which now
  renders and compresses in the publisher's thread (once a cycle);
- **through publishes**: a scrape every 0.25 s while a snapshot is published every 6 s
  (three times): what a scraper sees around the renders.

Series are counted per account (samples carrying ``account="a0000"``). The script never
asserts: it prints the figures and exits 0.

    python benchmarks/exposition_benchmark.py [--scrapes N] [--accounts 1,100,1000] [--json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client.exposition import choose_encoder  # noqa: E402

from sms_monitor.app import UNITS  # noqa: E402
from sms_monitor.core.snapshot import RequestTelemetry, Snapshot, SnapshotHolder  # noqa: E402
from sms_monitor.core.window import Histogram  # noqa: E402
from sms_monitor.inputs.telemetry import REQUEST_BUCKETS  # noqa: E402
from sms_monitor.outputs.http import ExporterServer  # noqa: E402
from tests.snapshots import T0, account, message, snapshot  # noqa: E402

ENDPOINTS = ("balance", "account", "incoming_phone_numbers", "messages", "usage_records")
AREAS = tuple(a for u in UNITS if u.name == "twilio" for a in u.areas)


def build(accounts: int) -> Snapshot:
    parts = []
    counts: dict[tuple[str, str, str], int] = {}
    durations = {}
    for i in range(accounts):
        name = f"a{i:04d}"
        records = [message(f"SM{i}x{j:02d}", T0 - 600 - j * 60, after=4.0 + j) for j in range(8)]
        records += [message(f"SM{i}x90", T0 - 300, "undelivered", error=30007, after=20.0),
                    message(f"SM{i}x91", T0 - 200, "sent", after=None),
                    message(f"SM{i}x92", T0 - 100, "received", outbound=False, after=None)]
        parts.append(account(name, records, min_samples=5, timed={"callback": 6, "poll": 2}))
        for k, endpoint in enumerate(ENDPOINTS):
            counts[name, endpoint, "200"] = 10 + k
            h = Histogram(REQUEST_BUCKETS)
            for n in range(10 + k):
                h.observe(0.04 * (n + 1) + 0.01 * k)
            durations[name, endpoint] = h.freeze()
    return snapshot(*parts, requests=RequestTelemetry(counts=counts, durations=durations))


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]


def scrape(conn: http.client.HTTPConnection, headers: dict[str, str]) -> tuple[float, int]:
    started = time.perf_counter()
    conn.request("GET", "/metrics", headers=headers)
    resp = conn.getresponse()
    body = resp.read()
    return time.perf_counter() - started, len(body)


def measure(server: ExporterServer, headers: dict[str, str], n: int) -> dict[str, float]:
    host, port = server.server_address
    conn = http.client.HTTPConnection(host, port, timeout=120)
    times, size = [], 0
    for _ in range(n):
        seconds, size = scrape(conn, headers)
        times.append(seconds)
    conn.close()
    return {"p50_ms": 1000 * statistics.median(times), "p99_ms": 1000 * percentile(times, 0.99),
            "bytes": size}


def per_account_series(server: ExporterServer) -> int:
    text = server.page("/metrics", "")[1].decode()
    return sum(1 for line in text.splitlines() if 'account="a0000"' in line)


def through_publishes(server: ExporterServer, holder: SnapshotHolder, headers: dict[str, str],
                      cycles: int = 3, period: float = 6.0, every: float = 0.25
                      ) -> dict[str, float]:
    """Scrapes every ``every`` seconds while a snapshot is published every ``period``
    seconds: the first scrapes after a publish are in it (the warmer renders off the scrape
    path; a scrape during its render gets the previous one)."""
    host, port = server.server_address
    conn = http.client.HTTPConnection(host, port, timeout=120)
    times = []
    for _ in range(cycles):
        current = holder.current
        assert current is not None
        holder.publish(current)
        end = time.monotonic() + period
        while time.monotonic() < end:
            times.append(scrape(conn, headers)[0])
            time.sleep(every)
    conn.close()
    return {"p50_ms": 1000 * statistics.median(times), "p99_ms": 1000 * percentile(times, 0.99),
            "max_ms": 1000 * max(times), "scrapes": len(times)}


def run(accounts: int, scrapes: int) -> dict[str, Any]:
    holder = SnapshotHolder()
    holder.publish(build(accounts))
    out: dict[str, Any] = {"accounts": accounts}
    gz = {"Accept-Encoding": "gzip"}
    before = ExporterServer(("127.0.0.1", 0), holder, areas=AREAS,
                            per_account_request_histograms=True)

    def uncached(accept: str, accept_encoding: str = "") -> tuple[bytes, str, bool]:
        encoder, ctype = choose_encoder(accept)
        return encoder(before.registry), ctype, False

    before.exposition.render = uncached  # type: ignore[method-assign]
    before.start()
    try:
        out["series_per_account_before"] = per_account_series(before)
        out["before"] = measure(before, gz, max(5, scrapes // (10 if accounts >= 1000 else 1)))
    finally:
        before.stop()
    after = ExporterServer(("127.0.0.1", 0), holder, areas=AREAS).start()
    try:
        out["series_per_account_after"] = per_account_series(after)
        firsts, publishes = [], []
        for _ in range(5):  # a new published object each time: publish() renders it
            current = holder.current
            assert current is not None
            started = time.perf_counter()
            holder.publish(current)
            publishes.append(time.perf_counter() - started)
            host, port = after.server_address
            conn = http.client.HTTPConnection(host, port, timeout=120)
            firsts.append(scrape(conn, gz)[0])
            conn.close()
        out["render_at_publish_ms"] = 1000 * statistics.median(publishes)
        out["first_after_publish_ms"] = 1000 * statistics.median(firsts)
        out["after_plain"] = measure(after, {}, scrapes)
        out["after_gzip"] = measure(after, gz, scrapes)
        out["renders"] = after.exposition.renders
        out["through_publishes"] = through_publishes(after, holder, gz)
    finally:
        after.stop()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--accounts", default="1,100,1000")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = [run(int(n), args.scrapes) for n in args.accounts.split(",")]
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{'accounts':>8} {'variant':<26} {'p50 ms':>9} {'p99 ms':>9} {'bytes':>11}")
    for r in results:
        for key, label in (("before", "before (per scrape, plain)"),
                           ("after_plain", "after, plain"), ("after_gzip", "after, gzip")):
            m = r[key]
            print(f"{r['accounts']:>8} {label:<26} {m['p50_ms']:>9.2f} {m['p99_ms']:>9.2f} "
                  f"{m['bytes']:>11,}")
        print(f"{r['accounts']:>8} {'first scrape after publish':<26} "
              f"{r['first_after_publish_ms']:>9.2f}   (publish() itself, render + gzip: "
              f"{r['render_at_publish_ms']:.0f} ms, in the publisher's thread)")
        t = r["through_publishes"]
        print(f"{r['accounts']:>8} {'gzip, through publishes':<26} {t['p50_ms']:>9.2f} "
              f"{t['p99_ms']:>9.2f}   (max {t['max_ms']:.0f} ms over {t['scrapes']} scrapes)")
        print(f"{r['accounts']:>8} series per account: {r['series_per_account_before']} before, "
              f"{r['series_per_account_after']} after; snapshot renders: {r['renders']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
