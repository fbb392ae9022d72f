"""Wire the scheduler, the poll cycle and the HTTP server; stop cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import threading
from datetime import UTC, datetime
from types import FrameType

import structlog
from apscheduler.schedulers.background import BackgroundScheduler

from sms_monitor.export.http import ExporterServer
from sms_monitor.monitor import Monitor

log = structlog.get_logger("sms_monitor.daemon")


class Daemon:
    def __init__(self, monitor: Monitor, server: ExporterServer,
                 stopping: threading.Event | None = None) -> None:
        self.monitor = monitor
        self.server = server
        self.stopping = stopping or threading.Event()
        self._cycle_lock = threading.Lock()
        self.scheduler = BackgroundScheduler(timezone=UTC)

    def cycle(self) -> None:
        if self.stopping.is_set():
            return
        with self._cycle_lock:
            try:
                self.monitor.run_cycle()
            except Exception:  # a bug in one cycle must not stop the daemon
                log.exception("poll_cycle_failed")

    def schedule_deadline(self, at: float) -> None:
        """Run a cycle at ``at`` (an opt-out's grace period ends): deadlines within the same
        second share one run."""
        if self.stopping.is_set():
            return
        second = int(at) + 1
        self.scheduler.add_job(
            self.cycle, "date", run_date=datetime.fromtimestamp(second, UTC),
            id=f"deadline-{second}", replace_existing=True, misfire_grace_time=None)

    def probe(self) -> None:
        canary = self.monitor.canary
        if canary is None or self.stopping.is_set():
            return
        with self._cycle_lock:  # the probe and the cycle's reads share one HTTP session
            try:
                canary.send()
            except Exception:  # a bug in the probe must not stop the daemon
                log.exception("canary_probe_failed")

    def start(self) -> None:
        self.server.start()
        self.add_jobs()
        self.scheduler.start()
        log.info("started", listen=self.server.url, accounts=len(self.monitor.accounts),
                 poll_interval=self.monitor.settings.poll_interval)

    def add_jobs(self) -> None:
        """The poll cycle now and every poll interval; the canary's probe every its interval;
        and a cycle whenever an opt-out's grace period ends."""
        self.scheduler.add_job(
            self.cycle, "interval", seconds=self.monitor.settings.poll_interval,
            next_run_time=datetime.now(UTC), max_instances=1, coalesce=True,
            id="poll", misfire_grace_time=None,
        )
        canary = self.monitor.settings.canary
        if canary is not None:
            self.scheduler.add_job(
                self.probe, "interval", seconds=canary.interval, next_run_time=datetime.now(UTC),
                max_instances=1, coalesce=True, id="canary", misfire_grace_time=None)
        self.monitor.on_deadline = self.schedule_deadline

    def stop(self, grace: float = 3.0) -> None:
        self.stopping.set()
        self.scheduler.shutdown(wait=False)
        self.server.stop()
        if not self._cycle_lock.acquire(timeout=grace):
            log.warning("stopping_during_poll", grace_seconds=grace)
            os._exit(0)  # a request is still waiting on Twilio; do not hold the shutdown
        self._cycle_lock.release()
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
