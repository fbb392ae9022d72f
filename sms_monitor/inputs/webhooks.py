"""Twilio's webhooks: status callbacks (``POST /twilio/status``) and incoming messages
(``POST /twilio/inbound``), signed, validated and handed on.

Twilio signs each request with the account's auth token over the URL it called and the
form parameters (``X-Twilio-Signature``). Behind a proxy that URL is not the one we see,
so ``public_url`` names it. Accepted status events wait in a :class:`CallbackInbox` until
the next cycle applies them to the same per-message records the poller keeps, so a message
is counted once whichever saw it first, and delivery time is the callback's arrival.

An incoming message whose whole body is a keyword (opt-out, opt-in, help) goes to the
``on_inbound`` listener at once (the monitor records it and re-checks opt-outs when the
application's grace period ends); anything else is only counted. The answer is an empty
TwiML document: sms-monitor observes, the application replies.

Replays. A form that names a parameter twice is refused with 400 as ``malformed`` while it
is parsed (which value would the signature be about?). Values without Twilio's shapes
(``core/webhook_params.py``: a ``MessageSid`` extended by the parameter after it keeps its
signature) are refused the same way *after* the signature: a request without a valid
signature gets 403 whatever it holds, so no one without the auth token learns anything
from the checks, and ``malformed`` among signed requests points at a replay with shifted
values (or a change at Twilio). The signature covers the concatenated names and values,
not where one parameter ends: only values of a known shape mean what it seems to say, so
they are checked before any is used. An incoming message seen
before is a ``duplicate``, answered 200 so that Twilio does not retry: here for the SIDs
of this process, and for keyword messages in the audit store too, where the listener
claims each SID durably (across restarts) before anything else and says whether it was new.
Status callbacks are not remembered durably: applying one twice changes nothing (a record
keeps its first delivery time, and a final status never moves back to an in-flight one).
"""

from __future__ import annotations

import hmac
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from urllib.parse import parse_qsl

import structlog
from twilio.request_validator import RequestValidator

from sms_monitor.core.events import CallbackEvent, InboundEvent
from sms_monitor.core.keywords import KeywordMatcher
from sms_monitor.core.webhook_params import shape_problem

log = structlog.get_logger("sms_monitor.webhooks")

MAX_BODY = 64 * 1024
STATUS_PATH = "/twilio/status"
INBOUND_PATH = "/twilio/inbound"
ENDPOINTS = {STATUS_PATH: "status", INBOUND_PATH: "inbound"}
EMPTY_TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


