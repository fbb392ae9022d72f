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
