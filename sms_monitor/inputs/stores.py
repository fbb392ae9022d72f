"""sms-monitor's own alert store as an input: can it be read? It is asked ``SELECT 1``
every cycle (a short connect timeout), so ``check`` sees a blind store as well as the
daemon does; a store that stays unreadable for ``unreachable_cycles`` turns its check red.
An SQLite store not created yet is fine when its directory can be made (nothing is
created). The check is reported under the pseudo-account ``monitor``. (The keyword audit
store's health comes from its writer: see :mod:`sms_monitor.inputs.webhook_input`.)
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import SQLAlchemyError

from sms_monitor.config import Settings
from sms_monitor.core.snapshot import MONITOR_GROUP
from sms_monitor.core.sources import SourceTracker, connection_check
from sms_monitor.core.stores import STORES, StoresPart
from sms_monitor.inputs.base import OBSERVE, CycleContext, Input, Wiring
from sms_monitor.inputs.database import describe_error
from sms_monitor.storage.sqlite import missing_file_problem, sqlite_file

log = structlog.get_logger("sms_monitor.stores")

ALERT_STORE = "alert_store"


def _engine(url: str) -> Engine:
    connect_args = {"timeout": 5} if url.startswith("sqlite") else {"connect_timeout": 5}
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args)


class StoresInput:
    key = STORES
    stage = OBSERVE

    def __init__(self, stores: Sequence[tuple[str, str]], unreachable_cycles: int) -> None:
        """``stores``: (name, SQLAlchemy URL) of each configured store."""
        self.limit = unreachable_cycles
        self._engines = {url: _engine(url) for _, url in stores}
        self._stores = [(name, url, SourceTracker(name)) for name, url in stores]

    @property
    def last_success(self) -> float | None:
        return None

    def _ping(self, url: str) -> str | None:
        """None when the store answers, else the reason (no secrets: the cause only)."""
        path = sqlite_file(url)
        if path is not None and not path.exists():  # the daemon creates it on first use
            return missing_file_problem(path)
        try:
            with self._engines[url].connect() as conn:
                conn.execute(text("SELECT 1"))
            return None
        except SQLAlchemyError as exc:
            return describe_error(exc)[1]

    def read(self, ctx: CycleContext) -> StoresPart:
        answers: dict[str, str | None] = {}
        states = []
        for name, url, tracker in self._stores:
            if url not in answers:
                answers[url] = self._ping(url)
            reason = answers[url]
            if reason is not None:
                log.warning("store_unreadable", store=name, reason=reason)
            states.append(tracker.observe(reason is None, reason or ""))
        checks = [connection_check(s, MONITOR_GROUP, self.limit, name=s.name) for s in states]
        return StoresPart(tuple(states), tuple(checks))

    def close(self) -> None:
        for engine in self._engines.values():
            engine.dispose()


def build(settings: Settings, wiring: Wiring) -> Sequence[Input]:
    stores = []
    alerts = settings.alerts
    # `check` judges the alert store only when it is a server; the embedded file is the
    # daemon's own (a cron job's working directory need not hold it)
    if alerts is not None and not (wiring.one_shot and sqlite_file(alerts.store_url)):
        stores.append((ALERT_STORE, alerts.store_url))
    return [StoresInput(stores, settings.unreachable_cycles)] if stores else []
