"""The synthetic canary's edge: send a test message through Twilio and follow it.

Like a blackbox probe, it exercises the whole path the practice's reminders take: the API
accepts the message, the carrier delivers it, the status comes back. The callback (when
Twilio can reach ``public_url``) ends a probe at once; otherwise each cycle reads the
probes still in flight by SID. With Twilio's test credentials only the API path is
exercised: Twilio accepts the request and sends nothing, so there is nothing to follow.

Sends are never retried: a retried create can send the test message twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from twilio.rest import Client

from sms_monitor.config import AccountConfig, CanaryConfig, Settings
from sms_monitor.core.canary import CanaryTracker, CanaryView
from sms_monitor.core.peers import peer_hash
from sms_monitor.core.snapshot import CANARY, WEBHOOKS, WebhooksPart
from sms_monitor.inputs.base import OBSERVE, CycleContext, Input, Wiring
from sms_monitor.inputs.telemetry import RequestLog
from sms_monitor.inputs.twilio_errors import TWILIO_FAILURES, failure_kind
from sms_monitor.inputs.twilio_http import MonitoredHttpClient
from sms_monitor.inputs.webhooks import STATUS_PATH

log = structlog.get_logger("sms_monitor.canary")

FOLLOW_AFTER = 10.0  # seconds a probe is left to its callback before it is read by SID


class CanaryProber:
    def __init__(self, config: CanaryConfig, account: AccountConfig, requests_log: RequestLog,
                 *, timeout: float, public_url: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.account = account
        self.clock = clock
        self.tracker = CanaryTracker(account.name, config.timeout, api_only=config.api_only)
        self.peer = peer_hash(config.to)  # the test handset, kept out of the statistics
        self.callback_url = f"{public_url.rstrip('/')}{STATUS_PATH}" if public_url else None
        sid, secret = ((config.test_account_sid, config.test_auth_token) if config.api_only
                       else (account.account_sid, account.auth_token))
        token = secret.get_secret_value() if secret is not None else None
        http = MonitoredHttpClient(account.name, requests_log, timeout=timeout, max_retries=0)
        client = Client(sid, token, http_client=http)
        client.api.base_url = account.api_url
        self._api: Any = client.api.v2010.accounts(sid)

    def excludes(self, sid: str, peer: int | None) -> bool:
        """Whether a polled message is the canary's (and so not the practice's traffic)."""
        return self.tracker.owns(sid) or (peer is not None and peer == self.peer)

    def send(self) -> str | None:
        """Send one probe; returns its SID, or None when the API refused or was unreachable."""
        started = self.clock()
        t0 = time.monotonic()
        kwargs: dict[str, Any] = {"to": self.config.to, "from_": self.config.from_number,
                                  "body": self.config.body}
        if self.callback_url and not self.config.api_only:
            kwargs["status_callback"] = self.callback_url
        try:
            message = self._api.messages.create(**kwargs)
            sid = message.sid
            if not isinstance(sid, str) or not sid:
                raise ValueError("no sid in the answer")
        except TWILIO_FAILURES as exc:
            self.tracker.send_failed(self.clock())
            log.warning("canary_send_failed", account=self.account.name,
                        cause=failure_kind(exc), error=type(exc).__name__)
            return None
        self.tracker.sent(sid, started, time.monotonic() - t0)
        log.info("canary_sent", account=self.account.name, api_only=self.config.api_only)
        return sid

    def follow(self) -> None:
        """Read the probes the callbacks have not settled yet; expire the late ones."""
        now = self.clock()
        for sid in self.tracker.pending(sent_before=now - FOLLOW_AFTER):
            try:
                message = self._api.messages(sid).fetch()
            except TWILIO_FAILURES as exc:
                log.warning("canary_read_failed", account=self.account.name,
                            cause=failure_kind(exc), error=type(exc).__name__)
                continue
            created, updated = message.date_created, message.date_updated
            if isinstance(message.status, str) and updated is not None and created is not None:
                self.tracker.observe(sid, message.status, updated.timestamp(),
                                     created=created.timestamp())
        self.tracker.expire(now)


class CanaryInput:
    """The canary on the seam: each cycle settles its probes (callbacks first, then reads
    by SID) and hands back the tracker's view. Probes are sent by the daemon's own job."""

    key = CANARY
    stage = OBSERVE

    def __init__(self, prober: CanaryProber) -> None:
        self.prober = prober

    @property
    def last_success(self) -> float | None:
        return None  # the probe's own last success is a metric of its part

    def read(self, ctx: CycleContext) -> CanaryView:
        webhooks = ctx.parts.get(WEBHOOKS)
        if isinstance(webhooks, WebhooksPart):
            for e in webhooks.status_events:
                self.prober.tracker.observe(e.sid, e.status, e.at)
        try:
            self.prober.follow()
        except Exception as exc:  # the probe must never cost a cycle
            log.exception("canary_follow_crashed", error=type(exc).__name__)
        return self.prober.tracker.view()

    def close(self) -> None:
        pass


def build(settings: Settings, wiring: Wiring) -> Sequence[Input]:
    canary = settings.canary
    if canary is None:
        return []
    account = next(a for a in settings.accounts if a.name == canary.account)
    prober = CanaryProber(canary, account, wiring.requests_log, timeout=settings.request_timeout,
                          public_url=settings.public_url, clock=wiring.clock)
    wiring.excludes[account.name] = prober.excludes
    return [CanaryInput(prober)]
