"""Accounts divided among replicas by shard number (core/sharding.py): the hash with exact
values, the settings (flags, environment, a StatefulSet pod's ordinal), the shard area, the
alert engine's share, and three ``sms-monitor run`` processes over one simulator."""

from __future__ import annotations

import contextlib
import select
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import requests
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sms_monitor.alerts.engine import AlertEngine
from sms_monitor.app import build
from sms_monitor.cli import main
from sms_monitor.config import ConfigError, load_settings
from sms_monitor.core.sharding import (
    FNV64_OFFSET,
    Sharding,
    ShardPlan,
    coverage,
    fnv1a_64,
    ordinal,
    shard_of,
)
from sms_monitor.outputs.http import build_registry
from sms_monitor.simulator.server import SimulatorServer
from sms_monitor.simulator.state import DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN, DEMO_PHONE_NUMBER, SimState
from tests.conftest import FakeClock, SleepRecorder, Smtp, demo_env
from tests.test_alert_engine import published, settings
from tests.test_http_hardening import Run

SIDS = [f"AC{i:032x}" for i in range(8)]
TOKEN = "t" * 32


# -- the hash: fixed by its definition, the same in every process and release -------------

def test_fnv1a_64_matches_the_reference_vectors() -> None:
    assert fnv1a_64(b"") == FNV64_OFFSET == 0xCBF29CE484222325
    assert fnv1a_64(b"a") == 0xAF63DC4C8601EC8C
    assert fnv1a_64(b"foobar") == 0x85944171F73967E8


def test_account_sids_fall_on_fixed_shards() -> None:
    assert fnv1a_64(SIDS[0].encode()) == 0xF8AB695C86CB9DDD
    assert [shard_of(s, 3) for s in SIDS] == [2, 1, 0, 2, 1, 0, 2, 1]
    assert [shard_of(s, 2) for s in SIDS] == [1, 0, 1, 0, 1, 0, 1, 0]
    assert shard_of(DEMO_ACCOUNT_SID, 2) == 1
    assert {shard_of(s, 1) for s in SIDS} == {0}


def test_every_account_has_exactly_one_shard() -> None:
    shards = [Sharding(n, 3) for n in range(3)]
    assert set(coverage(SIDS, shards).values()) == {1}
    assert coverage(SIDS, shards[:2]) == {s: 0 if shard_of(s, 3) == 2 else 1 for s in SIDS}
    assert coverage(SIDS, [*shards, Sharding(0, 3)])[SIDS[2]] == 2
    owned, skipped = Sharding(1, 3).split(SIDS)
    assert owned == [SIDS[1], SIDS[4], SIDS[7]] and len(skipped) == 5


def test_ordinal_is_the_trailing_number_of_the_pod_name() -> None:
    assert ordinal("sms-monitor-0") == 0
    assert ordinal("sms-monitor-12") == 12
    assert ordinal("sms-monitor") is None
    assert ordinal("web-2a") is None
    assert ordinal("") is None


def test_sharding_rejects_impossible_numbers() -> None:
    for shard, total in ((3, 3), (-1, 3), (0, 0), (0, 1025)):
        with pytest.raises(ValueError):
            Sharding(shard, total)


def test_each_shard_has_its_own_leader_lock_within_postgres_bigint() -> None:
    base = 0x736D736D6F6E
    assert Sharding().lock_key(base) == base  # one replica: the lock it always had
    keys = {Sharding(n, t).lock_key(base) for t in (2, 3, 1024) for n in range(t)}
    assert len(keys) == 2 + 3 + 1024 and base not in keys
    assert max(keys) < 2**63
    assert Sharding(1, 3).lock_key(base) == 971476294266734


def test_plan_keeps_the_configured_order() -> None:
    plan = ShardPlan.of(Sharding(0, 3), [(f"a{i}", s) for i, s in enumerate(SIDS)])
    assert plan.owned == ("a2", "a5")
    assert plan.skipped == ("a0", "a1", "a3", "a4", "a6", "a7")


# -- settings -----------------------------------------------------------------------------

BASE = {"TWILIO_ACCOUNT_SID": DEMO_ACCOUNT_SID, "TWILIO_AUTH_TOKEN": TOKEN}


def test_unsharded_by_default() -> None:
    assert load_settings(BASE).sharding == Sharding(0, 1)
    # a pod name alone shards nothing
    assert load_settings(BASE | {"HOSTNAME": "sms-monitor-2"}).sharding == Sharding(0, 1)


def test_shard_from_flags_environment_or_pod_ordinal() -> None:
    assert load_settings(BASE, shard=1, total_shards=3).sharding == Sharding(1, 3)
    env = BASE | {"SMS_MONITOR_SHARD": "2", "SMS_MONITOR_TOTAL_SHARDS": "3"}
    assert load_settings(env).sharding == Sharding(2, 3)
    assert load_settings(env, shard=0).sharding == Sharding(0, 3)  # the flag wins
    pod = BASE | {"SMS_MONITOR_TOTAL_SHARDS": "3", "HOSTNAME": "sms-monitor-1"}
    assert load_settings(pod).sharding == Sharding(1, 3)
    assert load_settings(pod, {"total_shards": 2}).sharding == Sharding(1, 3)  # env over file
    assert load_settings(BASE, {"total_shards": 2, "shard": 1}).sharding == Sharding(1, 2)


