"""Facts a Twilio poll hands to the core: plain values, no I/O objects."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sms_monitor.core.frozen import Immutable

# Failure kinds a source reports for one request.
TIMEOUT = "timeout"
CONNECTION = "connection"
AUTH = "auth"
SERVER_ERROR = "server_error"
CLIENT_ERROR = "client_error"
MALFORMED = "malformed"
BUDGET = "budget"  # the cycle's time for this account ran out before the request
SKIPPED = "skipped"  # not asked: the probe found Twilio unreachable this cycle
# Failures that mean Twilio's API did not answer at all.
UNREACHABLE = frozenset({TIMEOUT, CONNECTION})

# The label values of the poll-error counters, each pair that can occur, so that every
# counter is exported at 0 from the first scrape (a panel or a rate over it never starts
# empty). A request part of a Twilio poll fails with one of REQUEST_FAILURES; the parts after
# the Balance probe are SKIPPED when the probe found Twilio unreachable; "poll" is the poll
# itself crashing ("internal").
TWILIO_PARTS = ("balance", "account", "phone_number", "messages", "usage")
REQUEST_FAILURES = (TIMEOUT, CONNECTION, AUTH, SERVER_ERROR, CLIENT_ERROR, MALFORMED, BUDGET)
POLL_ERROR_LABELS: tuple[tuple[str, str], ...] = (
    *((part, kind) for part in TWILIO_PARTS for kind in REQUEST_FAILURES),
    *((part, SKIPPED) for part in ("account", "phone_number", "messages")),
    ("poll", "internal"),
)
# Why a Twilio request was retried (twilio_api_retries_total's reason).
RETRY_REASONS = ("429", "5xx", "connection")
# The application database's queries, each failing with one of QUERY_FAILURES
# (inputs.database.describe_error), and the poll itself crashing.
DATABASE_QUERIES = ("invalid_phone_numbers", "queue_delay", "sms_fallback", "opted_out_clients",
                    "optout_lookup", "reconciliation", "notification_rules", "content")
QUERY_FAILURES = ("schema", "permission", "timeout", "read_only", "unreachable", "error")
QUERY_ERROR_LABELS: tuple[tuple[str, str], ...] = (
    *((query, cause) for query in DATABASE_QUERIES for cause in QUERY_FAILURES),
    ("poll", "internal"),
)


@dataclass(frozen=True)
class AccountFacts(Immutable):
    """What one poll of one Twilio account learned, besides message records."""

    balance: float | None = None
    currency: str | None = None
    balance_seconds: float | None = None  # wall time of the Balance request (the API probe)
    account_status: str | None = None
    phone_number: str | None = None  # the configured sending number
    phone_found: bool | None = None
    phone_sms_capable: bool | None = None
    messages_ok: bool = False
    auth_failed: bool = False
    credentials_accepted: bool = False  # some request was answered with 2xx
    spend_today: float | None = None  # Usage Records, category sms
    spend_month: float | None = None
    spend_currency: str | None = None
    # request part ("balance", "account", "phone_number", "messages") -> failure kind
    failures: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DatabaseFacts(Immutable):
    """What one poll of the application database learned; None where a query failed."""

    invalid_phones: Mapping[str, int] | None = None  # logical column -> count
    queue_delay: float | None = None  # mean seconds, SMS rows created in the last hour
    queue_sent: int | None = None  # SMS rows created in the last hour and sent
    queue_unsent: int | None = None  # ... not sent yet
    queue_oldest_unsent: float | None = None  # seconds the oldest unsent one has waited
    sms_disabled: int | None = None  # settings rows with SMS off
    settings_rows: int | None = None
    opted_out: frozenset[int] | None = None  # peer hashes of opted-out clients' numbers
    client_optout: Mapping[str, bool] | None = None  # candidate number -> any client not opted out
    logged_recipients: int | None = None  # SMS recipients logged in the reconciliation span
    # (digit-masked message text, sent, delivered) of the last 7 days; None when not read
    content_rows: Sequence[tuple[str, int, int, int]] | None = None  # text, rows, delivered, settled
    # notification_rules rows with the runbook's column names; None when unreadable
    rule_rows: Sequence[Mapping[str, object]] | None = None
    failures: Mapping[str, str] = field(default_factory=dict)  # query -> one-line reason
    causes: Mapping[str, str] = field(default_factory=dict)  # query -> bounded cause label

    @property
    def up(self) -> bool:
        return not self.failures


@dataclass(frozen=True)
class StatusPageFacts(Immutable):
    ok: bool
    error: str | None = None
    indicator: str | None = None  # none, minor, major, critical
    components: Mapping[str, str] = field(default_factory=dict)  # name -> status (relevant ones)
    open_incidents: int = 0
    incident_names: tuple[str, ...] = ()
    read_at: float = 0.0
