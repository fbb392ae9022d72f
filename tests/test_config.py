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


# -- sources ------------------------------------------------------------------------------

def test_the_environment_comes_from_the_mapping_given_never_from_os_environ(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from sms_monitor.config import EnvironmentSource

    monkeypatch.setenv("SMS_MONITOR_POLL_INTERVAL", "7m")
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", SID2)
    s = load_settings(ENV)
    assert s.poll_interval == 60 and s.accounts[0].account_sid == SID
    source = EnvironmentSource({**ENV, "SMS_MONITOR_STATUSPAGE_URL": "", "SMS_MONITOR_PUBLIC_URL": "",
                                "SMS_MONITOR_CANARY_TO": "+15005550009"})
    assert source() == {"statuspage_url": "", "canary": {"to": "+15005550009"},
                        "accounts": [{"name": "primary", "account_sid": SID,
                                      "auth_token": "tok-secret-123", "phone_number": "+15005550006"}]}
    assert source.names[("canary", "to")] == "SMS_MONITOR_CANARY_TO"
    assert source.names[("accounts", 0, "auth_token")] == "TWILIO_AUTH_TOKEN"
    assert ("public_url",) not in source.names  # set but empty: ignored


def test_a_file_value_that_should_be_a_table_is_reported_under_the_environment() -> None:
    env = {**ENV, "SMS_MONITOR_DATABASE_URL": "sqlite://", "SMS_MONITOR_ALERT_STORE_URL": "sqlite://"}
    with pytest.raises(ConfigError) as err:
        load_settings(env, {"alerts": 5})
    assert str(err.value) == "configuration error: alerts: expected a table"
    with pytest.raises(ConfigError) as err:
        load_settings(ENV, {"accounts": {"name": "x"}})
    assert str(err.value) == "configuration error: accounts: expected an array of tables ([[accounts]])"


def test_file_keys_are_matched_exactly() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(ENV, {"Window": "1h"})
    assert err.value.key == "Window"


def test_the_file_is_read_by_the_toml_source(tmp_path: Path) -> None:
    from sms_monitor.config import TomlFile, load_file

    path = tmp_path / "c.toml"
    path.write_text('window = "30m"\n[thresholds.delivery_rate]\ngreen = 0.97\n', encoding="utf-8")
    source = TomlFile(path)
    assert source() == load_file(path) == {"window": "30m",
                                           "thresholds": {"delivery_rate": {"green": 0.97}}}
    assert load_settings(ENV, load_file(path)).window_seconds == 1800


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"window = [\n", "is not valid TOML"),
        (b'window = "1h"\nname = "caf\xe9"\n', "is not UTF-8 text (byte 0xe9 on line 2)"),
        (b"\xff\xfe", "is not UTF-8 text"),
        (None, "cannot read"),  # a directory
        (b"", "cannot read"),  # a file that is not there (written nowhere)
    ],
)
def test_a_file_that_cannot_be_read_is_one_line_on_config(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | None, reason: str) -> None:
    path = tmp_path / "c.toml"
    if content is None:
        path.mkdir()
    elif content:
        path.write_bytes(content)
    assert main(["check", "--config", str(path)], env=ENV) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("sms-monitor: configuration error: --config: ")
    assert reason in lines[0]


# -- values that cannot be confused ------------------------------------------------------

