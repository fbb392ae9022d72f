"""Twilio's status page as a check: shown next to ours, not part of ``overall``."""

from __future__ import annotations

from sms_monitor.core.classify import CheckResult, Status
from sms_monitor.core.facts import StatusPageFacts

GROUP = "twilio"
_RED = ("partial_outage", "major_outage")
_YELLOW = ("degraded_performance", "under_maintenance", "unknown")


def statuspage_check(facts: StatusPageFacts) -> CheckResult:
    if not facts.ok:
        return CheckResult("twilio_status", GROUP, Status.UNKNOWN, None, "status",
                           f"status page unreadable: {facts.error}")
    states = facts.components.values()
    bad = [f"{name}: {st}" for name, st in sorted(facts.components.items())
           if st != "operational"]
    incidents = f"; open incidents: {', '.join(facts.incident_names)}" if facts.open_incidents \
        else ""
    if any(s in _RED for s in states):
        status = Status.RED
    elif any(s in _YELLOW for s in states) or facts.open_incidents:
        status = Status.YELLOW
    else:
        status = Status.GREEN
    detail = (", ".join(bad) if bad else f"{len(facts.components)} SMS components operational")
    return CheckResult("twilio_status", GROUP, status, float(status.code), "status",
                       detail + incidents)
