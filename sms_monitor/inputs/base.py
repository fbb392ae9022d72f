"""The seam every input plugs into.

An input is one outside system the cycle reads: a Twilio account, the application
database, Twilio's status page, Twilio's webhooks, the canary. Each one

- is built from the settings by a factory (``build(settings, wiring) -> [inputs]``; none when
  its section is off), registered with one line in :mod:`sms_monitor.app`;
- reads at the edge (:meth:`Input.read`, all its I/O) and hands back a frozen *part*
  (:class:`sms_monitor.core.snapshot.Part`) whose checks the pure core computed;
- is shown by its metric area (``sms_monitor.outputs.metrics``), registered beside it.

Inputs read in stages: each stage sees the parts of the stages before it (the database
joins what the accounts read; the accounts apply what the webhooks received), and inputs
of one stage read in parallel.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from sms_monitor.core.keywords import KeywordMatcher
from sms_monitor.core.snapshot import Part
from sms_monitor.inputs.telemetry import RequestLog

Clock = Callable[[], float]

# Stages, in reading order.
RECEIVE = 0  # what was pushed to us since the last cycle (webhooks)
POLL = 1  # Twilio accounts
JOIN = 2  # the application database, joined with the accounts
OBSERVE = 3  # the status page, the canary


@dataclass(frozen=True)
class CycleContext:
    """What an input may see while it reads: the time, and the parts read before it."""

    now: float
    parts: Mapping[str, Part]


class Input(Protocol):
    key: str  # its part's key in the snapshot
    stage: int

    def read(self, ctx: CycleContext) -> Part:
        """Read the outside system (I/O) and return the frozen part; never raises for a
        failure of the system it reads (that is a fact of the part)."""
        ...

    @property
    def last_success(self) -> float | None:
        """When it was last read without error (None: never, or not applicable)."""
        ...

    def close(self) -> None: ...


@dataclass
class Wiring:
    """Shared parts the factories hand to the inputs they build."""

    clock: Clock = time.time
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic  # time budgets (a test's, with its sleep)
    requests_log: RequestLog = field(default_factory=RequestLog)
    keywords: KeywordMatcher = field(default_factory=KeywordMatcher)
    # message SIDs / peer hashes an account must keep out of its statistics (the canary's)
    excludes: dict[str, Callable[[str, int | None], bool]] = field(default_factory=dict)
    # called with the moment an opt-out's grace period ends (the daemon runs a cycle then)
    on_deadline: Callable[[float], None] | None = None
    one_shot: bool = False  # `check`: one cycle, no paging, nothing of the daemon's own
    # Statistics leave out messages created before this moment: the window restarts there
    # (see :meth:`window_edge`). Only the demo moves it, when it switches scenario.
    window_floor: float = -math.inf

    def window_edge(self, now: float, window_seconds: float) -> float:
        """Where the statistics window starts at ``now``: ``window_seconds`` back, or at
        :attr:`window_floor` if that is later."""
        return max(now - window_seconds, self.window_floor)
