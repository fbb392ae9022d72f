"""sms-monitor's Prometheus rules and Grafana dashboard, as a mixin: data in Python, rendered
for a selector (default ``job="sms-monitor"``), a runbook URL and a dashboard URL by
``sms-monitor mixin render``. The shipped ``alerts.rules.yml`` and ``grafana/sms-monitor.json``
are its default output."""

from sms_monitor.mixin.promql import DEFAULT_SELECTOR, Selector, SelectorError
from sms_monitor.mixin.render import (
    DASHBOARD_FILE,
    DEFAULT_DASHBOARD_URL,
    DEFAULT_RUNBOOK_URL,
    RULES_FILE,
    MixinConfig,
    render,
    write,
)

__all__ = ["DASHBOARD_FILE", "DEFAULT_DASHBOARD_URL", "DEFAULT_RUNBOOK_URL", "DEFAULT_SELECTOR",
           "RULES_FILE", "MixinConfig", "Selector", "SelectorError", "render", "write"]
