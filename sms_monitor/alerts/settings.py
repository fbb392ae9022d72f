"""Settings of the alert engine (the ``[alerts]`` table of the configuration file)."""

from __future__ import annotations

from dataclasses import dataclass

from sms_monitor.alerts.lifecycle import DEFAULT_LEVELS


@dataclass(frozen=True)
class AlertsConfig:
    store_url: str = "sqlite:///sms-monitor-alerts.db"
    prefix: str = "sms_monitor_"
    schema: str | None = None
    hysteresis: float = 0.02  # relative margin past the threshold before resolving
    levels: tuple[float, ...] = DEFAULT_LEVELS  # when levels 1, 2, 3 start (firing for)
    level_recipients: tuple[tuple[str, ...], ...] = ((), (), ())
    alertmanager_url: str | None = None
    max_window: float = 3600.0
    retry_base: float = 30.0
    retry_max: float = 3600.0
