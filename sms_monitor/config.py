"""Settings from the environment and an optional TOML file, validated before anything starts.

Environment variables override the file. Every problem is reported as one
:class:`ConfigError` naming the offending key; the CLI turns it into exit status 2.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sms_monitor.alerts.settings import AlertsConfig
from sms_monitor.core.content import DEFAULT_SPAM_WORDS
from sms_monitor.core.durations import parse_duration
from sms_monitor.core.keywords import DEFAULT_HELP, DEFAULT_OPTIN, DEFAULT_OPTOUT
from sms_monitor.core.thresholds import DEFAULT_THRESHOLDS, Threshold
from sms_monitor.inputs.schema_names import SchemaNames

DEFAULT_API_URL = "https://api.twilio.com"
DEFAULT_LISTEN = "0.0.0.0:9839"
SID_PATTERN = re.compile(r"^AC[0-9a-fA-F]{32}$")
E164_PATTERN = re.compile(r"^\+[1-9]\d{1,14}$")


class ConfigError(Exception):
    """A bad configuration value; ``str()`` is the one line shown to the operator."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"configuration error: {key}: {reason}")
        self.key = key


# Messages per second a sending number can take, by number type (the runbook's table).
NUMBER_TYPE_LIMITS = {"long_code": 1.0, "toll_free": 3.0, "short_code": 100.0}
NUMBER_TYPES = (*NUMBER_TYPE_LIMITS, "10dlc")


@dataclass(frozen=True)
class AccountConfig:
    name: str
    account_sid: str
    auth_token: str = field(repr=False)
    phone_number: str | None
    api_url: str = DEFAULT_API_URL
    number_type: str = "long_code"
    throughput_limit: float = 1.0  # messages per second
    monthly_budget: float | None = None  # in the account's currency; None: no budget check


@dataclass(frozen=True)
class DatabaseConfig:
    """The application database source (``SMS_MONITOR_DATABASE_URL`` and ``[database]``)."""

    url: str = field(repr=False)
    names: SchemaNames = field(default_factory=SchemaNames)
    statement_timeout: float = 5.0
    connect_timeout: float = 5.0
    optout_grace: float = 300.0
    optout_keywords: tuple[str, ...] = DEFAULT_OPTOUT
    default_region: str = "US"
    reconcile_lag: float = 120.0
    fallback_share: float = 0.9
    content_interval: float = 900.0  # seconds between reads of 7 days of message text
    practice_name: str | None = None  # every template should name the practice
    spam_words: tuple[str, ...] = DEFAULT_SPAM_WORDS


@dataclass(frozen=True)
class InboundConfig:
    """The incoming-message webhook (``[inbound]``): keywords and the audit table's store."""

    audit_url: str = field(repr=False)
    prefix: str = "sms_monitor_"
    optin_keywords: tuple[str, ...] = DEFAULT_OPTIN
    help_keywords: tuple[str, ...] = DEFAULT_HELP


@dataclass(frozen=True)
class CanaryConfig:
    """The synthetic probe (``[canary]``): a test message every ``interval``, followed."""

    account: str  # the configured account it sends from
    to: str = field(repr=False)  # the test handset
    from_number: str | None = None  # default: the account's phone_number
    interval: float = 300.0
    timeout: float = 180.0  # a probe not delivered by then has failed
    body: str = "sms-monitor canary: no reply needed"
    # Twilio's test credentials: the API path is exercised, nothing is sent or followed
    test_account_sid: str | None = None
    test_auth_token: str | None = field(default=None, repr=False)

    @property
    def api_only(self) -> bool:
        return self.test_account_sid is not None


