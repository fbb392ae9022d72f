"""The HTTP surface of ``run`` and ``demo``: /metrics, /healthz, /readyz, the landing page
and Twilio's webhooks, served by uvicorn.

Two doors, each its own listener with its own :class:`~sms_monitor.outputs.gate.Gate`:

- the **operators' door** (``--web.listen-address``): ``/metrics`` and ``/`` (behind basic
  auth when ``--web.config.file`` names users), ``/healthz`` and ``/readyz`` (always open);
- **Twilio's door** (``--web.webhook-address``, optional): ``POST /twilio/status`` and
  ``POST /twilio/inbound`` only. Without it the webhooks share the operators' door.

Each request is answered by a small ASGI application; work that takes more than
microseconds (rendering the exposition or a page, checking a signature, a bcrypt hash) runs
on a thread pool, so the event loop keeps accepting, timing out and answering probes while
it runs. The listeners' limits come from ``[web]`` in the configuration (:class:`WebLimits`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import resource
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs, urlsplit

import structlog
import uvicorn
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from sms_monitor.config import WebLimits
from sms_monitor.core.snapshot import SnapshotHolder
from sms_monitor.inputs.webhooks import EMPTY_TWIML, ENDPOINTS, MAX_BODY, CallbackInbox
from sms_monitor.outputs.basic_auth import MAX_PENDING, AuthOutcome
from sms_monitor.outputs.collector import SnapshotCollector
from sms_monitor.outputs.exposition import ExpositionCache
from sms_monitor.outputs.gate import REFUSED_REASONS, Gate, GatedListener, listen
from sms_monitor.outputs.http_protocol import INVALID, Limits, protocol_class
from sms_monitor.outputs.metrics import Area
from sms_monitor.outputs.pages import landing_page
from sms_monitor.outputs.runbook_page import PATH as RUNBOOK_PATH
from sms_monitor.outputs.runbook_page import runbook_html
from sms_monitor.outputs.webconfig import OPEN_PATHS, WebConfig, san_allowed

log = structlog.get_logger("sms_monitor.http")

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]
TEXT = "text/plain; charset=utf-8"
RESERVED_FDS = 64  # descriptors kept for the database, Twilio, the stores and the logs
BAD_HEAD_REASONS = {"bare LF line ending": "line_ending", "obsolete line folding": "folding",
                    "both Content-Length and Transfer-Encoding": "ambiguous_length",
                    "repeated Content-Length or Transfer-Encoding": "ambiguous_length",
                    INVALID: "invalid"}
OPERATORS, WEBHOOKS = "web", "webhooks"
MAX_ACTION_BODY = 4096  # bytes of a form posted to an action
Action = Callable[[Mapping[str, str]], str]  # a posted form -> where to redirect


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_registry(holder: SnapshotHolder, areas: Sequence[type[Area]] = (),
                   per_account_request_histograms: bool = True,
                   process: bool = True) -> CollectorRegistry:
    """The snapshot's families (and, with ``process``, the process's own)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(holder, areas, per_account_request_histograms))
    if process:
        ProcessCollector(registry=registry)
    return registry


class Listener:
    """One door: its socket, its gate, its counters."""

    def __init__(self, name: str, address: tuple[str, int], limits: WebLimits,
                 max_connections: int) -> None:
        self.name = name
        self.gate = Gate(max_connections, limits.max_connections_per_source,
                         limits.request_timeout)
        self.socket: GatedListener = listen(address, self.gate)
        self.bad_requests: Counter[str] = Counter({r: 0 for r in set(BAD_HEAD_REASONS.values())})
        self.auth_refusals: Counter[str] = Counter({"unauthorised": 0, "throttled": 0})

    def bad_head(self, problem: str) -> None:
        self.bad_requests[BAD_HEAD_REASONS.get(problem, "other")] += 1


