"""The shared base of the exporter's and the simulator's HTTP servers: it stops at once."""

from __future__ import annotations

import http.client
import socket
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from sms_monitor.background_server import BackgroundHTTPServer
from sms_monitor.config import parse_listen_address
from sms_monitor.core.snapshot import SnapshotHolder

FAST = 0.25  # seconds; the standard library's serve_forever would take up to 0.5 to notice


class Hello(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"hello")


def get(server: BackgroundHTTPServer) -> bytes:
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(str(host), port, timeout=5)
    try:
        conn.request("GET", "/")
        return conn.getresponse().read()
    finally:
        conn.close()


def test_serves_on_a_daemon_thread_and_stops_in_milliseconds() -> None:
    server = BackgroundHTTPServer(("127.0.0.1", 0), Hello).start()
    assert server.url == f"http://127.0.0.1:{server.server_address[1]}"
    assert get(server) == b"hello"
    thread = server._thread
    assert thread is not None and thread.daemon and thread.name == "http-server"
    started = time.perf_counter()
    server.stop()
    assert time.perf_counter() - started < FAST
    assert not thread.is_alive()


def test_stop_right_after_start_and_without_start() -> None:
    started = time.perf_counter()
    BackgroundHTTPServer(("127.0.0.1", 0), Hello).start().stop()
    BackgroundHTTPServer(("127.0.0.1", 0), Hello).stop()
    assert time.perf_counter() - started < 2 * FAST


def test_serve_forever_in_the_foreground_ends_on_shutdown_from_another_thread() -> None:
    server = BackgroundHTTPServer(("127.0.0.1", 0), Hello)
    runner = threading.Thread(target=server.serve_forever, daemon=True)
    runner.start()
    assert get(server) == b"hello"
    started = time.perf_counter()
    server.shutdown()
    runner.join(5)
    assert not runner.is_alive() and time.perf_counter() - started < FAST
    server.server_close()


def test_class_settings_of_the_simulator() -> None:
    from sms_monitor.simulator.server import SimulatorServer

    assert issubclass(SimulatorServer, BackgroundHTTPServer)
    cls = SimulatorServer
    assert cls.daemon_threads and cls.allow_reuse_address and cls.request_queue_size == 128


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def test_the_exporter_serves_healthz_on_the_ipv6_loopback() -> None:
    from sms_monitor.outputs.http import ExporterServer

    if not _ipv6_loopback():
        pytest.skip("this machine has no IPv6 loopback")
    server = ExporterServer(parse_listen_address("--web.listen-address", "[::1]:0"),
                            SnapshotHolder()).start()
    try:
        port = server.server_address[1]
        assert server.url == f"http://[::1]:{port}"
        with urllib.request.urlopen(f"{server.url}/healthz", timeout=5) as r:
            assert (r.status, r.read()) == (200, b"ok\n")
    finally:
        server.stop()