@dataclass(frozen=True)
class Settings:
    accounts: tuple[AccountConfig, ...] = ()
    listen_host: str = "0.0.0.0"
    listen_port: int = 9839
    poll_interval: float = 60.0
    window_seconds: float = 3600.0
    settle_seconds: float = 900.0
    min_samples: int = 10
    request_timeout: float = 10.0
    max_retries: int = 3
    max_pages: int = 200
    page_size: int = 1000
    thresholds: Mapping[str, Threshold] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    statuspage_url: str | None = None  # None: disabled
    statuspage_interval: float = 120.0
    public_url: str | None = None  # how Twilio reaches us, for callback signatures
    database_url: str | None = field(default=None, repr=False)
    smtp_url: str | None = field(default=None, repr=False)
    alert_from: str | None = None
    database: DatabaseConfig | None = None
    alerts: AlertsConfig | None = None  # the notification_rules engine (needs the database)
    home_country_code: str = "1"  # calling code that is not "international"
    usage_interval: float = 600.0  # seconds between Usage Records reads (spend)
    inbound: InboundConfig | None = None
    canary: CanaryConfig | None = None

    def secrets(self) -> list[str]:
        """Values that must never reach a log line or any output."""
        out = [a.auth_token for a in self.accounts if a.auth_token]
        if self.canary is not None and self.canary.test_auth_token:
            out.append(self.canary.test_auth_token)
        urls = [self.database_url, self.smtp_url,
                self.inbound.audit_url if self.inbound else None,
                self.alerts.store_url if self.alerts else None,
                self.alerts.alertmanager_url if self.alerts else None]
        for url in urls:
            pw = _url_password(url)
            if pw:
                out.append(pw)
        return out


def _url_password(url: str | None) -> str | None:
    if not url:
        return None
    m = re.match(r"^[a-zA-Z][\w+.-]*://[^:/@]*:([^@]*)@", url)
    return m.group(1) if m else None


