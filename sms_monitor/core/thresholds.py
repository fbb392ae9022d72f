"""The threshold table: one place where each check's boundaries are written.

Semantics follow the health contract: the *good* bound is where green ends
and the *bad* bound is where red begins; the band between them, boundaries
included, is yellow. So with ``good=0.95, bad=0.90`` and higher values better,
0.95 is yellow, 0.90 is yellow and 0.899 is red.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Threshold:
    good: float
    bad: float
    higher_is_better: bool
    unit: str

    def __post_init__(self) -> None:
        if self.higher_is_better and self.good < self.bad:
            raise ValueError(f"green bound {self.good} must be above red bound {self.bad}")
        if not self.higher_is_better and self.good > self.bad:
            raise ValueError(f"green bound {self.good} must be below red bound {self.bad}")


DEFAULT_THRESHOLDS: dict[str, Threshold] = {
    "api_response_time": Threshold(good=3.0, bad=7.0, higher_is_better=False, unit="seconds"),
    "delivery_rate": Threshold(good=0.95, bad=0.90, higher_is_better=True, unit="ratio"),
    "error_rate": Threshold(good=0.02, bad=0.05, higher_is_better=False, unit="ratio"),
    "delivery_latency": Threshold(good=10.0, bad=30.0, higher_is_better=False, unit="seconds"),
    "balance": Threshold(good=50.0, bad=20.0, higher_is_better=True, unit="currency"),
    "queue_delay": Threshold(good=60.0, bad=300.0, higher_is_better=False, unit="seconds"),
    "reconciliation": Threshold(good=0.98, bad=0.90, higher_is_better=True, unit="ratio"),
    "throughput": Threshold(good=0.8, bad=1.0, higher_is_better=False, unit="ratio"),
    "budget": Threshold(good=0.8, bad=1.0, higher_is_better=False, unit="ratio"),
    # the rise of the international share over its usual level (percentage points / 100)
    "international_share": Threshold(good=0.05, bad=0.15, higher_is_better=False, unit="ratio"),
}
