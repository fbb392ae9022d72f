"""Per-account sliding window of message records.

The window keeps every message created within ``window_seconds`` of the
current time, keyed by SID, so memory is bounded by the window and a message
seen by several polls is counted once. It also decides how far back the next
incremental poll must read (:meth:`MessageWindow.fetch_horizon`).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace

from sms_monitor.core.records import FINAL_STATUSES, MessageRecord

# Upper bounds of the delivery latency histogram, in seconds.
LATENCY_BUCKETS: tuple[float, ...] = (1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 1800)


@dataclass(frozen=True)
class HistogramState:
    """A cumulative histogram frozen at one moment (counts are per bucket, not cumulative)."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]  # one per bound, plus the +Inf bucket last
    total: float
    count: int

    def cumulative(self) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        running = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append(("+Inf" if bound == float("inf") else _fmt(bound), running))
        return out


def _fmt(bound: float) -> str:
    return repr(float(bound))


class Histogram:
    """A mutable cumulative histogram; :meth:`freeze` gives the exported view."""

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def freeze(self) -> HistogramState:
        return HistogramState(self.bounds, tuple(self.counts), self.total, self.count)


@dataclass(frozen=True)
class Gap:
    """Messages created in ``[lower, upper)`` that a read has not reached yet.

    A read of the message log (newest first) that stopped early (the page cap, the cycle's
    time budget, a failure part-way) leaves one: ``upper`` is the oldest creation time it
    read, ``lower`` where it was heading, ``resume`` the URL of the page it did not read.
    Later cycles read on from ``resume`` until the gap is closed.
    """

    upper: float
    lower: float
    resume: str


def unread_seconds(gaps: Iterable[Gap], edge: float) -> float:
    """Seconds of ``[edge, now]`` that ``gaps`` leave unread (overlapping gaps once)."""
    spans = sorted((max(g.lower, edge), g.upper) for g in gaps if g.upper > edge)
    total, reach = 0.0, edge
    for low, high in spans:
        low = max(low, reach)
        if high > low:
            total += high - low
            reach = high
    return total


class MessageWindow:
    """Messages created in the last ``window_seconds``, de-duplicated by SID."""

    def __init__(self, window_seconds: float, settle_seconds: float = 900.0) -> None:
        self.window_seconds = window_seconds
        # How long an in-flight message is re-read before we stop waiting for its final status.
        self.settle_seconds = settle_seconds
        self.records: dict[str, MessageRecord] = {}
        # Sender numbers of inbound keyword messages (STOP, START, HELP), needed to look the
        # client up in the application database; pruned with the records.
        self.keyword_numbers: dict[str, str] = {}
        # callbacks for SIDs no poll has brought yet: sid -> (status, error code, arrival)
        self.pending: dict[str, tuple[str, int | None, float]] = {}
        self.latency = Histogram()
        # deliveries observed in the latency histogram, by where their time came from
        self.timed: Counter[str] = Counter()
        self.backfilled = False
        self.gaps: list[Gap] = []  # newest first; empty when the window has been read whole
        self.read_at: float | None = None  # our clock at the last read of the log
        # Messages created before this moment are forgotten and never read again (the demo
        # restarts its window when it switches scenario; see Wiring.window_floor).
        self.floor = -math.inf

    def __len__(self) -> int:
        return len(self.records)

    def start(self, now: float) -> float:
        return max(now - self.window_seconds, self.floor)

    def upsert(self, record: MessageRecord, keyword_number: str | None = None,
               source: str = "poll") -> None:
        """Add or update a record; a final status never moves back to an in-flight one.

        ``source`` says where the record's time comes from (``poll`` or ``callback``).
        """
        if keyword_number and record.keyword:
            self.keyword_numbers[record.sid] = keyword_number
        early = self.pending.pop(record.sid, None)
        if early is not None and not (record.final and early[0] not in FINAL_STATUSES):
            # the callback came first: its status, and its arrival as the delivery time
            record = replace(record, status=early[0], updated=early[2],
                             error_code=early[1] if early[1] is not None else record.error_code)
            source = "callback"
        old = self.records.get(record.sid)
        if old is not None:
            if old.final and not record.final:
                return
            if old.delivered:
                # Already observed in the latency histogram; keep the first delivery time.
                if record.delivered:
                    record = replace(record, updated=old.updated)
            elif record.delivered:
                self._observe_delivery(record, source)
        elif record.delivered:
            self._observe_delivery(record, source)
        self.records[record.sid] = record

    def apply_callback(self, sid: str, status: str, error_code: int | None, at: float) -> None:
        """A status callback: the same record the poller keeps, never moved backwards.

        A delivery's time is the callback's arrival. A SID not seen yet is kept (the poll
        will fill in its creation time), counted as created at the callback's arrival.
        """
        old = self.records.get(sid)
        if old is None:  # wait for the poll to bring its creation time
            if len(self.pending) >= 100_000:
                self.pending.pop(next(iter(self.pending)))
            prev = self.pending.get(sid)
            if prev is None or not (prev[0] in FINAL_STATUSES and status not in FINAL_STATUSES):
                self.pending[sid] = (status, error_code, at)
            return
        new = replace(old, status=status, updated=at,
                      error_code=error_code if error_code is not None else old.error_code)
        self.upsert(new, source="callback")

    def _observe_delivery(self, record: MessageRecord, source: str) -> None:
        if record.outbound and record.updated is not None:
            self.latency.observe(max(0.0, record.updated - record.created))
            self.timed[source] += 1

    def unread(self, edge: float) -> float:
        """Seconds of ``[edge, now]`` not read yet (0 when the window has been read whole)."""
        return unread_seconds(self.gaps, edge)

    def oldest_read(self, edge: float) -> float:
        """Back to when the window has been read without a break (``edge`` when whole)."""
        tops = [g.upper for g in self.gaps if g.upper > edge]
        return max(tops) if tops else edge

    def prune(self, now: float) -> int:
        """Drop records created before the window's start, and the parts of gaps that aged
        out of it; returns how many records went."""
        edge = self.start(now)
        self.gaps = [replace(g, lower=max(g.lower, edge)) for g in self.gaps if g.upper > edge]
        old = [sid for sid, r in self.records.items() if r.created < edge]
        for sid in old:
            del self.records[sid]
            self.keyword_numbers.pop(sid, None)
        return len(old)

    def fetch_horizon(self, now: float) -> float:
        """The creation time back to which the next poll must read.

        The first poll reads the whole window. Later polls read what is newer
        than the newest record held, and back to the oldest message still in
        flight, but never further than ``settle_seconds`` nor past the window.
        """
        edge = self.start(now)
        if not self.backfilled or not self.records:
            return edge
        newest = max(r.created for r in self.records.values())
        if self.read_at is not None:
            # a message dated ahead of our clock must not hide the ones created after our
            # last read but before its date
            newest = min(newest, self.read_at)
        horizon = newest
        settle_edge = now - self.settle_seconds
        for r in self.records.values():
            if not r.final and settle_edge <= r.created < horizon:
                horizon = r.created
        return max(edge, horizon)
