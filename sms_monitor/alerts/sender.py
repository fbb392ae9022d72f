"""The sender: drains the alert outbox in a thread of its own, off the poll path.

The poll cycle only evaluates the rules and commits decisions with their notifications,
then wakes the sender; a mail server that hangs for minutes delays pages, never the next
cycle's Twilio checks. Between cycles the sender wakes by itself for retries that come
due. On shutdown it stops between two sends; a send in flight is abandoned, its row stays
claimed until the claim expires and is then sent again (at least once, never lost).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from sms_monitor.alerts.engine import AlertEngine

log = structlog.get_logger("sms_monitor.alerts.sender")

IDLE_WAKE = 15.0  # seconds between rounds when no cycle wakes it: retries come due


class Sender:
    def __init__(self, engine: AlertEngine, idle: float = IDLE_WAKE,
                 after_round: Callable[[], None] = lambda: None) -> None:
        self.engine = engine
        self.after_round = after_round
        self.idle = idle
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._refresh = False
        self._thread: threading.Thread | None = None
        self.rounds = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="alert-sender", daemon=True)
            self._thread.start()

    def wake(self) -> None:
        """A cycle committed: send what it queued and refresh Alertmanager."""
        self._refresh = True
        self._wake.set()

    def stop(self, timeout: float) -> bool:
        """Stop within ``timeout`` seconds; False when a send still hangs (it is abandoned:
        the thread is a daemon thread and its row is retried after its claim expires)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is None:
            return True
        self._thread.join(max(0.0, timeout))
        return not self._thread.is_alive()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.idle)
            self._wake.clear()
            if self._stopping.is_set():
                break
            refresh, self._refresh = self._refresh, False
            try:
                self.engine.deliver(refresh=refresh, stop=self._stopping.is_set)
                self.after_round()
            except Exception:  # a bug in one round must not stop sending for good
                log.exception("alert_sender_failed")
            self.rounds += 1
