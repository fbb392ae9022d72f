"""``sms-monitor db check``: the configured table and column mapping against the live database.

For each table the database checks read (``[database.tables]``) and each column of it they
read (``[database.columns.<table>]``, see :data:`~sms_monitor.inputs.schema_names.COLUMN_KINDS`):
the table exists, the column exists with a type the queries can use, and the connecting role
may SELECT it; then each table is read as the checks read it (``SELECT ... LIMIT 0``). One
problem per line. PostgreSQL is checked in its catalogue; SQLite does not enforce column
types, so there only tables and columns are.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Connection, select, text
from sqlalchemy.exc import SQLAlchemyError

from sms_monitor.config import DatabaseConfig
from sms_monitor.inputs.database import DatabaseSource, describe_error
from sms_monitor.inputs.schema_names import (
    ARRAY,
    BOOLEAN,
    COLUMN_KINDS,
    JSON_DOC,
    TEXT,
    TEXT_ARRAY,
    TEXT_LIST,
    TIMESTAMP,
    MappedTable,
)


class Unreachable(Exception):
    """The database could not be connected to (or its catalogue not read): one line."""


@dataclass
class MappingReport:
    problems: list[str] = field(default_factory=list)
    tables: int = 0
    columns: int = 0


@dataclass(frozen=True)
class PgType:
    name: str  # as format_type shows it, e.g. "character varying(40)"
    base: str  # the base type's name (a domain's), e.g. "varchar", "_text"
    category: str  # pg_type.typcategory: S string, B boolean, D date/time, A array, E enum...
    element: str | None  # an array's element category


def compatible(kind: str, t: PgType) -> bool:
    """Whether a column of type ``t`` serves as ``kind`` in the checks' queries."""
    text_like = t.category in ("S", "E")
    text_array = t.category == "A" and t.element in ("S", "E")
    return {
        TEXT: text_like,
        BOOLEAN: t.category == "B",
        TIMESTAMP: t.base in ("timestamp", "timestamptz"),
        ARRAY: t.category == "A",
        TEXT_ARRAY: text_array,
        JSON_DOC: t.base in ("json", "jsonb") or text_like,
        TEXT_LIST: text_array or text_like,
    }[kind]


def _label(table: MappedTable, column: str | None = None) -> str:
    """``clients.phone``, or ``app.patients.mobile (clients.phone)`` when mapped."""
    logical = table.logical + (f".{column}" if column else "")
    real = table.name + (f".{table.c(column).name}" if column else "")
    return logical if real == logical else f"{real} ({logical})"


_PG_COLUMNS = text("""
    SELECT a.attname, format_type(a.atttypid, a.atttypmod), b.typname, b.typcategory,
           e.typcategory, has_column_privilege(a.attrelid, a.attnum, 'SELECT')
    FROM pg_attribute a
    JOIN pg_type t ON t.oid = a.atttypid
    JOIN pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
    LEFT JOIN pg_type e ON e.oid = b.typelem AND b.typcategory = 'A'
    WHERE a.attrelid = to_regclass(:n) AND a.attnum > 0 AND NOT a.attisdropped
""")


