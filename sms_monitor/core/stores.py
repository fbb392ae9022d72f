"""sms-monitor's own stores' part of the snapshot (see :mod:`sms_monitor.inputs.stores`)."""

from __future__ import annotations

from dataclasses import dataclass

from sms_monitor.core.classify import CheckResult, Status, worst
from sms_monitor.core.sources import SourceState

STORES = "stores"


@dataclass(frozen=True)
class StoresPart:
    """sms-monitor's own stores (the alert store, the keyword audit store): readable?"""

    states: tuple[SourceState, ...]
    checks: tuple[CheckResult, ...]

    @property
    def verdict(self) -> Status | None:
        return worst(c.status for c in self.checks) if self.checks else None

    @property
    def sources(self) -> tuple[SourceState, ...]:
        return self.states
