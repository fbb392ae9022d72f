"""Logical table and column names (the runbook's) and their mapping to a real schema."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Boolean, DateTime
from sqlalchemy.sql import column, table
from sqlalchemy.sql.expression import ColumnClause, TableClause

DEFAULT_TABLES: dict[str, str] = {
    "clients": "clients",
    "notification_logs": "notification_logs",
    "notification_rules": "notification_rules",
    "appointment_notification_settings": "appointment_notification_settings",
}

DEFAULT_COLUMNS: dict[str, dict[str, str]] = {
    "clients": {"id": "id", "phone": "phone", "cell_phone": "cell_phone",
                "has_opted_out": "has_opted_out"},
    "notification_logs": {"id": "id", "created_at": "created_at", "sent_at": "sent_at",
                          "sent_via": "sent_via", "recipient_user_ids": "recipient_user_ids",
                          "message": "message", "status": "status"},
    "notification_rules": {"rule_name": "rule_name", "rule_type": "rule_type",
                           "trigger_conditions": "trigger_conditions", "recipients": "recipients"},
    "appointment_notification_settings": {"send_via_sms": "send_via_sms"},
}


# What each column the checks read must hold (``sms-monitor db check`` verifies it; the ids
# are mapped but never read). examples/schema.sql says what each one means.
TEXT, BOOLEAN, TIMESTAMP, ARRAY, TEXT_ARRAY, JSON_DOC, TEXT_LIST = (
    "text", "boolean", "a timestamp", "an array", "an array of text",
    "json, jsonb or text", "an array of text, or text")
COLUMN_KINDS: dict[str, dict[str, str]] = {
    "clients": {"phone": TEXT, "cell_phone": TEXT, "has_opted_out": BOOLEAN},
    "notification_logs": {"created_at": TIMESTAMP, "sent_at": TIMESTAMP,
                          "sent_via": TEXT_ARRAY, "recipient_user_ids": ARRAY,
                          "message": TEXT, "status": TEXT},
    "notification_rules": {"rule_name": TEXT, "rule_type": TEXT,
                           "trigger_conditions": JSON_DOC, "recipients": TEXT_LIST},
    "appointment_notification_settings": {"send_via_sms": BOOLEAN},
}

# Types of the columns whose values are bound or compared (so each dialect formats them).
_TYPES: dict[str, Any] = {"created_at": DateTime(timezone=True), "sent_at": DateTime(timezone=True),
          "has_opted_out": Boolean(), "send_via_sms": Boolean()}


@dataclass(frozen=True)
class MappedTable:
    logical: str
    clause: TableClause
    columns: Mapping[str, ColumnClause[Any]]  # logical column name -> real column

    @property
    def name(self) -> str:
        """The real name, schema-qualified when mapped so, for messages."""
        schema = self.clause.schema
        return f"{schema}.{self.clause.name}" if schema else self.clause.name

    def c(self, logical: str) -> ColumnClause[Any]:
        return self.columns[logical]


@dataclass(frozen=True)
class SchemaNames:
    """The mapping from the runbook's names to the application's; defaults are the runbook's."""

    tables: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_TABLES))
    columns: Mapping[str, Mapping[str, str]] = field(
        default_factory=lambda: {t: dict(c) for t, c in DEFAULT_COLUMNS.items()})

    def table(self, logical: str) -> MappedTable:
        real = self.tables[logical]
        schema, _, name = real.rpartition(".")
        cols: dict[str, ColumnClause[Any]] = {
            k: column(v, _TYPES.get(k)) for k, v in self.columns[logical].items()}
        clause = table(name, *cols.values(), schema=schema or None)
        return MappedTable(logical, clause, cols)

    @classmethod
    def from_config(cls, tables: Mapping[str, str] | None,
                    columns: Mapping[str, Mapping[str, str]] | None) -> SchemaNames:
        """Overlay a config's mapping on the defaults; unknown names raise KeyError(name)."""
        t = dict(DEFAULT_TABLES)
        for k, v in (tables or {}).items():
            if k not in t:
                raise KeyError(f"tables.{k}")
            t[k] = v
        c = {name: dict(cols) for name, cols in DEFAULT_COLUMNS.items()}
        for tname, cols in (columns or {}).items():
            if tname not in c:
                raise KeyError(f"columns.{tname}")
            for k, v in cols.items():
                if k not in c[tname]:
                    raise KeyError(f"columns.{tname}.{k}")
                c[tname][k] = v
        return cls(t, c)
