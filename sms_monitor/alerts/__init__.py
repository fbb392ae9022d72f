"""The notification_rules alert engine: rules, lifecycle, durable outbox, notifiers."""