class MappingChecker:
    def __init__(self, config: DatabaseConfig) -> None:
        self.config = config
        self.source = DatabaseSource(config)  # read-only sessions, statement timeout
        self.postgres = self.source.dialect == "postgresql"

    def close(self) -> None:
        self.source.close()

    def run(self) -> MappingReport:
        report = MappingReport()
        try:
            conn = self.source.engine.connect()
        except SQLAlchemyError as exc:
            raise Unreachable(describe_error(exc)[1]) from None
        with conn:
            role = self._role(conn)
            for logical, kinds in COLUMN_KINDS.items():
                table = self.config.names.table(logical)
                wanted = {k: kind for k, kind in kinds.items() if table.c(k).name}
                report.tables += 1
                report.columns += len(wanted)
                report.problems += self._table(conn, table, wanted, role)
        return report

    def _role(self, conn: Connection) -> str:
        if not self.postgres:
            return ""
        try:
            with conn.begin():
                return str(conn.execute(text("SELECT current_user")).scalar_one())
        except SQLAlchemyError as exc:
            raise Unreachable(describe_error(exc)[1]) from None

    def _table(self, conn: Connection, table: MappedTable, wanted: dict[str, str],
               role: str) -> list[str]:
        try:
            with conn.begin():
                problems = (self._pg_table(conn, table, wanted, role) if self.postgres
                            else self._sqlite_table(conn, table, wanted))
        except SQLAlchemyError as exc:
            return [f"{_label(table)}: cannot be inspected: {describe_error(exc)[1]}"]
        if problems:
            return problems
        try:  # read as the checks read it
            with conn.begin():
                conn.execute(select(*(table.c(k) for k in wanted)).select_from(table.clause)
                             .limit(0)).all()
        except SQLAlchemyError as exc:
            return [f"{_label(table)}: cannot be read: {describe_error(exc)[1]}"]
        return []

    def _pg_table(self, conn: Connection, table: MappedTable, wanted: dict[str, str],
                  role: str) -> list[str]:
        preparer = conn.dialect.identifier_preparer
        schema, name = table.clause.schema, table.clause.name
        qualified = (f"{preparer.quote_schema(schema)}." if schema else "") + preparer.quote(name)
        exists = conn.execute(text("SELECT to_regclass(:n) IS NOT NULL"),
                              {"n": qualified}).scalar_one()
        if not exists:
            if schema and conn.execute(
                    text("SELECT NOT has_schema_privilege(:s, 'USAGE') FROM pg_namespace "
                         "WHERE nspname = :s"), {"s": schema}).scalar():
                return [f"{_label(table)}: no USAGE privilege on schema {schema} "
                        f"(role {role})"]
            return [f"{_label(table)}: no such table (or view)"]
        found = {row[0]: (PgType(row[1], row[2], row[3], row[4]), bool(row[5]))
                 for row in conn.execute(_PG_COLUMNS, {"n": qualified})}
        table_select = conn.execute(text("SELECT has_table_privilege(to_regclass(:n), "
                                         "'SELECT')"), {"n": qualified}).scalar_one()
        problems: list[str] = []
        unreadable: list[str] = []
        for key, kind in wanted.items():
            column = table.c(key).name
            if column not in found:
                problems.append(f"{_label(table, key)}: no such column")
                continue
            pg_type, readable = found[column]
            if not compatible(kind, pg_type):
                problems.append(f"{_label(table, key)}: type {pg_type.name}, expected {kind}")
            if not readable:
                unreadable.append(key)
        if unreadable and not table_select and len(unreadable) == len(
                [k for k in wanted if table.c(k).name in found]):
            problems.append(f"{_label(table)}: no SELECT privilege (role {role})")
        else:
            problems += [f"{_label(table, key)}: no SELECT privilege (role {role})"
                         for key in unreadable]
        return problems

    def _sqlite_table(self, conn: Connection, table: MappedTable, wanted: dict[str, str]
                      ) -> list[str]:
        preparer = conn.dialect.identifier_preparer
        schema = table.clause.schema
        pragma = (f"PRAGMA {preparer.quote_schema(schema)}.table_info"
                  if schema else "PRAGMA table_info")
        rows = conn.exec_driver_sql(f"{pragma}({preparer.quote(table.clause.name)})").all()
        if not rows:
            return [f"{_label(table)}: no such table (or view)"]
        present = {str(r[1]) for r in rows}
        return [f"{_label(table, key)}: no such column" for key in wanted
                if table.c(key).name not in present]


def check_mapping(config: DatabaseConfig) -> MappingReport:
    """Every problem of the mapping against the database (Unreachable when it cannot be
    asked)."""
    checker = MappingChecker(config)
    try:
        return checker.run()
    finally:
        checker.close()