@pytest.mark.parametrize(
    ("check", "which", "value", "message"),
    [
        ("delivery_rate", "green", 95, "a ratio between 0 and 1 (did you mean 0.95?)"),
        ("delivery_rate", "green", 100, "a ratio between 0 and 1 (did you mean 1.0?)"),
        ("delivery_rate", "green", 1.01, "a ratio between 0 and 1 (did you mean 0.0101?)"),
        ("delivery_rate", "green", 101, "a ratio between 0 and 1, got 101"),
        ("delivery_rate", "red", -0.1, "a ratio between 0 and 1, got -0.1"),
        ("error_rate", "red", 5, "a ratio between 0 and 1 (did you mean 0.05?)"),
        ("reconciliation", "red", 90, "a ratio between 0 and 1 (did you mean 0.9?)"),
        ("budget", "red", 120, "a ratio between 0 and 2 (did you mean 1.2?)"),
        ("throughput", "red", 2.5, "a ratio between 0 and 2 (did you mean 0.025?)"),
        ("throughput", "red", 201, "a ratio between 0 and 2, got 201"),
    ],
)
def test_ratio_bounds_are_ratios(check: str, which: str, value: float, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(ENV, {"thresholds": {check: {which: value}}})
    assert str(err.value) == f"configuration error: thresholds.{check}.{which}: {message}"


def test_ratio_bounds_at_their_limits_are_accepted() -> None:
    s = load_settings(ENV, {"thresholds": {"delivery_rate": {"green": 1.0, "red": 0.0},
                                           "error_rate": {"green": 0, "red": 1},
                                           "budget": {"green": 1.5, "red": 2.0}}})
    assert s.thresholds["delivery_rate"].good == 1.0 and s.thresholds["budget"].bad == 2.0
    # other units keep their own scale
    assert load_settings(ENV, {"thresholds": {"queue_delay": {"green": 90, "red": 600}}})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"poll_interval": float("inf")}, "poll_interval: expected a finite duration, got inf"),
        ({"poll_interval": float("nan")}, "poll_interval: expected a finite duration, got nan"),
        ({"poll_interval": 1e15}, "poll_interval: must be at most 1 day, got 1e+15 seconds"),
        ({"poll_interval": "100000000000000s"},
         "poll_interval: must be at most 1 day, got 1e+14 seconds"),
        ({"poll_interval": "1" * 400}, "poll_interval: expected a finite duration, got '111"),
        ({"window": "8d"}, "window: must be at most 7 days, got 691200 seconds"),
        ({"request_timeout": "6m"}, "request_timeout: must be at most 5 minutes, got 360 seconds"),
        ({"database": {"statement_timeout": "11m"}},
         "database.statement_timeout: must be at most 10 minutes, got 660 seconds"),
        ({"canary": {"to": "+15005550009", "interval": "25h"}},
         "canary.interval: must be at most 1 day, got 90000 seconds"),
        ({"alerts": {"max_window": "32d"}},
         "alerts.max_window: must be at most 31 days, got 2.7648e+06 seconds"),
        ({"monthly_budget": float("inf")}, "monthly_budget: expected a finite number, got inf"),
    ],
)
def test_durations_are_finite_and_bounded(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(ENV, data)
    assert str(err.value).startswith(f"configuration error: {message}")


def test_durations_at_their_ceilings_are_accepted() -> None:
    s = load_settings(ENV, {"poll_interval": "1d", "window": "7 days", "request_timeout": "5m",
                            "settle": "24h", "database": {"optout_grace": "7d"}})
    assert (s.poll_interval, s.window_seconds, s.request_timeout) == (86400, 604800, 300)


def test_twilio_is_not_polled_faster_than_every_five_seconds() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings({**ENV, "SMS_MONITOR_POLL_INTERVAL": "0.001"})
    assert str(err.value) == ("configuration error: SMS_MONITOR_POLL_INTERVAL: must be at least 5 "
                              "seconds when polling Twilio (https://api.twilio.com), got 0.001")
    assert load_settings({**ENV, "SMS_MONITOR_POLL_INTERVAL": "5"}).poll_interval == 5
    edge = {"accounts": [{"name": "eu", "account_sid": SID2, "auth_token": "t",
                          "api_url": "https://api.dublin.ie1.twilio.com"}], "poll_interval": 1}
    sim = {"TWILIO_ACCOUNT_SID": SID, "TWILIO_AUTH_TOKEN": "t",
           "SMS_MONITOR_TWILIO_API_URL": "http://127.0.0.1:8099"}
    with pytest.raises(ConfigError, match="^configuration error: poll_interval: .*dublin"):
        load_settings(sim, edge)
    # a simulator or a proxy may be polled as fast as it likes
    assert load_settings({**sim, "SMS_MONITOR_POLL_INTERVAL": "0.001"}).poll_interval == 0.001
    assert load_settings({}, {"poll_interval": 0.5}, require_accounts=False).poll_interval == 0.5


@pytest.mark.parametrize(
    ("env", "data", "key"),
    [
        ({**ENV, "SMS_MONITOR_DATABASE_URL": "mysql://db/app"}, {}, "SMS_MONITOR_DATABASE_URL"),
        (ENV, {"database": {"url": "mysql://db/app"}}, "database.url"),
        ({**ENV, "SMS_MONITOR_DATABASE_URL": "sqlite://"}, {"alerts": {"store_url": "mysql://x"}},
         "alerts.store_url"),
        ({**ENV, "SMS_MONITOR_DATABASE_URL": "sqlite://", "SMS_MONITOR_ALERT_STORE_URL": "mysql://x"},
         {}, "SMS_MONITOR_ALERT_STORE_URL"),
        (ENV, {"inbound": {"audit_url": "mysql://x"}}, "inbound.audit_url"),
        ({**ENV, "SMS_MONITOR_AUDIT_URL": "oracle://x"}, {}, "SMS_MONITOR_AUDIT_URL"),
    ],
)
def test_a_store_without_its_driver_is_refused_at_load(env: dict, data: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(env, data)
    assert err.value.key == key
    assert "driver is not installed (no module named" in err.value.reason


@pytest.mark.parametrize(
    ("value", "host", "port"),
    [("[::1]:9839", "::1", 9839), ("[::]:9839", "::", 9839), ("127.0.0.1:9000", "127.0.0.1", 9000),
     (":9839", "0.0.0.0", 9839), ("localhost:80", "localhost", 80), ("[fe80::1%lo]:1", "fe80::1%lo", 1)],
)
def test_listen_addresses_ipv4_and_ipv6(value: str, host: str, port: int) -> None:
    from sms_monitor.config import parse_listen_address

    assert parse_listen_address("--web.listen-address", value) == (host, port)
    s = load_settings(ENV, listen_address=value)
    assert (s.listen_host, s.listen_port) == (host, port)


@pytest.mark.parametrize("value", ["::1:9839", "[::1]", "[::1]9839", "[nope]:9839", "[127.0.0.1]:80",
                                   "host:65536", "host:", "a b:80", "[::1]:80:80", "localhost", ""])
def test_listen_address_garbage_is_refused(value: str) -> None:
    from sms_monitor.config import parse_listen_address

    with pytest.raises(ConfigError) as err:
        parse_listen_address("--web.listen-address", value)
    assert str(err.value) == ("configuration error: --web.listen-address: expected HOST:PORT or "
                              f"[IPV6]:PORT, got {value!r}")


def test_reliability_settings_defaults_and_bounds() -> None:
    s = load_settings({**ENV, "SMS_MONITOR_DATABASE_URL": "sqlite://"})
    assert (s.unreachable_cycles, s.liveness_intervals) == (3, 3.0)
    assert s.database is not None
    assert (s.database.unexpected_sends_ratio, s.database.unexpected_sends_margin) == (1.1, 10)
    s = load_settings({**ENV, "SMS_MONITOR_DATABASE_URL": "sqlite://"},
                      {"unreachable_cycles": 1, "liveness_intervals": 2.5,
                       "database": {"unexpected_sends_ratio": 1, "unexpected_sends_margin": 0}})
    assert s.database is not None and (s.unreachable_cycles, s.liveness_intervals) == (1, 2.5)
    assert (s.database.unexpected_sends_ratio, s.database.unexpected_sends_margin) == (1.0, 0)
    for data, message in [
        ({"unreachable_cycles": 0}, "unreachable_cycles: must be at least 1, got 0"),
        ({"unreachable_cycles": 2.5}, "unreachable_cycles: expected a whole number, got 2.5"),
        ({"liveness_intervals": 1.5}, "liveness_intervals: must be at least 2, got 1.5"),
        ({"liveness_intervals": True}, "liveness_intervals: expected a number, got True"),
        ({"database": {"unexpected_sends_ratio": 0.9}},
         "database.unexpected_sends_ratio: must be at least 1, got 0.9"),
        ({"database": {"unexpected_sends_margin": -1}},
         "database.unexpected_sends_margin: must be at least 0, got -1"),
    ]:
        with pytest.raises(ConfigError) as err:
            load_settings(ENV, data)
        assert str(err.value) == f"configuration error: {message}"


# -- by hand: `sms-monitor check|run` with a bad input is one line and exit status 2 -------

@pytest.mark.parametrize(
    ("argv", "toml", "env", "expected"),
    [
        (["check"], "poll_interval = 1e400\n", {}, "poll_interval: expected a finite duration"),
        (["check"], "poll_interval = 1e15\n", {}, "poll_interval: must be at most 1 day"),
        (["run"], 'poll_interval = "100000000000000s"\n', {}, "poll_interval: must be at most 1 day"),
        (["check"], "", {"SMS_MONITOR_POLL_INTERVAL": "0.001"},
         "SMS_MONITOR_POLL_INTERVAL: must be at least 5 seconds when polling Twilio"),
        (["run"], '[alerts]\nstore_url = "mysql://x"\n', {"SMS_MONITOR_DATABASE_URL": "sqlite://"},
         "alerts.store_url: the mysql driver is not installed"),
        (["check"], '[inbound]\naudit_url = "mysql://x"\n', {},
         "inbound.audit_url: the mysql driver is not installed"),
        (["check"], "", {"SMS_MONITOR_DATABASE_URL": "mysql://db/app"},
         "SMS_MONITOR_DATABASE_URL: the mysql driver is not installed"),
        (["check"], "[thresholds.delivery_rate]\ngreen = 95\n", {},
         "thresholds.delivery_rate.green: a ratio between 0 and 1 (did you mean 0.95?)"),
        (["run", "--web.listen-address", "::1:9839"], "", {},
         "--web.listen-address: expected HOST:PORT or [IPV6]:PORT, got '::1:9839'"),
        (["run"], "", {"SMS_MONITOR_LISTEN_ADDRESS": "[::1]"}, "SMS_MONITOR_LISTEN_ADDRESS: expected"),
    ],
)
def test_bad_input_by_hand_is_one_line_and_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], toml: str,
        env: dict[str, str], expected: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    assert main([*argv, "--config", str(path)], env={**ENV, **env}) == 2
    out = capsys.readouterr()
    lines = out.err.splitlines()
    assert out.out == "" and len(lines) == 1, out.err
    assert lines[0].startswith(f"sms-monitor: configuration error: {expected}")


def test_notifications_link_to_the_daemons_own_runbook_under_external_url() -> None:
    env = {"TWILIO_ACCOUNT_SID": "AC" + "1" * 32, "TWILIO_AUTH_TOKEN": "t" * 32,
           "SMS_MONITOR_DATABASE_URL": "sqlite://"}
    alone = load_settings(env)
    assert alone.alerts is not None and alone.alerts.runbook_url is None  # no link to invent
    external = load_settings({**env, "SMS_MONITOR_EXTERNAL_URL": "https://sms.internal:9839/"})
    assert external.alerts is not None
    assert external.alerts.runbook_url == "https://sms.internal:9839/runbook"
    own = load_settings({**env, "SMS_MONITOR_EXTERNAL_URL": "https://sms.internal:9839"},
                        {"alerts": {"runbook_url": "https://wiki.example/runbook.md"}})
    assert own.alerts is not None and own.alerts.runbook_url == "https://wiki.example/runbook.md"