class CallbackInbox:
    """Thread-safe queue of accepted events plus the request counters by endpoint, outcome."""

    def __init__(self, tokens: dict[str, str], public_url: str | None = None,
                 rate_per_minute: int = 600, clock: object = time.time,
                 keywords: KeywordMatcher | None = None,
                 on_inbound: Callable[[InboundEvent], bool | None] | None = None) -> None:
        """``on_inbound`` gets each new keyword message; it returns False when it knew the
        message already (a replay after a restart): that request counts as a duplicate."""
        self._validators = {sid: RequestValidator(token) for sid, token in tokens.items()}
        self.public_url = public_url.rstrip("/") if public_url else None
        self.rate_per_minute = rate_per_minute
        self._clock = clock
        self._lock = threading.Lock()
        self._events: deque[CallbackEvent] = deque(maxlen=100_000)
        self._hits: dict[str, deque[float]] = {}
        self._swept = 0.0
        self._seen: OrderedDict[str, None] = OrderedDict()  # recent inbound message SIDs
        self.dropped = 0  # status events lost because the queue was full
        self.keywords = keywords or KeywordMatcher()
        self.on_inbound = on_inbound
        self.outcomes: Counter[tuple[str, str]] = Counter()

    def _now(self) -> float:
        clock = self._clock
        return float(clock()) if callable(clock) else time.time()

    def count(self, outcome: str, endpoint: str = "status") -> None:
        with self._lock:
            self.outcomes[endpoint, outcome] += 1

    def _rate_limited(self, source: str, now: float) -> bool:
        """Whether ``source`` sent ``rate_per_minute`` refused requests in the last minute.

        Only refusals count, and a validly signed request is answered even from a source over
        its budget: Twilio's own traffic, often all from one proxy address, is never refused,
        while garbage from a source is.
        """
        with self._lock:
            if now - self._swept >= 60:  # forget sources idle for a minute
                self._hits = {k: v for k, v in self._hits.items() if v and v[-1] >= now - 60}
                self._swept = now
            hits = self._hits.get(source)
            if hits is None:
                return False
            while hits and hits[0] < now - 60:
                hits.popleft()
            return len(hits) >= self.rate_per_minute

    def refuse(self, outcome: str, endpoint: str, source: str, code: int,
               now: float | None = None) -> int:
        """Count a refused request against its source's budget; returns ``code``."""
        now = self._now() if now is None else now
        with self._lock:
            self.outcomes[endpoint, outcome] += 1
            self._hits.setdefault(source, deque()).append(now)
        return code

    @staticmethod
    def _valid(validator: RequestValidator, url: str, params: dict[str, str],
               signature: str) -> bool:
        # One HMAC for the usual case; the library's validate() also tries the URL with and
        # without its default port, which costs a second one.
        expected = validator.compute_signature(url, params)
        if hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
            return True
        return bool(validator.validate(url, params, signature))

    def handle(self, path: str, host_url: str, body: bytes, signature: str | None,
               source: str) -> int:
        """Validate one request; returns the HTTP status to answer.

        ``path`` is the request target as sent (with any query string: Twilio signs it).
        """
        endpoint = ENDPOINTS.get(path.split("?", 1)[0], "status")
        now = self._now()
        limited = self._rate_limited(source, now)

        def deny(outcome: str, code: int) -> int:
            # over its refusal budget, a source gets 429 for anything not validly signed
            if limited:
                self.count("rate_limited", endpoint)
                return 429
            return self.refuse(outcome, endpoint, source, code, now)

        if limited and not signature:  # cut off before reading anything
            return deny("unsigned", 403)
        if len(body) > MAX_BODY:
            return deny("too_large", 413)
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True)
        except (UnicodeDecodeError, ValueError):
            return deny("malformed", 400)
        params = dict(pairs)
        if len(params) != len(pairs):  # a name twice: which value did Twilio sign?
            return deny("malformed", 400)
        if not signature:
            return deny("unsigned", 403)
        validator = self._validators.get(params.get("AccountSid", ""))
        if validator is None:
            return deny("unknown_account", 403)
        url = (self.public_url or host_url) + path
        try:
            valid = self._valid(validator, url, params, signature)
        except ValueError:  # a Host header no URL can be made of (bad port, brackets)
            valid = False
        if not valid:
            return deny("bad_signature", 403)
        if shape_problem(params) is not None:  # e.g. a MessageSid extended by what followed
            return deny("malformed", 400)
        if endpoint == "inbound":
            return self._inbound(params, now)
        sid, status = params.get("MessageSid") or params.get("SmsSid"), \
            params.get("MessageStatus") or params.get("SmsStatus")
        if not sid or not status:
            self.count("malformed", endpoint)
            return 400
        code = params.get("ErrorCode")
        event = CallbackEvent(params["AccountSid"], sid, status,
                              int(code) if code and code.isdigit() else None, now)
        with self._lock:
            if len(self._events) == self._events.maxlen:
                self.dropped += 1  # the oldest waiting event goes: cycles are too far apart
            self._events.append(event)
            self.outcomes[endpoint, "accepted"] += 1
        return 204

    def _inbound(self, params: dict[str, str], now: float) -> int:
        sid = params.get("MessageSid") or params.get("SmsMessageSid") or params.get("SmsSid")
        number = params.get("From")
        if not sid or not number:
            self.count("malformed", "inbound")
            return 400
        with self._lock:
            if sid in self._seen:  # Twilio retried, or a signed request was replayed
                self.outcomes["inbound", "duplicate"] += 1
                return 200
            self._seen[sid] = None
            if len(self._seen) > 10_000:
                self._seen.popitem(last=False)
        kind = self.keywords.kind(params.get("Body"))
        if kind is None or self.on_inbound is None:
            self.count("accepted", "inbound")
            return 200
        event = InboundEvent(params["AccountSid"], sid, number, kind,
                             str(params.get("Body")).strip().upper(), now)
        try:
            fresh = self.on_inbound(event)
        except Exception as exc:  # Twilio still gets its answer; the poll will see the message
            log.exception("inbound_listener_failed", error=type(exc).__name__)
            self.count("accepted", "inbound")
            self.count("internal", "inbound")
            return 200
        self.count("duplicate" if fresh is False else "accepted", "inbound")
        return 200

    def drain(self) -> list[CallbackEvent]:
        with self._lock:
            events = list(self._events)
            self._events.clear()
        return events

    def counts(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self.outcomes)
