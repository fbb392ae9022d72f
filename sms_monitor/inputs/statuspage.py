"""Twilio's public status page (Atlassian Statuspage v2 ``summary.json``).

Read every ``statuspage_interval``: the components relevant to SMS and the open
incidents, so on-call sees at once whether the fault is Twilio's. A status page that is
down or malformed makes this input unknown and nothing else.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

import requests
import structlog

from sms_monitor.config import Settings
from sms_monitor.core.facts import StatusPageFacts
from sms_monitor.core.snapshot import STATUSPAGE, StatusPagePart
from sms_monitor.core.sources import SourceTracker
from sms_monitor.core.statuspage import statuspage_check
from sms_monitor.inputs.base import OBSERVE, CycleContext, Input, Wiring

log = structlog.get_logger("sms_monitor.statuspage")

# Components whose name mentions SMS or messaging (or the REST API the application calls).
DEFAULT_COMPONENTS = r"(?i)\bsms\b|messag|rest api"
COMPONENT_STATES = ("operational", "degraded_performance", "partial_outage", "major_outage",
                    "under_maintenance")


def parse_summary(doc: Any, pattern: str = DEFAULT_COMPONENTS) -> StatusPageFacts:
    """Facts from a summary.json document; raises ValueError when it is not one."""
    if not isinstance(doc, dict) or not isinstance(doc.get("components"), list):
        raise ValueError("not a Statuspage summary (no components list)")
    status = doc.get("status")
    indicator = status.get("indicator") if isinstance(status, dict) else None
    wanted = re.compile(pattern)
    components: dict[str, str] = {}
    for c in doc["components"]:
        if not isinstance(c, dict) or not isinstance(c.get("name"), str):
            raise ValueError("a component without a name")
        if c.get("group") is True or not wanted.search(c["name"]):
            continue
        state = c.get("status")
        components[c["name"][:80]] = state if state in COMPONENT_STATES else "unknown"
    raw_incidents = doc.get("incidents") or []
    if not isinstance(raw_incidents, list):
        raise ValueError("incidents is not a list")
    incidents = [i for i in raw_incidents if isinstance(i, dict)
                 and i.get("status") not in ("resolved", "postmortem")]
    return StatusPageFacts(ok=True, indicator=indicator if isinstance(indicator, str) else None,
                           components=components, open_incidents=len(incidents),
                           incident_names=tuple(str(i.get("name", ""))[:120] for i in incidents))


class StatusPageSource:
    def __init__(self, url: str, timeout: float = 5.0, interval: float = 120.0,
                 pattern: str = DEFAULT_COMPONENTS) -> None:
        # the contract names the API base (with or without /api/v2); a full summary.json
        # URL works too
        base = url.rstrip("/")
        self.url = base if base.endswith(".json") else (
            base + "/summary.json" if base.endswith("/api/v2") else base + "/api/v2/summary.json")
        self.timeout = timeout
        self.interval = interval
        self.pattern = pattern
        self.session = requests.Session()
        self.last: StatusPageFacts | None = None
        self.last_ok: float | None = None  # when the page was last read successfully
        self.errors = 0

    def poll(self, now: float) -> StatusPageFacts:
        """The latest facts, re-read when ``interval`` has passed since the last read."""
        if self.last is not None and self.last.ok and now - self.last.read_at < self.interval:
            return self.last  # a failed read is tried again on the next cycle
        started = time.monotonic()
        try:
            resp = self.session.get(self.url, timeout=self.timeout,
                                    headers={"Accept": "application/json"})
            resp.raise_for_status()
            facts = parse_summary(resp.json(), self.pattern)
            facts = StatusPageFacts(**{**facts.__dict__, "read_at": now})
            self.last_ok = now
        except (requests.RequestException, ValueError, TypeError, AttributeError) as exc:
            self.errors += 1
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
            log.warning("statuspage_unreadable", reason=reason,
                        seconds=round(time.monotonic() - started, 3))
            facts = StatusPageFacts(ok=False, error=reason, read_at=now)
        self.last = facts
        return facts


class StatusPageInput:
    """The status page on the seam: its part is the facts and the ``twilio_status`` check."""

    key = STATUSPAGE
    stage = OBSERVE

    def __init__(self, source: StatusPageSource) -> None:
        self.source = source
        self.tracker = SourceTracker(STATUSPAGE)

    @property
    def last_success(self) -> float | None:
        return self.source.last_ok

    def read(self, ctx: CycleContext) -> StatusPagePart:
        facts = self.source.poll(ctx.now)
        return StatusPagePart(facts, statuspage_check(facts),
                              self.tracker.observe(facts.ok, facts.error or ""))

    def close(self) -> None:
        self.source.session.close()


def build(settings: Settings, wiring: Wiring) -> Sequence[Input]:
    if not settings.statuspage_url:
        return []
    return [StatusPageInput(StatusPageSource(settings.statuspage_url,
                                             timeout=min(5.0, settings.request_timeout),
                                             interval=settings.statuspage_interval))]
