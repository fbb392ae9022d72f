"""Classification of measured values into green / yellow / red / unknown."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from sms_monitor.core.thresholds import Threshold


class Status(Enum):
    UNKNOWN = "unknown"
    GREEN = "green"
    YELLOW = "yellow"
    RED = "red"

    @property
    def code(self) -> int:
        """The value exported by ``sms_health_status``: 0 green, 1 yellow, 2 red, -1 unknown."""
        return _CODES[self]

    @property
    def exit_code(self) -> int:
        """Nagios plugin convention: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN."""
        return 3 if self is Status.UNKNOWN else _CODES[self]


_CODES = {Status.UNKNOWN: -1, Status.GREEN: 0, Status.YELLOW: 1, Status.RED: 2}


@dataclass(frozen=True)
class CheckResult:
    name: str
    account: str
    status: Status
    value: float | None = None
    unit: str = ""
    detail: str = ""

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "account": self.account,
            "status": self.status.value,
            "value": self.value,
            "unit": self.unit,
            "detail": self.detail,
        }


def grade(value: float, threshold: Threshold) -> Status:
    """Place ``value`` in the threshold's bands (boundaries are yellow)."""
    if threshold.higher_is_better:
        if value > threshold.good:
            return Status.GREEN
        if value < threshold.bad:
            return Status.RED
        return Status.YELLOW
    if value < threshold.good:
        return Status.GREEN
    if value > threshold.bad:
        return Status.RED
    return Status.YELLOW


def overall_check(group: str, checks: list[CheckResult], counted: Iterable[str]
                  ) -> CheckResult:
    """The group's ``overall``: the worst of the ``counted`` checks (the contract's own);
    the others are advisory and only named in the detail when they are worse."""
    names = set(counted)
    status = worst(c.status for c in checks if c.name in names)
    bad = [c.name for c in checks
           if c.name in names and c.status is status and status is not Status.GREEN]
    advisory = [f"{c.name} {c.status.value}" for c in checks
                if c.name not in names and c.status is not Status.UNKNOWN
                and c.status.code > max(status.code, 0)]
    detail = ", ".join(bad)
    if advisory:
        detail += ("; " if detail else "") + "advisory: " + ", ".join(advisory)
    return CheckResult("overall", group, status, float(status.code), "status", detail)


def worst(statuses: Iterable[Status]) -> Status:
    """Overall status: the worst known status; unknown only when nothing is known."""
    known = [s for s in statuses if s is not Status.UNKNOWN]
    if not known:
        return Status.UNKNOWN
    return max(known, key=lambda s: s.code)
