"""A red incident, built by hand, as the incident page's tests and docs/make_screenshots.py
show it: a holder that has published an hour of snapshots and the alert engine's state.

At ``now`` (snapshot taken 12 s before):

- primary: 82 of 100 settled messages delivered (18 with errors 30003 ×9, 30005 ×5,
  30007 ×4), red since ``now - 3000``; balance 35.00 USD (yellow), same since;
- database: 3 messages sent to opted-out clients (red) and a queue delay of 95 s (yellow),
  since ``now - 420``;
- alerts: "Low SMS Delivery Rate" firing since ``now - 2400`` at level 2, "Opt-out
  violations" firing since ``now - 400`` at level 1, "Low Twilio Balance" pending.
"""

from __future__ import annotations

from dataclasses import replace

from sms_monitor.core.canary import CanaryView
from sms_monitor.core.classify import CheckResult
from sms_monitor.core.dbchecks import DatabaseView, database_checks
from sms_monitor.core.facts import DatabaseFacts
from sms_monitor.core.snapshot import AlertsSnapshot, AlertView, Snapshot, SnapshotHolder
from sms_monitor.core.thresholds import DEFAULT_THRESHOLDS
from tests.snapshots import (
    HEALTHY_FACTS,
    MessageRecord,
    account,
    database,
    message,
    snapshot,
    statuspage,
)

OPTED_OUT_PEER = 4242  # a client who replied STOP (peer hash)
AGE = 12.0  # seconds between the last snapshot and ``now``


def _records(now: float, failing: bool) -> list[MessageRecord]:
    codes = [30003] * 9 + [30005] * 5 + [30007] * 4 if failing else []
    out = []
    for i in range(100):
        created = now - 3300 + i * 30
        if i < len(codes):
            out.append(message(f"SM{i:03d}", created, "undelivered", error=codes[i], after=20.0))
        else:
            out.append(message(f"SM{i:03d}", created, after=4.2))
    return out


def _database(records: list[MessageRecord], violating: bool
              ) -> tuple[DatabaseFacts, list[CheckResult]]:
    outbound = [r for r in records if r.outbound]
    if violating:  # three reminders went to a client who had opted out
        outbound[-3:] = [replace(r, peer=OPTED_OUT_PEER) for r in outbound[-3:]]
    facts = DatabaseFacts(invalid_phones={"phone": 0, "cell_phone": 0},
                          queue_delay=95.0 if violating else 8.0, queue_sent=60, queue_unsent=0,
                          sms_disabled=0, settings_rows=40,
                          opted_out=frozenset({OPTED_OUT_PEER}), client_optout={},
                          logged_recipients=100, rule_rows=())
    view = DatabaseView(outbound=tuple(outbound), twilio_in_span=100)
    checks = database_checks(facts, view, DEFAULT_THRESHOLDS, 10, 0.9, 300.0)
    return facts, checks


def incident_snapshot(taken_at: float, *, failing: bool = True, violating: bool = True
                      ) -> Snapshot:
    records = _records(taken_at, failing)
    facts = replace(HEALTHY_FACTS, balance=35.0 if failing else 120.5)
    primary = account("primary", records, now=taken_at, facts=facts)
    db_facts, checks = _database(records, violating)
    db = database(db_facts, checks, sent_to_opted_out=3 if violating else 0,
                  optout_unprocessed=0, twilio_in_span=100)
    return snapshot(
        primary, db=db,
        status_page=statuspage({"SMS": "operational", "REST API": "operational"}),
        canary=CanaryView(account="primary", api_only=False, results={"delivered": 11},
                          success=True, latency=5.8, last_success=taken_at - 50,
                          last_result="delivered"),
        taken_at=taken_at,
        last_success={"twilio:primary": taken_at - 1, "database": taken_at - 1,
                      "statuspage": taken_at - 47})


def incident_alerts(now: float) -> AlertsSnapshot:
    return AlertsSnapshot(leader=True, alerts=(
        AlertView("Low Twilio Balance", "primary", "pending", 35.0, now - 120, 0, None,
                  "warning", "account_balance"),
        AlertView("Opt-out violations", "database", "firing", 3.0, now - 400, 1, now - 400,
                  "critical", "optout_violations"),
        AlertView("Low SMS Delivery Rate", "primary", "firing", 82.0, now - 2400, 2, now - 600,
                  "critical", "sms_delivery_rate"),
        AlertView("Slow Twilio API", "primary", "inactive", 0.25, None, 0, None,
                  "critical", "api_response_time"),
    ))


def incident_holder(now: float) -> SnapshotHolder:
    """An hour of cycles: healthy, then primary failing (``now - 3000``), then the database
    too (``now - 420``); the last taken AGE seconds before ``now``; the alerts beside it."""
    holder = SnapshotHolder()
    holder.publish(incident_snapshot(now - 3600, failing=False, violating=False))
    holder.publish(incident_snapshot(now - 3000, violating=False))
    holder.publish(incident_snapshot(now - 420))
    holder.publish(incident_snapshot(now - AGE))
    holder.publish_alerts(incident_alerts(now))
    return holder
