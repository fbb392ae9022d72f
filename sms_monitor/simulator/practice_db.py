"""The runbook's application schema, for tests and the demo (PostgreSQL or SQLite).

On PostgreSQL ``sent_via`` is ``text[]`` and ``recipient_user_ids`` an integer
array, as in the runbook's SQL; on SQLite both are JSON arrays.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    Table,
    Text,
    delete,
    insert,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from sms_monitor.inputs.schema_names import SchemaNames

TEXT_ARRAY = ARRAY(Text).with_variant(JSON(), "sqlite")
INT_ARRAY = ARRAY(Integer).with_variant(JSON(), "sqlite")
JSON_DOC = JSONB().with_variant(JSON(), "sqlite")


def runbook_metadata(names: SchemaNames | None = None) -> MetaData:
    """Tables with the runbook's columns (plus a few an application would have)."""
    n = names or SchemaNames()
    md = MetaData()

    def real(logical: str) -> tuple[str, str | None]:
        schema, _, name = n.tables[logical].rpartition(".")
        return name, schema or None

    def col(tname: str, logical: str) -> str:
        return n.columns[tname][logical]

    name, schema = real("clients")
    Table(name, md,
          Column(col("clients", "id"), Integer, primary_key=True),
          Column("portal_user_id", Integer),
          Column("name", Text),
          Column(col("clients", "phone"), Text),
          Column(col("clients", "cell_phone"), Text),
          Column(col("clients", "has_opted_out"), Boolean, nullable=False, default=False),
          Column("last_sms_date", DateTime(timezone=True)),
          schema=schema)
    name, schema = real("notification_logs")
    Table(name, md,
          Column(col("notification_logs", "id"), Integer, primary_key=True),
          Column(col("notification_logs", "message"), Text),
          Column(col("notification_logs", "status"), Text),
          Column(col("notification_logs", "sent_via"), TEXT_ARRAY),
          Column(col("notification_logs", "recipient_user_ids"), INT_ARRAY),
          Column(col("notification_logs", "created_at"), DateTime(timezone=True), nullable=False),
          Column(col("notification_logs", "sent_at"), DateTime(timezone=True)),
          schema=schema)
    name, schema = real("notification_rules")
    Table(name, md,
          Column("id", Integer, primary_key=True),
          Column(col("notification_rules", "rule_name"), Text, nullable=False),
          Column(col("notification_rules", "rule_type"), Text, nullable=False),
          Column(col("notification_rules", "trigger_conditions"), JSON_DOC),
          Column(col("notification_rules", "recipients"), TEXT_ARRAY),
          schema=schema)
    name, schema = real("appointment_notification_settings")
    Table(name, md,
          Column("id", Integer, primary_key=True),
          Column("client_id", Integer),
          Column(col("appointment_notification_settings", "send_via_sms"), Boolean,
                 nullable=False, default=True),
          Column("send_via_email", Boolean, nullable=False, default=True),
          schema=schema)
    return md


def create_runbook_schema(engine: Engine, names: SchemaNames | None = None) -> MetaData:
    md = runbook_metadata(names)
    md.create_all(engine)
    return md


# Numbers the demo's stories use: a client whose STOP the application never processes, and
# an opted-out client who still gets messages (the ``optout_violations`` scenario).
DEMO_UNPROCESSED_STOP = "+15550100001"
DEMO_OPTED_OUT = "+15550100002"
# An opted-in client the demo page can make reply STOP (through the simulator's webhook).
DEMO_LIVE_STOP = "+15550100003"
# Clients the ``invalid_numbers`` story adds, with numbers as a front desk types them.
INVALID_NUMBER_CLIENTS = tuple(range(10_001, 10_007))


def seed_demo(engine: Engine, now: datetime | None = None, clients: int = 200,
              seed: int = 11, logs_per_minute: float = 4.0, log_span: float = 3600.0) -> None:
    """A small, healthy practice: every number in E.164, SMS logs of reminders that reach
    their clients, a few clients who opted out (one of them, ``DEMO_OPTED_OUT``, the one the
    ``optout_violations`` story keeps messaging) and the runbook's alert rules. The demo's
    stories add their problems on top (:func:`seed_invalid_numbers`)."""
    now = now or datetime.now(UTC)
    rng = random.Random(seed)
    md = create_runbook_schema(engine)
    t = md.tables
    client_rows = []
    for i in range(1, clients + 1):
        phone = f"+1555{rng.randrange(10**7):07d}"
        cell = None if i % 3 else f"+1555{rng.randrange(10**7):07d}"
        client_rows.append({"id": i, "portal_user_id": 1000 + i, "name": f"Client {i}",
                            "phone": phone, "cell_phone": cell, "has_opted_out": i % 50 == 0})
    client_rows.append({"id": clients + 1, "portal_user_id": 1000 + clients + 1,
                        "name": "Sends STOP, never processed", "phone": DEMO_UNPROCESSED_STOP,
                        "cell_phone": None, "has_opted_out": False})
    client_rows.append({"id": clients + 2, "portal_user_id": 1000 + clients + 2,
                        "name": "Opted out", "phone": DEMO_OPTED_OUT, "cell_phone": None,
                        "has_opted_out": True})
    client_rows.append({"id": clients + 3, "portal_user_id": 1000 + clients + 3,
                        "name": "Replies STOP live", "phone": DEMO_LIVE_STOP,
                        "cell_phone": None, "has_opted_out": False})
    count = int(log_span / 60 * logs_per_minute)
    sent_times = [now.timestamp() - log_span + i * log_span / max(1, count) for i in range(count)]
    logs = log_rows(sent_times, rng, clients)
    settings = [{"client_id": i, "send_via_sms": i % 25 != 0, "send_via_email": True}
                for i in range(1, clients + 1)]
    rules = runbook_rules(["oncall@practice.example"])
    with engine.begin() as conn:
        conn.execute(insert(t["clients"]), client_rows)
        if logs:
            conn.execute(insert(t["notification_logs"]), logs)
        conn.execute(insert(t["appointment_notification_settings"]), settings)
        conn.execute(insert(t["notification_rules"]), rules)