@pytest.mark.parametrize(("env", "file", "flags", "error"), [
    ({"SMS_MONITOR_TOTAL_SHARDS": "3", "HOSTNAME": "box"}, {}, {},
     "configuration error: shard: not set, and HOSTNAME ('box') has no trailing -<n> "
     "(a StatefulSet pod's ordinal) to take it from"),
    ({"SMS_MONITOR_TOTAL_SHARDS": "3", "HOSTNAME": "sms-monitor-3"}, {}, {},
     "configuration error: shard: must be below total_shards (3), got 3"),
    ({}, {}, {"shard": 3, "total_shards": 3},
     "configuration error: --shard: must be below total_shards (3), got 3"),
    ({"SMS_MONITOR_SHARD": "1"}, {}, {},
     "configuration error: SMS_MONITOR_SHARD: must be below total_shards (1), got 1"),
    ({"SMS_MONITOR_TOTAL_SHARDS": "0"}, {}, {},
     "configuration error: SMS_MONITOR_TOTAL_SHARDS: must be at least 1, got '0'"),
    ({}, {"total_shards": 1025}, {},
     "configuration error: total_shards: must be at most 1024, got 1025"),
    ({}, {"shard": -1, "total_shards": 2}, {},
     "configuration error: shard: must be at least 0, got -1"),
])
def test_bad_shard_settings_name_the_key(env: dict[str, str], file: dict[str, Any],
                                         flags: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(BASE | env, file, **flags)
    assert str(exc.value) == error


def test_run_flags_reach_the_settings(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--shard", "4", "--total-shards", "2"], env=BASE) == 2
    assert capsys.readouterr().err == ("sms-monitor: configuration error: --shard: must be "
                                       "below total_shards (2), got 4\n")


# -- one replica's share ------------------------------------------------------------------

def _accounts_file(url: str, n: int = 6) -> dict[str, Any]:
    return {"api_url": url, "number_type": "toll_free",
            "accounts": [{"name": f"a{i}", "account_sid": SIDS[i], "auth_token": TOKEN}
                         for i in range(n)]}


def _samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for f in text_string_to_metric_families(text)
            for s in f.samples]


def test_a_replica_builds_inputs_only_for_its_accounts(clock: FakeClock) -> None:
    env = {"SMS_MONITOR_STATUSPAGE_URL": ""}
    s = load_settings(env, _accounts_file("http://127.0.0.1:9"), shard=1, total_shards=3)
    app = build(s, clock=clock, sleep=SleepRecorder(), alerts=False)
    assert [a.config.name for a in app.accounts] == ["a1", "a4"]
    app.run_cycle()  # Twilio is unreachable here: the shard is known all the same
    text = generate_latest(build_registry(app.holder, app.areas)).decode()
    samples = _samples(text)
    assert ("sms_monitor_shard_info", {"shard": "1", "total_shards": "3"}, 1.0) in samples
    assert ("sms_monitor_shard_accounts", {"state": "owned"}, 2.0) in samples
    assert ("sms_monitor_shard_accounts", {"state": "skipped"}, 4.0) in samples
    owned = {lb["account"]: v for n, lb, v in samples if n == "sms_monitor_account_owned"}
    assert owned == {"a0": 0, "a1": 1, "a2": 0, "a3": 0, "a4": 1, "a5": 0}
    app.close()


def test_the_engine_evaluates_its_shards_accounts_and_shard_0_the_database() -> None:
    def engine(owned: frozenset[str] | None, shared: bool) -> AlertEngine:
        return AlertEngine(config=cast(Any, None), accounts=["a0", "a1"], notifier=cast(Any, None),
                           store=cast(Any, None), leadership=cast(Any, None), owned=owned,
                           shared=shared)

    zero, one, alone = engine(frozenset({"a1"}), True), engine(frozenset({"a0"}), False), \
        engine(None, True)
    assert [zero.mine(t) for t in ("a0", "a1", "database", "*", "gone")] == \
        [False, True, True, False, True]
    assert [one.mine(t) for t in ("a0", "a1", "database", "*", "gone")] == \
        [True, False, False, False, False]
    assert all(alone.mine(t) for t in ("a0", "a1", "database", "*"))


# -- notifications: one leader per shard, each pages for its own accounts once -------------

OTHER_SID = SIDS[1]  # shard 0 of 2; the demo account is on shard 1


@pytest.fixture
def two_accounts(clock: FakeClock) -> Iterator[tuple[SimulatorServer, SimState]]:
    state = SimState(clock=clock, rate_per_minute=30.0, history_seconds=3600.0)
    state.add_account(DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN, DEMO_PHONE_NUMBER)
    state.add_account(OTHER_SID, DEMO_AUTH_TOKEN, "+15005550007")
    server = SimulatorServer(("127.0.0.1", 0), state).start()
    yield server, state
    server.stop()


def test_two_shards_page_each_account_once(app: str, two_accounts: tuple[SimulatorServer, SimState],
                                           smtp: Smtp, clock: FakeClock) -> None:
    server, state = two_accounts
    base = settings(app, server, smtp, app)
    other = base.accounts[0].model_copy(update={"name": "other", "account_sid": OTHER_SID,
                                                  "phone_number": "+15005550007"})
    replicas = []
    for shard in (0, 1):
        s = base.model_copy(update={"accounts": (base.accounts[0], other), "shard": shard,
                                    "total_shards": 2})
        replicas.append(build(s, clock=clock, sleep=SleepRecorder()))
    assert [[a.config.name for a in r.accounts] for r in replicas] == [["other"], ["primary"]]
    state.set_scenario("out_of_credit")
    snaps = [published(r) for r in replicas]
    for snap, mine in zip(snaps, ("other", "primary"), strict=True):
        assert snap.alerts is not None and snap.alerts.leader  # each shard has its leader
        assert {a.target for a in snap.alerts.alerts if a.rule == "Low Twilio Balance"} == {mine}
    for _ in range(3):  # more cycles on both: nothing new, and neither retires the other's
        clock.advance(60)
        for r in replicas:
            r.run_cycle()
    balance = sorted(x for x in smtp.inbox.subjects() if "Low Twilio Balance" in x)
    assert len(balance) == 2 and all(x.startswith("[FIRING]") for x in balance)
    assert any("other" in x for x in balance) and any("primary" in x for x in balance)
    state.set_scenario("healthy")
    clock.advance(60)
    for r in replicas:
        r.run_cycle()
    balance = [x for x in smtp.inbox.subjects() if "Low Twilio Balance" in x]
    assert len(balance) == 4 and sum(x.startswith("[RESOLVED]") for x in balance) == 2
    for r in replicas:
        r.close()


# -- three processes on loopback ----------------------------------------------------------

@pytest.fixture
def six_accounts() -> Iterator[SimulatorServer]:
    state = SimState(rate_per_minute=30.0, history_seconds=300.0)
    for i in range(6):
        state.add_account(SIDS[i], TOKEN, f"+1500555{i:04d}")
    server = SimulatorServer(("127.0.0.1", 0), state).start()
    yield server
    server.stop()


def _config(url: str) -> str:
    lines = ['poll_interval = "2s"', 'number_type = "toll_free"', f'api_url = "{url}"']
    for i in range(6):
        lines += ["[[accounts]]", f'name = "a{i}"', f'account_sid = "{SIDS[i]}"',
                  f'auth_token = "{TOKEN}"']
    return "\n".join(lines) + "\n"


def _polled(run: Run) -> tuple[dict[str, float], set[str]]:
    """A replica's sms_monitor_account_owned, and the accounts it has polled Twilio for."""
    samples = _samples(requests.get(run.url + "/metrics", timeout=5).text)
    owned = {lb["account"]: v for n, lb, v in samples if n == "sms_monitor_account_owned"}
    polled = {lb["account"] for n, lb, _ in samples if n == "twilio_up"}
    return owned, polled


def test_three_replicas_poll_each_account_exactly_once(six_accounts: SimulatorServer,
                                                       tmp_path: Path) -> None:
    no_primary = {"TWILIO_ACCOUNT_SID": "", "TWILIO_AUTH_TOKEN": "", "TWILIO_PHONE_NUMBER": ""}
    config = _config(six_accounts.url)
    runs = []
    try:
        # shard 0 by flags, 1 by the environment, 2 by its pod name
        for n, (args, env) in enumerate([
                (("--shard", "0", "--total-shards", "3"), {}),
                ((), {"SMS_MONITOR_SHARD": "1", "SMS_MONITOR_TOTAL_SHARDS": "3"}),
                ((), {"SMS_MONITOR_TOTAL_SHARDS": "3", "HOSTNAME": "sms-monitor-2"})]):
            work = tmp_path / f"replica{n}"
            work.mkdir()
            runs.append(Run(work, six_accounts.url, *args, config=config,
                            env={**demo_env(six_accounts.url), **no_primary, **env}))
        for run in runs:
            run.wait_ready()
        deadline = time.monotonic() + 30
        while True:
            seen = [_polled(run) for run in runs]
            if all(len(polled) == 2 for _, polled in seen) or time.monotonic() > deadline:
                break
            with contextlib.suppress(OSError):
                select.select([], [], [], 0.2)
        names = [f"a{i}" for i in range(6)]
        for n, (owned, polled) in enumerate(seen):
            mine = {f"a{i}" for i in range(6) if shard_of(SIDS[i], 3) == n}
            assert polled == mine, f"replica {n} polled {sorted(polled)}, owns {sorted(mine)}"
            assert set(owned) == set(names)
            assert {a for a, v in owned.items() if v == 1} == mine
        for name in names:  # what the coverage alert sums: one replica per account
            assert sum(owned[name] for owned, _ in seen) == 1
            assert sum(name in polled for _, polled in seen) == 1
    finally:
        for run in runs:
            run.stop()
