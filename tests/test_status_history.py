"""Since when each check has had its status (core/status_history.py), and the holder
keeping it across the snapshots it publishes: exact times from hand-built checks."""

from __future__ import annotations

from dataclasses import replace

from sms_monitor.core.classify import CheckResult, Status
from sms_monitor.core.snapshot import AlertsSnapshot, SnapshotHolder
from sms_monitor.core.status_history import Since, StatusHistory
from tests.snapshots import T0, sample_snapshot

GREEN, YELLOW, RED, UNKNOWN = Status.GREEN, Status.YELLOW, Status.RED, Status.UNKNOWN


def run(*steps: tuple[float, dict[str, Status]]) -> StatusHistory:
    history = StatusHistory()
    for at, statuses in steps:
        history = history.observe(
            [CheckResult(name, "primary", s) for name, s in statuses.items()], at)
    return history


def test_the_first_snapshot_gives_at_least_times() -> None:
    h = run((100.0, {"delivery_rate": RED, "balance": GREEN}))
    assert h.since("primary", "delivery_rate") == Since(RED, 100.0, observed=False)
    assert h.since("primary", "balance") == Since(GREEN, 100.0, observed=False)
    assert h.since("primary", "nope") is None
    assert h.since("database", "delivery_rate") is None  # keyed by account too


def test_an_unchanged_status_keeps_its_time_and_a_change_starts_anew() -> None:
    h = run((100.0, {"delivery_rate": GREEN}), (160.0, {"delivery_rate": GREEN}),
            (220.0, {"delivery_rate": YELLOW}), (280.0, {"delivery_rate": YELLOW}),
            (340.0, {"delivery_rate": RED}))
    assert h.since("primary", "delivery_rate") == Since(RED, 340.0, observed=True)
    h = run((100.0, {"delivery_rate": GREEN}), (160.0, {"delivery_rate": YELLOW}),
            (220.0, {"delivery_rate": YELLOW}))
    assert h.since("primary", "delivery_rate") == Since(YELLOW, 160.0, observed=True)


def test_an_unknown_spell_is_a_gap_not_a_recovery() -> None:
    red = Since(RED, 160.0, observed=True)
    h = run((100.0, {"x": GREEN}), (160.0, {"x": RED}), (220.0, {"x": UNKNOWN}))
    assert h.since("primary", "x") == Since(UNKNOWN, 220.0, observed=True, before_unknown=red)
    h = run((100.0, {"x": GREEN}), (160.0, {"x": RED}), (220.0, {"x": UNKNOWN}),
            (280.0, {"x": UNKNOWN}), (340.0, {"x": RED}))
    assert h.since("primary", "x") == red  # red since 160, through the gap
    # it came back another colour: it changed sometime in the gap, so "at least"
    h = run((100.0, {"x": GREEN}), (160.0, {"x": RED}), (220.0, {"x": UNKNOWN}),
            (280.0, {"x": YELLOW}))
    assert h.since("primary", "x") == Since(YELLOW, 280.0, observed=False)
    # unknown from the start, then known: at least since then
    h = run((100.0, {"x": UNKNOWN}), (160.0, {"x": RED}))
    assert h.since("primary", "x") == Since(RED, 160.0, observed=False)


def test_a_check_no_longer_shown_is_forgotten() -> None:
    h = run((100.0, {"x": RED, "y": GREEN}), (160.0, {"y": GREEN}), (220.0, {"x": RED}))
    assert h.since("primary", "x") == Since(RED, 220.0, observed=False)
    assert h.since("primary", "y") is None


def test_the_holder_keeps_the_history_of_what_it_publishes() -> None:
    snap = sample_snapshot()
    holder = SnapshotHolder()
    holder.publish(snap)
    published = holder.published
    assert published is not None
    assert published.history.since("primary", "delivery_rate") == Since(RED, T0, observed=False)
    assert published.history.since("database", "queue_delay") == Since(GREEN, T0, observed=False)

    # the alert engine's state published beside it keeps the history
    holder.publish_alerts(AlertsSnapshot(leader=True))
    holder.amend_alerts(lambda a: replace(a, outbox_pending=3))
    published = holder.published
    assert published is not None and published.alerts is not None
    assert published.alerts.outbox_pending == 3
    assert published.history.since("primary", "delivery_rate") == Since(RED, T0, observed=False)

    # a minute later the same: the time stays; queue_delay turned red: a change, seen
    db = snap.database
    assert db is not None
    checks = tuple(replace(c, status=RED) if c.name == "queue_delay" else c for c in db.checks)
    later = replace(snap, taken_at=T0 + 60, parts={**snap.parts, "database": replace(db, checks=checks)})
    holder.publish(later)
    published = holder.published
    assert published is not None
    assert published.history.since("primary", "delivery_rate") == Since(RED, T0, observed=False)
    assert published.history.since("database", "queue_delay") == Since(RED, T0 + 60, observed=True)
    assert published.alerts is not None and published.alerts.outbox_pending == 3
