"""/metrics rendered once per published snapshot, gzip-compressed when the scraper accepts
it, OpenMetrics when asked; the live families (process, HTTP server) fresh per scrape; the
request histograms by account (the health contract's labels) unless a fleet turns
per_account_request_histograms off."""

from __future__ import annotations

import gzip
import socket
from collections.abc import Iterator
from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_families
from prometheus_client.parser import text_string_to_metric_families

from sms_monitor.core.snapshot import RequestTelemetry, SnapshotHolder
from sms_monitor.core.window import HistogramState
from sms_monitor.outputs.collector import SnapshotCollector
from sms_monitor.outputs.exposition import gzip_accepted
from sms_monitor.outputs.http import ExporterServer
from tests.snapshots import account, sample_snapshot, snapshot

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
LIVE = ("process_", "sms_monitor_http_")


@pytest.fixture
def served() -> Iterator[tuple[ExporterServer, SnapshotHolder]]:
    holder = SnapshotHolder()
    server = ExporterServer(("127.0.0.1", 0), holder).start()
    yield server, holder
    server.stop()


def raw_get(server: ExporterServer, headers: dict[str, str]) -> tuple[dict[str, str], bytes]:
    """A GET with exactly these headers (no client decoding); the body undecoded."""
    host, port = server.server_address
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(f"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{head}\r\n"
                  .encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    top, _, body = data.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")[1:]
    return {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}, body


def snapshot_part(text: str) -> list[str]:
    return [line for line in text.splitlines()
            if not any(line.removeprefix("# HELP ").removeprefix("# TYPE ").startswith(p)
                       for p in LIVE)]


def test_rendered_once_per_publish_and_reused(served: tuple[ExporterServer, SnapshotHolder]
                                              ) -> None:
    server, holder = served
    cache = server.exposition
    server.page("/metrics", "")
    assert cache.renders == 1  # not ready yet: rendered once too
    holder.publish(sample_snapshot())
    first = server.page("/metrics", "")[1]
    for _ in range(5):
        assert snapshot_part(server.page("/metrics", "")[1].decode()) == \
            snapshot_part(first.decode())
    assert cache.renders == 2
    holder.publish(sample_snapshot())  # a new cycle: rendered as it is published
    assert cache.renders == 3
    server.page("/metrics", "")
    assert cache.renders == 3
    holder.amend_alerts(lambda a: a)  # nothing published yet: unchanged
    server.page("/metrics", "")
    assert cache.renders == 3


def test_alert_state_published_is_a_new_render(served: tuple[ExporterServer, SnapshotHolder]
                                               ) -> None:
    from sms_monitor.core.snapshot import AlertsSnapshot
    server, holder = served
    holder.publish(sample_snapshot())
    server.page("/metrics", "")
    before = server.exposition.renders
    holder.publish_alerts(AlertsSnapshot(leader=True))
    assert server.exposition.renders == before + 1
    assert "sms_alert_leader 1.0" in server.page("/metrics", "")[1].decode()
    assert server.exposition.renders == before + 1


def test_the_live_families_are_fresh_each_scrape(served: tuple[ExporterServer, SnapshotHolder]
                                                 ) -> None:
    server, holder = served
    holder.publish(sample_snapshot())
    server.page("/metrics", "")
    server.listeners[0].bad_requests["invalid"] += 1
    text = server.page("/metrics", "")[1].decode()
    assert 'sms_monitor_http_bad_requests_total{listener="web",reason="invalid"} 1.0' in text
    assert server.exposition.renders == 1
    names = [f.name for f in text_string_to_metric_families(text)]
    assert len(names) == len(set(names))
    assert names.index("sms_monitor_build_info") < names.index("process_cpu_seconds") \
        < names.index("sms_monitor_http_connections")


def test_gzip_when_accepted(served: tuple[ExporterServer, SnapshotHolder]) -> None:
    server, holder = served
    holder.publish(sample_snapshot())
    headers, plain = raw_get(server, {})
    assert "content-encoding" not in headers and headers["vary"] == "Accept-Encoding"
    for _ in range(2):  # the second from the cache
        headers, body = raw_get(server, {"Accept-Encoding": "gzip"})
        assert headers["content-encoding"] == "gzip"
        assert int(headers["content-length"]) == len(body) < len(plain) / 3
        text = gzip.decompress(body).decode()  # two members, one stream
        assert snapshot_part(text) == snapshot_part(plain.decode())
        assert "process_cpu_seconds_total" in text
    headers, _ = raw_get(server, {"Accept-Encoding": "gzip;q=0, identity"})
    assert "content-encoding" not in headers


def test_go_style_multistream_is_what_prometheus_reads(
        served: tuple[ExporterServer, SnapshotHolder]) -> None:
    """Prometheus scrapes with Accept-Encoding: gzip; the body parses whole."""
    server, holder = served
    holder.publish(sample_snapshot())
    _, body = raw_get(server, {"Accept-Encoding": "gzip",
                               "Accept": "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"})
    families = {f.name for f in text_string_to_metric_families(gzip.decompress(body).decode())}
    assert {"sms_health_status", "process_cpu_seconds", "sms_monitor_http_connections"} <= families


def test_openmetrics_plain_and_gzip(served: tuple[ExporterServer, SnapshotHolder]) -> None:
    server, holder = served
    holder.publish(sample_snapshot())
    for encoding in ("", "gzip"):
        headers, body = raw_get(server, {"Accept": OPENMETRICS, "Accept-Encoding": encoding})
        assert headers["content-type"].startswith("application/openmetrics-text")
        text = (gzip.decompress(body) if encoding else body).decode()
        assert text.endswith("# EOF\n") and text.count("# EOF") == 1
        names = {f.name for f in om_families(text)}
        assert {"sms_health_status", "process_cpu_seconds"} <= names
    _, plain = raw_get(server, {})
    assert b"# EOF" not in plain
    assert server.exposition.renders == 2  # text and OpenMetrics: each once


@pytest.mark.parametrize(("header", "accepted"), [
    ("gzip", True), ("gzip, deflate, br", True), ("br;q=1.0, gzip;q=0.8", True),
    ("GZIP", True), ("*", True), ("gzip;q=0", False), ("identity", False), ("", False),
    ("deflate", False), ("gzip;q=bad", False),
])
def test_gzip_accepted(header: str, accepted: bool) -> None:
    assert gzip_accepted(header) is accepted


def two_accounts() -> SnapshotHolder:
    holder = SnapshotHolder()
    holder.publish(snapshot(account("a"), account("b"), requests=RequestTelemetry(
        durations={("a", "balance"): HistogramState((0.5, 1.0), (2, 1, 0), 1.25, 3),
                   ("b", "balance"): HistogramState((0.5, 1.0), (0, 1, 1), 3.5, 2),
                   ("b", "messages"): HistogramState((0.5, 1.0), (1, 0, 0), 0.25, 1)})))
    return holder


def registry(holder: SnapshotHolder, per_account: bool) -> CollectorRegistry:
    from sms_monitor.app import UNITS
    r = CollectorRegistry(auto_describe=False)
    r.register(SnapshotCollector(holder, [a for u in UNITS for a in u.areas], per_account))
    return r


def test_request_histograms_are_summed_over_the_accounts_when_asked() -> None:
    r = registry(two_accounts(), per_account=False)
    name = "twilio_api_request_duration_seconds"
    assert r.get_sample_value(f"{name}_count", {"endpoint": "balance"}) == 5
    assert r.get_sample_value(f"{name}_sum", {"endpoint": "balance"}) == 4.75
    assert r.get_sample_value(f"{name}_bucket", {"endpoint": "balance", "le": "0.5"}) == 2
    assert r.get_sample_value(f"{name}_bucket", {"endpoint": "balance", "le": "1.0"}) == 4
    assert r.get_sample_value(f"{name}_bucket", {"endpoint": "balance", "le": "+Inf"}) == 5
    assert r.get_sample_value(f"{name}_count", {"endpoint": "messages"}) == 1
    text = generate_latest(r).decode()
    assert f'{name}_count{{account=' not in text


def test_request_histograms_per_account_by_default() -> None:
    r = registry(two_accounts(), per_account=True)
    name = "twilio_api_request_duration_seconds"
    assert r.get_sample_value(f"{name}_count", {"account": "a", "endpoint": "balance"}) == 3
    assert r.get_sample_value(f"{name}_count", {"account": "b", "endpoint": "balance"}) == 2
    assert r.get_sample_value(f"{name}_count", {"endpoint": "balance"}) is None


def test_the_setting_is_read_from_the_file() -> None:
    from sms_monitor.config import load_settings
    env = {"TWILIO_ACCOUNT_SID": "AC" + "0" * 32, "TWILIO_AUTH_TOKEN": "a" * 32}
    # the health contract labels the histogram by account and endpoint: that is the default
    assert load_settings(env, {}).per_account_request_histograms is True
    assert load_settings(env, {"per_account_request_histograms": False}
                         ).per_account_request_histograms is False


def test_a_publish_renders_what_scrapers_asked_for(
        served: tuple[ExporterServer, SnapshotHolder]) -> None:
    server, holder = served
    cache = server.exposition
    holder.publish(sample_snapshot())
    assert cache.renders == 0  # nobody scraped yet: nothing rendered
    raw_get(server, {"Accept-Encoding": "gzip"})  # a scraper that wants text, gzipped
    assert cache.renders == 1
    holder.publish(sample_snapshot())
    assert cache.renders == 2  # in publish(), not in the next scrape
    _, body = raw_get(server, {"Accept-Encoding": "gzip"})
    assert cache.renders == 2 and "sms_health_status" in gzip.decompress(body).decode()
    server.stop()
    holder.publish(sample_snapshot())
    assert cache.renders == 2  # a stopped server no longer renders


def test_a_scrape_during_a_render_gets_the_last_complete_one(
        served: tuple[ExporterServer, SnapshotHolder]) -> None:
    server, holder = served
    cache = server.exposition
    holder.publish(sample_snapshot())
    before = server.page("/metrics", "")[1]
    published = holder.published
    assert published is not None
    with cache._lock:  # the publisher rendering the new snapshot
        holder._published = replace(published, snapshot=snapshot(account("other")))
        during = server.page("/metrics", "")[1]
    assert snapshot_part(during.decode()) == snapshot_part(before.decode())
    after = server.page("/metrics", "")[1].decode()
    assert 'account="other"' in after and 'account="other"' not in during.decode()
