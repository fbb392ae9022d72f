"""Twilio's webhooks as an input: what was pushed to ``/twilio/status`` and
``/twilio/inbound`` since the last cycle.

The HTTP server hands requests to :attr:`WebhookInput.inbox` (signature checks, counting);
a keyword message is first claimed in the audit table (its SID is a unique key there, so a
message seen before, even before a restart, stops here as a duplicate), then remembered
here for the window (with the sender's number, in memory only) and, for an opt-out, the
daemon is asked for a cycle when the application's grace period ends. Each cycle drains the accepted
status callbacks into the part; the accounts and the canary apply them.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Sequence

import structlog

from sms_monitor.config import Settings
from sms_monitor.core.dbchecks import KeywordEvent
from sms_monitor.core.events import InboundEvent
from sms_monitor.core.keywords import OPTIN, OPTOUT
from sms_monitor.core.snapshot import MONITOR_GROUP, WEBHOOKS, AuditCounts, WebhooksPart
from sms_monitor.core.sources import SourceTracker, connection_check
from sms_monitor.inputs.base import RECEIVE, CycleContext, Input, Wiring
from sms_monitor.inputs.webhooks import CallbackInbox
from sms_monitor.storage.audit import KeywordAudit

log = structlog.get_logger("sms_monitor.webhooks")

AUDIT_STORE = "audit_store"


class WebhookInput:
    key = WEBHOOKS
    stage = RECEIVE

    def __init__(self, settings: Settings, wiring: Wiring) -> None:
        self.settings = settings
        self._wiring = wiring
        self.clock = wiring.clock
        self._names = {a.account_sid: a.name for a in settings.accounts}
        self.inbox = CallbackInbox(
            {a.account_sid: a.auth_token.get_secret_value() for a in settings.accounts},
            public_url=settings.public_url, clock=wiring.clock, keywords=wiring.keywords,
            on_inbound=self.record_inbound)
        self._lock = threading.Lock()
        # keyword messages posted to /twilio/inbound, held for the window: (sid, event)
        self._inbound: deque[tuple[str, KeywordEvent]] = deque(maxlen=100_000)
        self.inbound_keywords: Counter[tuple[str, str]] = Counter()
        inbound = settings.inbound
        self.audit = (KeywordAudit(inbound.audit_url, inbound.prefix, accounts=self._names)
                      if inbound else None)
        self.audit_tracker = SourceTracker(AUDIT_STORE)

    @property
    def last_success(self) -> float | None:
        return None

    def record_inbound(self, event: InboundEvent) -> bool:
        """An incoming keyword message: claim its SID in the audit table, then remember it
        and ask for a cycle when the application's grace period to process an opt-out has
        passed. False (nothing done) when the audit table knew the SID already; a store that
        does not answer in time leaves the decision to the inbox's memory (True)."""
        name = self._names.get(event.account_sid, event.account_sid)
        if self.audit is not None and self.audit.claim(event) is False:
            log.info("inbound_keyword_duplicate", account=name, kind=event.kind)
            return False
        with self._lock:
            self.inbound_keywords[name, event.kind] += 1
            if event.kind in (OPTOUT, OPTIN):
                self._inbound.append((event.sid, KeywordEvent(event.number, event.at,
                                                              event.kind)))
        database = self.settings.database
        if event.kind == OPTOUT and database is not None and self._wiring.on_deadline is not None:
            self._wiring.on_deadline(event.at + database.optout_grace)
        log.info("inbound_keyword", account=name, kind=event.kind)
        return True

    def read(self, ctx: CycleContext) -> WebhooksPart:
        edge = self._wiring.window_edge(ctx.now, self.settings.window_seconds)
        with self._lock:
            while self._inbound and self._inbound[0][1].created < edge:
                self._inbound.popleft()
            keywords = tuple(self._inbound)
            counts = dict(self.inbound_keywords)
        audit = self.audit
        if audit is not None and audit.queued:
            audit.flush(wait=False)  # rows a failed write kept; never waits on a writer
        source = check = None
        if audit is not None and (audit.written or audit.failures or audit.queued):
            # known once a keyword event was to be written (``check`` never writes one)
            source = self.audit_tracker.observe(audit.last_error is None,
                                                f"writes fail: {audit.last_error}")
            check = connection_check(source, MONITOR_GROUP, self.settings.unreachable_cycles,
                                     name=AUDIT_STORE)
        return WebhooksPart(
            requests=self.inbox.counts(), inbound_keywords=counts, dropped=self.inbox.dropped,
            audit=AuditCounts(audit.queued, audit.written, audit.failures, audit.dropped)
            if audit is not None else None,
            status_events=tuple(self.inbox.drain()), keywords=keywords, audit_source=source,
            audit_check=check)

    def close(self) -> None:
        if self.audit is not None:
            self.audit.close()


def build(settings: Settings, wiring: Wiring) -> Sequence[Input]:
    return [WebhookInput(settings, wiring)]
