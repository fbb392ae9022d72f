"""The HTTP layer under the official twilio client: timeouts, retries, telemetry.

Every request the ``twilio`` library makes goes through
:class:`MonitoredHttpClient.request`, so retries (429 and 5xx, with backoff,
jitter and ``Retry-After``), the per-endpoint request metrics and the
401 flag live in one place whatever library call made the request.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from typing import Any

import requests
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response

from sms_monitor.core.backoff import Backoff
from sms_monitor.inputs.telemetry import RequestLog
from sms_monitor.inputs.twilio_errors import BudgetSpent

_ENDPOINTS = (
    (re.compile(r"/Usage/Records"), "usage_records"),
    (re.compile(r"/Balance\.json"), "balance"),
    (re.compile(r"/IncomingPhoneNumbers"), "incoming_phone_numbers"),
    (re.compile(r"/Messages/[^/]+\.json"), "message"),
    (re.compile(r"/Messages\.json"), "messages"),
    (re.compile(r"/Accounts/[^/]+\.json"), "account"),
)


def endpoint_of(url: str) -> str:
    """A bounded label for a Twilio URL (never contains SIDs or numbers)."""
    path = url.split("?", 1)[0]
    for pattern, name in _ENDPOINTS:
        if pattern.search(path):
            return name
    return "other"


def _retry_after(headers: Any) -> float | None:
    if not headers:
        return None
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class MonitoredHttpClient(TwilioHttpClient):
    """A TwilioHttpClient that times, counts and retries every request."""

    def __init__(
        self,
        account: str,
        log: RequestLog,
        *,
        timeout: float,
        max_retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(timeout=timeout)
        self.account = account
        self.requests_log = log
        self.max_retries = max_retries
        self.backoff = Backoff(backoff, max_backoff, jitter=0.5)  # "equal jitter"
        self._sleep = sleep
        self._jitter = jitter
        self.saw_401 = False
        self.successes = 0  # 2xx answers: proof the credentials work
        # Time the last request() spent waiting on Twilio, over all its attempts but not
        # the back-off sleeps between them (a Retry-After is not Twilio being slow).
        self.last_seconds = 0.0
        # time.monotonic() by which the cycle's requests must be done (None: no limit): no
        # request starts and no retry waits past it, so a 429 storm or a hang cannot hold
        # a cycle longer than its budget
        self.deadline: float | None = None
        self.monotonic = monotonic  # the deadline's clock (a test's fake time, with sleep)

    def past_deadline(self, wait: float = 0.0) -> bool:
        return self.deadline is not None and self.monotonic() + wait >= self.deadline

    def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        endpoint = endpoint_of(url)
        if endpoint == "messages" and method.upper() == "POST":
            endpoint = "message_create"  # the canary's sends, apart from the log's reads
        attempt = 0
        self.last_seconds = 0.0
        if self.past_deadline():
            raise BudgetSpent("the cycle's time for Twilio ran out")
        while True:
            started = time.monotonic()
            try:
                response = super().request(method, url, params, data, headers, auth, timeout,
                                           allow_redirects)
            except requests.Timeout:
                self.last_seconds += time.monotonic() - started
                self.requests_log.record(self.account, endpoint, "error",
                                         time.monotonic() - started)
                raise
            except requests.ConnectionError:
                self.last_seconds += time.monotonic() - started
                self.requests_log.record(self.account, endpoint, "error",
                                         time.monotonic() - started)
                delay = self.backoff.delay(attempt, rand=self._jitter)
                if attempt >= self.max_retries or self.past_deadline(delay):
                    raise
                self.requests_log.retry(self.account, "connection")
                self._sleep(delay)
                attempt += 1
                continue
            status = response.status_code
            self.last_seconds += time.monotonic() - started
            self.requests_log.record(self.account, endpoint, str(status), time.monotonic() - started)
            if 200 <= status < 300:
                self.successes += 1
            if status == 401:
                self.saw_401 = True
            if (status == 429 or status >= 500) and attempt < self.max_retries:
                delay = self.backoff.delay(attempt, _retry_after(response.headers),
                                           rand=self._jitter)
                if not self.past_deadline(delay):
                    self.requests_log.retry(self.account, "429" if status == 429 else "5xx")
                    self._sleep(delay)
                    attempt += 1
                    continue
            return response
