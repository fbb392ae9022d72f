"""sms-monitor: health monitoring for Twilio SMS, as the operations runbook defines it."""

__version__ = "0.1.0"
