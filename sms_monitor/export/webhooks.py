"""Twilio's status callbacks (``POST /twilio/status``): signed, validated, queued.

Twilio signs each request with the account's auth token over the URL it called and the
form parameters (``X-Twilio-Signature``). Behind a proxy that URL is not the one we see,
so ``public_url`` names it. Accepted events wait in a :class:`CallbackInbox` until the next
cycle applies them to the same per-message records the poller keeps, so a message is
counted once whichever saw it first, and delivery time is the callback's arrival.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from urllib.parse import parse_qsl

from twilio.request_validator import RequestValidator

MAX_BODY = 64 * 1024
STATUS_PATH = "/twilio/status"


@dataclass(frozen=True)
class CallbackEvent:
    account_sid: str
    sid: str
    status: str
    error_code: int | None
    at: float  # when it arrived (POSIX seconds)


class CallbackInbox:
    """Thread-safe queue of accepted events plus the request counters by outcome."""

    def __init__(self, tokens: dict[str, str], public_url: str | None = None,
                 rate_per_minute: int = 1200, clock: object = time.time) -> None:
        self._validators = {sid: RequestValidator(token) for sid, token in tokens.items()}
        self.public_url = public_url.rstrip("/") if public_url else None
        self.rate_per_minute = rate_per_minute
        self._clock = clock
        self._lock = threading.Lock()
        self._events: deque[CallbackEvent] = deque(maxlen=100_000)
        self._hits: dict[str, deque[float]] = {}
        self.outcomes: Counter[str] = Counter()

    def _now(self) -> float:
        clock = self._clock
        return float(clock()) if callable(clock) else time.time()

    def count(self, outcome: str) -> None:
        with self._lock:
            self.outcomes[outcome] += 1

    def _rate_limited(self, source: str, now: float) -> bool:
        with self._lock:
            hits = self._hits.setdefault(source, deque())
            while hits and hits[0] < now - 60:
                hits.popleft()
            if len(hits) >= self.rate_per_minute:
                return True
            hits.append(now)
            if len(self._hits) > 10_000:  # forget idle sources
                self._hits = {k: v for k, v in self._hits.items() if v}
            return False

    def handle(self, path: str, host_url: str, body: bytes, signature: str | None,
               source: str) -> int:
        """Validate one request; returns the HTTP status to answer."""
        now = self._now()
        if self._rate_limited(source, now):
            self.count("rate_limited")
            return 429
        if len(body) > MAX_BODY:
            self.count("too_large")
            return 413
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True)
        except (UnicodeDecodeError, ValueError):
            self.count("malformed")
            return 400
        params = dict(pairs)
        if not signature:
            self.count("unsigned")
            return 403
        validator = self._validators.get(params.get("AccountSid", ""))
        if validator is None:
            self.count("unknown_account")
            return 403
        url = (self.public_url or host_url) + path
        if not validator.validate(url, params, signature):
            self.count("bad_signature")
            return 403
        sid, status = params.get("MessageSid") or params.get("SmsSid"), \
            params.get("MessageStatus") or params.get("SmsStatus")
        if not sid or not status:
            self.count("malformed")
            return 400
        code = params.get("ErrorCode")
        event = CallbackEvent(params["AccountSid"], sid, status,
                              int(code) if code and code.isdigit() else None, now)
        with self._lock:
            self._events.append(event)
            self.outcomes["accepted"] += 1
        return 204

    def drain(self) -> list[CallbackEvent]:
        with self._lock:
            events = list(self._events)
            self._events.clear()
        return events

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self.outcomes)
