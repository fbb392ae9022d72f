"""Settings of the alert engine (the ``[alerts]`` table): declared with the other
configuration models in :mod:`sms_monitor.config`, re-exported here for the engine."""

from __future__ import annotations

from sms_monitor.config import AlertsConfig

__all__ = ["AlertsConfig"]
