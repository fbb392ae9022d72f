"""The metric areas, from hand-built snapshots: exact values, byte-exact exposition, no
network. (tests/test_exporter.py covers the same metrics end to end over HTTP.)"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from sms_monitor.app import UNITS
from sms_monitor.core.snapshot import AlertsSnapshot, AlertView, Snapshot, SnapshotHolder
from sms_monitor.outputs.collector import CORE_AREAS, SnapshotCollector
from sms_monitor.outputs.metrics import Area
from tests.snapshots import RED, YELLOW, sample_snapshot

FIXTURE = Path(__file__).parent / "fixtures" / "sample_exposition.txt"
EVERY_AREA: tuple[type[Area], ...] = (*CORE_AREAS, *(a for u in UNITS for a in u.areas))
ALERTS = AlertsSnapshot(
    leader=True,
    alerts=(AlertView("Low SMS Delivery Rate", "primary", "firing", 88.9, 1.0, 1, 2.0,
                      "critical", "sms_delivery_rate"),),
    broken=(("Broken", "unknown metric 'sms_mood'"),
            ("Partly", "recipients: 1 refused (https://evil.example/… is not in [alerts] "
                       "webhook_allow (not_allowed)); they get no notification")),
    recipients_refused={("Partly", "not_allowed"): 1},
    notifications_refused={("Partly", "refused_address"): 1},
    notifications={("email", "sent"): 1}, outbox_pending=0, store_ok=True)


class OneArea(Collector):
    def __init__(self, area: type[Area], snap: Snapshot) -> None:
        self.area, self.snap = area(), snap

    def collect(self) -> Iterator[Metric]:
        return self.area.collect(self.snap)


def exposition(area: type[Area], snap: Snapshot) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(OneArea(area, snap))
    return generate_latest(registry).decode()


def registry_for(snap: Snapshot, alerts: AlertsSnapshot | None = None) -> CollectorRegistry:
    holder = SnapshotHolder()
    holder.publish(snap)
    if alerts is not None:
        holder.publish_alerts(alerts)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(holder, [a for u in UNITS for a in u.areas]))
    return registry


@pytest.mark.parametrize("area", EVERY_AREA, ids=lambda a: a.__name__)
def test_each_areas_docstring_sample_is_what_it_exports(area: type[Area]) -> None:
    doc = area.__doc__ or ""
    sample = [line.strip() for line in doc.split("Sample::", 1)[-1].splitlines() if line.strip()]
    assert "Sample::" in doc and sample, f"{area.__name__} shows no sample of its output"
    exported = exposition(area, sample_snapshot()).splitlines()
    assert [line for line in sample if line not in exported] == []


def test_the_whole_exposition_is_byte_exact() -> None:
    text = generate_latest(registry_for(sample_snapshot(), ALERTS)).decode()
    if os.environ.get("SMS_MONITOR_WRITE_FIXTURES"):
        FIXTURE.write_text(text)
    assert text == FIXTURE.read_text()


def test_exact_values_of_the_contract_metrics() -> None:
    r = registry_for(sample_snapshot())
    primary = {"account": "primary"}
    assert r.get_sample_value("sms_delivery_success_ratio", primary) == 8 / 9
    assert r.get_sample_value("sms_error_ratio", primary) == 0.1
    assert r.get_sample_value("sms_delivery_latency_seconds_count", primary) == 8
    assert r.get_sample_value("sms_delivery_latency_seconds_sum", primary) == sum(
        4.0 + i for i in range(8))
    assert r.get_sample_value("sms_delivery_latency_seconds_bucket",
                              {**primary, "le": "5.0"}) == 2  # 4 s and 5 s: le is inclusive
    assert r.get_sample_value("sms_window_messages", {**primary, "direction": "outbound",
                                                      "status": "sent"}) == 1
    assert r.get_sample_value("sms_window_error_messages", {**primary, "error_code": "30007"}
                              ) == 1
    assert r.get_sample_value("twilio_account_balance", {**primary, "currency": "USD"}) == 120.5
    assert r.get_sample_value("twilio_up", primary) == 1
    assert r.get_sample_value("sms_health_status", {**primary, "check": "delivery_rate"}
                              ) == RED.code
    assert r.get_sample_value("sms_health_status", {"account": "database", "check": "overall"}
                              ) == YELLOW.code
    assert r.get_sample_value("sms_clients_invalid_phone_numbers", {"column": "phone"}) == 2
    assert r.get_sample_value("sms_notification_queue_delay_seconds") == 12.5
    assert r.get_sample_value("sms_monitor_last_success_timestamp_seconds",
                              {"source": "database"}) == 1_780_000_000.0 - 4
    assert r.get_sample_value("sms_alert_state", {"rule": "Low SMS Delivery Rate",
                                                  "target": "primary",
                                                  "severity": "critical"}) is None  # no alerts yet


def test_the_alert_state_is_published_beside_the_snapshot_and_survives_the_next_one() -> None:
    holder = SnapshotHolder()
    holder.publish(sample_snapshot())
    holder.publish_alerts(ALERTS)
    holder.publish(dataclasses.replace(sample_snapshot(), cycles=2))  # engine not done yet
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(holder))
    labels = {"rule": "Low SMS Delivery Rate", "target": "primary", "severity": "critical"}
    assert registry.get_sample_value("sms_alert_state", labels) == 2
    assert registry.get_sample_value("sms_monitor_poll_cycles_total") == 2
    assert holder.current is not None and not hasattr(holder.current, "alerts")


def test_nothing_published_yet_is_only_build_info_and_not_ready() -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(SnapshotHolder(), [a for u in UNITS for a in u.areas]))
    names = [m.name for m in registry.collect()]
    assert names == ["sms_monitor_build_info", "sms_monitor_ready"]
    assert registry.get_sample_value("sms_monitor_ready") == 0


def test_a_snapshot_cannot_be_changed_by_its_readers() -> None:
    snap = sample_snapshot()
    account = snap.accounts[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        account.up = False  # type: ignore[misc]
    with pytest.raises(TypeError):
        account.facts.failures["balance"] = "timeout"  # type: ignore[index]
    with pytest.raises(TypeError):
        snap.parts["intruder"] = account  # type: ignore[index]
    with pytest.raises(TypeError):
        account.stats.by_error["30007"] = 0  # type: ignore[index,union-attr]
    with pytest.raises(dataclasses.FrozenInstanceError):
        account.records[0].status = "failed"  # type: ignore[misc]
    assert snap.database is not None and snap.database.facts.rule_rows == ()


def test_the_status_page_is_shown_but_not_counted_in_overall() -> None:
    snap = sample_snapshot()
    assert [c.name for c in snap.checks()][-1] == "twilio_status"
    assert snap.overall is RED  # the account's delivery rate; twilio_status is only yellow
    without_primary = Snapshot(taken_at=snap.taken_at, parts={
        k: p for k, p in snap.parts.items() if not k.startswith("twilio:")})
    assert without_primary.overall is YELLOW  # the database's, not the status page's
