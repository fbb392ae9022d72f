"""The HTTP surface of ``run`` and ``demo``: /metrics, /healthz, /readyz and a landing page."""

from __future__ import annotations

import html
import socket
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.process_collector import ProcessCollector

from sms_monitor import __version__
from sms_monitor.background_server import BackgroundHTTPServer
from sms_monitor.core.snapshot import Snapshot, SnapshotHolder
from sms_monitor.inputs.webhooks import EMPTY_TWIML, ENDPOINTS, MAX_BODY, CallbackInbox
from sms_monitor.outputs.collector import SnapshotCollector
from sms_monitor.outputs.webconfig import OPEN_PATHS, WebConfig

_COLOURS = {"green": "#2e7d32", "yellow": "#b8860b", "red": "#c62828", "unknown": "#616161"}


def build_registry(holder: SnapshotHolder) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(holder))
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
            self._send(200, b"ok\n", "text/plain; charset=utf-8")
        elif path == "/readyz":
            if holder.ready:
                self._send(200, b"ready\n", "text/plain; charset=utf-8")
            else:
                self._send(503, b"waiting for the first poll cycle\n", "text/plain; charset=utf-8")
        elif path == "/":
            self._send(200, landing_page(holder, self.server.extra_html).encode(),
                       "text/html; charset=utf-8")
        else:
            self._send(404, b"not found\n", "text/plain; charset=utf-8")


def landing_page(holder: SnapshotHolder, extra_html: str = "") -> str:
    snap = holder.current
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>sms-monitor</title>",
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:.3em .8em;text-align:left}"
        "td.s{color:#fff;font-weight:bold}</style></head><body>",
        f"<h1>sms-monitor {html.escape(__version__)}</h1>",
        "<p><a href='/metrics'>/metrics</a> · <a href='/healthz'>/healthz</a> · "
        "<a href='/readyz'>/readyz</a></p>",
    ]
    if snap is None:
        parts.append("<p>Waiting for the first poll cycle.</p>")
    else:
        age = max(0.0, time.time() - snap.taken_at)
        parts.append(f"<p>Overall: <b>{snap.overall.value}</b>; last poll {age:.0f}s ago.</p>")
        parts.append("<table><tr><th>account</th><th>check</th><th>status</th><th>value</th>"
                     "<th>detail</th></tr>")
        for c in snap.checks():
            value = "" if c.value is None else f"{c.value:.4g} {c.unit}"
            colour = _COLOURS[c.status.value]
            parts.append(
                f"<tr><td>{html.escape(c.account)}</td><td>{html.escape(c.name)}</td>"
                f"<td class='s' style='background:{colour}'>{c.status.value}</td>"
                f"<td>{html.escape(value)}</td><td>{html.escape(c.detail)}</td></tr>")
        parts.append("</table>")
        parts.append(realtime_summary(snap))
    parts.append(extra_html)
    parts.append("</body></html>")
    return "".join(parts)


def realtime_summary(snap: Snapshot) -> str:
    """Where delivery times come from, and the canary's last probe (HTML, escaped)."""
    lines = []
    for a in snap.accounts:
        callback, poll = a.timed.get("callback", 0), a.timed.get("poll", 0)
        if callback or poll:
            lines.append(f"{html.escape(a.account)}: {callback} of {callback + poll} delivery "
                         f"times from status callbacks, {poll} from polls")
    c = snap.canary
    if c is not None:
        counts = ", ".join(f"{n} {r}" for r, n in sorted(c.results.items())) or "none settled"
        last = "no probe settled yet" if c.last_result is None else (
            f"last probe {c.last_result}" + (f" in {c.latency:.1f} s" if c.latency is not None
                                             else ""))
        mode = "API only, test credentials" if c.api_only else "end to end"
        lines.append(f"canary ({html.escape(c.account)}, {mode}): {last}; probes: {counts}; "
                     f"{c.in_flight} in flight")
    return "".join(f"<p>{line}</p>" for line in lines)


class ExporterServer(BackgroundHTTPServer):
    thread_name = "exporter"

    def __init__(self, address: tuple[str, int], holder: SnapshotHolder,
                 extra_html: str = "", web_config: WebConfig | None = None,
                 callbacks: CallbackInbox | None = None) -> None:
        super().__init__(address, ExporterHandler)
        self.web_config = web_config
        self.callbacks = callbacks
        self.holder = holder
        self.registry = build_registry(holder)
        self.extra_html = extra_html

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
