"""Status callbacks and inbound-message webhooks, sent by the simulator the way Twilio sends them.

A :class:`WebhookSender` looks, once per tick, at the statuses the simulated clock moved
messages into since its previous tick (``queued``, ``sent``, then ``delivered`` /
``undelivered``, or ``failed`` straight away; ``received`` for inbound messages) and POSTs a
form-encoded request for each, signed with the account's auth token in ``X-Twilio-Signature``.

* Status callbacks go to the message's own ``StatusCallback`` URL when it was created with one,
  else to the configured ``status_url``; inbound messages go to ``inbound_url``.
* The first tick starts where the sender was started (or a default URL was switched on): past
  transitions are never replayed. Transitions at the very edge between two ticks are sent once.
* Like Twilio, a request that fails (refused, timed out, non-2xx answer) is not retried; it is
  counted in :attr:`WebhookSender.failed` and logged without phone numbers, bodies or tokens.
"""

from __future__ import annotations

import enum
import http.client
import threading
from bisect import bisect_left, bisect_right
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

import structlog
from twilio.request_validator import RequestValidator

from sms_monitor.simulator.state import SimAccount, SimMessage, SimState

log = structlog.get_logger("sms_monitor.simulator.webhooks")

API_VERSION = "2010-04-01"
# A fast-forward over days at a high rate would otherwise keep the thread busy for minutes:
# transitions beyond this many in one tick are counted in ``dropped`` and not sent.
MAX_REQUESTS_PER_TICK = 10_000
_FAILURE_LOG_EVERY = 100  # after the first failure of a streak, log every Nth


class Keep(enum.Enum):
    KEEP = 0


KEEP = Keep.KEEP  # configure(): leave this URL as it is


