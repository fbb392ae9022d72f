"""The exporter's HTTP server in-process: routes, methods, the gate's accounting, the head
checks (pure functions with exact cases)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import requests

from sms_monitor.config import WebLimits
from sms_monitor.core.snapshot import SnapshotHolder
from sms_monitor.inputs.webhooks import CallbackInbox
from sms_monitor.outputs.gate import Gate, GatedConnection, source_key
from sms_monitor.outputs.http import ExporterServer, is_loopback
from sms_monitor.outputs.http_protocol import head_problem


@pytest.fixture
def server() -> Iterator[ExporterServer]:
    s = ExporterServer(("127.0.0.1", 0), SnapshotHolder(),
                       callbacks=CallbackInbox({"AC" + "0" * 32: "token"})).start()
    yield s
    s.stop()


@pytest.mark.parametrize(("head", "problem"), [
    (b"GET / HTTP/1.1\r\nHost: a\r\n", None),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n", None),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n", None),
    (b"POST / HTTP/1.1\r\nHost: a\r\ncontent-length: 3\r\nTRANSFER-ENCODING: chunked\r\n",
     "both Content-Length and Transfer-Encoding"),
    (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n",
     "repeated Content-Length or Transfer-Encoding"),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
     "repeated Content-Length or Transfer-Encoding"),
    (b"GET / HTTP/1.1\nHost: a\r\n", "bare LF line ending"),
    (b"GET / HTTP/1.1\r\nX: a\r\n\tb\r\n", "obsolete line folding"),
    (b"GET / HTTP/1.1\r\nX-Content-Length: 3\r\nContent-Length: 3\r\n", None),
])
def test_head_problems(head: bytes, problem: str | None) -> None:
    assert head_problem(head) == problem


@pytest.mark.parametrize(("address", "key"), [
    (("127.0.0.2", 5000), "127.0.0.2"),
    (("2001:db8:1:2:3:4:5:6", 5000, 0, 0), "2001:db8:1:2::/64"),
    (("2001:db8:1:2:ffff::1", 1), "2001:db8:1:2::/64"),
    (("::ffff:10.0.0.1", 1), "10.0.0.1"),
])
def test_a_source_is_an_address_or_an_ipv6_64(address: tuple[object, ...], key: str) -> None:
    assert source_key(address) == key


def test_the_gate_admits_up_to_its_limits_and_releases_on_close() -> None:
    gate = Gate(max_connections=3, per_source=2, request_timeout=10)
    conns = []
    for source in ("a", "a", "a", "b", "c"):
        c = GatedConnection(socket.AF_INET, socket.SOCK_STREAM)
        c.gate, c.source = gate, source
        if gate.admit(c, source) is None:
            c.registered_fd = c.fileno()
            conns.append(c)
        else:
            c.close()
    assert [c.source for c in conns] == ["a", "a", "b"]
    assert dict(gate.refused) == {"per_source": 1, "max_connections": 1}
    conns[0].close()
    assert dict(gate.by_source) == {"a": 1, "b": 1} and len(gate.open) == 2
    conns[0].close()  # twice: counted once
    assert len(gate.open) == 2
    for c in conns[1:]:
        c.close()
    assert gate.open == {} and not gate.by_source


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.9.9.9", True), ("::1", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("10.0.0.1", False), ("example.org", False)])
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_methods_and_paths(server: ExporterServer) -> None:
    url = server.url
    assert requests.head(url + "/healthz", timeout=5).status_code == 200
    resp = requests.post(url + "/metrics", timeout=5)
    assert resp.status_code == 405 and resp.headers["Allow"] == "GET, HEAD"
    resp = requests.get(url + "/twilio/status", timeout=5)
    assert resp.status_code == 405 and resp.headers["Allow"] == "POST"
    assert requests.get(url + "/nope", timeout=5).status_code == 404
    assert "Server" not in requests.get(url + "/healthz", timeout=5).headers


def test_webhooks_stay_off_a_public_listener_without_public_url() -> None:
    inbox = CallbackInbox({"AC" + "0" * 32: "token"})
    s = ExporterServer(("0.0.0.0", 0), SnapshotHolder(), callbacks=inbox)
    try:
        assert s.webhooks_off and not s.doors[0].webhooks
    finally:
        s.stop()
    with pytest.raises(ValueError, match="public_url"):
        ExporterServer(("127.0.0.1", 0), SnapshotHolder(), callbacks=inbox,
                       webhook_address=("0.0.0.0", 0))
    public = CallbackInbox({"AC" + "0" * 32: "token"}, public_url="https://sms.example.org")
    s = ExporterServer(("0.0.0.0", 0), SnapshotHolder(), callbacks=public)
    try:
        assert not s.webhooks_off and s.doors[0].webhooks
    finally:
        s.stop()


def test_the_connection_limit_fits_the_descriptor_limit() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        s = ExporterServer(("127.0.0.1", 0), SnapshotHolder(), limits=WebLimits(),
                           webhook_address=("127.0.0.1", 0),
                           callbacks=CallbackInbox({"AC" + "0" * 32: "token"}))
        assert [lst.gate.max_connections for lst in s.listeners] == [96, 96]  # (256 - 64) / 2
        s.stop()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_runbook_is_served_with_an_anchor_per_alert(server: ExporterServer) -> None:
    import re
    from pathlib import Path

    resp = requests.get(server.url + "/runbook", timeout=5)
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/html")
    ids = set(re.findall(r'<h2 id="([^"]+)"', resp.text))
    rules = (Path(__file__).resolve().parent.parent / "alerts.rules.yml").read_text()
    alerts = {name.lower() for name in re.findall(r"- alert: (\w+)", rules)}
    assert alerts and alerts <= ids  # every runbook_url anchor lands on its section
    assert '<a href="/">' in resp.text
