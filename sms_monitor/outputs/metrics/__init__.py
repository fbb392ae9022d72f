"""Metric areas: one collector per area of the snapshot. Every exported metric name is
defined in exactly one of these modules."""

from sms_monitor.outputs.metrics.base import Area
from sms_monitor.outputs.metrics.canary import CanaryArea
from sms_monitor.outputs.metrics.database import DatabaseArea
from sms_monitor.outputs.metrics.monitor import HealthArea, MonitorArea, alert_metrics
from sms_monitor.outputs.metrics.shard import ShardArea
from sms_monitor.outputs.metrics.statuspage import StatusPageArea
from sms_monitor.outputs.metrics.twilio import AccountArea, CostArea, RequestArea, WindowArea
from sms_monitor.outputs.metrics.webhooks import WebhookArea

__all__ = [
    "AccountArea", "Area", "CanaryArea", "CostArea", "DatabaseArea", "HealthArea", "MonitorArea",
    "RequestArea", "ShardArea", "StatusPageArea", "WebhookArea", "WindowArea", "alert_metrics",
]
