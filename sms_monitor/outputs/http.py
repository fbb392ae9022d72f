"""The HTTP surface of ``run`` and ``demo``: /metrics, /healthz, /readyz and a landing page."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.process_collector import ProcessCollector

from sms_monitor.background_server import BackgroundHTTPServer
from sms_monitor.core.snapshot import SnapshotHolder
from sms_monitor.inputs.webhooks import EMPTY_TWIML, ENDPOINTS, MAX_BODY, CallbackInbox
from sms_monitor.outputs.collector import SnapshotCollector
from sms_monitor.outputs.metrics import Area
from sms_monitor.outputs.pages import landing_page
from sms_monitor.outputs.webconfig import OPEN_PATHS, WebConfig


def build_registry(holder: SnapshotHolder, areas: Sequence[type[Area]] = ()) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(holder, areas))
    ProcessCollector(registry=registry)
    return registry


class ExporterHandler(BaseHTTPRequestHandler):
    server: ExporterServer
    protocol_version = "HTTP/1.1"
    timeout = 30  # seconds a client may take per request (and the TLS handshake)
    # Headers and body go out as two writes; without TCP_NODELAY a keep-alive scraper
    # waits ~40 ms for the delayed ACK on every scrape.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if ctype.startswith("text/html"):
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("X-Frame-Options", "DENY")
            self.send_header("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0]
        inbox = self.server.callbacks
        endpoint = ENDPOINTS.get(path)
        if inbox is None or endpoint is None:
            self._send(404, b"not found\n", "text/plain; charset=utf-8")
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:  # refused before reading a byte of it
            self.close_connection = True
            outcome, status = ("too_large", 413) if length > MAX_BODY else ("malformed", 400)
            inbox.refuse(outcome, endpoint, self.client_address[0], status)
            self._send(status, b"", "text/plain; charset=utf-8")
            return
        body = self.rfile.read(length)
        tls = self.server.web_config is not None and self.server.web_config.tls is not None
        host_url = f"{'https' if tls else 'http'}://{self.headers.get('Host', '')}"
        status = inbox.handle(self.path, host_url, body, self.headers.get("X-Twilio-Signature"),
                              self.client_address[0])
        if endpoint == "inbound" and status == 200:
            self._send(200, EMPTY_TWIML, "text/xml; charset=utf-8")
        else:
            self._send(status, b"", "text/plain; charset=utf-8")

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0]
        holder = self.server.holder
        web = self.server.web_config
        if web is not None and path not in OPEN_PATHS \
                and not web.authorised(self.headers.get("Authorization")):
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="sms-monitor"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if path == "/metrics":
            encoder, ctype = choose_encoder(self.headers.get("Accept", ""))
            self._send(200, encoder(self.server.registry), ctype)
        elif path == "/healthz":
            max_age = self.server.max_cycle_age
            stalled = holder.stalled_for(max_age) if max_age is not None else None
            if stalled is None:
                self._send(200, b"ok\n", "text/plain; charset=utf-8")
            else:  # the poll loop is wedged: let Docker or Kubernetes restart us
                self._send(503, f"no poll cycle has finished for {stalled:.0f}s (limit "
                                f"{max_age:.0f}s)\n".encode(), "text/plain; charset=utf-8")
        elif path == "/readyz":
            if holder.ready:
                self._send(200, b"ready\n", "text/plain; charset=utf-8")
            else:
                self._send(503, b"waiting for the first poll cycle\n", "text/plain; charset=utf-8")
        elif path == "/":
            self._send(200, landing_page(holder, self.server.pages, self.server.extra_html).encode(),
                       "text/html; charset=utf-8")
        else:
            self._send(404, b"not found\n", "text/plain; charset=utf-8")


class ExporterServer(BackgroundHTTPServer):
    thread_name = "exporter"

    def __init__(self, address: tuple[str, int], holder: SnapshotHolder,
                 extra_html: str = "", web_config: WebConfig | None = None,
                 callbacks: CallbackInbox | None = None,
                 areas: Sequence[type[Area]] = (), max_cycle_age: float | None = None) -> None:
        """``max_cycle_age``: /healthz fails once no cycle has finished for that long."""
        super().__init__(address, ExporterHandler)
        self.web_config = web_config
        self.callbacks = callbacks
        self.holder = holder
        self.registry = build_registry(holder, areas)
        self.pages = [a() for a in areas]
        self.extra_html = extra_html
        self.max_cycle_age = max_cycle_age

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = super().get_request()
        if self.web_config is not None and self.web_config.tls is not None:
            # the handshake happens in the handler's thread, on its first read
            conn = self.web_config.tls.wrap_socket(conn, server_side=True,
                                                   do_handshake_on_connect=False)
        return conn, addr

    @property
    def scheme(self) -> str:
        tls = self.web_config is not None and self.web_config.tls is not None
        return "https" if tls else "http"
