"""URL passwords never shown, whatever characters they hold: in `check` (text and JSON), the
logs, the landing page, /metrics and configuration errors; and such a URL still works."""

from __future__ import annotations

import io
import json
import logging
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest
import structlog
from prometheus_client import generate_latest
from sqlalchemy.engine import make_url

from sms_monitor import logs
from sms_monitor.app import build
from sms_monitor.cli import main
from sms_monitor.config import ConfigError, load_settings
from sms_monitor.core.credentials import (
    mask_credentials,
    mask_url,
    unambiguous,
    url_passwords,
)
from sms_monitor.outputs.http import build_registry
from sms_monitor.outputs.pages import landing_page
from sms_monitor.simulator.server import SimulatorServer
from tests.conftest import FakeClock, SleepRecorder, demo_env
from tests.test_database import db_checks, practice

# A password holding every character that ends a part of a URL; each fragment between them
# is distinctive, so a fragment that leaks is found.
PASSWORD = "Pq7w@Zx9k/Wm4e?Kt2r#Rv5y:Lb8n"  # noqa: S105 - a test password, never shown
FRAGMENTS = ("Pq7w", "Zx9k", "Wm4e", "Kt2r", "Rv5y", "Lb8n")


def shown(text: str) -> list[str]:
    return [f for f in FRAGMENTS if f in text]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def closed_db() -> str:
    """PostgreSQL on a port nobody listens on, with the nasty password."""
    return f"postgresql+psycopg://app:{PASSWORD}@127.0.0.1:{_free_port()}/practice"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield None
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


# -- the one function ---------------------------------------------------------------------

@pytest.mark.parametrize(("url", "masked"), [
    ("postgresql://app:p@ss@db/x", "postgresql://***@db/x"),
    ("https://u:pa/ss@am.example/", "https://***@am.example/"),
    (f"postgresql+psycopg://app:{PASSWORD}@[::1]:5432/db?sslmode=require",
     "postgresql+psycopg://***@[::1]:5432/db?sslmode=require"),
    ("smtp://me@example.com:pa ss@smtp.example:587", "smtp://***@smtp.example:587"),
    ("smtp://me@example.com:pass@smtp.example:587", "smtp://***@smtp.example:587"),
    ("postgresql://app:pw@/db?host=/run/postgresql", "postgresql://***@/db?host=/run/postgresql"),
    ("https://token@api.example/", "https://***@api.example/"),
    # no credentials: unchanged
    ("sqlite:////srv/me@home/alerts.db", "sqlite:////srv/me@home/alerts.db"),
    ("https://am.example/api/@team", "https://am.example/api/@team"),
    ("https://am.example:9093/", "https://am.example:9093/"),
    # ambiguous: more is hidden rather than less
    ("postgresql://app:pw@db/x?options=a@b", "postgresql://***@b"),
])
def test_userinfo_ends_at_the_last_at_sign_before_the_host(url: str, masked: str) -> None:
    assert mask_url(url) == masked
    if " " in url:  # in a text a URL ends at white space: the log redaction knows its password
        return
    assert mask_credentials(f"failed: '{url}' (then {url}), mail me@example.com") == \
        f"failed: '{masked}' (then {mask_credentials(url)}), mail me@example.com"


def test_passwords_are_registered_in_every_form() -> None:
    assert url_passwords(f"postgresql://app:{PASSWORD}@db/x") == [PASSWORD, "Pq7w"]
    assert url_passwords("https://u:pa%2Fss@am.example/") == ["pa%2Fss", "pa/ss"]
    assert url_passwords("https://u:p@a/ss@am.example/") == ["p@a/ss", "p"]  # both readings
    assert url_passwords("https://token@api.example/") == []
    assert url_passwords("sqlite:///x.db") == [] and url_passwords(None) == []


def test_a_url_is_made_unambiguous_only_where_parsers_would_misread_it() -> None:
    fixed = unambiguous(f"postgresql+psycopg://app:{PASSWORD}@127.0.0.1:5432/db")
    url = make_url(fixed)
    assert (url.username, url.password, url.host, url.port, url.database) == (
        "app", PASSWORD, "127.0.0.1", 5432, "db")
    am = urlsplit(unambiguous("https://u:pa/ss@am.example/"))
    assert (am.hostname, am.password) == ("am.example", "pa%2Fss")
    assert unambiguous("https://u:p@a/ss@h/") == "https://u:p%40a%2Fss@h/"
    for url_as_meant in ("https://h:8443/@team", "sqlite:////srv/me@home/a.db",
                         "postgresql://app:p%40ss@db/x", "postgresql://db:5432/x"):
        assert unambiguous(url_as_meant) == url_as_meant


# -- every output -------------------------------------------------------------------------

def test_check_text_and_json_never_show_the_password(
        live_simulator: SimulatorServer, capsys: pytest.CaptureFixture[str]) -> None:
    env = demo_env(live_simulator.url) | {"SMS_MONITOR_DATABASE_URL": closed_db()}
    assert main(["check"], env=env) == 3
    text = capsys.readouterr()
    assert "database" in text.out and "refused" in text.out.lower()
    assert shown(text.out + text.err) == []
    assert main(["check", "--json"], env=env) == 3
    out = capsys.readouterr()
    doc = json.loads(out.out)
    assert doc["overall"] == "unknown"
    assert shown(out.out + out.err) == []