def check_url(url: str) -> str:
    """``url`` if it is an absolute http(s) URL without credentials, else ValueError."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a malformed port
    except ValueError as exc:
        raise ValueError("not a valid URL") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an absolute http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError("credentials in the URL are not supported")
    if any(c.isspace() for c in url):
        raise ValueError("URL contains whitespace")
    return url


@dataclass(frozen=True, slots=True)
class Webhook:
    """One request to send: ``kind`` is "status" or "inbound"."""

    kind: str
    url: str = field(repr=False)  # a path or query could carry something private
    params: dict[str, str] = field(repr=False)  # phone numbers, bodies
    auth_token: str = field(repr=False)
    message_sid: str = ""

    def signature(self) -> str:
        return str(RequestValidator(self.auth_token).compute_signature(self.url, self.params))


def _created(msg: SimMessage) -> float:
    return msg.created


def _dlr_date(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%y%m%d%H%M")


def status_params(acc: SimAccount, msg: SimMessage, status: str, at: float) -> dict[str, str]:
    params = {
        "AccountSid": acc.sid,
        "ApiVersion": API_VERSION,
        "From": msg.from_,
        "MessageSid": msg.sid,
        "MessageStatus": status,
        "SmsSid": msg.sid,
        "SmsStatus": status,
        "To": msg.to,
    }
    if status in ("undelivered", "failed") and msg.error_code is not None:
        params["ErrorCode"] = str(msg.error_code)
    if status in ("delivered", "undelivered"):
        params["RawDlrDoneDate"] = _dlr_date(at)
    return params


def inbound_params(acc: SimAccount, msg: SimMessage) -> dict[str, str]:
    return {
        "AccountSid": acc.sid,
        "ApiVersion": API_VERSION,
        "Body": msg.body,
        "From": msg.from_,
        "MessageSid": msg.sid,
        "NumMedia": "0",
        "NumSegments": str(msg.segments),
        "SmsMessageSid": msg.sid,
        "SmsSid": msg.sid,
        "SmsStatus": "received",
        "To": msg.to,
    }


class WebhookSender:
    """Sends the simulator's callbacks; :meth:`tick` is one pass, :meth:`start` runs it every
    ``interval`` seconds on a daemon thread. Thread-safe."""

    def __init__(self, state: SimState, *, status_url: str | None = None,
                 inbound_url: str | None = None, interval: float = 0.25,
                 timeout: float = 5.0) -> None:
        self.state = state
        self.interval = interval
        self.timeout = timeout
        self._status_url = check_url(status_url) if status_url else None
        self._inbound_url = check_url(inbound_url) if inbound_url else None
        self._config_lock = threading.Lock()  # the URLs and the "enabled since" moments
        self._tick_lock = threading.Lock()  # one pass at a time
        now = state.clock()
        self._since = now  # the simulated moment the next pass starts from
        self._edge: set[tuple[str, str]] = set()  # transitions at exactly _since, already done
        self._status_from = now  # default URLs apply to transitions from these moments on
        self._inbound_from = now
        self.sent: Counter[str] = Counter()  # answered 2xx, by kind
        self.failed: Counter[str] = Counter()  # refused, timed out or non-2xx, by kind
        self.dropped: Counter[str] = Counter()  # beyond MAX_REQUESTS_PER_TICK, by kind
        self.last_status: dict[str, int | None] = {}  # last HTTP status by kind (None: no answer)
        self._failing: Counter[str] = Counter()  # current failure streak, by kind
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- configuration ----------------------------------------------------------------------
    @property
    def status_url(self) -> str | None:
        return self._status_url

    @property
    def inbound_url(self) -> str | None:
        return self._inbound_url

    def configure(self, *, status_url: str | None | Keep = KEEP,
                  inbound_url: str | None | Keep = KEEP) -> None:
        """Set the default status-callback URL and the inbound webhook URL (None or "" switches
        one off; an argument left out keeps its URL). A URL switched on receives only
        transitions from now on."""
        new_status = self._status_url if status_url is KEEP else (
            check_url(status_url) if status_url else None)
        new_inbound = self._inbound_url if inbound_url is KEEP else (
            check_url(inbound_url) if inbound_url else None)
        now = self.state.clock()
        with self._config_lock:
            if new_status is not None and self._status_url is None:
                self._status_from = now
            if new_inbound is not None and self._inbound_url is None:
                self._inbound_from = now
            self._status_url, self._inbound_url = new_status, new_inbound

    def snapshot(self) -> dict[str, Any]:
        """The configuration and the counts, for the control API."""
        with self._config_lock:
            return {
                "status_url": self._status_url,
                "inbound_url": self._inbound_url,
                "running": self.running,
                "sent": dict(self.sent),
                "failed": dict(self.failed),
                "dropped": dict(self.dropped),
                "last_status": dict(self.last_status),
            }

    # -- the thread -------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> WebhookSender:
        """Start ticking on a daemon thread (no-op if it runs); transitions before now are
        not sent."""
        with self._tick_lock, self._config_lock:  # always in this order
            if self.running:
                return self
            now = self.state.clock()
            self._since, self._edge = now, set()
            self._status_from = self._inbound_from = now
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="simulator-webhooks",
                                            daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.timeout + self.interval + 1.0)
        self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception as exc:  # a bug in one pass must not end the callbacks
                log.warning("simulator_webhook_tick_failed", error=type(exc).__name__)

    # -- one pass ---------------------------------------------------------------------------
    def tick(self) -> int:
        """Send the callbacks due since the previous tick; returns how many requests were
        made (answered or not)."""
        with self._tick_lock:
            hooks = self._collect()
            made = 0
            for hook in hooks:
                if self._stop.is_set() and threading.current_thread() is self._thread:
                    break  # stop() asked: leave the rest
                self._post(hook)
                made += 1
            return made

    def _collect(self) -> list[Webhook]:
        state = self.state
        since = self._since
        # messages due by now exist; the pass covers [since, now] (a clock that stepped back
        # must not replay what was sent)
        now = max(state.advance(), since)
        with self._config_lock:
            status_url, inbound_url = self._status_url, self._inbound_url
            status_from, inbound_from = self._status_from, self._inbound_from
        hooks: list[tuple[float, Webhook]] = []
        edge: set[tuple[str, str]] = set(self._edge) if now == since else set()
        with state.lock:
            lookback = max(1.0, state.max_settle)  # a transition comes at most this late
            for acc in state.accounts.values():
                msgs = acc.messages
                lo = bisect_left(msgs, since - lookback, key=_created)
                hi = bisect_right(msgs, now, key=_created)
                for i in range(lo, hi):
                    msg = msgs[i]
                    for status, at in msg.transitions():
                        if at < since or at > now:
                            continue
                        key = (msg.sid, status)
                        if at == since and key in self._edge:
                            continue  # the previous pass ended exactly here and sent it
                        if at == now:
                            edge.add(key)
                        hook = self._hook(acc, msg, status, at, status_url, status_from,
                                          inbound_url, inbound_from)
                        if hook is not None:
                            hooks.append((at, hook))
        self._since, self._edge = now, edge
        hooks.sort(key=lambda pair: pair[0])  # stable: creation order among equal moments
        if len(hooks) > MAX_REQUESTS_PER_TICK:
            extra = Counter(h.kind for _, h in hooks[MAX_REQUESTS_PER_TICK:])
            self.dropped.update(extra)
            log.warning("simulator_webhooks_dropped", dropped=sum(extra.values()),
                        limit=MAX_REQUESTS_PER_TICK)
            del hooks[MAX_REQUESTS_PER_TICK:]
        return [h for _, h in hooks]

    @staticmethod
    def _hook(acc: SimAccount, msg: SimMessage, status: str, at: float,
              status_url: str | None, status_from: float, inbound_url: str | None,
              inbound_from: float) -> Webhook | None:
        if not msg.outbound:
            if inbound_url is None or at < inbound_from:
                return None
            return Webhook("inbound", inbound_url, inbound_params(acc, msg), acc.auth_token,
                           msg.sid)
        url = msg.status_callback or (status_url if at >= status_from else None)
        if url is None:
            return None
        return Webhook("status", url, status_params(acc, msg, status, at), acc.auth_token,
                       msg.sid)

    def _post(self, hook: Webhook) -> None:
        parts = urlsplit(hook.url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        body = urlencode(hook.params).encode()
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(parts.hostname or "", parts.port,
                                               timeout=self.timeout)
        else:
            conn = http.client.HTTPConnection(parts.hostname or "", parts.port,
                                              timeout=self.timeout)
        code: int | None = None
        error: str | None = None
        try:
            conn.request("POST", path, body=body, headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": hook.signature(),
                "User-Agent": "TwilioProxy/1.1 (sms-monitor simulator)",
                "Accept": "*/*",
                "Connection": "close",
            })
            resp = conn.getresponse()
            resp.read(1 << 16)
            code = resp.status
        except (OSError, http.client.HTTPException) as exc:
            error = type(exc).__name__
        finally:
            conn.close()
        self._record(hook, parts.netloc, code, error)

    def _record(self, hook: Webhook, target: str, code: int | None, error: str | None) -> None:
        ok = code is not None and 200 <= code < 300
        with self._config_lock:
            self.last_status[hook.kind] = code
            if ok:
                self.sent[hook.kind] += 1
                streak, self._failing[hook.kind] = self._failing[hook.kind], 0
            else:
                self.failed[hook.kind] += 1
                self._failing[hook.kind] += 1
                streak = self._failing[hook.kind]
        # target is host[:port] only: a path or query could carry something private
        if ok and streak:
            log.info("simulator_webhook_recovered", kind=hook.kind, target=target,
                     failures=streak)
        elif not ok and (streak == 1 or streak % _FAILURE_LOG_EVERY == 0):
            log.warning("simulator_webhook_failed", kind=hook.kind, target=target,
                        message_sid=hook.message_sid, http_status=code, error=error,
                        failures=streak)
