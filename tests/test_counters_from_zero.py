"""Labelled counters start at 0 for every label set they can have, so no panel starts empty
and rate() never misses a first event; the known label sets are what the code can count."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from prometheus_client import CollectorRegistry
from twilio.base.exceptions import TwilioRestException

from sms_monitor.config import DatabaseConfig
from sms_monitor.core.facts import (
    DATABASE_QUERIES,
    POLL_ERROR_LABELS,
    QUERY_ERROR_LABELS,
    QUERY_FAILURES,
    REQUEST_FAILURES,
    RETRY_REASONS,
)
from sms_monitor.core.outbound import REASONS
from sms_monitor.core.snapshot import AlertsSnapshot, AlertView
from sms_monitor.inputs.database import DatabaseSource
from sms_monitor.inputs.twilio_errors import BudgetSpent, failure_kind
from sms_monitor.outputs.metrics.monitor import NOTIFICATION_OUTCOMES, WEBHOOK_OUTCOMES
from tests.snapshots import sample_snapshot
from tests.test_collectors import registry_for

QUIET = AlertsSnapshot(
    leader=True,
    alerts=(AlertView("Low SMS Delivery Rate", "primary", "inactive", 99.0, None, 0, None,
                      "critical", "sms_delivery_rate"),),
    broken=(("Broken", "unknown metric 'sms_mood'"),))


@pytest.fixture(scope="module")
def registry() -> CollectorRegistry:
    return registry_for(sample_snapshot(), QUIET)


def test_poll_errors_retries_and_query_errors_start_at_zero(registry: CollectorRegistry) -> None:
    for part, cause in POLL_ERROR_LABELS:
        labels = {"account": "primary", "part": part, "cause": cause}
        expected = 1 if (part, cause) == ("usage", "timeout") else 0  # the sample's one failure
        assert registry.get_sample_value("sms_monitor_poll_errors_total", labels) == expected
    for reason in RETRY_REASONS:
        assert registry.get_sample_value("twilio_api_retries_total",
                                         {"account": "primary", "reason": reason}) is not None
    for query, cause in QUERY_ERROR_LABELS:
        expected = 2 if (query, cause) == ("content", "timeout") else 0
        assert registry.get_sample_value("sms_monitor_database_query_errors_total",
                                         {"query": query, "cause": cause}) == expected


def test_webhook_outcomes_and_notifications_start_at_zero(registry: CollectorRegistry) -> None:
    for endpoint, outcome in WEBHOOK_OUTCOMES:
        assert registry.get_sample_value("sms_monitor_webhook_requests_total",
                                         {"endpoint": endpoint, "outcome": outcome}) is not None
    for channel, outcome in NOTIFICATION_OUTCOMES:
        assert registry.get_sample_value("sms_alert_notifications_total",
                                         {"channel": channel, "outcome": outcome}) == 0


def test_rule_errors_are_0_for_usable_rules_and_1_for_broken_ones(registry: CollectorRegistry
                                                                   ) -> None:
    get = registry.get_sample_value
    assert get("sms_alert_rule_invalid", {"rule": "Low SMS Delivery Rate"}) == 0
    assert get("sms_alert_rule_invalid", {"rule": "Broken"}) == 1
    for rule in ("Low SMS Delivery Rate", "Broken"):
        assert get("sms_alert_rule_save_failures_total", {"rule": rule}) == 0
        for reason in REASONS:
            assert get("sms_alert_notifications_refused_total",
                       {"rule": rule, "reason": reason}) == 0


def test_nothing_else_is_invented(registry: CollectorRegistry) -> None:
    """Counters whose labels come from outside (an HTTP code, an error code) and accounts or
    rules nobody configured get no zero series."""
    names = {(s.name, tuple(sorted(s.labels.items()))) for m in registry.collect()
             for s in m.samples}
    accounts = {dict(labels).get("account") for _, labels in names} - {None}
    assert accounts <= {"primary", "database", "twilio"}, accounts
    codes = {dict(labels)["code"] for name, labels in names if name == "twilio_api_requests_total"}
    assert "500" not in codes


# --------------------------------------------------------------------------- the known sets


@pytest.mark.parametrize("exc", [
    requests.Timeout(), requests.ConnectionError(), BudgetSpent(), ValueError("bad json"),
    TwilioRestException(401, "u"), TwilioRestException(404, "u"), TwilioRestException(429, "u"),
    TwilioRestException(503, "u"), KeyError("sid"),
])
def test_every_failure_kind_of_a_request_is_known(exc: Exception) -> None:
    assert failure_kind(exc) in REQUEST_FAILURES


def test_every_database_query_is_known_by_its_name(tmp_path: Path) -> None:
    """An empty database (no table at all) fails every query: their names are the known ones."""
    source = DatabaseSource(DatabaseConfig(url=f"sqlite:///{tmp_path / 'empty.db'}"))
    now = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    facts = source.poll(now, ["+15550100001"], (now, now), read_content=True)
    assert set(facts.causes) == set(DATABASE_QUERIES)
    assert set(facts.causes.values()) <= set(QUERY_FAILURES)
