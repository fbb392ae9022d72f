"""The life of one alert (a rule applied to one target): pure, driven by an injected clock.

inactive → pending (for the rule's ``for``) → firing → resolved (back to inactive), with
hysteresis: a firing alert resolves only once the value is past the threshold by a margin,
so a value hovering at the threshold does not flap. While firing it is repeated every
``repeat`` and escalated by how long it has been firing (the runbook's levels), unless it
is acknowledged (``paused``): then it neither escalates nor repeats until the
acknowledgement ends, and still resolves.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sms_monitor.alerts.rules import Rule

INACTIVE, PENDING, FIRING = "inactive", "pending", "firing"
# The runbook's escalation path: level 1 under 30 minutes, level 2 to 120, level 3 beyond.
DEFAULT_LEVELS = (0.0, 30 * 60.0, 120 * 60.0)


@dataclass(frozen=True)
class AlertState:
    rule: str
    target: str
    state: str = INACTIVE
    since: float | None = None  # pending or firing since
    level: int = 0
    last_notified: float | None = None
    last_value: float | None = None


@dataclass(frozen=True)
class Event:
    kind: str  # "firing", "escalated", "repeat", "resolved"
    level: int
    value: float | None
    since: float
    at: float


def level_at(firing_for: float, levels: tuple[float, ...] = DEFAULT_LEVELS) -> int:
    return max(i + 1 for i, start in enumerate(levels) if firing_for >= start)


def step(state: AlertState, rule: Rule, value: float | None, now: float, *,
         hysteresis: float = 0.02, levels: tuple[float, ...] = DEFAULT_LEVELS,
         paused: bool = False) -> tuple[AlertState, list[Event]]:
    """The next state and the events to notify. An unknown value changes nothing.
    ``paused`` (an acknowledged firing alert): no escalation and no reminder."""
    if value is None:
        return state, []
    state = replace(state, last_value=value)
    breached = rule.breached(value)

    if state.state == INACTIVE:
        if not breached:
            return state, []
        if rule.for_seconds > 0:
            return replace(state, state=PENDING, since=now), []
        return _fire(state, value, now)

    if state.state == PENDING:
        if not breached:
            return replace(state, state=INACTIVE, since=None), []
        since = state.since if state.since is not None else now
        if now - since >= rule.for_seconds:
            return _fire(state, value, now)
        return state, []

    # firing
    since = state.since if state.since is not None else now
    if rule.recovered(value, hysteresis):
        event = Event("resolved", state.level, value, since, now)
        return replace(state, state=INACTIVE, since=None, level=0, last_notified=now), [event]
    if paused:
        return state, []
    level = level_at(now - since, levels)
    if level > state.level:
        event = Event("escalated", level, value, since, now)
        return replace(state, level=level, last_notified=now), [event]
    if state.last_notified is not None and now - state.last_notified >= rule.repeat:
        return replace(state, last_notified=now), [Event("repeat", state.level, value, since, now)]
    return state, []


def _fire(state: AlertState, value: float, now: float) -> tuple[AlertState, list[Event]]:
    return (replace(state, state=FIRING, since=now, level=1, last_notified=now),
            [Event("firing", 1, value, now, now)])