class HttpServerCollector(Collector):
    """The listeners' own health: connections open and refused, deadlines, bad requests.

    Sample::

        sms_monitor_http_connections{listener="web"} 3.0
        sms_monitor_http_connections_limit{listener="web"} 192.0
        sms_monitor_http_connections_refused_total{listener="web",reason="per_source"} 0.0
        sms_monitor_http_deadline_exceeded_total{listener="web"} 0.0
        sms_monitor_http_bad_requests_total{listener="web",reason="ambiguous_length"} 1.0
        sms_monitor_http_auth_refusals_total{listener="web",outcome="throttled"} 0.0
    """

    def __init__(self, listeners: Sequence[Listener]) -> None:
        self.listeners = listeners

    def collect(self) -> Iterator[Metric]:
        open_ = GaugeMetricFamily("sms_monitor_http_connections",
                                  "HTTP connections open, by listener", labels=["listener"])
        limit = GaugeMetricFamily("sms_monitor_http_connections_limit",
                                  "Connections a listener keeps open at most (the configured "
                                  "limit, lowered to fit the descriptor limit)", labels=["listener"])
        refused = CounterMetricFamily(
            "sms_monitor_http_connections_refused",
            "Connections closed on accept: max_connections (the listener is full) or "
            "per_source (one address has max_connections_per_source open)",
            labels=["listener", "reason"])
        expired = CounterMetricFamily(
            "sms_monitor_http_deadline_exceeded",
            "Connections shut down because a request, a response or an idle keep-alive "
            "outlived its limit", labels=["listener"])
        bad = CounterMetricFamily(
            "sms_monitor_http_bad_requests",
            "Requests refused with 400 before they reach a handler: ambiguous_length "
            "(Content-Length with Transfer-Encoding, or either repeated), line_ending (a bare "
            "LF), folding (an obsolete folded header line), invalid (not HTTP/1.1 as h11 "
            "parses it: a bad header value, an oversized head, a transfer coding other than "
            "chunked)", labels=["listener", "reason"])
        auth = CounterMetricFamily(
            "sms_monitor_http_auth_refusals",
            "Requests refused by basic auth: unauthorised (401) or throttled (429, the "
            "source's failed attempts are over budget)", labels=["listener", "outcome"])
        for lst in self.listeners:
            gate = lst.gate
            open_.add_metric([lst.name], len(gate.open))
            limit.add_metric([lst.name], gate.max_connections)
            for reason in REFUSED_REASONS:
                refused.add_metric([lst.name, reason], gate.refused[reason])
            expired.add_metric([lst.name], gate.expired)
            for reason, n in sorted(lst.bad_requests.items()):
                bad.add_metric([lst.name, reason], n)
            for outcome, n in sorted(lst.auth_refusals.items()):
                auth.add_metric([lst.name, outcome], n)
        yield from (open_, limit, refused, expired, bad, auth)


