"""Settings from the environment and an optional TOML file, validated before anything starts.

Every setting is declared once, as a field of one of the pydantic models below (one model
per section of the file), and its default is written there and nowhere else.
pydantic-settings sources read the values: :class:`TomlFile` the ``--config`` file,
:class:`EnvironmentSource` the environment (:data:`ENVIRONMENT` says which variable sets
which key). :func:`load_settings` lays the environment over the file and the
``--web.listen-address`` flag over both, and validates the result with :class:`Settings`.
Every problem is reported as one :class:`ConfigError` naming the offending key: the file key
(``database.optout_grace``, ``accounts[0].name``), or the environment variable when the
value came from there. The CLI turns it into exit status 2.
"""

from __future__ import annotations

import ipaddress
import math
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, cast
from urllib.parse import urlsplit

from pydantic import (
    AllowInfNan,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    StrictBool,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from sms_monitor.alerts.explain import PAGERDUTY_EVENTS_URL
from sms_monitor.alerts.lifecycle import DEFAULT_LEVELS
from sms_monitor.core.content import DEFAULT_SPAM_WORDS
from sms_monitor.core.credentials import (
    mask_credentials,
    mask_url,
    unambiguous,
    url_passwords,
)
from sms_monitor.core.durations import parse_duration
from sms_monitor.core.e164 import is_e164
from sms_monitor.core.keywords import DEFAULT_HELP, DEFAULT_OPTIN, DEFAULT_OPTOUT
from sms_monitor.core.outbound import AllowEntry, WebhookPolicy, parse_networks, shown
from sms_monitor.core.sharding import MAX_TOTAL_SHARDS, Sharding, ordinal
from sms_monitor.core.thresholds import DEFAULT_THRESHOLDS, Threshold
from sms_monitor.inputs.schema_names import SchemaNames

SID_PATTERN = re.compile(r"^AC[0-9a-fA-F]{32}$")
STATUSPAGE_DEFAULT = "https://status.twilio.com/api/v2/summary.json"
TEST_FROM = "+15005550006"  # the magic number Twilio's test credentials send from
DEFAULT_STATE_DIR = "sms-monitor-state"  # SMS_MONITOR_STATE_DIR: the embedded SQLite stores

MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0
WEEK = 7 * DAY
# Twilio's own API is not polled more often than this (a faster loop only earns 429s);
# a simulator or a proxy may be polled as fast as it likes.
MIN_TWILIO_POLL = 5.0
# Ratio checks whose value is a share of a limit and may pass it (the busiest minute against
# the number's rate, the projected spend against the budget): their bounds may go up to
# twice the limit. The bounds of every other ratio check (delivery_rate, error_rate,
# reconciliation: shares of messages) lie between 0 and 1.
RATIO_BOUND_MAX = {"throughput": 2.0, "budget": 2.0}

# Messages per second a sending number can take, by number type (the runbook's table).
NUMBER_TYPE_LIMITS = {"long_code": 1.0, "toll_free": 3.0, "short_code": 100.0}
NumberType = Literal["long_code", "toll_free", "short_code", "10dlc"]

Loc = tuple[str | int, ...]


class ConfigError(Exception):
    """A bad configuration value; ``str()`` is the one line shown to the operator."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"configuration error: {key}: {reason}")
        self.key = key
        self.reason = reason


class KeyProblem(ValueError):
    """Raised by a validator about one key (dotted, relative to where the validator runs:
    the model for a model validator, the section for a field validator of a section)."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(reason)
        self.key = key


# -- values -------------------------------------------------------------------------------

def _env(info: ValidationInfo) -> Mapping[str, str]:
    """The environment :func:`load_settings` validates with (empty for a model built in code)."""
    context = info.context if isinstance(info.context, Mapping) else {}
    env = context.get("env")
    return env if isinstance(env, Mapping) else {}


def _not_bool(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    return value


def _masked(value: object) -> object:
    """``value`` with any URL credentials hidden, for messages."""
    return mask_url(value) if isinstance(value, str) else value


def _http_url(value: object) -> str:
    if not isinstance(value, str) or not re.match(r"^https?://[^\s/]+", value):
        raise ValueError(f"expected an http:// or https:// URL, got {_masked(value)!r}")
    return unambiguous(value).rstrip("/")


def _is_twilio(url: str) -> bool:
    """Whether ``url`` is Twilio's own API (api.twilio.com or a regional edge of it)."""
    host = (urlsplit(url).hostname or "").lower()
    return host == "twilio.com" or host.endswith(".twilio.com")


def _optional_http_url(value: object) -> str | None:
    """An http(s) URL; empty (or absent) means off."""
    return _http_url(value) if value not in (None, "") else None


def _check_sqlalchemy_url(url: str) -> None:
    """A URL SQLAlchemy can use (known dialect, numeric port, driver installed), or a
    ValueError saying why not."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
        dialect = parsed.get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"not a usable SQLAlchemy URL ({mask_credentials(reason)})") from None
    try:  # the dialect is known to SQLAlchemy; its driver is imported only on first connect
        dialect.import_dbapi()
    except ImportError as exc:
        module = f"no module named {exc.name!r}" if exc.name else "it cannot be imported"
        raise ValueError(f"the {parsed.drivername} driver is not installed ({module})") from None
    except NotImplementedError:  # a third-party dialect of the old style: found at connect
        pass


def _database_url(value: object) -> str | None:
    """The application database: an SQLAlchemy URL; empty means none."""
    if value in (None, ""):
        return None
    if not isinstance(value, str) or "://" not in value:
        raise ValueError("expected an SQLAlchemy URL such as postgresql+psycopg://host/db")
    value = unambiguous(value)
    _check_sqlalchemy_url(value)
    return value


def _store_url(value: object, info: ValidationInfo) -> str:
    """A URL of one of sms-monitor's own stores (SQLite or PostgreSQL, via SQLAlchemy);
    ``{state_dir}`` stands for the absolute SMS_MONITOR_STATE_DIR."""
    if not isinstance(value, str) or "://" not in value:
        raise ValueError("expected an SQLAlchemy URL")
    state_dir = Path(_env(info).get("SMS_MONITOR_STATE_DIR") or DEFAULT_STATE_DIR).absolute()
    url = unambiguous(value.replace("{state_dir}", str(state_dir)))
    _check_sqlalchemy_url(url)
    return url


def _smtp_url(value: object) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str) or not re.match(r"^smtps?://", value):
        raise ValueError("expected smtp://[user:pass@]host:port")
    return unambiguous(value)


def _e164(value: object) -> str:
    if not isinstance(value, str) or not is_e164(value):
        raise ValueError("expected an E.164 number such as +15005550006")
    return value


def _sid(value: object) -> str:
    if not isinstance(value, str) or not SID_PATTERN.match(value):
        raise ValueError("expected 'AC' followed by 32 hex digits")
    return value


def _pattern(what: str, pattern: str) -> BeforeValidator:
    def check(value: object) -> str:
        if not isinstance(value, str) or not re.match(pattern, value):
            raise ValueError(f"expected {what}, got {value!r}")
        return value
    return BeforeValidator(check)


def _words(value: object) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not value or not all(
            isinstance(w, str) and w.strip() and len(w) <= 40 for w in value):
        raise ValueError("expected a non-empty list of words")
    return tuple(w.strip().upper() for w in value)


def _phrases(value: object) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(w, str) and w.strip() for w in value):
        raise ValueError("expected a list of words or phrases")
    return tuple(w.strip() for w in value)


def _recipients(value: object) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError("expected a list of e-mail addresses or URLs")
    return tuple(value)


def _strings(value: object, what: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"expected a list of {what}")
    return tuple(value)


def _allow_entries(value: object) -> tuple[str, ...]:
    entries = _strings(value, "host names or URL prefixes")
    for entry in entries:
        AllowEntry.parse(entry)  # ValueError naming the entry
    return entries


def _networks(value: object) -> tuple[str, ...]:
    entries = _strings(value, "networks in CIDR form such as 10.0.0.0/8")
    parse_networks(entries)
    return entries


def _calling_code(value: object) -> str:
    text = str(value).lstrip("+") if isinstance(value, str | int) and not isinstance(value, bool) \
        else ""
    if not re.match(r"^[1-9]\d{0,2}$", text):
        raise ValueError(f"expected a calling code like 1 or 44, got {value!r}")
    return text


_HOST_PORT = re.compile(r"(?P<host>[A-Za-z0-9_.-]*):(?P<port>\d{1,5})")
_IPV6_PORT = re.compile(r"\[(?P<host>[0-9A-Fa-f:.]+(?:%[A-Za-z0-9_.-]+)?)\]:(?P<port>\d{1,5})")


def _split_listen_address(value: object) -> tuple[str, int]:
    """``HOST:PORT`` (a name or an IPv4 address; empty host: every IPv4 address) or
    ``[IPV6]:PORT`` as (host, port); the IPv6 host without its brackets."""
    text = str(value)
    m = _IPV6_PORT.fullmatch(text) or _HOST_PORT.fullmatch(text)
    ok = m is not None and int(m["port"]) <= 65535
    if m is not None and ok and text.startswith("["):
        try:
            ipaddress.IPv6Address(m["host"])
        except ValueError:
            ok = False
    if m is None or not ok:
        raise ValueError(f"expected HOST:PORT or [IPV6]:PORT, got {value!r}")
    return m["host"] or "0.0.0.0", int(m["port"])


def _listen_address(value: object) -> str:
    _split_listen_address(value)
    return str(value)


def _optional_listen_address(value: object) -> str | None:
    return None if value in (None, "") else _listen_address(value)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def parse_listen_address(key: str, value: str) -> tuple[str, int]:
    try:
        return _split_listen_address(value)
    except ValueError as exc:
        raise ConfigError(key, str(exc)) from None


def _check_ratio_bound(check: str, which: str, value: float | None) -> None:
    """A ratio check's bound lies between 0 and 1 (:data:`RATIO_BOUND_MAX` for a share of a
    limit); a percentage written where the ratio belongs gets the ratio as a hint."""
    most = RATIO_BOUND_MAX.get(check, 1.0)
    if value is None or 0 <= value <= most:
        return
    span = f"a ratio between 0 and {most:g}"
    if most < value <= 100 * most:
        raise KeyProblem(f"{check}.{which}", f"{span} (did you mean {round(value / 100, 10)!r}?)")
    raise KeyProblem(f"{check}.{which}", f"{span}, got {value:g}")


def _thresholds(value: object) -> dict[str, Threshold]:
    """``[thresholds.<check>]`` tables laid over the contract's defaults."""
    out = dict(DEFAULT_THRESHOLDS)
    if value is None:
        return out
    if not isinstance(value, Mapping):
        raise ValueError("expected a table")
    for check, raw in value.items():
        if check not in out:
            raise KeyProblem(check, f"unknown check; known: {', '.join(sorted(out))}")
        try:
            bounds = ThresholdBounds.model_validate(raw)
        except ValidationError as exc:
            loc, reason = first_problem(exc)
            raise KeyProblem(dotted((check, *loc)), reason) from None
        base = out[check]
        if base.unit == "ratio":
            for which in ("green", "red"):
                _check_ratio_bound(check, which, getattr(bounds, which))
        try:
            out[check] = Threshold(base.good if bounds.green is None else bounds.green,
                                   base.bad if bounds.red is None else bounds.red,
                                   base.higher_is_better, base.unit)
        except ValueError as exc:
            raise KeyProblem(check, str(exc)) from None
    return out


def _span(seconds: float) -> str:
    """``seconds`` in the largest unit that divides it: '1 day', '5 minutes', '90 seconds'."""
    for unit, size in (("day", DAY), ("hour", HOUR), ("minute", MINUTE)):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return f"{n} {unit}" + ("s" if n > 1 else "")
    return f"{seconds:g} seconds"


def _duration(most: float) -> BeforeValidator:
    """A duration (see :func:`parse_duration`: finite, positive) of at most ``most`` seconds.
    Every duration key has its own ceiling, so a typo can never reach a timer as 1e15 s."""
    def check(value: object) -> float:
        seconds = parse_duration(value)
        if seconds > most:
            raise ValueError(f"must be at most {_span(most)}, got {seconds:g} seconds")
        return seconds
    return BeforeValidator(check)


# Durations by ceiling (the few keys with another ceiling spell theirs out)
Timeout = Annotated[float, _duration(5 * MINUTE)]  # of a request or a connection
Interval = Annotated[float, _duration(DAY)]  # between reads; a lag, a settle time
Span = Annotated[float, _duration(WEEK)]  # a statistics window, a grace, an escalation
Number = Annotated[float, BeforeValidator(_not_bool), AllowInfNan(False)]
WholeNumber = Annotated[int, BeforeValidator(_not_bool)]
HttpUrl = Annotated[str, BeforeValidator(_http_url)]
OptionalHttpUrl = Annotated[str | None, BeforeValidator(_optional_http_url)]
StoreUrl = Annotated[str, BeforeValidator(_store_url)]
E164Number = Annotated[str, BeforeValidator(_e164)]
AccountSid = Annotated[str, BeforeValidator(_sid)]
TablePrefix = Annotated[str, _pattern("a table name prefix", r"^[A-Za-z_][A-Za-z0-9_]{0,30}$")]
Words = Annotated[tuple[str, ...], BeforeValidator(_words)]


# -- models: one per section --------------------------------------------------------------

class Section(BaseModel):
    """Base of every section: immutable, and a key it does not declare is an error."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True,
                              hide_input_in_errors=True)

    @classmethod
    def file_keys(cls) -> list[str]:
        """The keys this section takes (a field's alias where it has one)."""
        return sorted(f.alias or name for name, f in cls.model_fields.items() if not f.exclude)

    @classmethod
    def check_keys(cls, data: Mapping[Any, Any]) -> None:
        """A KeyProblem for the first key of ``data`` this section does not declare."""
        fields = {f.alias or name for name, f in cls.model_fields.items()}
        unknown = sorted(str(k) for k in data if k not in fields)
        if unknown:
            raise KeyProblem(unknown[0], f"unknown key; known: {', '.join(cls.file_keys())}")

    @model_validator(mode="before")
    @classmethod
    def _no_unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            cls.check_keys(data)
        return data


class ThresholdBounds(Section):
    """One check's ``[thresholds.<check>]`` table: where green ends and where red begins
    (the contract's bound where one is not given)."""

    green: Number | None = None
    red: Number | None = None


class AccountDefaults(Section):
    """Keys of an account that the top level of the file sets for every account."""

    api_url: HttpUrl = "https://api.twilio.com"  # REST API base
    number_type: NumberType = "long_code"  # of the sending number, for the throughput check
    throughput_limit: Annotated[Number, Field(gt=0)] | None = None
    monthly_budget: Annotated[Number, Field(gt=0)] | None = None


class AccountConfig(AccountDefaults):
    """One Twilio account (``[[accounts]]``, or the ``primary`` one from TWILIO_*)."""

    name: Annotated[str, _pattern("a short name of letters, digits, '-', '_' or '.'",
                                  r"^[A-Za-z0-9_.-]{1,64}$")]
    account_sid: AccountSid
    auth_token_env: str | None = None  # the variable holding the token
    auth_token: SecretStr
    phone_number: E164Number | None = None
    # messages per second; by default the number type's rate (a 10DLC number must set it)
    throughput_limit: float = Field(default=None, validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _token_from_env(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, Mapping):
            return data
        token, var = data.get("auth_token"), data.get("auth_token_env")
        if token is None and isinstance(var, str):
            token = _env(info).get(var)
            if not token:
                raise KeyProblem("auth_token_env", f"environment variable {var} is not set")
            data = {**data, "auth_token": token}
        if token is None or token == "":
            raise KeyProblem("auth_token", "missing (set auth_token or auth_token_env)")
        return data

    @field_validator("throughput_limit", mode="before")
    @classmethod
    def _limit_by_type(cls, value: object, info: ValidationInfo) -> object:
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0 \
                    or not math.isfinite(value):
                raise ValueError(f"expected messages per second, got {value!r}")
            return value
        kind = info.data.get("number_type")
        if kind == "10dlc":
            raise ValueError("a 10DLC number's rate depends on its brand registration: set it")
        return NUMBER_TYPE_LIMITS.get(str(kind), 0.0)


class DatabaseConfig(Section):
    """The application database source (``SMS_MONITOR_DATABASE_URL`` and ``[database]``)."""

    url: Annotated[str, BeforeValidator(_database_url)] = Field(repr=False)
    statement_timeout: Annotated[float, _duration(10 * MINUTE)] = 5.0  # each statement, 7 days of text too
    connect_timeout: Timeout = 5.0
    optout_grace: Span = 300.0  # the application's time to process a STOP
    optout_keywords: Words = DEFAULT_OPTOUT
    default_region: Annotated[str, _pattern("a region code like 'US'", r"^[A-Z]{2}$")] = "US"
    reconcile_lag: Interval = 120.0
    fallback_share: Annotated[Number, Field(gt=0, le=1)] = 0.9
    content_interval: Interval = 900.0  # between reads of 7 days of text
    practice_name: str | None = None  # every template should name the practice
    spam_words: Annotated[tuple[str, ...], BeforeValidator(_phrases)] = DEFAULT_SPAM_WORDS
    tables: Mapping[str, str] = Field(default_factory=dict, repr=False)  # runbook name -> yours
    columns: Mapping[str, Mapping[str, str]] = Field(default_factory=dict, repr=False)
    names: SchemaNames = Field(default_factory=SchemaNames, exclude=True)  # from the two above
    # Twilio sending more than logged * ratio + margin outbound messages in the
    # reconciliation span is red (messages the application did not log)
    unexpected_sends_ratio: Annotated[Number, Field(ge=1)] = 1.1
    unexpected_sends_margin: Annotated[WholeNumber, Field(ge=0)] = 10

    @field_validator("practice_name")
    @classmethod
    def _practice(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("expected the practice's name as text")
        return value.strip() if value else None

    @field_validator("tables", "columns", mode="before")
    @classmethod
    def _sql_names(cls, value: object, info: ValidationInfo) -> object:
        if not isinstance(value, Mapping) or (info.field_name == "columns" and not all(
                isinstance(v, Mapping) for v in value.values())):
            raise ValueError("expected a table of names")
        flat = value.values() if info.field_name == "tables" else [
            x for t, v in value.items() for c, x in v.items()
            if not (t == "clients" and c == "cell_phone" and x == "")]  # "": no such column
        for name in flat:
            if not isinstance(name, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_.]{0,126}$", name):
                raise ValueError(f"not a usable SQL name: {name!r}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _names_from_tables(cls, data: Any) -> Any:
        """``tables`` and ``columns`` laid over the runbook's names."""
        if not isinstance(data, Mapping) or not ({"tables", "columns"} & set(data)):
            return data
        tables, columns = data.get("tables"), data.get("columns")
        if not isinstance(tables, Mapping | None) or not isinstance(columns, Mapping | None) \
                or not all(isinstance(v, Mapping) for v in (columns or {}).values()):
            return data  # the field validators say what is wrong
        try:
            return {**data, "names": SchemaNames.from_config(tables, columns)}
        except KeyError as exc:
            raise KeyProblem(exc.args[0], "unknown table or column of the runbook schema") from None


class AlertsConfig(Section):
    """The notification_rules alert engine (``[alerts]``; runs when the database is set)."""

    enabled: StrictBool = True
    store_url: StoreUrl = Field("sqlite:///{state_dir}/alerts.db", repr=False, validate_default=True)
    prefix: TablePrefix = "sms_monitor_"
    store_schema: Annotated[str, _pattern("a schema name", r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")] | None \
        = Field(None, alias="schema")
    # relative margin past the threshold before a firing alert resolves
    hysteresis: Annotated[Number, Field(ge=0, lt=1)] = 0.02
    level2_after: Span = DEFAULT_LEVELS[1]
    level3_after: Span = Field(DEFAULT_LEVELS[2], validate_default=True)
    # where webhook recipients may go (sms_monitor.core.outbound): nowhere by default; https
    # only; public addresses only (these come before the levels, whose URLs they judge)
    webhook_allow_http: StrictBool = False
    webhook_allow_networks: Annotated[tuple[str, ...], BeforeValidator(_networks)] = ()
    webhook_allow: Annotated[tuple[str, ...], BeforeValidator(_allow_entries)] = ()
    # PagerDuty's Events API v2, where pagerduty:<routing key> recipients post: held to
    # webhook_allow like any webhook (list its host there)
    pagerduty_url: HttpUrl = PAGERDUTY_EVENTS_URL
    level1: Annotated[tuple[str, ...], BeforeValidator(_recipients)] = ()
    level2: Annotated[tuple[str, ...], BeforeValidator(_recipients)] = ()
    level3: Annotated[tuple[str, ...], BeforeValidator(_recipients)] = ()
    alertmanager_url: OptionalHttpUrl = None
    # what every notification links to: the runbook (its base URL: the metric's section is
    # added as an anchor; unset: the daemon's own /runbook under external_url, else no link)
    # and the Grafana dashboard (unset: no link)
    runbook_url: OptionalHttpUrl = None
    dashboard_url: OptionalHttpUrl = None
    # SMTP credentials only over TLS (smtps://, or STARTTLS) unless this allows them in clear
    smtp_allow_plain_auth: StrictBool = False
    # longest rule window (messages are kept that long); never less than the monitor's window
    max_window: Annotated[float, _duration(31 * DAY)] = 0.0
    # the receivers' own limits, not Twilio's: SMTP allows up to 10 minutes for the reply to
    # the message's end (RFC 5321 4.5.3.2.6); a webhook answering late would get every retry
    smtp_timeout: Annotated[float, _duration(15 * MINUTE)] = 120.0
    webhook_timeout: Timeout = 30.0
    # notification retries: retry_base doubling to retry_max; at least a second, so a
    # failing receiver is never hammered
    retry_base: Annotated[float, _duration(HOUR), Field(ge=1.0)] = 30.0
    retry_max: ClassVar[float] = 3600.0

    @field_validator("level3_after")
    @classmethod
    def _after_level2(cls, value: float, info: ValidationInfo) -> float:
        if value <= info.data.get("level2_after", 0.0):
            raise ValueError("must be later than level2_after")
        return value

    @field_validator("webhook_allow")
    @classmethod
    def _http_prefixes(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        if not info.data.get("webhook_allow_http", False):
            for entry in value:
                if AllowEntry.parse(entry).scheme == "http":
                    raise ValueError(f"{shown(entry)} is an http:// prefix: set "
                                     "webhook_allow_http = true or use https://")
        return value

    @field_validator("level1", "level2", "level3")
    @classmethod
    def _allowed_webhooks(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        """A level's webhook must pass the allowlist as a rule row's must: a configuration
        error here, found at start rather than when it is needed."""
        if "webhook_allow" not in info.data or "webhook_allow_networks" not in info.data:
            return value  # reported already
        from sms_monitor.alerts.notify import recipient_refusal

        policy = WebhookPolicy.of(info.data["webhook_allow"], info.data["webhook_allow_http"],
                                  info.data["webhook_allow_networks"])
        pagerduty = info.data.get("pagerduty_url", PAGERDUTY_EVENTS_URL)
        for recipient in value:
            refusal = recipient_refusal(recipient, policy, pagerduty)
            if refusal is not None:
                raise ValueError(f"{refusal.detail} ({refusal.reason})")
        return value

    @property
    def webhook_policy(self) -> WebhookPolicy:
        """Where webhook recipients may go (validated with the configuration)."""
        return WebhookPolicy.of(self.webhook_allow, self.webhook_allow_http,
                                self.webhook_allow_networks)

    @property
    def routing_keys(self) -> list[str]:
        """The PagerDuty routing keys of the level recipients: secrets, never logged."""
        from sms_monitor.alerts.notify import routing_key

        return [k for level in self.level_recipients for r in level if (k := routing_key(r))]

    @property
    def levels(self) -> tuple[float, ...]:
        """When levels 1, 2 and 3 start (firing for)."""
        return (DEFAULT_LEVELS[0], self.level2_after, self.level3_after)

    @property
    def level_recipients(self) -> tuple[tuple[str, ...], ...]:
        return (self.level1, self.level2, self.level3)


class InboundConfig(Section):
    """The incoming-message webhook (``[inbound]``): keywords and the audit table's store
    (by default the alert store, and its prefix, when alerts are on)."""

    audit_url: StoreUrl = Field("sqlite:///{state_dir}/audit.db", repr=False, validate_default=True)
    prefix: TablePrefix = "sms_monitor_"
    optin_keywords: Words = DEFAULT_OPTIN
    help_keywords: Words = DEFAULT_HELP

    @field_validator("help_keywords")
    @classmethod
    def _one_meaning(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        both = set(value) & set(info.data.get("optin_keywords", ()))
        if both:
            raise ValueError(f"{sorted(both)[0]} is also in inbound.optin_keywords: "
                             "a keyword has one meaning")
        return value


class CanaryConfig(Section):
    """The synthetic probe (``[canary]``): a test message every ``interval``, followed."""

    enabled: StrictBool = True
    account: str | None = None  # the configured account it sends from (default: the first)
    to: E164Number = Field(repr=False)  # the test handset
    from_number: E164Number | None = Field(None, alias="from")  # default: the account's number
    interval: Interval = 300.0
    timeout: Interval = 180.0  # a probe not delivered by then has failed
    body: str = "sms-monitor canary: no reply needed"
    # Twilio's test credentials: the API path is exercised, nothing is sent or followed
    test_account_sid: AccountSid | None = None
    test_auth_token_env: str = "TWILIO_TEST_AUTH_TOKEN"
    test_auth_token: SecretStr | None = Field(None, exclude=True)  # read from the variable above

    @model_validator(mode="before")
    @classmethod
    def _token_from_env(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, Mapping) or data.get("test_account_sid") is None \
                or data.get("test_auth_token") is not None:
            return data
        var = data.get("test_auth_token_env", cls.model_fields["test_auth_token_env"].default)
        token = _env(info).get(str(var))
        if not token:
            raise KeyProblem("test_auth_token_env", f"environment variable {var} is not set")
        return {**data, "test_auth_token": token}

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, value: float, info: ValidationInfo) -> float:
        if "interval" in info.data and value > info.data["interval"] * 10:
            raise ValueError("at most ten intervals")
        if value < 30:
            raise ValueError("at least 30s (a probe is read by SID after 10s)")
        return value

    @field_validator("body")
    @classmethod
    def _one_segment(cls, value: str) -> str:
        if not value.strip() or len(value) > 160:
            raise ValueError("expected one SMS segment of text")
        return value

    @property
    def api_only(self) -> bool:
        return self.test_account_sid is not None


class WebLimits(Section):
    """The HTTP listeners' limits (``[web]``), per listener: what a slow or hostile client
    can hold, and for how long."""

    # open connections; lowered at start to fit the process's descriptor limit
    max_connections: Annotated[WholeNumber, Field(ge=1)] = 512
    # open connections from one address (an IPv6 /64); behind a proxy, raise it
    max_connections_per_source: Annotated[WholeNumber, Field(ge=1)] = 64
    # requests being answered at once; more get 503
    max_concurrent_requests: Annotated[WholeNumber, Field(ge=1)] = 64
    # a request's head and body (and a new connection's TLS handshake), from its first byte
    request_timeout: Timeout = 10.0
    response_timeout: Timeout = 30.0  # writing the answer to a client that reads slowly
    idle_timeout: Timeout = 30.0  # a keep-alive connection between requests
    max_requests_per_connection: Annotated[WholeNumber, Field(ge=1)] = 1000


class Settings(AccountDefaults):
    """The whole configuration: the top level of the file and its sections."""

    # Read by the pydantic-settings sources too (they are given this class): keys are
    # matched exactly, as validation matches them, so ``Window`` stays an unknown key.
    model_config = SettingsConfigDict(case_sensitive=True)

    listen_address: Annotated[str, BeforeValidator(_listen_address)] = "0.0.0.0:9839"
    # Twilio's webhooks on a listener of their own (the operators' listener then has none)
    webhook_listen_address: Annotated[str | None, BeforeValidator(_optional_listen_address)] = None
    poll_interval: Interval = 60.0
    window_seconds: Span = Field(3600.0, alias="window")  # statistics window
    settle_seconds: Interval = Field(900.0, alias="settle")  # in-flight messages are re-read
    min_samples: Annotated[WholeNumber, Field(ge=1)] = 10
    request_timeout: Timeout = 10.0
    max_retries: Annotated[WholeNumber, Field(ge=0, le=10)] = 3
    max_pages: Annotated[WholeNumber, Field(ge=1)] = 200
    page_size: Annotated[WholeNumber, Field(ge=1, le=1000)] = 1000
    # consecutive cycles a configured source may stay unreadable before its connection
    # check turns red
    unreachable_cycles: Annotated[WholeNumber, Field(ge=1)] = 3
    # /healthz fails when no cycle has finished for this many poll intervals
    liveness_intervals: Annotated[Number, Field(ge=2)] = 3.0
    thresholds: Annotated[Mapping[str, Threshold], BeforeValidator(_thresholds)] = Field(
        default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    statuspage_url: OptionalHttpUrl = STATUSPAGE_DEFAULT  # empty: disabled
    statuspage_interval: Interval = 120.0
    public_url: OptionalHttpUrl = None  # how Twilio reaches us, for callback signatures
    # how operators reach sms-monitor's pages (Prometheus's --web.external-url): notifications
    # link to its /runbook
    external_url: OptionalHttpUrl = None
    home_country_code: Annotated[str, BeforeValidator(_calling_code)] = "1"  # not "international"
    usage_interval: Interval = 600.0  # between Usage Records reads (spend)
    # twilio_api_request_duration_seconds by account and endpoint, as the health contract
    # names it (70 series an account); false: by endpoint only, summed over the accounts
    # (a fleet's series budget)
    per_account_request_histograms: bool = True
    database_url: Annotated[str | None, BeforeValidator(_database_url)] = Field(None, repr=False)
    smtp_url: Annotated[str | None, BeforeValidator(_smtp_url)] = Field(None, repr=False)
    alert_from: str | None = None
    accounts: tuple[AccountConfig, ...] = ()
    database: DatabaseConfig | None = Field(None, validate_default=True)
    alerts: AlertsConfig | None = Field(None, validate_default=True)  # needs the database
    inbound: InboundConfig | None = Field(None, validate_default=True)
    canary: CanaryConfig | None = None
    web: WebLimits = WebLimits()
    # several replicas, each polling its share of the accounts (core/sharding.py): this
    # replica's number, from 0; unset with total_shards > 1, a StatefulSet pod's ordinal
    # (the trailing -<n> of HOSTNAME)
    total_shards: Annotated[WholeNumber, Field(ge=1, le=MAX_TOTAL_SHARDS)] = 1
    shard: Annotated[WholeNumber | None, Field(ge=0)] = Field(None, validate_default=True)

    @property
    def listen_host(self) -> str:
        return _split_listen_address(self.listen_address)[0]

    @property
    def listen_port(self) -> int:
        return _split_listen_address(self.listen_address)[1]

    @property
    def webhook_listen(self) -> tuple[str, int] | None:
        addr = self.webhook_listen_address
        return _split_listen_address(addr) if addr else None

    @model_validator(mode="after")
    def _webhooks_signed_for_a_known_url(self) -> Settings:
        """Off loopback, the URL Twilio signed is ``public_url``, never the Host header."""
        hook = self.webhook_listen
        if hook is not None and self.public_url is None and not _loopback(hook[0]):
            raise KeyProblem("webhook_listen_address",
                             f"{self.webhook_listen_address} is not a loopback address: webhooks "
                             "there need public_url, the URL Twilio calls, to check signatures "
                             "against")
        return self

    @field_validator("shard")
    @classmethod
    def _shard_number(cls, value: int | None, info: ValidationInfo) -> int:
        """The shard: as set, else the pod's ordinal when sharded; always below the total."""
        total = info.data.get("total_shards")
        if total is None:  # total_shards itself is wrong: that is the error reported
            return value or 0
        if value is None:
            if total == 1:
                return 0
            host = _env(info).get("HOSTNAME", "")
            value = ordinal(host)
            if value is None:
                raise ValueError(f"not set, and HOSTNAME ({host!r}) has no trailing -<n> "
                                 "(a StatefulSet pod's ordinal) to take it from")
        if value >= total:
            raise ValueError(f"must be below total_shards ({total}), got {value}")
        return value

    @property
    def sharding(self) -> Sharding:
        """This replica's share of the accounts."""
        return Sharding(self.shard or 0, self.total_shards)

    @model_validator(mode="after")
    def _gentle_on_twilio(self) -> Settings:
        """Twilio's own API is polled at most every MIN_TWILIO_POLL seconds."""
        twilio = next((a.api_url for a in self.accounts if _is_twilio(a.api_url)), None)
        if twilio is not None and self.poll_interval < MIN_TWILIO_POLL:
            raise KeyProblem("poll_interval", f"must be at least {MIN_TWILIO_POLL:g} seconds when "
                                              f"polling Twilio ({twilio}), got {self.poll_interval:g}")
        return self

    @field_validator("accounts")
    @classmethod
    def _unique_names(cls, value: tuple[AccountConfig, ...]) -> tuple[AccountConfig, ...]:
        names = [a.name for a in value]
        for n in names:
            if names.count(n) > 1:
                raise ValueError(f"account name {n!r} is used twice")
        return value

    @field_validator("database", mode="wrap")
    @classmethod
    def _database(cls, value: Any, handler: ValidatorFunctionWrapHandler,
                  info: ValidationInfo) -> DatabaseConfig | None:
        """``database_url`` wins over ``[database] url``; without a URL the table is still
        checked, but the database checks are off."""
        if value is not None and not isinstance(value, Mapping):
            return handler(value)
        table = dict(value or {})
        if info.data.get("database_url"):
            table["url"] = info.data["database_url"]
        if not table.get("url"):
            handler({**table, "url": "sqlite://"})
            return None
        return handler(table)

    @field_validator("alerts", mode="wrap")
    @classmethod
    def _alerts(cls, value: Any, handler: ValidatorFunctionWrapHandler,
                info: ValidationInfo) -> AlertsConfig | None:
        config: AlertsConfig = handler({} if value is None else value)
        if not config.enabled or info.data.get("database") is None:
            return None
        external = info.data.get("external_url")
        if "runbook_url" not in config.model_fields_set and external:
            # the runbook the daemon serves itself, with the same anchors as docs/runbook.md
            config = config.model_copy(update={"runbook_url": f"{external}/runbook"})
        window = info.data.get("window_seconds", 0.0)
        return config.model_copy(update={"max_window": max(config.max_window, window)})

    @field_validator("inbound", mode="wrap")
    @classmethod
    def _inbound(cls, value: Any, handler: ValidatorFunctionWrapHandler,
                 info: ValidationInfo) -> InboundConfig:
        config: InboundConfig = handler({} if value is None else value)
        database, alerts = info.data.get("database"), info.data.get("alerts")
        optout = database.optout_keywords if database is not None else DEFAULT_OPTOUT
        for key in ("optin_keywords", "help_keywords"):
            both = set(optout) & set(getattr(config, key))
            if both:
                raise KeyProblem(key, f"{sorted(both)[0]} is also in database.optout_keywords: "
                                      "a keyword has one meaning")
        if alerts is None:
            return config
        shared = {k: getattr(alerts, n) for k, n in (("audit_url", "store_url"), ("prefix", "prefix"))
                  if k not in config.model_fields_set}
        return config.model_copy(update=shared)

    @field_validator("canary", mode="wrap")
    @classmethod
    def _canary(cls, value: Any, handler: ValidatorFunctionWrapHandler,
                info: ValidationInfo) -> CanaryConfig | None:
        """Off without a table, with ``enabled = false`` and without accounts; sends from
        the account's number (Twilio's magic number with test credentials)."""
        if isinstance(value, Mapping) and (not value or value.get("enabled") is False):
            CanaryConfig.check_keys(value)
            return None
        config: CanaryConfig = handler(value)
        accounts: tuple[AccountConfig, ...] = info.data.get("accounts", ())
        if not accounts:
            return None
        name = config.account or accounts[0].name
        account = next((a for a in accounts if a.name == name), None)
        if account is None:
            raise KeyProblem("account", f"no configured account is named {name!r}")
        sender = config.from_number or (TEST_FROM if config.api_only else account.phone_number)
        if sender is None:
            raise KeyProblem("from", "the account has no phone_number: set canary.from")
        if config.api_only and not sender.startswith("+1500555"):
            raise KeyProblem("from", "with test credentials Twilio sends only from its "
                                     f"magic numbers such as {TEST_FROM}")
        return config.model_copy(update={"account": name, "from_number": sender})

    def secrets(self) -> list[str]:
        """Values that must never reach a log line or any output."""
        tokens = [a.auth_token for a in self.accounts]
        if self.canary is not None and self.canary.test_auth_token is not None:
            tokens.append(self.canary.test_auth_token)
        out = [t.get_secret_value() for t in tokens if t.get_secret_value()]
        out.extend(self.alerts.routing_keys if self.alerts else [])
        urls = [self.database_url, self.smtp_url, self.statuspage_url, self.public_url,
                *(a.api_url for a in self.accounts),
                self.database.url if self.database else None,
                self.inbound.audit_url if self.inbound else None,
                self.alerts.store_url if self.alerts else None,
                self.alerts.alertmanager_url if self.alerts else None]
        for url in urls:  # every form of each password (see core/credentials.py)
            out.extend(pw for pw in url_passwords(url) if pw not in out)
        return out


SECTIONS: dict[str, type[Section]] = {
    "": Settings, "accounts": AccountConfig, "thresholds": ThresholdBounds,
    "database": DatabaseConfig, "alerts": AlertsConfig, "inbound": InboundConfig,
    "canary": CanaryConfig, "web": WebLimits,
}

# Environment variables and the key each sets (they override the file).
ENVIRONMENT: dict[str, tuple[str, ...]] = {
    "SMS_MONITOR_TWILIO_API_URL": ("api_url",),
    "SMS_MONITOR_LISTEN_ADDRESS": ("listen_address",),
    "SMS_MONITOR_WEBHOOK_LISTEN_ADDRESS": ("webhook_listen_address",),
    "SMS_MONITOR_POLL_INTERVAL": ("poll_interval",),
    "SMS_MONITOR_SHARD": ("shard",),
    "SMS_MONITOR_TOTAL_SHARDS": ("total_shards",),
    "SMS_MONITOR_STATUSPAGE_URL": ("statuspage_url",),
    "SMS_MONITOR_PUBLIC_URL": ("public_url",),
    "SMS_MONITOR_EXTERNAL_URL": ("external_url",),
    "SMS_MONITOR_DATABASE_URL": ("database_url",),
    "SMS_MONITOR_SMTP_URL": ("smtp_url",),
    "SMS_MONITOR_ALERT_FROM": ("alert_from",),
    "SMS_MONITOR_ALERT_STORE_URL": ("alerts", "store_url"),
    "SMS_MONITOR_AUDIT_URL": ("inbound", "audit_url"),
    "SMS_MONITOR_CANARY_TO": ("canary", "to"),
    "SMS_MONITOR_CANARY_INTERVAL": ("canary", "interval"),
}
EMPTY_DISABLES = {"SMS_MONITOR_STATUSPAGE_URL"}  # set but empty: off (others: ignored)
# The ``primary`` account's keys, from the environment.
PRIMARY = {"TWILIO_ACCOUNT_SID": "account_sid", "TWILIO_AUTH_TOKEN": "auth_token",
           "TWILIO_PHONE_NUMBER": "phone_number"}
# Other variables read: SMS_MONITOR_STATE_DIR (the stores' {state_dir}), HOSTNAME (the shard
# of a StatefulSet pod when total_shards > 1 and shard is unset), and any named by
# auth_token_env / test_auth_token_env.


# -- errors -------------------------------------------------------------------------------

def dotted(loc: Loc) -> str:
    """``("accounts", 0, "name")`` as ``accounts[0].name``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# Pydantic's own errors, in the words of the rest of this module (the input is shown only
# where it is a number or a choice: never a token or a URL).
_REASONS = {
    "missing": "missing",
    "model_type": "expected a table", "model_attributes_type": "expected a table",
    "dict_type": "expected a table", "mapping_type": "expected a table",
    "tuple_type": "expected a list", "list_type": "expected a list",
    "string_type": "expected text",
    "bool_type": "expected true or false, got {input!r}",
    "bool_parsing": "expected true or false, got {input!r}",
    "int_type": "expected a whole number, got {input!r}",
    "int_parsing": "expected a whole number, got {input!r}",
    "int_from_float": "expected a whole number, got {input!r}",
    "float_type": "expected a number, got {input!r}",
    "float_parsing": "expected a number, got {input!r}",
    "finite_number": "expected a finite number, got {input!r}",
    "greater_than": "must be more than {gt}, got {input!r}",
    "greater_than_equal": "must be at least {ge}, got {input!r}",
    "less_than": "must be less than {lt}, got {input!r}",
    "less_than_equal": "must be at most {le}, got {input!r}",
    "literal_error": "expected one of {expected}, got {input!r}",
}


def first_problem(exc: ValidationError) -> tuple[Loc, str]:
    """The first error of ``exc``: where (keys from the top) and one line of why."""
    err: ErrorDetails = exc.errors(include_url=False)[0]
    loc: Loc = tuple(err["loc"])
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, KeyProblem):
        loc = (*loc, *cause.key.split("."))
    if isinstance(cause, ValueError):
        reason = str(cause)
    elif err["type"] in _REASONS:
        reason = _REASONS[err["type"]].format(**(err.get("ctx") or {}), input=err.get("input"))
    else:
        reason = err["msg"][:1].lower() + err["msg"][1:]
    return loc, mask_credentials(" ".join(reason.split()))


def _key(loc: Loc, names: Mapping[Loc, str]) -> str:
    """The key to show for ``loc``: the longest prefix named in ``names`` (an environment
    variable, a file key when the list was renumbered), then the rest."""
    for n in range(len(loc), 0, -1):
        if loc[:n] in names:
            rest = dotted(loc[n:])
            return names[loc[:n]] + ("" if not rest else rest if rest[0] == "[" else f".{rest}")
    return dotted(loc)


# -- sources ------------------------------------------------------------------------------
#
# pydantic-settings reads the values; load_settings lays them over each other and validates
# them with Settings.model_validate. Settings is deliberately not a BaseSettings with
# settings_customise_sources, for three reasons:
# - validation needs the environment it was given (auth_token_env names a variable, store
#   URLs use SMS_MONITOR_STATE_DIR) as context, and a BaseSettings is built by its __init__
#   (model_validate calls it too), which takes no context and reads os.environ by default;
# - accounts from TWILIO_* and from [[accounts]] are joined (primary first, top-level defaults
#   inherited by each), where BaseSettings would let one list replace the other;
# - an error must name the variable its value came from, which only our source knows.
# The sources are given Settings as their settings class: all they use of it is
# model_config and model_fields, which every pydantic model has.
_SOURCE_SCHEMA = cast("type[BaseSettings]", Settings)


class TomlFile(TomlConfigSettingsSource):
    """The ``--config`` file, read by pydantic-settings' TOML source; a file that cannot be
    read, is not UTF-8 or is not TOML is a :class:`ConfigError` on ``--config``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            with self.path.open("rb"):  # the base class passes over a missing file in silence
                pass
            super().__init__(_SOURCE_SCHEMA, toml_file=self.path)
        except OSError as exc:
            raise ConfigError("--config", f"cannot read {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            line = exc.object[:exc.start].count(b"\n") + 1
            raise ConfigError("--config", f"{path} is not UTF-8 text (byte "
                                          f"{exc.object[exc.start]:#04x} on line {line})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("--config", f"{path} is not valid TOML: {' '.join(str(exc).split())}"
                              ) from None


class EnvironmentSource(PydanticBaseSettingsSource):
    """The variables sms-monitor reads, from the mapping it is given (never os.environ by
    itself): :data:`ENVIRONMENT` (a variable set but empty is ignored, except those of
    :data:`EMPTY_DISABLES`), and :data:`PRIMARY`, which make the account ``primary``.
    After a call, :attr:`names` says which key came from which variable."""

    def __init__(self, env: Mapping[str, str]) -> None:
        super().__init__(_SOURCE_SCHEMA)
        self.env = env
        self.names: dict[Loc, str] = {}

    def _sets(self, var: str) -> bool:
        return bool(self.env.get(var)) or (var in EMPTY_DISABLES and var in self.env)

    def _primary(self) -> list[dict[str, str]] | None:
        if not (self.env.get("TWILIO_ACCOUNT_SID") or self.env.get("TWILIO_AUTH_TOKEN")):
            return None
        return [{"name": "primary",
                 **{key: self.env[var] for var, key in PRIMARY.items() if self.env.get(var)}}]

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """The value the environment gives a top-level key (a section's keys as one table),
        the key, and whether the value is a table or a list."""
        key = field.alias or field_name
        if key == "accounts":
            return self._primary(), key, True
        table: dict[str, str] = {}
        for var, path in ENVIRONMENT.items():
            if path[0] == key and self._sets(var):
                if len(path) == 1:
                    return self.env[var], key, False
                table[path[1]] = self.env[var]
        return table or None, key, True

    def __call__(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            value, key, _ = self.get_field_value(field, name)
            if value is not None:
                data[key] = value
        self.names = {path: var for var, path in ENVIRONMENT.items() if self._sets(var)}
        if "accounts" in data:
            self.names.update({("accounts", 0, key): var for var, key in PRIMARY.items()})
        return data

    def __repr__(self) -> str:
        return f"{type(self).__name__}({sorted(v for v in self.env if self._sets(v))})"


# -- loading ------------------------------------------------------------------------------

def load_file(path: str | Path) -> dict[str, Any]:
    """The ``--config`` file's tables (a ConfigError if it cannot be read)."""
    return TomlFile(path)()


def _overlay(lower: Mapping[str, Any], upper: Mapping[str, Any]) -> dict[str, Any]:
    """``upper`` laid over ``lower``, tables merged key by key. A value of ``lower`` that
    should be a table and is not keeps its place, so that its error is the one reported."""
    out = dict(lower)
    for key, value in upper.items():
        below = out.get(key)
        if not isinstance(value, Mapping) or below is None:
            out[key] = value
        elif isinstance(below, Mapping):
            out[key] = _overlay(below, value)
    return out


def _join_accounts(data: Mapping[str, Any], primary: list[Any], names: dict[Loc, str]
                   ) -> list[Any]:
    """The ``primary`` account, then the file's ``[[accounts]]``, each with the top-level
    account defaults it does not set; ``names`` learns the keys to show for them."""
    accounts = data.get("accounts", [])
    if not isinstance(accounts, list):
        raise ConfigError("accounts", "expected an array of tables ([[accounts]])")
    inherited = {k: data[k] for k in AccountDefaults.model_fields if k in data}
    joined: list[Any] = []
    for raw in primary:
        joined.append({**inherited, **raw})
        names.update({("accounts", 0, k): names.get((k,), k) for k in AccountDefaults.model_fields})
    for i, raw in enumerate(accounts):
        names[("accounts", len(joined))] = f"accounts[{i}]"
        joined.append({**inherited, **raw} if isinstance(raw, Mapping) else raw)
    return joined


def load_settings(
    env: Mapping[str, str],
    file_data: Mapping[str, Any] | None = None,
    *,
    listen_address: str | None = None,
    webhook_listen_address: str | None = None,
    shard: int | None = None,
    total_shards: int | None = None,
    require_accounts: bool = True,
) -> Settings:
    """Build validated Settings from the file's tables (:func:`load_file`), the environment
    ``env`` over them, and the ``run`` flags (``--web.listen-address``, ``--shard``...) over
    both."""
    environment = EnvironmentSource(env)
    from_env = environment()
    names = dict(environment.names)
    primary = from_env.pop("accounts", None) or []
    layers = [dict(file_data or {}), from_env]
    if listen_address:
        layers.append(InitSettingsSource(_SOURCE_SCHEMA, {"listen_address": listen_address})())
        names[("listen_address",)] = "--web.listen-address"
    if webhook_listen_address:
        layers.append(InitSettingsSource(_SOURCE_SCHEMA,
                                         {"webhook_listen_address": webhook_listen_address})())
        names[("webhook_listen_address",)] = "--web.webhook-address"
    for key, flag, number in (("shard", "--shard", shard),
                              ("total_shards", "--total-shards", total_shards)):
        if number is not None:
            layers.append(InitSettingsSource(_SOURCE_SCHEMA, {key: number})())
            names[(key,)] = flag
    data: dict[str, Any] = {}
    for layer in layers:
        data = _overlay(data, layer)
    data["accounts"] = _join_accounts(data, primary, names)
    try:
        settings = Settings.model_validate(data, context={"env": env})
    except ValidationError as exc:
        loc, reason = first_problem(exc)
        raise ConfigError(_key(loc, names), reason) from None
    if require_accounts and not settings.accounts:
        raise ConfigError("TWILIO_ACCOUNT_SID", "not set, and the config file lists no [[accounts]]")
    return settings