def test_logs_mask_any_url_and_redact_the_configured_passwords() -> None:
    settings = load_settings(demo_env("http://127.0.0.1:9") | {
        "SMS_MONITOR_DATABASE_URL": closed_db()},
        {"alerts": {"alertmanager_url": "https://am:Hh3j/Uu6i@am.example/"}})
    secrets = settings.secrets()
    assert PASSWORD in secrets and "Hh3j/Uu6i" in secrets
    stream = io.StringIO()
    logs.configure("debug", secrets=secrets, json_output=True, stream=stream)
    log = structlog.get_logger("t")
    log.warning("url", url=f"postgresql://app:{PASSWORD}@db/x",
                reason="https://u:Ff1g/Gg2h?Jj3k@elsewhere.example/ answered 500")
    log.warning("bare", detail=f"login with {PASSWORD} and Hh3j/Uu6i failed")
    logging.getLogger("someone.else").error("connect %s", f"smtp://a:{PASSWORD}@mail:25")
    out = stream.getvalue()
    assert shown(out) == [] and "Hh3j" not in out and "Ff1g" not in out and "Jj3k" not in out
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[0]["url"] == "postgresql://***@db/x"
    assert lines[0]["reason"] == "https://***@elsewhere.example/ answered 500"
    assert lines[1]["detail"] == "login with [REDACTED] and [REDACTED] failed"
    assert "smtp://***@mail:25" in lines[2]["event"]


def test_landing_page_and_metrics_never_show_the_password(
        live_simulator: SimulatorServer, clock: FakeClock) -> None:
    settings = load_settings(demo_env(live_simulator.url) | {
        "SMS_MONITOR_DATABASE_URL": closed_db(),
        "SMS_MONITOR_ALERT_STORE_URL": closed_db()}, {"number_type": "toll_free"})
    monitor = build(settings, sleep=SleepRecorder())
    try:
        snap = monitor.run_cycle()
        assert db_checks(snap)["connection"].detail  # the failure is shown ...
        page = landing_page(monitor.holder, [area() for area in monitor.areas])
        metrics = generate_latest(build_registry(monitor.holder, monitor.areas)).decode()
        assert "refused" in page.lower()
        assert shown(page) == [] and shown(metrics) == []  # ... never the password
    finally:
        monitor.close()


def test_a_password_with_every_reserved_character_connects(
        pg_url: str, live_simulator: SimulatorServer) -> None:
    """PostgreSQL here trusts local connections, so any password is accepted: what matters
    is that the host, port and database are the ones meant, not parts of the password."""
    practice(pg_url, datetime.now(UTC))
    url = make_url(pg_url)
    nasty = f"postgresql+psycopg://postgres:{PASSWORD}@{url.host}:{url.port}/{url.database}"
    settings = load_settings(demo_env(live_simulator.url) | {"SMS_MONITOR_DATABASE_URL": nasty},
                             {"number_type": "toll_free"})
    assert settings.database is not None
    assert make_url(settings.database.url).password == PASSWORD
    monitor = build(settings, sleep=SleepRecorder())
    try:
        snap = monitor.run_cycle()
        assert snap.database is not None and snap.database.facts.up
    finally:
        monitor.close()


@pytest.mark.parametrize(("env", "data", "message"), [
    ({}, {"alerts": {"alertmanager_url": "htp://am:Pq7w/Zx9k@am.example/"}},
     "alerts.alertmanager_url: expected an http:// or https:// URL, got 'htp://***@am.example/'"),
    ({"SMS_MONITOR_TWILIO_API_URL": f"htp://ops:{PASSWORD}@proxy"}, {},
     "SMS_MONITOR_TWILIO_API_URL: expected an http:// or https:// URL, got 'htp://***@proxy'"),
])
def test_configuration_errors_never_show_the_password(env: dict[str, str], data: dict,
                                                      message: str) -> None:
    base = demo_env("http://127.0.0.1:9") | {"SMS_MONITOR_DATABASE_URL": "sqlite://"}
    with pytest.raises(ConfigError) as err:
        load_settings(base | env, data)
    assert str(err.value) == f"configuration error: {message}"


def test_an_unusable_store_url_is_refused_without_its_password(
        capsys: pytest.CaptureFixture[str]) -> None:
    env = demo_env("http://127.0.0.1:9") | {
        "SMS_MONITOR_DATABASE_URL": f"nosuchdialect://app:{PASSWORD}@db:1/x"}
    assert main(["check"], env=env) == 2
    err = capsys.readouterr().err
    assert "SMS_MONITOR_DATABASE_URL" in err and shown(err) == []


def test_an_alertmanager_password_with_a_slash_reaches_alertmanager() -> None:
    settings = load_settings(demo_env("http://127.0.0.1:9") | {
        "SMS_MONITOR_DATABASE_URL": "sqlite://"},
        {"alerts": {"alertmanager_url": "https://am:Pq7w/Zx9k@am.example:9093/"}})
    assert settings.alerts is not None and settings.alerts.alertmanager_url is not None
    parts = urlsplit(settings.alerts.alertmanager_url)
    assert (parts.hostname, parts.port, parts.username, parts.password) == (
        "am.example", 9093, "am", "Pq7w%2FZx9k")
    assert "Pq7w/Zx9k" in settings.secrets() and "Pq7w%2FZx9k" in settings.secrets()
