"""Configuration: environment, TOML file, and one-line errors with exit status 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from sms_monitor.cli import main
from sms_monitor.config import ConfigError, load_settings

SID = "AC" + "0123456789abcdef" * 2
SID2 = "AC" + "fedcba9876543210" * 2
ENV = {"TWILIO_ACCOUNT_SID": SID, "TWILIO_AUTH_TOKEN": "tok-secret-123",
       "TWILIO_PHONE_NUMBER": "+15005550006"}


def test_environment_gives_the_primary_account_and_defaults() -> None:
    s = load_settings(ENV)
    assert [a.name for a in s.accounts] == ["primary"]
    assert s.accounts[0].api_url == "https://api.twilio.com"
    assert (s.listen_host, s.listen_port) == ("0.0.0.0", 9839)
    assert s.poll_interval == 60 and s.window_seconds == 3600 and s.min_samples == 10
    assert "tok-secret-123" not in repr(s)


def test_file_adds_accounts_thresholds_and_environment_wins() -> None:
    data = {
        "poll_interval": "2m", "window": "30 minutes", "listen_address": "127.0.0.1:9000",
        "thresholds": {"delivery_rate": {"green": 0.98, "red": 0.93}},
        "accounts": [{"name": "clinic-west", "account_sid": SID2, "auth_token_env": "WEST_TOKEN",
                      "phone_number": "+15005550007"}],
    }
    env = {**ENV, "WEST_TOKEN": "west-secret", "SMS_MONITOR_POLL_INTERVAL": "30"}
    s = load_settings(env, data)
    assert [a.name for a in s.accounts] == ["primary", "clinic-west"]
    assert s.accounts[1].auth_token.get_secret_value() == "west-secret"
    assert s.poll_interval == 30  # environment overrides the file
    assert s.window_seconds == 1800
    assert s.listen_port == 9000
    assert s.thresholds["delivery_rate"].good == 0.98
    assert s.thresholds["error_rate"].good == 0.02
    assert set(s.secrets()) == {"tok-secret-123", "west-secret"}


@pytest.mark.parametrize(
    ("env", "data", "key"),
    [
        ({**ENV, "SMS_MONITOR_POLL_INTERVAL": "soon"}, {}, "SMS_MONITOR_POLL_INTERVAL"),
        ({**ENV, "SMS_MONITOR_POLL_INTERVAL": "-5"}, {}, "SMS_MONITOR_POLL_INTERVAL"),
        ({**ENV, "TWILIO_ACCOUNT_SID": "ACnope"}, {}, "TWILIO_ACCOUNT_SID"),
        ({**ENV, "TWILIO_PHONE_NUMBER": "555-1234"}, {}, "TWILIO_PHONE_NUMBER"),
        ({**ENV, "SMS_MONITOR_LISTEN_ADDRESS": "localhost"}, {}, "SMS_MONITOR_LISTEN_ADDRESS"),
        ({**ENV, "SMS_MONITOR_TWILIO_API_URL": "ftp://x"}, {}, "SMS_MONITOR_TWILIO_API_URL"),
        (ENV, {"min_samples": 0}, "min_samples"),
        (ENV, {"page_size": 5000}, "page_size"),
        (ENV, {"window": "forever"}, "window"),
        (ENV, {"thresholds": {"delivery_rate": {"green": 0.8, "red": 0.9}}},
         "thresholds.delivery_rate"),
        (ENV, {"thresholds": {"speed": {"green": 1}}}, "thresholds.speed"),
        (ENV, {"pol_interval": 5}, "pol_interval"),
        (ENV, {"accounts": [{"name": "b", "account_sid": SID2}]}, "accounts[0].auth_token"),
        ({}, {}, "TWILIO_ACCOUNT_SID"),
        ({**ENV, "SMS_MONITOR_DATABASE_URL": "foo://db/app"}, {}, "SMS_MONITOR_DATABASE_URL"),
        ({**ENV, "SMS_MONITOR_DATABASE_URL": "postgresql+psycopg://u:pw@db:port/app"}, {},
         "SMS_MONITOR_DATABASE_URL"),
    ],
)
def test_bad_values_name_their_key(env: dict, data: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(env, data)
    assert err.value.key == key
    assert str(err.value).startswith(f"configuration error: {key}: ")
    assert "\n" not in str(err.value)


def test_cli_exits_2_with_one_line_and_no_secret(capsys: pytest.CaptureFixture[str],
                                                  tmp_path: Path) -> None:
    rc = main(["check"], env={**ENV, "SMS_MONITOR_POLL_INTERVAL": "often"})
    out = capsys.readouterr()
    assert rc == 2
    assert out.out == ""
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and "SMS_MONITOR_POLL_INTERVAL" in lines[0]
    assert "tok-secret-123" not in out.err

    bad = tmp_path / "bad.toml"
    bad.write_text("window = [\n")
    assert main(["run", "--config", str(bad)], env=ENV) == 2
    assert "--config" in capsys.readouterr().err
    assert main(["run", "--config", str(tmp_path / "missing.toml")], env=ENV) == 2
    assert main(["run", "--web.listen-address", "nowhere"], env=ENV) == 2


def test_a_malformed_url_with_credentials_is_refused_without_showing_them(
        capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["check"], env={**ENV, "SMS_MONITOR_TWILIO_API_URL": "htp://ops:hunter2pw@proxy"})
    err = capsys.readouterr().err
    assert rc == 2 and "SMS_MONITOR_TWILIO_API_URL" in err
    assert "hunter2pw" not in err and "//***@proxy" in err


def test_tokens_are_secret_everywhere_but_where_they_are_used() -> None:
    data = {"accounts": [{"name": "west", "account_sid": SID2, "auth_token": "file-secret-456"}],
            "canary": {"to": "+15005550009", "test_account_sid": SID2}}
    s = load_settings({**ENV, "TWILIO_TEST_AUTH_TOKEN": "test-secret-789"}, data)
    shown = repr(s) + str(s) + str(s.model_dump())
    for token in ("tok-secret-123", "file-secret-456", "test-secret-789"):
        assert token not in shown
        assert token in s.secrets()
    assert s.accounts[1].auth_token.get_secret_value() == "file-secret-456"
    assert s.canary is not None and s.canary.api_only and s.canary.account == "primary"


def test_the_environment_overrides_the_file_and_the_flag_overrides_both() -> None:
    data = {"poll_interval": "2m", "listen_address": "127.0.0.1:9000", "public_url": "https://file.example",
            "database_url": "sqlite:///file.db", "alerts": {"store_url": "sqlite:///file-alerts.db"},
            "canary": {"to": "+15005550009", "interval": "10m"}}
    env = {**ENV, "SMS_MONITOR_POLL_INTERVAL": "30s", "SMS_MONITOR_LISTEN_ADDRESS": "127.0.0.1:9001",
           "SMS_MONITOR_PUBLIC_URL": "https://env.example/", "SMS_MONITOR_DATABASE_URL": "sqlite:///env.db",
           "SMS_MONITOR_ALERT_STORE_URL": "sqlite:///env-alerts.db", "SMS_MONITOR_CANARY_INTERVAL": "2m"}
    s = load_settings(env, data)
    assert s.poll_interval == 30 and s.listen_port == 9001 and s.public_url == "https://env.example"
    assert s.database is not None and s.database.url == s.database_url == "sqlite:///env.db"
    assert s.alerts is not None and s.alerts.store_url == "sqlite:///env-alerts.db"
    assert s.inbound is not None and s.inbound.audit_url == "sqlite:///env-alerts.db"  # follows it
    assert s.canary is not None and (s.canary.to, s.canary.interval) == ("+15005550009", 120)
    assert load_settings(env, data, listen_address="127.0.0.1:9002").listen_port == 9002
    assert load_settings(ENV, data).poll_interval == 120  # empty environment: the file's


def test_one_default_store_url_in_the_state_directory(tmp_path: Path) -> None:
    env = {**ENV, "SMS_MONITOR_DATABASE_URL": "sqlite://", "SMS_MONITOR_STATE_DIR": str(tmp_path)}
    s = load_settings(env)
    assert s.alerts is not None and s.alerts.store_url == f"sqlite:///{tmp_path}/alerts.db"
    assert s.inbound is not None and s.inbound.audit_url == s.alerts.store_url
    s = load_settings(env, {"alerts": {"enabled": False}})
    assert s.alerts is None and s.inbound is not None
    assert s.inbound.audit_url == f"sqlite:///{tmp_path}/audit.db"


def test_settings_are_immutable_and_copied_with_changes() -> None:
    s = load_settings(ENV)
    with pytest.raises(ValueError):
        s.poll_interval = 5  # type: ignore[misc]
    assert s.model_copy(update={"alerts": None, "public_url": "https://x"}).public_url == "https://x"
    assert s.public_url is None


@pytest.mark.parametrize(
    ("env", "data", "message"),
    [
        (ENV, {"database": {"optout_grace": "soon"}},
         "database.optout_grace: expected a duration like '90s', '15m' or '1 hour', got 'soon'"),
        (ENV, {"thresholds": {"delivery_rate": {"green": "high"}}},
         "thresholds.delivery_rate.green: expected a number, got 'high'"),
        (ENV, {"thresholds": {"delivery_rate": {"amber": 0.9}}},
         "thresholds.delivery_rate.amber: unknown key; known: green, red"),
        (ENV, {"min_samples": 0}, "min_samples: must be at least 1, got 0"),
        (ENV, {"number_type": "fax"},
         "number_type: expected one of 'long_code', 'toll_free', 'short_code' or '10dlc', got 'fax'"),
        (ENV, {"number_type": "10dlc"},
         "throughput_limit: a 10DLC number's rate depends on its brand registration: set it"),
        (ENV, {"alerts": 5}, "alerts: expected a table"),
        (ENV, {"inbound": {"colour": "red"}},
         "inbound.colour: unknown key; known: audit_url, help_keywords, optin_keywords, prefix"),
        (ENV, {"accounts": [{"name": "b", "account_sid": SID2, "auth_token_env": "NOPE"}]},
         "accounts[0].auth_token_env: environment variable NOPE is not set"),
        (ENV, {"accounts": [{"name": "primary", "account_sid": SID2, "auth_token": "t"}]},
         "accounts: account name 'primary' is used twice"),
        ({"TWILIO_ACCOUNT_SID": SID}, {}, "TWILIO_AUTH_TOKEN: missing (set auth_token or auth_token_env)"),
        ({**ENV, "SMS_MONITOR_CANARY_TO": "555"}, {},
         "SMS_MONITOR_CANARY_TO: expected an E.164 number such as +15005550006"),
        ({**ENV, "SMS_MONITOR_DATABASE_URL": "sqlite://"}, {"alerts": {"level2_after": "3h"}},
         "alerts.level3_after: must be later than level2_after"),
        ({**ENV, "SMS_MONITOR_DATABASE_URL": "sqlite://"},
         {"alerts": {"alertmanager_url": "htp://am:hunter2pw@am.example"}},
         "alerts.alertmanager_url: expected an http:// or https:// URL, got 'htp://***@am.example'"),
    ],
)
def test_errors_are_one_exact_line(env: dict, data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(env, data)
    assert str(err.value) == f"configuration error: {message}"
    assert err.value.key == message.split(": ")[0]
