"""The simulator as a fleet: a parent account with subaccounts, API keys, injected latency and
Twilio's concurrency limit, all through real HTTP requests.

Accounts API bodies are validated against Twilio's OpenAPI description (the vendored
``tests/twilio_oai/twilio_api_v2010_accounts_subset.json`` for the list, the monitoring subset
for the fetch), like ``test_simulator_schema.py`` does for the other resources.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from twilio.rest import Client

from sms_monitor.simulator.server import SimulatorServer
from sms_monitor.simulator.state import (
    DEMO_ACCOUNT_SID,
    DEMO_API_KEY_SECRET,
    DEMO_API_KEY_SID,
    DEMO_AUTH_TOKEN,
    DEMO_PHONE_NUMBER,
    SimAccount,
    SimState,
)
from tests.conftest import FakeClock
from tests.test_simulator_schema import OAI_DIR, SUBSET, ResponseSchemas, load_oai

ACCOUNTS_SUBSET = OAI_DIR / "twilio_api_v2010_accounts_subset.json"
P_ACCOUNTS = "/2010-04-01/Accounts.json"
P_ACCOUNT = "/2010-04-01/Accounts/{Sid}.json"
LIST = P_ACCOUNTS
PARENT = (DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN)
KEY = (DEMO_API_KEY_SID, DEMO_API_KEY_SECRET)
TIMEOUT = 10.0
STATUSES = ("active", "active", "suspended", "closed")  # subaccount i gets STATUSES[i % 4]


@pytest.fixture(scope="module")
def accounts_schemas() -> ResponseSchemas:
    return ResponseSchemas(load_oai(ACCOUNTS_SUBSET))


@pytest.fixture(scope="module")
def monitoring_schemas() -> ResponseSchemas:
    return ResponseSchemas(load_oai(SUBSET))


def make_fleet(clock: FakeClock, count: int, rate: float = 1.0) -> SimState:
    state = SimState(clock=clock, rate_per_minute=60.0, history_seconds=600.0)
    state.add_account(DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN, DEMO_PHONE_NUMBER)
    state.add_api_key(DEMO_ACCOUNT_SID, DEMO_API_KEY_SID, DEMO_API_KEY_SECRET)
    state.add_subaccounts(DEMO_ACCOUNT_SID, count, statuses=STATUSES, rate_per_minute=rate)
    return state


@pytest.fixture
def fleet_state(clock: FakeClock) -> SimState:
    return make_fleet(clock, 12)


@pytest.fixture
def fleet(fleet_state: SimState) -> Iterator[SimulatorServer]:
    server = SimulatorServer(("127.0.0.1", 0), fleet_state).start()
    yield server
    server.stop()


def get(sim: SimulatorServer, path: str, auth: tuple[str, str] | None = PARENT,
        **params: Any) -> requests.Response:
    return requests.get(sim.url + path, params=params or None, auth=auth, timeout=TIMEOUT)


def ok(resp: requests.Response) -> Any:
    assert resp.status_code == 200, f"{resp.request.url}: HTTP {resp.status_code} {resp.text}"
    return resp.json()


def twilio_error(resp: requests.Response, status: int, code: int) -> None:
    assert resp.status_code == status, f"HTTP {resp.status_code} {resp.text}"
    body = resp.json()
    assert body["code"] == code and body["status"] == status, body
    assert body["more_info"] == f"https://www.twilio.com/docs/errors/{code}"


def subs(state: SimState) -> list[SimAccount]:
    return state.subaccounts(DEMO_ACCOUNT_SID)


def all_pages(sim: SimulatorServer, auth: tuple[str, str] = PARENT,
              **params: Any) -> list[dict[str, Any]]:
    pages = [ok(get(sim, LIST, auth, **params))]
    while (nxt := pages[-1]["next_page_uri"]) is not None:
        assert nxt.startswith("/2010-04-01/Accounts.json?"), nxt
        assert len(pages) <= 2000, "endless next_page_uri chain"
        pages.append(ok(requests.get(sim.url + nxt, auth=auth, timeout=TIMEOUT)))
    return pages


# -- accounts and credentials ------------------------------------------------------------------


def test_subaccounts_have_their_own_identity(fleet_state: SimState) -> None:
    accounts = subs(fleet_state)
    assert len(accounts) == 12
    assert len({a.sid for a in accounts}) == 12 and all(
        re.fullmatch(r"AC[0-9a-f]{32}", a.sid) for a in accounts)
    assert len({a.auth_token for a in accounts}) == 12
    assert len({a.phone_number for a in accounts}) == 12
    assert [a.friendly_name for a in accounts[:3]] == ["Clinic 0001", "Clinic 0002",
                                                      "Clinic 0003"]
    assert [a.status for a in accounts[:4]] == list(STATUSES)
    # the same parent gives the same SIDs and tokens every run
    again = subs(make_fleet(FakeClock(), 12))
    assert [(a.sid, a.auth_token) for a in again] == [(a.sid, a.auth_token) for a in accounts]


def test_the_accounts_list_is_twilios_schema_parent_first(
        fleet: SimulatorServer, fleet_state: SimState,
        accounts_schemas: ResponseSchemas) -> None:
    body = ok(get(fleet, LIST))
    accounts_schemas.assert_valid(P_ACCOUNTS, body)
    assert [a["sid"] for a in body["accounts"]] == (
        [DEMO_ACCOUNT_SID] + [a.sid for a in subs(fleet_state)])
    for account in body["accounts"]:
        accounts_schemas.assert_complete("api.v2010.account", account)
        assert account["owner_account_sid"] == DEMO_ACCOUNT_SID
    assert body["accounts"][0]["status"] == "active"
    assert [a["status"] for a in body["accounts"][1:5]] == list(STATUSES)
    assert body["next_page_uri"] is None and body["page"] == 0 and body["page_size"] == 50
    assert body["start"] == 0 and body["end"] == 12


def test_the_parent_reads_a_subaccount_and_its_resources(
        fleet: SimulatorServer, fleet_state: SimState,
        monitoring_schemas: ResponseSchemas) -> None:
    first, second = subs(fleet_state)[:2]
    for auth in (PARENT, KEY):
        body = ok(get(fleet, f"/2010-04-01/Accounts/{first.sid}.json", auth))
        monitoring_schemas.assert_valid(P_ACCOUNT, body)
        assert body["owner_account_sid"] == DEMO_ACCOUNT_SID and body["sid"] == first.sid
        assert body["friendly_name"] == "Clinic 0001" and body["status"] == "active"
        messages = ok(get(fleet, f"/2010-04-01/Accounts/{first.sid}/Messages.json", auth,
                          PageSize=1000))["messages"]
        assert 5 <= len(messages) <= 11  # one a minute over the 10 minutes of history
        assert {m["account_sid"] for m in messages} == {first.sid}
        numbers = ok(get(fleet, f"/2010-04-01/Accounts/{first.sid}/IncomingPhoneNumbers.json",
                         auth))["incoming_phone_numbers"]
        assert [n["phone_number"] for n in numbers] == [first.phone_number]
    balances = {ok(get(fleet, f"/2010-04-01/Accounts/{a.sid}/Balance.json"))["balance"]
                for a in (first, second)}
    assert balances == {f"{first.balance:.2f}", f"{second.balance:.2f}"} and len(balances) == 2
    # each account's messages are its own
    own = ok(get(fleet, f"/2010-04-01/Accounts/{second.sid}/Messages.json", PageSize=1000))
    assert {m["account_sid"] for m in own["messages"]} == {second.sid}


def test_credentials_reach_only_what_twilio_lets_them(fleet: SimulatorServer,
                                                      fleet_state: SimState) -> None:
    first, second, _, closed = subs(fleet_state)[:4]
    mine = (first.sid, first.auth_token)
    # a subaccount's own credentials: itself only
    body = ok(get(fleet, LIST, mine))
    assert [a["sid"] for a in body["accounts"]] == [first.sid]
    assert body["accounts"][0]["owner_account_sid"] == DEMO_ACCOUNT_SID
    ok(get(fleet, f"/2010-04-01/Accounts/{first.sid}/Balance.json", mine))
    for sid in (DEMO_ACCOUNT_SID, second.sid):
        twilio_error(get(fleet, f"/2010-04-01/Accounts/{sid}/Messages.json", mine), 401, 20003)
    # the parent's API key: the parent's list; a wrong secret or an unknown key: nothing
    assert len(ok(get(fleet, LIST, KEY))["accounts"]) == 13
    for auth in ((DEMO_API_KEY_SID, "x" * 32), ("SK" + "0" * 32, DEMO_API_KEY_SECRET),
                 (DEMO_ACCOUNT_SID, first.auth_token), None):
        twilio_error(get(fleet, LIST, auth), 401, 20003)
    # an API key of a subaccount acts for that subaccount only
    sub_key = fleet_state.add_api_key(first.sid)
    assert re.fullmatch(r"SK[0-9a-f]{32}", sub_key[0])
    ok(get(fleet, f"/2010-04-01/Accounts/{first.sid}/Messages.json", sub_key))
    twilio_error(get(fleet, f"/2010-04-01/Accounts/{second.sid}/Messages.json", sub_key),
                 401, 20003)
    # a closed subaccount's own token authenticates nothing; the parent still sees it
    twilio_error(get(fleet, f"/2010-04-01/Accounts/{closed.sid}.json",
                     (closed.sid, closed.auth_token)), 401, 20003)
    assert ok(get(fleet, f"/2010-04-01/Accounts/{closed.sid}.json"))["status"] == "closed"


def test_filters_on_status_and_friendly_name(fleet: SimulatorServer,
                                             fleet_state: SimState) -> None:
    accounts = subs(fleet_state)
    for status in ("active", "suspended", "closed"):
        expected = [a.sid for a in accounts if a.status == status]
        if status == "active":
            expected.insert(0, DEMO_ACCOUNT_SID)
        got = ok(get(fleet, LIST, Status=status))
        assert [a["sid"] for a in got["accounts"]] == expected
        assert f"Status={status}" in got["uri"] and f"Status={status}" in got["first_page_uri"]
    assert [a["sid"] for a in ok(get(fleet, LIST, FriendlyName="Clinic 0003"))["accounts"]] \
        == [accounts[2].sid]
    assert ok(get(fleet, LIST, FriendlyName="Clinic 0003", Status="active"))["accounts"] == []
    assert ok(get(fleet, LIST, FriendlyName="nobody"))["accounts"] == []
    twilio_error(get(fleet, LIST, Status="paused"), 400, 20001)
    twilio_error(get(fleet, LIST, PageSize=1001), 400, 20001)
    twilio_error(get(fleet, LIST, PageToken="PAnotasid"), 400, 20001)


def test_a_subaccount_suspended_through_the_control_endpoint(fleet: SimulatorServer,
                                                            fleet_state: SimState) -> None:
    first = subs(fleet_state)[0]
    resp = requests.post(f"{fleet.url}/_simulator/account",
                         data={"sid": first.sid, "status": "suspended"}, timeout=TIMEOUT)
    assert resp.json() == {"sid": first.sid, "status": "suspended",
                           "friendly_name": "Clinic 0001"}
    assert ok(get(fleet, f"/2010-04-01/Accounts/{first.sid}.json"))["status"] == "suspended"
    bad = requests.post(f"{fleet.url}/_simulator/account",
                        data={"sid": first.sid, "status": "paused"}, timeout=TIMEOUT)
    assert bad.status_code == 400


def test_paging_through_a_thousand_subaccounts(clock: FakeClock,
                                               accounts_schemas: ResponseSchemas) -> None:
    state = make_fleet(clock, 1000, rate=0.0)
    expected = [DEMO_ACCOUNT_SID] + [a.sid for a in subs(state)]
    sim = SimulatorServer(("127.0.0.1", 0), state).start()
    try:
        for size, page_count in ((50, 21), (1000, 2), (333, 4)):
            pages = all_pages(sim, PageSize=size)
            assert len(pages) == page_count
            for number, page in enumerate(pages):
                accounts_schemas.assert_valid(P_ACCOUNTS, page)
                assert page["page"] == number and page["page_size"] == size
                assert page["start"] == number * size
                assert page["end"] == page["start"] + len(page["accounts"]) - 1
                assert page["previous_page_uri"] == (None if number == 0
                                                     else page["first_page_uri"])
            assert [a["sid"] for p in pages for a in p["accounts"]] == expected
        # filters keep across pages
        suspended = [p for p in all_pages(sim, PageSize=40, Status="suspended")]
        assert [a["sid"] for p in suspended for a in p["accounts"]] == [
            a.sid for a in subs(state) if a.status == "suspended"]
        assert all("Status=suspended" in (p["next_page_uri"] or "Status=suspended")
                   for p in suspended)
        # Page without PageToken counts pages of PageSize from the start
        assert [a["sid"] for a in ok(get(sim, LIST, PageSize=50, Page=3))["accounts"]] \
            == expected[150:200]
        # twilio-python pages through the list with the parent's API key
        client = Client(DEMO_API_KEY_SID, DEMO_API_KEY_SECRET, DEMO_ACCOUNT_SID, environment={})
        client.api.base_url = sim.url
        listed = client.api.v2010.accounts.list(page_size=200)
        assert [a.sid for a in listed] == expected
        assert {a.owner_account_sid for a in listed} == {DEMO_ACCOUNT_SID}
        active = client.api.v2010.accounts.list(status="active", page_size=1000)
        assert len(active) == 1 + 500
    finally:
        sim.stop()


# -- latency and the concurrency limit ---------------------------------------------------------


def in_threads(count: int, call: Any) -> list[Any]:
    """``call()`` on ``count`` threads released together; their results in thread order."""
    results: list[Any] = [None] * count
    barrier = threading.Barrier(count)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = call()
        except Exception as exc:  # reported by the assertions on results
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def wait_idle(state: SimState) -> None:
    """A handler leaves the books just after its answer is out: wait for the last to leave."""
    deadline = time.monotonic() + 5
    while state.in_flight and time.monotonic() < deadline:
        time.sleep(0.005)
    assert state.in_flight == 0


def timed_get(sim: SimulatorServer, path: str) -> tuple[requests.Response, float]:
    start = time.monotonic()
    resp = requests.get(sim.url + path, auth=PARENT, timeout=TIMEOUT)
    return resp, time.monotonic() - start


def test_latency_is_per_request_and_concurrent(fleet: SimulatorServer,
                                               fleet_state: SimState) -> None:
    fleet_state.set_faults({"delay": 0.5})
    accounts = subs(fleet_state)
    start = time.monotonic()
    results = in_threads(12, lambda: timed_get(
        fleet, f"/2010-04-01/Accounts/{accounts[0].sid}/Balance.json"))
    elapsed = time.monotonic() - start
    assert all(r[0].status_code == 200 for r in results), results
    assert all(r[1] >= 0.5 for r in results)
    assert elapsed < 3.0, f"12 requests of 0.5 s took {elapsed:.2f} s: serialised?"
    assert fleet_state.peak_in_flight >= 6  # (12 unless some finished before others began)


def test_past_the_limit_in_flight_requests_get_429_20429(fleet: SimulatorServer,
                                                         fleet_state: SimState) -> None:
    """N slow requests in flight, then k more: exactly the k are refused, at once."""
    n, k = 6, 4
    fleet_state.set_faults({"concurrency_limit": n, "delay": 60.0, "retry_after": 3})
    path = f"/2010-04-01/Accounts/{DEMO_ACCOUNT_SID}/Balance.json"
    held: list[Any] = []
    threads = [threading.Thread(target=lambda: held.append(timed_get(fleet, path)))
               for _ in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while fleet_state.in_flight < n and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fleet_state.in_flight == n
    refused = in_threads(k, lambda: timed_get(fleet, path))
    for resp, took in refused:
        twilio_error(resp, 429, 20429)
        assert resp.json()["message"] == "Too Many Requests"
        assert resp.headers["Retry-After"] == "3"
        assert took < 5  # answered at once, not after the delay
    assert fleet_state.concurrency_rejected == k
    assert fleet_state.concurrency_rejected_by_account == {DEMO_ACCOUNT_SID: k}
    fleet_state.set_faults({"delay": 0.0})  # the held requests answer now
    for t in threads:
        t.join(10)
    assert [r.status_code for r, _ in held] == [200] * n
    wait_idle(fleet_state)
    # below the limit again: admitted
    assert get(fleet, path).status_code == 200
    wait_idle(fleet_state)
    state = requests.get(f"{fleet.url}/_simulator/state", timeout=TIMEOUT).json()
    assert state["concurrency"] == {"limit": n, "in_flight": 0, "peak": n, "rejected": k,
                                    "rejected_by_account": {DEMO_ACCOUNT_SID: k}}


def test_n_plus_k_concurrent_slow_requests_give_exactly_k_429s(
        fleet: SimulatorServer, fleet_state: SimState) -> None:
    """The limit is global: requests for different subaccounts share it."""
    n, k = 8, 3
    # the admitted ones wait until every request has arrived (then the delay is cleared)
    fleet_state.set_faults({"concurrency_limit": n, "delay": 60.0})
    accounts = subs(fleet_state)
    paths = iter([f"/2010-04-01/Accounts/{accounts[i % 3].sid}/Balance.json"
                  for i in range(n + k)])
    lock = threading.Lock()

    def call() -> tuple[requests.Response, float]:
        with lock:
            path = next(paths)
        return timed_get(fleet, path)

    results: list[Any] = []
    runner = threading.Thread(target=lambda: results.extend(in_threads(n + k, call)))
    runner.start()
    deadline = time.monotonic() + 20
    while (fleet_state.in_flight + fleet_state.concurrency_rejected < n + k
           and time.monotonic() < deadline):
        time.sleep(0.01)
    assert (fleet_state.in_flight, fleet_state.concurrency_rejected) == (n, k)
    fleet_state.set_faults({"delay": 0.0})
    runner.join(20)
    codes = sorted(r[0].status_code for r in results)
    assert codes == [200] * n + [429] * k, codes
    assert fleet_state.concurrency_rejected == k
    assert sum(fleet_state.concurrency_rejected_by_account.values()) == k
    assert all(r[0].json()["code"] == 20429 for r in results if r[0].status_code == 429)
    assert fleet_state.peak_in_flight == n


def test_no_limit_by_default(fleet: SimulatorServer, fleet_state: SimState) -> None:
    fleet_state.set_faults({"delay": 0.3})
    results = in_threads(30, lambda: timed_get(fleet, LIST))
    assert [r[0].status_code for r in results] == [200] * 30
    assert fleet_state.concurrency_rejected == 0


# -- the command line ---------------------------------------------------------------------------


def test_simulate_with_subaccounts_latency_and_a_concurrency_limit(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "sms_monitor.cli", "simulate", "--listen", "127.0.0.1:0",
         "--subaccounts", "25", "--latency", "0.1", "--concurrency-limit", "2",
         "--history", "60"],
        cwd=tmp_path, stderr=subprocess.PIPE, text=True,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    try:
        assert proc.stderr is not None
        seen: list[str] = []
        found = None
        while found is None and len(seen) < 20:
            seen.append(proc.stderr.readline())
            found = re.search(r"Twilio simulator at (http://127\.0\.0\.1:\d+)", seen[-1])
        assert found, seen
        url = found.group(1)
        body = requests.get(f"{url}{LIST}", auth=KEY, params={"PageSize": 10},
                            timeout=TIMEOUT).json()
        assert len(body["accounts"]) == 10 and body["next_page_uri"]
        start = time.monotonic()
        results = in_threads(5, lambda: requests.get(f"{url}{LIST}", auth=PARENT,
                                                     timeout=TIMEOUT))
        assert time.monotonic() - start >= 0.1
        codes = sorted(r.status_code for r in results)
        assert codes.count(200) >= 2 and set(codes) <= {200, 429}, codes
        state = requests.get(f"{url}/_simulator/state", timeout=TIMEOUT).json()
        assert state["faults"]["delay"] == 0.1
        assert state["concurrency"]["limit"] == 2
        assert state["concurrency"]["rejected"] == codes.count(429)
        assert len(state["accounts"]) == 26
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    assert proc.returncode == 0


def test_simulate_refuses_negative_values(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sms_monitor.cli", "simulate", "--listen", "127.0.0.1:0",
         "--concurrency-limit", "-1"], cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    assert result.returncode == 2
    assert result.stderr == ("sms-monitor: configuration error: --concurrency-limit must not be "
                             "negative\n")