def parse_listen_address(key: str, value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(key, f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def _duration(key: str, value: object) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ConfigError(key, str(exc)) from None


def _positive_int(key: str, value: object, low: int = 1, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConfigError(key, f"expected a whole number, got {value!r}")
    try:
        n = int(value)
    except ValueError:
        raise ConfigError(key, f"expected a whole number, got {value!r}") from None
    if n < low or (high is not None and n > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ConfigError(key, f"must be {bound}, got {n}")
    return n


def _calling_code(value: object) -> str:
    text = str(value).lstrip("+") if isinstance(value, str | int) else ""
    if not re.match(r"^[1-9]\d{0,2}$", text):
        raise ConfigError("home_country_code", f"expected a calling code like 1 or 44, got {value!r}")
    return text


def _url(key: str, value: object) -> str:
    if not isinstance(value, str) or not re.match(r"^https?://[^\s/]+", value):
        shown = re.sub(r"//[^/@\s]*@", "//***@", value) if isinstance(value, str) else value
        raise ConfigError(key, f"expected an http:// or https:// URL, got {shown!r}")
    return value.rstrip("/")


def _throughput(key: str, raw: Mapping[str, Any], defaults: Mapping[str, Any]
                ) -> tuple[str, float]:
    kind = raw.get("number_type", defaults.get("number_type", "long_code"))
    if kind not in NUMBER_TYPES:
        raise ConfigError(f"{key}number_type", f"expected one of {', '.join(NUMBER_TYPES)}, got {kind!r}")
    limit = raw.get("throughput_limit", defaults.get("throughput_limit"))
    if limit is None:
        if kind == "10dlc":
            raise ConfigError(f"{key}throughput_limit",
                              "a 10DLC number's rate depends on its brand registration: set it")
        return kind, NUMBER_TYPE_LIMITS[kind]
    if isinstance(limit, bool) or not isinstance(limit, int | float) or limit <= 0:
        raise ConfigError(f"{key}throughput_limit", f"expected messages per second, got {limit!r}")
    return kind, float(limit)


def _account(key: str, raw: Mapping[str, Any], env: Mapping[str, str], api_url: str,
             name: str | None = None, defaults: Mapping[str, Any] | None = None) -> AccountConfig:
    name = name or raw.get("name")
    if not isinstance(name, str) or not re.match(r"^[A-Za-z0-9_.-]{1,64}$", name):
        raise ConfigError(f"{key}.name", f"expected a short name of letters, digits, '-', '_' or '.', "
                                         f"got {name!r}")
    sid = raw.get("account_sid")
    if not isinstance(sid, str) or not SID_PATTERN.match(sid):
        raise ConfigError(f"{key}.account_sid", "expected 'AC' followed by 32 hex digits")
    token = raw.get("auth_token")
    token_env = raw.get("auth_token_env")
    if token is None and isinstance(token_env, str):
        token = env.get(token_env)
        if not token:
            raise ConfigError(f"{key}.auth_token_env", f"environment variable {token_env} is not set")
    if not isinstance(token, str) or not token:
        raise ConfigError(f"{key}.auth_token", "missing (set auth_token or auth_token_env)")
    phone = raw.get("phone_number")
    if phone is not None and (not isinstance(phone, str) or not E164_PATTERN.match(phone)):
        raise ConfigError(f"{key}.phone_number", "expected an E.164 number such as +15005550006")
    url = _url(f"{key}.api_url", raw["api_url"]) if "api_url" in raw else api_url
    prefix = "" if name == "primary" and key == "TWILIO" else f"{key}."
    kind, limit = _throughput(prefix, raw, defaults or {})
    budget = raw.get("monthly_budget", (defaults or {}).get("monthly_budget"))
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int | float)
                               or budget <= 0):
        raise ConfigError(f"{prefix}monthly_budget", f"expected a positive amount, got {budget!r}")
    return AccountConfig(name=name, account_sid=sid, auth_token=token, phone_number=phone,
                         api_url=url, number_type=kind, throughput_limit=limit,
                         monthly_budget=float(budget) if budget is not None else None)


def _thresholds(raw: object) -> dict[str, Threshold]:
    out = dict(DEFAULT_THRESHOLDS)
    if raw is None:
        return out
    if not isinstance(raw, dict):
        raise ConfigError("thresholds", "expected a table")
    for check, bounds in raw.items():
        key = f"thresholds.{check}"
        if check not in out:
            raise ConfigError(key, f"unknown check; known: {', '.join(sorted(out))}")
        if not isinstance(bounds, dict) or set(bounds) - {"green", "red"}:
            raise ConfigError(key, "expected a table with 'green' and/or 'red'")
        base = out[check]
        values = {}
        for k in ("green", "red"):
            v = bounds.get(k, base.good if k == "green" else base.bad)
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise ConfigError(f"{key}.{k}", f"expected a number, got {v!r}")
            values[k] = float(v)
        try:
            out[check] = Threshold(values["green"], values["red"], base.higher_is_better, base.unit)
        except ValueError as exc:
            raise ConfigError(key, str(exc)) from None
    return out


def load_file(path: str | Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError("--config", f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("--config", f"{path} is not valid TOML: {exc}") from None


_FILE_KEYS = {
    "listen_address", "poll_interval", "window", "settle", "min_samples", "request_timeout",
    "max_retries", "max_pages", "page_size", "thresholds", "accounts", "api_url",
    "statuspage_url", "database_url", "smtp_url", "alert_from", "database", "number_type",
    "throughput_limit", "monthly_budget", "home_country_code", "usage_interval", "alerts",
    "statuspage_interval", "public_url", "inbound", "canary",
}
STATUSPAGE_DEFAULT = "https://status.twilio.com/api/v2/summary.json"


def _statuspage_url(env: Mapping[str, str], data: Mapping[str, Any]) -> str | None:
    """Twilio's status page by default; an empty value disables it."""
    if "SMS_MONITOR_STATUSPAGE_URL" in env:
        key, value = "SMS_MONITOR_STATUSPAGE_URL", env["SMS_MONITOR_STATUSPAGE_URL"]
    elif "statuspage_url" in data:
        key, value = "statuspage_url", data["statuspage_url"]
    else:
        return STATUSPAGE_DEFAULT
    return _url(key, value) if value else None
_ALERT_KEYS = {"enabled", "store_url", "prefix", "schema", "hysteresis", "level2_after",
               "level3_after", "level1", "level2", "level3", "alertmanager_url", "max_window"}


_INBOUND_KEYS = {"audit_url", "prefix", "optin_keywords", "help_keywords"}
_CANARY_KEYS = {"enabled", "account", "to", "from", "interval", "timeout", "body",
                "test_account_sid", "test_auth_token_env"}


TEST_FROM = "+15005550006"  # the magic number Twilio's test credentials send from


def _store_url(key: str, value: object) -> str:
    """A URL of one of sms-monitor's own stores (SQLite or PostgreSQL, via SQLAlchemy)."""
    if not isinstance(value, str) or "://" not in value:
        raise ConfigError(key, "expected an SQLAlchemy URL")
    _check_sqlalchemy_url(key, value)
    return value


def _table_prefix(key: str, value: object) -> str:
    if not isinstance(value, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,30}$", value):
        raise ConfigError(key, f"expected a table name prefix, got {value!r}")
    return value


def _words(key: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(
            isinstance(w, str) and w.strip() and len(w) <= 40 for w in value):
        raise ConfigError(key, "expected a non-empty list of words")
    return tuple(w.strip().upper() for w in value)


def _inbound(raw: object, alerts: AlertsConfig | None, env: Mapping[str, str],
             optout: tuple[str, ...] = DEFAULT_OPTOUT) -> InboundConfig:
    raw = _table("inbound", raw, _INBOUND_KEYS)
    state_dir = env.get("SMS_MONITOR_STATE_DIR") or "sms-monitor-state"
    default = alerts.store_url if alerts is not None else \
        f"sqlite:///{Path(state_dir).absolute() / 'audit.db'}"
    url = _store_url("inbound.audit_url",
                     env.get("SMS_MONITOR_AUDIT_URL") or raw.get("audit_url", default))
    prefix = _table_prefix("inbound.prefix", raw.get(
        "prefix", alerts.prefix if alerts is not None else "sms_monitor_"))
    config = InboundConfig(
        audit_url=url, prefix=prefix,
        optin_keywords=_words("inbound.optin_keywords", raw["optin_keywords"])
        if "optin_keywords" in raw else DEFAULT_OPTIN,
        help_keywords=_words("inbound.help_keywords", raw["help_keywords"])
        if "help_keywords" in raw else DEFAULT_HELP)
    lists = {"database.optout_keywords": set(optout), "inbound.optin_keywords":
             set(config.optin_keywords), "inbound.help_keywords": set(config.help_keywords)}
    names = list(lists)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            both = lists[a] & lists[b]
            if both:
                raise ConfigError(f"{b}", f"{sorted(both)[0]} is also in {a}: a keyword has "
                                          "one meaning")
    return config


def _canary(raw: object, accounts: list[AccountConfig], env: Mapping[str, str]
            ) -> CanaryConfig | None:
    raw = dict(_table("canary", raw, _CANARY_KEYS))
    if env.get("SMS_MONITOR_CANARY_TO"):
        raw["to"] = env["SMS_MONITOR_CANARY_TO"]
    if env.get("SMS_MONITOR_CANARY_INTERVAL"):
        raw["interval"] = env["SMS_MONITOR_CANARY_INTERVAL"]
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError("canary.enabled", f"expected true or false, got {enabled!r}")
    if not raw or not enabled or not accounts:
        return None
    to = raw.get("to")
    if not isinstance(to, str) or not E164_PATTERN.match(to):
        raise ConfigError("canary.to", "expected the test handset's E.164 number")
    name = raw.get("account", accounts[0].name)
    account = next((a for a in accounts if a.name == name), None)
    if account is None:
        raise ConfigError("canary.account", f"no configured account is named {name!r}")
    test_sid = raw.get("test_account_sid")
    # Twilio's test credentials send only from its magic numbers (+15005550006 succeeds)
    sender = raw.get("from", TEST_FROM if test_sid is not None else account.phone_number)
    if sender is not None and (not isinstance(sender, str) or not E164_PATTERN.match(sender)):
        raise ConfigError("canary.from", "expected an E.164 number")
    if sender is None:
        raise ConfigError("canary.from", "the account has no phone_number: set canary.from")
    if test_sid is not None and not sender.startswith("+1500555"):
        raise ConfigError("canary.from", "with test credentials Twilio sends only from its "
                                         f"magic numbers such as {TEST_FROM}")
    interval = _duration("canary.interval", raw.get("interval", "5m"))
    timeout = _duration("canary.timeout", raw.get("timeout", "3m"))
    if timeout > interval * 10:
        raise ConfigError("canary.timeout", "at most ten intervals")
    if timeout < 30:
        raise ConfigError("canary.timeout", "at least 30s (a probe is read by SID after 10s)")
    body = raw.get("body", CanaryConfig.body)
    if not isinstance(body, str) or not body.strip() or len(body) > 160:
        raise ConfigError("canary.body", "expected one SMS segment of text")
    test_token: str | None = None
    if test_sid is not None:
        if not isinstance(test_sid, str) or not SID_PATTERN.match(test_sid):
            raise ConfigError("canary.test_account_sid", "expected 'AC' followed by 32 hex digits")
        token_env = raw.get("test_auth_token_env", "TWILIO_TEST_AUTH_TOKEN")
        test_token = env.get(str(token_env)) or None
        if test_token is None:
            raise ConfigError("canary.test_auth_token_env",
                              f"environment variable {token_env} is not set")
    return CanaryConfig(account=account.name, to=to, from_number=sender, interval=interval,
                        timeout=timeout, body=body, test_account_sid=test_sid,
                        test_auth_token=test_token)


def _check_sqlalchemy_url(key: str, url: str) -> None:
    """A URL SQLAlchemy can use (known dialect, numeric port), or a ConfigError naming ``key``."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
        parsed.get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(key, f"not a usable SQLAlchemy URL ({re.sub(r'//[^/@]*@', '//', reason)})"
                          ) from None


def _table(name: str, raw: object, known: set[str]) -> dict[str, Any]:
    """A ``[name]`` table of the file (empty when absent), with no key outside ``known``."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(name, f"expected a table ([{name}])")
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"{name}.{sorted(unknown)[0]}",
                          f"unknown key; known: {', '.join(sorted(known))}")
    return raw


def _alerts(raw: object, database: DatabaseConfig | None, window: float,
            env: Mapping[str, str]) -> AlertsConfig | None:
    raw = _table("alerts", raw, _ALERT_KEYS)
    if not raw.get("enabled", True) or database is None:
        return None
    state_dir = env.get("SMS_MONITOR_STATE_DIR") or "sms-monitor-state"
    store = _store_url("alerts.store_url", env.get("SMS_MONITOR_ALERT_STORE_URL") or raw.get(
        "store_url", f"sqlite:///{Path(state_dir).absolute() / 'alerts.db'}"))
    prefix = _table_prefix("alerts.prefix", raw.get("prefix", "sms_monitor_"))
    schema = raw.get("schema")
    if schema is not None and (not isinstance(schema, str)
                               or not re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$", schema)):
        raise ConfigError("alerts.schema", f"expected a schema name, got {schema!r}")
    hysteresis = raw.get("hysteresis", 0.02)
    if isinstance(hysteresis, bool) or not isinstance(hysteresis, int | float) \
            or not 0 <= hysteresis < 1:
        raise ConfigError("alerts.hysteresis", f"expected a ratio in [0, 1), got {hysteresis!r}")
    l2 = _duration("alerts.level2_after", raw.get("level2_after", "30m"))
    l3 = _duration("alerts.level3_after", raw.get("level3_after", "2h"))
    if l3 <= l2:
        raise ConfigError("alerts.level3_after", "must be later than level2_after")
    levels = []
    for key in ("level1", "level2", "level3"):
        value = raw.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"alerts.{key}", "expected a list of e-mail addresses or URLs")
        levels.append(tuple(value))
    am = raw.get("alertmanager_url")
    max_window = _duration("alerts.max_window", raw["max_window"]) if "max_window" in raw else window
    return AlertsConfig(
        store_url=store, prefix=prefix, schema=schema, hysteresis=float(hysteresis),
        levels=(0.0, l2, l3), level_recipients=tuple(levels),
        alertmanager_url=_url("alerts.alertmanager_url", am) if am else None,
        max_window=max(max_window, window))
_DATABASE_KEYS = {
    "url", "statement_timeout", "connect_timeout", "optout_grace", "optout_keywords",
    "default_region", "reconcile_lag", "fallback_share", "tables", "columns",
    "content_interval", "practice_name", "spam_words",
}


def _database(url: str | None, raw: object) -> DatabaseConfig | None:
    raw = _table("database", raw, _DATABASE_KEYS)
    url = url or raw.get("url")
    if not url:
        return None
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError("SMS_MONITOR_DATABASE_URL",
                          "expected an SQLAlchemy URL such as postgresql+psycopg://host/db")
    _check_sqlalchemy_url("SMS_MONITOR_DATABASE_URL", url)
    for key in ("tables", "columns"):
        value = raw.get(key, {})
        if not isinstance(value, dict) or (key == "columns" and not all(
                isinstance(v, dict) for v in value.values())):
            raise ConfigError(f"database.{key}", "expected a table of names")
        flat = value.values() if key == "tables" else [
            x for t, v in value.items() for c, x in v.items()
            if not (t == "clients" and c == "cell_phone" and x == "")]  # "": no such column
        for name in flat:
            if not isinstance(name, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_.]{0,126}$", name):
                raise ConfigError(f"database.{key}", f"not a usable SQL name: {name!r}")
    try:
        names = SchemaNames.from_config(raw.get("tables"), raw.get("columns"))
    except KeyError as exc:
        raise ConfigError(f"database.{exc.args[0]}", "unknown table or column of the runbook schema"
                          ) from None
    keywords = _words("database.optout_keywords", raw["optout_keywords"]) \
        if "optout_keywords" in raw else DEFAULT_OPTOUT
    region = raw.get("default_region", "US")
    if not isinstance(region, str) or not re.match(r"^[A-Z]{2}$", region):
        raise ConfigError("database.default_region", f"expected a region code like 'US', got {region!r}")
    share = raw.get("fallback_share", 0.9)
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share <= 1:
        raise ConfigError("database.fallback_share", f"expected a ratio in (0, 1], got {share!r}")

    def dur(key: str, default: float) -> float:
        return _duration(f"database.{key}", raw[key]) if key in raw else default

    practice = raw.get("practice_name")
    if practice is not None and (not isinstance(practice, str) or not practice.strip()):
        raise ConfigError("database.practice_name", "expected the practice's name as text")
    spam = raw.get("spam_words", list(DEFAULT_SPAM_WORDS))
    if not isinstance(spam, list) or not all(isinstance(w, str) and w.strip() for w in spam):
        raise ConfigError("database.spam_words", "expected a list of words or phrases")

    return DatabaseConfig(
        url=url, names=names,
        statement_timeout=dur("statement_timeout", 5.0),
        connect_timeout=dur("connect_timeout", 5.0),
        optout_grace=dur("optout_grace", 300.0),
        optout_keywords=keywords,
        default_region=region,
        reconcile_lag=dur("reconcile_lag", 120.0),
        fallback_share=float(share),
        content_interval=dur("content_interval", 900.0),
        practice_name=practice.strip() if practice else None,
        spam_words=tuple(w.strip() for w in spam),
    )


def load_settings(
    env: Mapping[str, str],
    file_data: Mapping[str, Any] | None = None,
    *,
    listen_address: str | None = None,
    require_accounts: bool = True,
) -> Settings:
    """Build validated Settings; ``listen_address`` is the command-line flag (it wins)."""
    data = dict(file_data or {})
    unknown = set(data) - _FILE_KEYS
    if unknown:
        raise ConfigError(sorted(unknown)[0], f"unknown key; known: {', '.join(sorted(_FILE_KEYS))}")

    def pick(env_key: str, file_key: str) -> tuple[str, Any]:
        if env.get(env_key):
            return env_key, env[env_key]
        return file_key, data.get(file_key)

    key, api = pick("SMS_MONITOR_TWILIO_API_URL", "api_url")
    api_url = _url(key, api) if api else DEFAULT_API_URL

    accounts: list[AccountConfig] = []
    if env.get("TWILIO_ACCOUNT_SID") or env.get("TWILIO_AUTH_TOKEN"):
        primary = {"account_sid": env.get("TWILIO_ACCOUNT_SID"),
                   "auth_token": env.get("TWILIO_AUTH_TOKEN") or None,
                   "phone_number": env.get("TWILIO_PHONE_NUMBER") or None}
        try:
            accounts.append(_account("TWILIO", primary, env, api_url, name="primary",
                                     defaults=data))
        except ConfigError as exc:
            if exc.key in ("number_type", "throughput_limit", "monthly_budget"):
                raise
            field_name = exc.key.split(".")[-1].upper()
            raise ConfigError(f"TWILIO_{field_name}", str(exc).split(": ", 2)[-1]) from None
    raw_accounts = data.get("accounts", [])
    if not isinstance(raw_accounts, list):
        raise ConfigError("accounts", "expected an array of tables ([[accounts]])")
    for i, raw in enumerate(raw_accounts):
        if not isinstance(raw, dict):
            raise ConfigError(f"accounts[{i}]", "expected a table")
        accounts.append(_account(f"accounts[{i}]", raw, env, api_url, defaults=data))
    names = [a.name for a in accounts]
    for n in names:
        if names.count(n) > 1:
            raise ConfigError("accounts", f"account name {n!r} is used twice")
    if require_accounts and not accounts:
        raise ConfigError("TWILIO_ACCOUNT_SID",
                          "not set, and the config file lists no [[accounts]]")

    if listen_address:
        host, port = parse_listen_address("--web.listen-address", listen_address)
    else:
        key, value = pick("SMS_MONITOR_LISTEN_ADDRESS", "listen_address")
        host, port = parse_listen_address(key, str(value or DEFAULT_LISTEN))

    key, value = pick("SMS_MONITOR_POLL_INTERVAL", "poll_interval")
    poll = _duration(key, value) if value is not None else 60.0
    window = _duration("window", data["window"]) if "window" in data else 3600.0
    settle = _duration("settle", data["settle"]) if "settle" in data else 900.0
    timeout = _duration("request_timeout", data["request_timeout"]) if "request_timeout" in data \
        else 10.0

    def opt_url(env_key: str, file_key: str) -> str | None:
        k, v = pick(env_key, file_key)
        return _url(k, v) if v else None

    db_key, db = pick("SMS_MONITOR_DATABASE_URL", "database_url")
    if db is not None and (not isinstance(db, str) or "://" not in db):
        raise ConfigError(db_key, "expected an SQLAlchemy URL such as postgresql+psycopg://host/db")
    smtp_key, smtp = pick("SMS_MONITOR_SMTP_URL", "smtp_url")
    if smtp is not None and (not isinstance(smtp, str) or not re.match(r"^smtps?://", smtp)):
        raise ConfigError(smtp_key, "expected smtp://[user:pass@]host:port")
    _, alert_from = pick("SMS_MONITOR_ALERT_FROM", "alert_from")

    return Settings(
        accounts=tuple(accounts),
        listen_host=host,
        listen_port=port,
        poll_interval=poll,
        window_seconds=window,
        settle_seconds=settle,
        min_samples=_positive_int("min_samples", data.get("min_samples", 10)),
        request_timeout=timeout,
        max_retries=_positive_int("max_retries", data.get("max_retries", 3), low=0, high=10),
        max_pages=_positive_int("max_pages", data.get("max_pages", 200)),
        page_size=_positive_int("page_size", data.get("page_size", 1000), high=1000),
        thresholds=_thresholds(data.get("thresholds")),
        statuspage_url=_statuspage_url(env, data),
        public_url=opt_url("SMS_MONITOR_PUBLIC_URL", "public_url"),
        statuspage_interval=_duration("statuspage_interval", data["statuspage_interval"])
        if "statuspage_interval" in data else 120.0,
        database_url=db or None,
        database=(database := _database(db or None, data.get("database"))),
        alerts=(alerts := _alerts(data.get("alerts"), database, window, env)),
        inbound=_inbound(data.get("inbound"), alerts, env,
                         database.optout_keywords if database else DEFAULT_OPTOUT),
        canary=_canary(data.get("canary"), accounts, env),
        home_country_code=_calling_code(data.get("home_country_code", "1")),
        usage_interval=_duration("usage_interval", data["usage_interval"])
        if "usage_interval" in data else 600.0,
        smtp_url=smtp or None,
        alert_from=str(alert_from) if alert_from else None,
    )
