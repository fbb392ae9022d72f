"""Whether each configured source can be read, and for how long it has not been.

A source is an outside system the verdict depends on: a Twilio account, the application
database, the status page, sms-monitor's own stores. A source that cannot be read makes the
verdict ``unknown`` (never green); one that stays unreadable for ``unreachable_cycles``
consecutive cycles turns its connection check red.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sms_monitor.core.classify import CheckResult, Status, worst


@dataclass(frozen=True)
class SourceState:
    name: str  # "twilio:primary", "database", "statuspage", "alert_store", "audit_store"
    ok: bool
    failing_cycles: int = 0  # consecutive cycles it could not be read (0 when ok)
    reason: str = ""  # why not, one line (never a secret)


class SourceTracker:
    """Counts one source's consecutive unreadable cycles (the only state; pure)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.failing = 0

    def observe(self, ok: bool, reason: str = "", progressing: bool = False) -> SourceState:
        """This cycle's answer. A source not read whole but ``progressing`` (a long backlog
        read a little further each cycle) is not ok, yet does not count toward red."""
        self.failing = 0 if ok or progressing else self.failing + 1
        return SourceState(self.name, ok, self.failing, "" if ok else reason)


def connection_check(state: SourceState, group: str, limit: int, name: str = "connection"
                     ) -> CheckResult:
    """Green while the source answers; unknown while it has been unreadable for fewer than
    ``limit`` cycles; red from then on."""
    if state.ok:
        return CheckResult(name, group, Status.GREEN, 0.0, "cycles", "readable")
    status = Status.RED if state.failing_cycles >= limit else Status.UNKNOWN
    cycles = f"{state.failing_cycles} cycle{'s' if state.failing_cycles != 1 else ''}"
    return CheckResult(name, group, status, float(state.failing_cycles), "cycles",
                       f"unreadable for {cycles} (red from {limit}): {state.reason}")


def verdict(groups: Iterable[Status], sources: Iterable[SourceState]) -> Status:
    """The verdict across groups: red if any group is red; otherwise unknown while any
    configured source cannot be read; otherwise the worst of the groups (unknown only when
    nothing is known)."""
    statuses = list(groups)
    if Status.RED in statuses:
        return Status.RED
    if any(not s.ok for s in sources):
        return Status.UNKNOWN
    return worst(statuses)