def seed_invalid_numbers(engine: Engine, seed: int = 12) -> int:
    """Add clients whose numbers are not E.164 (national formats, as typed at a front desk);
    returns how many. :func:`unseed_invalid_numbers` takes them out again."""
    rng = random.Random(seed)
    rows = []
    for i in INVALID_NUMBER_CLIENTS:
        digits = f"555{rng.randrange(10**7):07d}"
        phone = rng.choice((f"({digits[:3]}) {digits[3:6]}-{digits[6:]}",
                            f"{digits[:3]}-{digits[3:6]}-{digits[6:]}", f"1{digits}"))
        rows.append({"id": i, "portal_user_id": 1000 + i, "name": f"Client {i}",
                     "phone": phone, "cell_phone": None, "has_opted_out": False})
    unseed_invalid_numbers(engine)
    with engine.begin() as conn:
        conn.execute(insert(runbook_metadata().tables["clients"]), rows)
    return len(rows)


def unseed_invalid_numbers(engine: Engine) -> None:
    clients = runbook_metadata().tables["clients"]
    with engine.begin() as conn:
        conn.execute(delete(clients).where(clients.c.id.in_(INVALID_NUMBER_CLIENTS)))


def log_rows(sent_times: list[float], rng: random.Random, clients: int = 200
             ) -> list[dict[str, object]]:
    """notification_logs rows for SMS handed to Twilio at ``sent_times`` (POSIX seconds)."""
    rows: list[dict[str, object]] = []
    for sent in sent_times:
        delay = rng.uniform(2, 12)  # the application's queue: seconds before Twilio has it
        sent_at = datetime.fromtimestamp(sent, UTC)
        name = rng.choice(("Ana", "Bo", "Chen", "Dmitri", "Ewa"))
        text = (f"Hi {name}, Riverside Family Practice reminds you of your appointment on "
                f"{rng.randrange(1, 13)}/{rng.randrange(1, 29)} at {rng.randrange(8, 18)}:30. "
                "Reply STOP to opt out.")
        status = "delivered" if rng.random() < 0.97 else "undelivered"
        rows.append({"message": text, "status": status, "sent_via": ["sms"],
                     "recipient_user_ids": [1000 + rng.randrange(1, clients)],
                     "created_at": sent_at - timedelta(seconds=delay), "sent_at": sent_at})
    return rows


def log_sends(engine: Engine, sent_times: list[float], rng: random.Random) -> None:
    """Play the application: log SMS notifications as they are handed to Twilio."""
    rows = log_rows(sent_times, rng)
    if not rows:
        return
    with engine.begin() as conn:
        conn.execute(insert(runbook_metadata().tables["notification_logs"]), rows)


def runbook_rules(recipients: list[str]) -> list[dict[str, object]]:
    """The runbook's recommended alert rules (as examples/notification_rules.sql)."""
    def rule(name: str, cond: dict[str, object]) -> dict[str, object]:
        return {"rule_name": name, "rule_type": "alert", "trigger_conditions": cond,
                "recipients": recipients}

    return [
        rule("Low SMS Delivery Rate", {"metric": "sms_delivery_rate", "threshold": 90,
                                       "window": "1 hour"}),
        rule("Slow SMS Delivery", {"metric": "sms_delivery_time", "threshold": 30,
                                   "window": "1 hour", "for": "10m"}),
        rule("Slow Twilio API", {"metric": "api_response_time", "threshold": 7, "for": "5m"}),
        rule("Low Twilio Balance", {"metric": "account_balance", "threshold": 20,
                                    "severity": "critical"}),
        rule("High SMS Error Rate", {"metric": "sms_error_rate", "threshold": 5,
                                     "window": "1 hour"}),
    ]
