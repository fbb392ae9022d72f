"""Wire the scheduler, the poll cycle and the HTTP server; stop cleanly on SIGTERM."""

from __future__ import annotations

import contextlib
import heapq
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from types import FrameType

import structlog
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler

from sms_monitor.app import App
from sms_monitor.outputs.http import ExporterServer

log = structlog.get_logger("sms_monitor.daemon")

# Deadline cycles are at least this far apart: a wave of STOPs costs one cycle per gap,
# not one per second.
DEADLINE_GAP = 5.0


class Daemon:
    def __init__(self, app: App, server: ExporterServer,
                 stopping: threading.Event | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.app = app
        self.server = server
        self.stopping = stopping or threading.Event()
        self.clock = clock
        self._cycle_lock = threading.Lock()
        self.scheduler = BackgroundScheduler(timezone=UTC)
        self._deadline_lock = threading.Lock()
        self._deadlines: list[float] = []  # heap of opt-out grace ends still to check
        self._last_cycle_start = float("-inf")
        self._last_deadline_run = float("-inf")

    def cycle(self) -> None:
        if self.stopping.is_set():
            return
        with self._cycle_lock:
            self._last_cycle_start = self.clock()
            try:
                self.app.run_cycle()
            except Exception:  # a bug in one cycle must not stop the daemon
                log.exception("poll_cycle_failed")

    def schedule_deadline(self, at: float) -> None:
        """Check opt-outs when a grace period ends at ``at``: one job, at the earliest
        deadline still open (rounded up to the second), at least ``DEADLINE_GAP`` after the
        previous deadline cycle."""
        if self.stopping.is_set():
            return
        with self._deadline_lock:
            heapq.heappush(self._deadlines, at)
            self._arm()

    def _arm(self) -> None:
        """(Re)schedule the deadline job; the caller holds ``_deadline_lock``."""
        if not self._deadlines or self.stopping.is_set():
            with contextlib.suppress(JobLookupError):  # it may be running right now
                self.scheduler.remove_job("optout-deadline")
            return
        when = math.ceil(max(self._deadlines[0], self._last_deadline_run + DEADLINE_GAP))
        self.scheduler.add_job(
            self.deadline_cycle, "date", run_date=datetime.fromtimestamp(when, UTC),
            id="optout-deadline", replace_existing=True, misfire_grace_time=None)

    def deadline_cycle(self) -> None:
        """Run a cycle for the deadlines that have passed, unless a cycle that started after
        the last of them already checked them."""
        now = self.clock()
        with self._deadline_lock:
            due = []
            while self._deadlines and self._deadlines[0] <= now:
                due.append(heapq.heappop(self._deadlines))
            self._last_deadline_run = now
        if due and self._last_cycle_start < max(due):
            self.cycle()
        with self._deadline_lock:
            self._arm()

    def probe(self) -> None:
        canary = self.app.canary
        if canary is None or self.stopping.is_set():
            return
        with self._cycle_lock:  # the probe and the cycle's reads share one HTTP session
            try:
                canary.send()
            except Exception:  # a bug in the probe must not stop the daemon
                log.exception("canary_probe_failed")

    def start(self) -> None:
        self.server.start()
        self.app.start_sender()  # notifications leave from their own thread, off the poll path
        self.add_jobs()
        self.scheduler.start()
        log.info("started", listen=self.server.url, accounts=len(self.app.accounts),
                 poll_interval=self.app.settings.poll_interval)

    def add_jobs(self) -> None:
        """The poll cycle now and every poll interval; the canary's probe every its interval;
        and a cycle whenever an opt-out's grace period ends."""
        self.scheduler.add_job(
            self.cycle, "interval", seconds=self.app.settings.poll_interval,
            next_run_time=datetime.now(UTC), max_instances=1, coalesce=True,
            id="poll", misfire_grace_time=None,
        )
        canary = self.app.settings.canary
        if canary is not None:
            self.scheduler.add_job(
                self.probe, "interval", seconds=canary.interval, next_run_time=datetime.now(UTC),
                max_instances=1, coalesce=True, id="canary", misfire_grace_time=None)
        self.app.on_deadline = self.schedule_deadline

    def stop(self, grace: float = 3.0) -> None:
        """Stop within ``grace`` seconds: the poll cycle and the sender. A notification
        still in flight is abandoned; it stays claimed and is retried (at least once)."""
        until = time.monotonic() + grace
        self.stopping.set()
        self.scheduler.shutdown(wait=False)
        self.server.stop()
        if not self._cycle_lock.acquire(timeout=grace):
            log.warning("stopping_during_poll", grace_seconds=grace)
            os._exit(0)  # a request is still waiting on Twilio; do not hold the shutdown
        self._cycle_lock.release()
        if not self.app.stop_sender(until - time.monotonic()):
            log.warning("stopping_during_send", grace_seconds=grace)  # a daemon thread
        log.info("stopped")

    def run_until_signal(self) -> int:
        def handle(signum: int, frame: FrameType | None) -> None:
            self.stopping.set()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)
        self.start()
        while not self.stopping.wait(0.5):
            pass
        self.stop()
        return 0
