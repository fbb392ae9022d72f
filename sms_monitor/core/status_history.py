"""Since when each check has had its status: kept from successive snapshots (pure).

A snapshot says what every check *is*; the incident page also says *since when*. The
holder feeds each snapshot it publishes to :meth:`StatusHistory.observe`, which returns the
next history: a check whose status is unchanged keeps its time, a changed one starts anew
at the snapshot's ``taken_at`` (so the time is that of the first cycle that saw it, within
one poll interval of the change itself).

Two rules keep the times honest:

- what the first snapshot after a start shows was already so before it, and what a check
  shows after an unknown spell may have begun during it: such a time is *at least*
  (``observed`` False), never an observed change;
- an ``unknown`` interval is a gap in what is known, not a recovery: a check that was red,
  could not be read for a while and is red again has been red since the first time (the
  alert engine treats an unknown value the same way).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from sms_monitor.core.classify import CheckResult, Status
from sms_monitor.core.frozen import Immutable

Key = tuple[str, str]  # (account, check name)


@dataclass(frozen=True)
class Since:
    """A check's current status and when it began."""

    status: Status
    at: float  # POSIX seconds: taken_at of the first snapshot that showed it
    # True: the change was seen between two cycles; False: it was already so when first seen
    # (at a start, or after an unknown spell), so ``at`` is "at least since"
    observed: bool
    # while unknown: the known status before it (kept, should it come back)
    before_unknown: Since | None = None


@dataclass(frozen=True)
class StatusHistory(Immutable):
    entries: Mapping[Key, Since] = field(default_factory=dict)

    def observe(self, checks: Iterable[CheckResult], at: float) -> StatusHistory:
        """The history after a snapshot taken at ``at`` showed ``checks``. Checks no longer
        shown are forgotten."""
        out: dict[Key, Since] = {}
        for c in checks:
            key = (c.account, c.name)
            out[key] = _next(self.entries.get(key), c.status, at)
        return StatusHistory(out)

    def since(self, account: str, name: str) -> Since | None:
        return self.entries.get((account, name))


def _next(prev: Since | None, status: Status, at: float) -> Since:
    if prev is None:
        return Since(status, at, observed=False)
    if prev.status is status:
        return prev
    if status is Status.UNKNOWN:  # seen to become unknown; what it was is kept
        return Since(status, at, observed=True, before_unknown=prev)
    if prev.status is Status.UNKNOWN:
        if prev.before_unknown is not None and prev.before_unknown.status is status:
            return prev.before_unknown  # back to what it was: the unknown spell was a gap
        # it changed while nothing was known: so at least since now
        return Since(status, at, observed=False)
    return Since(status, at, observed=True)
