"""Window arithmetic, de-duplication and the incremental fetch horizon, under freezegun."""

from __future__ import annotations

import time

from freezegun import freeze_time

from sms_monitor.core.records import MessageRecord
from sms_monitor.core.stats import window_stats
from sms_monitor.core.window import MessageWindow


def rec(sid: str, created: float, status: str = "delivered", *, error: int | None = None,
        latency: float = 5.0, outbound: bool = True) -> MessageRecord:
    return MessageRecord(sid=sid, outbound=outbound, status=status, error_code=error,
                         created=created, updated=created + latency)


@freeze_time("2026-11-24 12:00:00")
def test_window_keeps_only_messages_created_within_it() -> None:
    now = time.time()
    w = MessageWindow(window_seconds=3600)
    w.upsert(rec("SMold", now - 3601))
    w.upsert(rec("SMedge", now - 3600))
    w.upsert(rec("SMnew", now - 10))
    assert w.prune(now) == 1
    assert set(w.records) == {"SMedge", "SMnew"}
    stats = window_stats(w.records.values(), now, 3600)
    assert stats.delivered == 2


def test_window_moves_with_the_clock() -> None:
    with freeze_time("2026-11-24 12:00:00") as frozen:
        w = MessageWindow(window_seconds=600)
        w.upsert(rec("SMa", time.time()))
        frozen.tick(599)
        w.prune(time.time())
        assert len(w) == 1
        frozen.tick(2)
        w.prune(time.time())
        assert len(w) == 0


def test_same_sid_counted_once_and_latency_observed_once() -> None:
    w = MessageWindow(3600)
    w.upsert(rec("SM1", 1000.0, "sent"))
    w.upsert(rec("SM1", 1000.0, "delivered", latency=4.0))
    w.upsert(rec("SM1", 1000.0, "delivered", latency=9.0))  # seen again by a later poll
    assert len(w) == 1
    assert w.latency.count == 1
    assert w.latency.total == 4.0
    assert w.records["SM1"].updated == 1004.0


def test_final_status_never_moves_backwards() -> None:
    w = MessageWindow(3600)
    w.upsert(rec("SM1", 1000.0, "undelivered", error=30003))
    w.upsert(rec("SM1", 1000.0, "sent"))
    assert w.records["SM1"].status == "undelivered"


def test_read_counts_as_delivered_and_inbound_is_excluded() -> None:
    records = [
        rec("SM1", 100.0, "read"),
        rec("SM2", 100.0, "delivered"),
        rec("SM3", 100.0, "undelivered", error=30003),
        rec("SM4", 100.0, "failed", error=21211),
        rec("SM5", 100.0, "sent"),  # in flight: not in the delivery denominator
        rec("SM6", 100.0, "received", outbound=False),
    ]
    s = window_stats(records, now=200.0, window_seconds=3600)
    assert (s.delivered, s.failed, s.settled) == (2, 2, 4)
    assert s.delivery_ratio == 0.5
    assert s.outbound == 5
    assert s.error_ratio == 2 / 5
    assert s.by_status[("inbound", "received")] == 1
    assert s.by_error == {"30003": 1, "21211": 1}


def test_carrier_filtering_counts_30007_only() -> None:
    records = [rec("SM1", 100.0, "undelivered", error=30007),
               rec("SM2", 100.0, "undelivered", error=30003)]
    assert window_stats(records, 200.0, 3600).carrier_filtered == 1


def test_fetch_horizon_backfills_then_reads_only_new_and_in_flight() -> None:
    now = 10_000.0
    w = MessageWindow(window_seconds=3600, settle_seconds=900)
    assert w.fetch_horizon(now) == now - 3600  # first poll: the whole window
    w.upsert(rec("SMa", now - 3000))
    w.upsert(rec("SMb", now - 60))
    w.backfilled = True
    assert w.fetch_horizon(now) == now - 60  # all final: only what is newer
    w.upsert(rec("SMc", now - 300, "sent"))
    assert w.fetch_horizon(now) == now - 300  # back to the oldest in-flight message
    w.upsert(rec("SMd", now - 2000, "sent"))  # stuck longer than settle: not waited for
    assert w.fetch_horizon(now) == now - 300


def test_a_callback_before_the_poll_waits_for_the_record() -> None:
    w = MessageWindow(3600)
    w.apply_callback("SMx", "delivered", None, 1010.0)
    assert "SMx" not in w.records and w.latency.count == 0  # no made-up creation time
    w.upsert(rec("SMx", 1000.0, "sent"))
    assert w.records["SMx"].status == "delivered"
    assert w.records["SMx"].updated == 1010.0  # delivered at the callback's arrival
    assert w.latency.count == 1 and w.latency.total == 10.0