class BodyTooLarge(Exception):
    """The body grew past the limit while it was read (a chunked body has no length)."""


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """A request's whole body; None when the client went away before it ended."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body += message.get("body", b"")
        if len(body) > limit:
            raise BodyTooLarge
        if not message.get("more_body"):
            return bytes(body)


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


class Door:
    """The ASGI application behind one listener."""

    def __init__(self, server: ExporterServer, listener: Listener, operators: bool,
                 webhooks: bool) -> None:
        self.server = server
        self.listener = listener
        self.operators = operators
        self.webhooks = webhooks

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan is off; nothing else is served
            return
        state = scope["state"]["connection"]
        state.requests += 1
        close = state.requests >= self.server.limits.max_requests_per_connection
        path, method = scope["path"], scope["method"]

        async def respond(status: int, body: bytes = b"", ctype: str = TEXT,
                          headers: Sequence[tuple[str, str]] = (), last: bool = False) -> None:
            out = [("Content-Type", ctype), ("Content-Length", str(len(body))),
                   ("Cache-Control", "no-store"), *headers, *self.server.extra_headers]
            if ctype.startswith("text/html"):
                out += [("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "DENY"),
                        ("Content-Security-Policy",
                         "default-src 'none'; style-src 'unsafe-inline'")]
            if close or last:
                out.append(("Connection", "close"))
            await send({"type": "http.response.start", "status": status,
                        "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in out]})
            await send({"type": "http.response.body", "body": body})

        if self.webhooks and path in ENDPOINTS:
            if method != "POST":
                await respond(405, b"method not allowed\n", headers=[("Allow", "POST")],
                              last=True)
                return
            await self._webhook(scope, receive, respond)
            return
        if self.operators and path in self.server.actions:
            await self._action(scope, receive, respond)
            return
        if not self.operators or path not in ("/metrics", "/healthz", "/readyz", "/",
                                              RUNBOOK_PATH):
            await respond(404, b"not found\n", last=method not in ("GET", "HEAD"))
            return
        if method not in ("GET", "HEAD"):
            await respond(405, b"method not allowed\n", headers=[("Allow", "GET, HEAD")],
                          last=True)
            return
        if path not in OPEN_PATHS and not await self._authorised(scope, respond):
            return
        if path == "/metrics":
            body, ctype, gzipped = await self.server.run(
                self.server.exposition.render, _header(scope, b"accept") or "",
                _header(scope, b"accept-encoding") or "")
            await respond(200, body, ctype, headers=[("Vary", "Accept-Encoding")]
                          + ([("Content-Encoding", "gzip")] if gzipped else []))
            return
        status, body, ctype = await self.server.run(self.server.page, path,
                                                    _header(scope, b"accept") or "")
        await respond(status, body, ctype)

    async def _action(self, scope: dict[str, Any], receive: Receive,
                      respond: Callable[..., Awaitable[None]]) -> None:
        """A form posted to one of the server's actions (the demo's controls): behind the
        same credentials as the pages, same-origin only; answered with a redirect."""
        if scope["method"] != "POST":
            await respond(405, b"method not allowed\n", headers=[("Allow", "POST")], last=True)
            return
        if not await self._authorised(scope, respond):
            return
        origin, host = _header(scope, b"origin"), _header(scope, b"host")
        if origin is not None and urlsplit(origin).netloc != host:
            await respond(403, b"cross-origin form refused\n", last=True)
            return
        length = _header(scope, b"content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_ACTION_BODY):
            await respond(413, b"form too large\n", last=True)
            return
        try:
            body = await read_body(receive, MAX_ACTION_BODY)
        except BodyTooLarge:
            await respond(413, b"form too large\n", last=True)
            return
        if body is None:
            return
        fields = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        try:
            location = await self.server.run(self.server.actions[scope["path"]], fields)
        except ValueError as exc:
            await respond(400, f"{exc}\n".encode())
            return
        await respond(303, headers=[("Location", location)])

    async def _authorised(self, scope: dict[str, Any],
                          respond: Callable[..., Awaitable[None]]) -> bool:
        auth = self.server.authenticator
        if auth is None or not auth.enabled:
            return True
        header, source = _header(scope, b"authorization"), (scope.get("client") or ("", 0))[0]
        decision = auth.quick(header, source)
        if decision is None and header is not None:
            decision = await self.server.run_auth(auth.verify, header, source)
        if decision is not None and decision.outcome is AuthOutcome.OK:
            return True
        if decision is not None and decision.outcome is AuthOutcome.THROTTLED:
            self.listener.auth_refusals["throttled"] += 1
            await respond(429, b"too many failed attempts\n",
                          headers=[("Retry-After", str(max(1, math.ceil(decision.retry_after))))])
        else:
            self.listener.auth_refusals["unauthorised"] += 1
            await respond(401, headers=[("WWW-Authenticate", 'Basic realm="sms-monitor"')])
        return False

    async def _webhook(self, scope: dict[str, Any], receive: Receive,
                       respond: Callable[..., Awaitable[None]]) -> None:
        inbox = self.server.callbacks
        assert inbox is not None
        endpoint = ENDPOINTS[scope["path"]]
        source = (scope.get("client") or ("", 0))[0]
        length = _header(scope, b"content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            too_large = length.isdigit()
            status = inbox.refuse("too_large" if too_large else "malformed", endpoint, source,
                                  413 if too_large else 400)
            await respond(status, last=True)  # the body is never read: the connection goes
            return
        try:
            body = await read_body(receive, MAX_BODY)
        except BodyTooLarge:  # a chunked body grew past the limit
            await respond(inbox.refuse("too_large", endpoint, source, 413), last=True)
            return
        if body is None:
            return
        target = scope["raw_path"].decode("latin-1")
        if scope["query_string"]:
            target += "?" + scope["query_string"].decode("latin-1")
        host_url = "" if inbox.public_url else f"{scope['scheme']}://{_header(scope, b'host') or ''}"
        args = (target, host_url, body, _header(scope, b"x-twilio-signature"), source)
        if endpoint == "status":  # an HMAC and a queue append: cheaper here than a thread hop
            status = inbox.handle(*args)
        else:  # an incoming message claims its SID in the audit store (up to a second)
            status = await self.server.run_webhook(inbox.handle, *args)
        if endpoint == "inbound" and status == 200:
            await respond(200, EMPTY_TWIML, "text/xml; charset=utf-8")
        else:
            await respond(status)


class ExporterServer:
    """The HTTP surface: one or two listeners served by uvicorn on a background thread."""

    thread_name = "exporter"
    join_timeout = 5.0

    def __init__(self, address: tuple[str, int], holder: SnapshotHolder,
                 extra_html: str | Callable[[], str] = "",
                 web_config: WebConfig | None = None,
                 callbacks: CallbackInbox | None = None,
                 areas: Sequence[type[Area]] = (), max_cycle_age: float | None = None,
                 webhook_address: tuple[str, int] | None = None,
                 limits: WebLimits | None = None,
                 page_options: Mapping[str, Any] | None = None,
                 actions: Mapping[str, Action] | None = None,
                 per_account_request_histograms: bool = True) -> None:
        """``max_cycle_age``: /healthz fails once no cycle has finished for that long.
        ``extra_html`` ends the landing page (a function: called for each page).
        ``per_account_request_histograms``: twilio_api_request_duration_seconds by account
        and endpoint (else by endpoint only).
        ``actions``: POST paths of the operators' door (the demo's controls), each a
        function of the posted form that returns where to redirect, or raises ValueError.

        Binds at once: an address in use raises OSError here, before anything starts.
        """
        self.web_config = web_config
        self.callbacks = callbacks
        self.holder = holder
        self.limits = limits = limits or WebLimits()
        # everything, in exposition order (tests and tools read samples from it) ...
        self.registry = build_registry(holder, areas, per_account_request_histograms)
        self.pages = [a() for a in areas]
        self.extra_html = extra_html
        self.page_options = dict(page_options or {})  # landing_page's keywords (levels...)
        self.actions: Mapping[str, Action] = dict(actions or {})
        self.max_cycle_age = max_cycle_age
        self.authenticator = web_config.authenticator if web_config is not None else None
        self.extra_headers: tuple[tuple[str, str], ...] = \
            tuple(web_config.headers) if web_config is not None else ()
        self.tls = web_config.tls if web_config is not None else None
        # Twilio's webhooks: on their own door when given one; on the operators' door only
        # where signatures can be checked against a known URL (public_url, or loopback)
        public = callbacks is not None and callbacks.public_url is not None
        if webhook_address is not None and not public and not is_loopback(webhook_address[0]):
            raise ValueError("webhooks on a non-loopback address need public_url")
        self.webhooks_off = callbacks is not None and webhook_address is None \
            and not public and not is_loopback(address[0])
        budget = max(16, _descriptor_limit() - RESERVED_FDS) // (2 if webhook_address else 1)
        per_listener = max(1, min(limits.max_connections, budget))
        self.listeners = [Listener(OPERATORS, address, limits, per_listener)]
        try:
            if webhook_address is not None:
                self.listeners.append(Listener(WEBHOOKS, webhook_address, limits, per_listener))
        except OSError:
            self.listeners[0].socket.close()
            raise
        serve_hooks = callbacks is not None and not self.webhooks_off
        self.doors = [Door(self, self.listeners[0], True, serve_hooks and webhook_address is None)]
        if webhook_address is not None:
            self.doors.append(Door(self, self.listeners[1], False, serve_hooks))
        self.registry.register(HttpServerCollector(self.listeners))
        # ... and /metrics as two parts: the snapshot's families rendered once per publish,
        # the live ones (process, the listeners' counters) per scrape (outputs/exposition.py)
        live = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=live)
        live.register(HttpServerCollector(self.listeners))
        self.exposition = ExpositionCache(
            holder, build_registry(holder, areas, per_account_request_histograms, process=False),
            live)
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="http")
        # incoming messages wait on the audit store: never in the pages' and scrapes' pool
        self._hook_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="http-webhook")
        # The Authenticator runs one bcrypt at a time and sheds what waits beyond its own
        # small queue; its pool only has to be wide enough that a waiting check never holds
        # a thread another request needs (basic_auth.MAX_PENDING).
        self._auth_pool = ThreadPoolExecutor(max_workers=MAX_PENDING + 4,
                                             thread_name_prefix="http-auth")
        self._servers: list[uvicorn.Server] = []
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None

    # ------------------------------------------------------------------ addresses

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    @property
    def server_address(self) -> tuple[str, int]:
        host, port = self.listeners[0].socket.getsockname()[:2]
        return str(host), int(port)

    def _url(self, listener: Listener) -> str:
        host, port = listener.socket.getsockname()[:2]
        shown = f"[{host}]" if ":" in str(host) else str(host)
        return f"{self.scheme}://{shown}:{port}"

    @property
    def url(self) -> str:
        return self._url(self.listeners[0])

    @property
    def webhook_url(self) -> str:
        """Where Twilio's door listens (the operators' door when there is only one)."""
        return self._url(self.listeners[-1])

    # ------------------------------------------------------------------ work

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def run_webhook(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._hook_pool, fn, *args)

    async def run_auth(self, fn: Callable[..., Any], *args: Any) -> Any:
        """bcrypt on its own pool (one hash at a time, the Authenticator sees to it): failed
        logins never take more than one core, nor the threads the pages need."""
        return await asyncio.get_running_loop().run_in_executor(self._auth_pool, fn, *args)

    def page(self, path: str, accept: str) -> tuple[int, bytes, str]:
        """An operator's GET: (status, body, content type). Runs on the pool."""
        holder = self.holder
        if path == "/metrics":  # uncompressed (the door serves /metrics itself)
            body, ctype, _ = self.exposition.render(accept)
            return 200, body, ctype
        if path == "/healthz":
            max_age = self.max_cycle_age
            stalled = holder.stalled_for(max_age) if max_age is not None else None
            if stalled is None:
                return 200, b"ok\n", TEXT
            # the poll loop is wedged: let Docker or Kubernetes restart us
            return 503, (f"no poll cycle has finished for {stalled:.0f}s (limit "
                         f"{max_age:.0f}s)\n").encode(), TEXT
        if path == "/readyz":
            if holder.ready:
                return 200, b"ready\n", TEXT
            return 503, b"waiting for the first poll cycle\n", TEXT
        if path == RUNBOOK_PATH:
            return 200, runbook_html(), "text/html; charset=utf-8"
        extra = self.extra_html() if callable(self.extra_html) else self.extra_html
        return 200, landing_page(holder, self.pages, extra,
                                 **self.page_options).encode(), "text/html; charset=utf-8"

    # ------------------------------------------------------------------ lifecycle

    def _config(self, door: Door, listener: Listener) -> uvicorn.Config:
        limits = self.limits
        sans = None
        if self.web_config is not None and self.web_config.allowed_sans:
            allowed = self.web_config.allowed_sans

            def sans(cert: Any) -> bool:
                return san_allowed(cert, allowed)
        protocol = protocol_class(
            listener.gate,
            Limits(limits.request_timeout, limits.response_timeout, limits.idle_timeout,
                   limits.max_requests_per_connection),
            sans_allowed=sans, on_refused_head=listener.bad_head, name=listener.name)
        config = uvicorn.Config(
            door, http=protocol, ws="none", lifespan="off", interface="asgi3",
            log_config=None, access_log=False, server_header=False, proxy_headers=False,
            timeout_keep_alive=max(1, int(limits.idle_timeout)),
            limit_concurrency=limits.max_concurrent_requests,
            timeout_graceful_shutdown=2, h11_max_incomplete_event_size=16 * 1024)
        config.load()
        config.ssl = self.tls  # our context: the web config's versions, ciphers, client CAs
        return config

    def start(self) -> ExporterServer:
        """Serves on a daemon thread; returns once every listener accepts."""
        logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)  # counted, not logged
        self._servers = [uvicorn.Server(self._config(door, door.listener)) for door in self.doors]
        self._ready.clear()
        self._thread = threading.Thread(target=self._serve, name=self.thread_name, daemon=True)
        self._thread.start()
        self.holder.subscribe(self.exposition.warm)  # /metrics rendered as it is published
        self._ready.wait(self.join_timeout)
        if self._failure is not None:
            raise RuntimeError(f"HTTP server failed to start: {self._failure}")
        if self.webhooks_off:
            log.warning("webhooks_not_served", reason="no public_url and a non-loopback listen "
                        "address: set public_url, or --web.webhook-address on loopback")
        return self

    def _serve(self) -> None:
        try:
            asyncio.run(self._serve_all())
        except BaseException as exc:  # noqa: BLE001 - reported to start() and the log
            self._failure = exc
            log.error("http_server_failed", error=type(exc).__name__)
        finally:
            self._ready.set()

    async def _serve_all(self) -> None:
        tasks = [asyncio.create_task(server.serve(sockets=[door.listener.socket]))
                 for server, door in zip(self._servers, self.doors, strict=True)]
        while not all(s.started for s in self._servers):
            done = [t for t in tasks if t.done()]
            if done:
                done[0].result()  # raises what stopped it
                raise RuntimeError("a listener stopped while starting")
            await asyncio.sleep(0.005)
        self._ready.set()
        await asyncio.gather(*tasks)

    def stop(self) -> None:
        """Stops serving, closes the listeners and joins the serving thread."""
        self.holder.unsubscribe(self.exposition.warm)
        for server in self._servers:
            server.should_exit = True
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(self.join_timeout)
        for listener in self.listeners:
            with contextlib.suppress(OSError):
                listener.socket.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._hook_pool.shutdown(wait=False, cancel_futures=True)
        self._auth_pool.shutdown(wait=False, cancel_futures=True)


def _descriptor_limit() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20
