"""The simulator against Twilio's published OpenAPI description of the 2010-04-01 API.

The reference is Twilio's description from twilio/twilio-oai 2.6.7, vendored in
``tests/twilio_oai/`` (see its README): ``twilio_api_v2010_monitoring_subset.json`` (the paths a
monitor reads) and ``twilio_api_v2010_usage_records_subset.json`` (usage records, for spend).
Nothing outside the repository is read; a missing file fails the tests, never skips them (a
simulator nobody checks against Twilio drifts silently).

Response bodies are validated with ``OAS30Validator`` (it understands ``nullable``), ``$ref``s
resolved inside the whole document, plus a format checker for the formats the document uses
(``date-time-rfc-2822``, ``phone-number``, ``currency``, ``uri``, ``uri-map``). Behaviour the
schema cannot express (paging, filters, errors, scenarios, statuses over time) is asserted
directly, including through the real twilio-python client.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import requests
from jsonschema import FormatChecker
from openapi_schema_validator import OAS30Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.rest import Client

from sms_monitor.simulator.server import SimulatorServer
from sms_monitor.simulator.state import (
    DEMO_ACCOUNT_SID,
    DEMO_AUTH_TOKEN,
    DEMO_PHONE_NUMBER,
    SimState,
    rfc2822,
)
from tests.conftest import FakeClock

OAI_DIR = Path(__file__).resolve().parent / "twilio_oai"
SUBSET = OAI_DIR / "twilio_api_v2010_monitoring_subset.json"
USAGE_SUBSET = OAI_DIR / "twilio_api_v2010_usage_records_subset.json"
DOC_URI = "urn:twilio-oai:twilio_api_v2010_monitoring_subset"

# The GET operations of the subset (OpenAPI path templates).
P_MESSAGES = "/2010-04-01/Accounts/{AccountSid}/Messages.json"
P_MESSAGE = "/2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json"
P_BALANCE = "/2010-04-01/Accounts/{AccountSid}/Balance.json"
P_ACCOUNT = "/2010-04-01/Accounts/{Sid}.json"
P_NUMBERS = "/2010-04-01/Accounts/{AccountSid}/IncomingPhoneNumbers.json"
GET_PATHS = (P_MESSAGES, P_MESSAGE, P_BALANCE, P_ACCOUNT, P_NUMBERS)

AUTH = (DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN)
ACCOUNT = f"/2010-04-01/Accounts/{DEMO_ACCOUNT_SID}"
TIMEOUT = 10.0
MAX_PAGES = 200  # a runaway next_page_uri chain fails instead of hanging

MESSAGE_STATUSES = {"queued", "sending", "sent", "failed", "delivered", "undelivered", "receiving",
                    "received", "accepted", "scheduled", "read", "partially_delivered", "canceled"}
FINAL_OUTBOUND = {"delivered", "undelivered"}


# -- the OpenAPI document --------------------------------------------------------------------


def load_oai(path: Path) -> dict[str, Any]:
    if not path.is_file():
        pytest.fail(f"Twilio's OpenAPI description {path} is missing: it is vendored in the "
                    "repository, see tests/twilio_oai/README.md.", pytrace=False)
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    assert str(doc.get("openapi", "")).startswith("3.0"), f"{path}: not an OpenAPI 3.0 document"
    return doc


@pytest.fixture(scope="session")
def oai() -> dict[str, Any]:
    doc = load_oai(SUBSET)
    missing = [p for p in GET_PATHS if "get" not in doc.get("paths", {}).get(p, {})]
    assert not missing, f"{SUBSET}: lacks GET operations {missing}"
    return doc


def _rfc2822_gmt(value: object) -> bool:
    if not isinstance(value, str):
        return True
    # Twilio's form exactly: "Fri, 24 May 2019 17:44:50 +0000" (GMT, weekday matching the date)
    return value.endswith(" +0000") and format_datetime(parsedate_to_datetime(value)) == value


def _phone_number(value: object) -> bool:
    # E.164, a channel address (whatsapp:+1...), a short code or an alphanumeric sender ID
    return not isinstance(value, str) or bool(
        re.fullmatch(r"\+[1-9]\d{1,14}", value)
        or re.fullmatch(r"[a-z]+:\S+", value)
        or re.fullmatch(r"\d{3,6}", value)
        or re.fullmatch(r"(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}", value)
    )


def _currency(value: object) -> bool:
    return not isinstance(value, str) or bool(re.fullmatch(r"[A-Za-z]{3}", value))


def _uri(value: object) -> bool:
    # Twilio's own pages carry relative references (next_page_uri, uri) and "" for unset URLs
    if not isinstance(value, str) or value == "":
        return True
    if re.search(r"\s", value):
        return False
    parts = urlsplit(value)
    return value.startswith("/") or (parts.scheme in ("http", "https") and bool(parts.netloc))


def _uri_map(value: object) -> bool:
    return not isinstance(value, dict) or all(
        isinstance(v, str) and v.startswith("/2010-04-01/") for v in value.values()
    )


TWILIO_FORMATS = FormatChecker(formats=())
TWILIO_FORMATS.checks("date-time-rfc-2822", raises=(TypeError, ValueError, IndexError))(_rfc2822_gmt)
TWILIO_FORMATS.checks("phone-number")(_phone_number)
TWILIO_FORMATS.checks("currency")(_currency)
TWILIO_FORMATS.checks("uri")(_uri)
TWILIO_FORMATS.checks("uri-map")(_uri_map)


def _pointer_token(s: str) -> str:
    return s.replace("~", "~0").replace("/", "~1")


class ResponseSchemas:
    """Validators for the 200 bodies of the document's GET operations, refs resolved in it."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        resource = Resource.from_contents(doc, default_specification=DRAFT4)
        self.registry: Registry[Any] = Registry().with_resource(DOC_URI, resource)
        self._cache: dict[str, OAS30Validator] = {}

    def validator(self, path: str) -> OAS30Validator:
        if path not in self._cache:
            content = self.doc["paths"][path]["get"]["responses"]["200"]["content"]
            assert "application/json" in content, f"{path}: no application/json 200 response"
            pointer = "/" + "/".join(_pointer_token(t) for t in (
                "paths", path, "get", "responses", "200", "content", "application/json", "schema"))
            self._cache[path] = OAS30Validator({"$ref": f"{DOC_URI}#{quote(pointer)}"},
                                               registry=self.registry,
                                               format_checker=TWILIO_FORMATS)
        return self._cache[path]

    def properties(self, component: str) -> set[str]:
        return set(self.doc["components"]["schemas"][component]["properties"])

    def assert_complete(self, component: str, body: dict[str, Any]) -> None:
        """The schema has no ``required``; Twilio sends every documented property (maybe null)."""
        missing = self.properties(component) - set(body)
        assert not missing, f"{component}: documented properties missing: {sorted(missing)}"

    def errors(self, path: str, body: Any) -> list[str]:
        return [f"{'/'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
                for e in self.validator(path).iter_errors(body)]

    def assert_valid(self, path: str, body: Any) -> None:
        errors = self.errors(path, body)
        assert not errors, (f"GET {path}: {len(errors)} violation(s) of Twilio's schema:\n  "
                            + "\n  ".join(errors[:25]))


@pytest.fixture(scope="session")
def schemas(oai: dict[str, Any]) -> ResponseSchemas:
    return ResponseSchemas(oai)


# -- helpers ---------------------------------------------------------------------------------


def api_get(sim: SimulatorServer, path: str, params: dict[str, Any] | None = None,
            auth: tuple[str, str] | None = AUTH) -> requests.Response:
    return requests.get(sim.url + path, params=params, auth=auth, timeout=TIMEOUT)


def ok_json(resp: requests.Response) -> Any:
    assert resp.status_code == 200, f"{resp.request.url}: HTTP {resp.status_code} {resp.text[:300]}"
    assert resp.headers.get("Content-Type", "").startswith("application/json"), resp.headers
    return resp.json()


def fetch_pages(sim: SimulatorServer, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Every page of the Messages list, following next_page_uri (relative) to the end."""
    pages = [ok_json(api_get(sim, f"{ACCOUNT}/Messages.json", params))]
    while (nxt := pages[-1]["next_page_uri"]) is not None:
        assert nxt.startswith("/2010-04-01/"), f"next_page_uri must be relative: {nxt!r}"
        assert len(pages) < MAX_PAGES, f"more than {MAX_PAGES} pages: endless next_page_uri chain?"
        pages.append(ok_json(requests.get(sim.url + nxt, auth=AUTH, timeout=TIMEOUT)))
    return pages


def fetch_all(sim: SimulatorServer, **params: Any) -> list[dict[str, Any]]:
    params.setdefault("PageSize", 1000)
    return [m for page in fetch_pages(sim, params) for m in page["messages"]]


def ts(rfc: str) -> float:
    return parsedate_to_datetime(rfc).timestamp()


def sent_ts(m: dict[str, Any]) -> float | None:
    return None if m["date_sent"] is None else ts(m["date_sent"])


def iso_z(t: float) -> str:
    """A timestamp the way twilio-python serialises datetimes for DateSent filters."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def day_of(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d")


def describe(msgs: Iterable[dict[str, Any]]) -> str:
    return "\n  ".join(f"{m['sid']} {m['direction']:<12} {m['status']:<11} "
                       f"created={m['date_created']} sent={m['date_sent']}" for m in msgs)


def mismatch(got: list[dict[str, Any]], expected: list[dict[str, Any]], what: str) -> str | None:
    """None if ``got`` holds exactly the ``expected`` messages, once each; else what differs."""
    got_sids = [m["sid"] for m in got]
    have, want = set(got_sids), {m["sid"] for m in expected}
    unexpected = [m for m in got if m["sid"] not in want]
    missing = [m for m in expected if m["sid"] not in have]
    if not unexpected and not missing and len(got_sids) == len(set(got_sids)):
        return None
    return (f"{what}: {len(got)} returned ({len(got_sids) - len(set(got_sids))} duplicated), "
            f"{len(expected)} expected.\n"
            f" returned but not matching ({len(unexpected)}):\n  {describe(unexpected[:10])}\n"
            f" matching but not returned ({len(missing)}):\n  {describe(missing[:10])}")


def assert_filters(simulator: SimulatorServer, full: list[dict[str, Any]],
                   cases: dict[str, tuple[dict[str, str], Callable[[dict[str, Any]], bool]]],
                   ) -> None:
    """Each case's filtered list equals the full list narrowed by its predicate."""
    problems = []
    for what, (params, keep) in cases.items():
        expected = [m for m in full if keep(m)]
        assert 0 < len(expected) < len(full), f"{what}: the case does not discriminate"
        problems.append(mismatch(fetch_all(simulator, **params), expected, what))
    errors = [p for p in problems if p]
    assert not errors, "\n".join(errors)


def assert_twilio_error(resp: requests.Response, status: int, code: int | None = None) -> None:
    assert resp.status_code == status, f"HTTP {resp.status_code} {resp.text[:300]}"
    assert resp.headers.get("Content-Type", "").startswith("application/json"), resp.headers
    body = resp.json()
    assert isinstance(body, dict), body
    assert body.get("status") == status, body
    assert isinstance(body.get("code"), int) and not isinstance(body["code"], bool), body
    if code is not None:
        assert body["code"] == code, body
    assert isinstance(body.get("message"), str) and body["message"], body
    assert body.get("more_info") == f"https://www.twilio.com/docs/errors/{body['code']}", body


def twilio_client(sim: SimulatorServer, token: str = DEMO_AUTH_TOKEN) -> Client:
    client = Client(DEMO_ACCOUNT_SID, token, environment={})  # no TWILIO_* from the environment
    client.api.base_url = sim.url
    return client


def set_scenario(sim: SimulatorServer, name: str) -> requests.Response:
    return requests.post(f"{sim.url}/_simulator/scenario", data={"name": name}, timeout=TIMEOUT)


# -- 1. every GET of the subset, validated against the schema --------------------------------


def test_the_description_is_vendored_with_its_licence_and_source() -> None:
    repo = Path(__file__).resolve().parents[1]
    assert OAI_DIR.is_relative_to(repo)
    assert "MIT License" in (OAI_DIR / "LICENSE").read_text(encoding="utf-8")
    assert "Twilio" in (OAI_DIR / "LICENSE").read_text(encoding="utf-8")
    for path in (SUBSET, USAGE_SUBSET):
        source = load_oai(path)["info"]["x-subset-of"]
        assert "twilio/twilio-oai" in source and "(tag 2.6.7)" in source, path
        assert path.name in (OAI_DIR / "README.md").read_text(encoding="utf-8")


def test_validator_is_not_vacuous(simulator: SimulatorServer, schemas: ResponseSchemas) -> None:
    """Every kind of breakage the schema describes is caught: refs, enums, types, formats."""
    good = ok_json(api_get(simulator, f"{ACCOUNT}/Messages.json", {"PageSize": 1}))["messages"][0]
    schemas.assert_valid(P_MESSAGE, good)
    breakages: dict[str, Any] = {
        "status": "bogus",  # enum behind a $ref
        "direction": "outbound",  # enum behind a $ref
        "error_code": "30003",  # integer, not string
        "num_segments": 1,  # string, not integer
        "price": -0.0079,  # string, not number
        "sid": "SM123",  # pattern/length
        "account_sid": "XX" + "0" * 32,
        "date_created": "2026-05-28T20:26:40Z",  # RFC 2822, not ISO 8601
        "date_sent": "Fri, 28 May 2026 20:26:40 +0000",  # 28 May 2026 is a Thursday
        "date_updated": "Thu, 28 May 2026 22:26:40 +0200",  # GMT only
        "from": "5005550006",  # not E.164 (format phone-number)
        "price_unit": "US Dollar",
        "subresource_uris": {"media": "Media.json"},
        "body": 42,
    }
    for field, bad in breakages.items():
        assert schemas.errors(P_MESSAGE, {**good, field: bad}), f"{field}={bad!r} was accepted"
    page = {"messages": [{**good, "status": "bogus"}], "next_page_uri": None}
    assert schemas.errors(P_MESSAGES, page), "a bad message inside a page was accepted"
    assert not schemas.errors(P_MESSAGE, {**good, "date_sent": None, "price": None})  # nullable


def test_every_message_of_the_history_matches_the_schema(
        simulator: SimulatorServer, sim_state: SimState, clock: FakeClock,
        schemas: ResponseSchemas) -> None:
    pages = fetch_pages(simulator, {"PageSize": 1000})
    assert len(pages[0]["messages"]) == 1000
    for page in pages:
        schemas.assert_valid(P_MESSAGES, page)
        assert page["page_size"] == 1000
    messages = [m for page in pages for m in page["messages"]]
    assert len(messages) == len(sim_state.accounts[DEMO_ACCOUNT_SID].messages) == 3600
    seen = {(m["direction"], m["status"]) for m in messages}
    for kind in [("outbound-api", "queued"), ("outbound-api", "sent"),
                 ("outbound-api", "delivered"), ("outbound-api", "undelivered"),
                 ("inbound", "received")]:
        assert kind in seen, f"history lacks {kind}; has {sorted(seen)}"
    # one fetch per kind, validated against the single-message schema
    by_kind = {(m["direction"], m["status"]): m for m in messages}
    for m in by_kind.values():
        fetched = ok_json(api_get(simulator, f"{ACCOUNT}/Messages/{m['sid']}.json"))
        schemas.assert_valid(P_MESSAGE, fetched)
        assert fetched == m
    # what the schema describes in prose
    for m in messages:
        schemas.assert_complete("api.v2010.account.message", m)
        assert m["account_sid"] == DEMO_ACCOUNT_SID
        assert m["uri"] == f"{ACCOUNT}/Messages/{m['sid']}.json"
        if m["status"] == "undelivered":
            assert isinstance(m["error_code"], int) and m["error_message"], m
        elif m["status"] != "failed":
            assert m["error_code"] is None and m["error_message"] is None, m
        if m["direction"] == "inbound":
            assert m["to"] == DEMO_PHONE_NUMBER, m
        else:
            assert m["from"] == DEMO_PHONE_NUMBER, m
        if m["status"] in ("queued", "failed"):
            assert m["date_sent"] is None, m


def test_balance_account_and_numbers_match_the_schema(simulator: SimulatorServer,
                                                      schemas: ResponseSchemas) -> None:
    balance = ok_json(api_get(simulator, f"{ACCOUNT}/Balance.json"))
    schemas.assert_valid(P_BALANCE, balance)
    assert balance == {"account_sid": DEMO_ACCOUNT_SID, "balance": "120.00", "currency": "USD"}
    schemas.assert_complete("api.v2010.account.balance", balance)

    account = ok_json(api_get(simulator, f"{ACCOUNT}.json"))
    schemas.assert_valid(P_ACCOUNT, account)
    assert account["sid"] == DEMO_ACCOUNT_SID and account["status"] == "active"
    assert account["uri"] == f"{ACCOUNT}.json"
    schemas.assert_complete("api.v2010.account", account)

    numbers = ok_json(api_get(simulator, f"{ACCOUNT}/IncomingPhoneNumbers.json"))
    schemas.assert_valid(P_NUMBERS, numbers)
    assert [n["phone_number"] for n in numbers["incoming_phone_numbers"]] == [DEMO_PHONE_NUMBER]
    assert numbers["incoming_phone_numbers"][0]["capabilities"]["sms"] is True
    assert numbers["next_page_uri"] is None
    schemas.assert_complete("api.v2010.account.incoming_phone_number",
                            numbers["incoming_phone_numbers"][0])

    filtered = ok_json(api_get(simulator, f"{ACCOUNT}/IncomingPhoneNumbers.json",
                               {"PhoneNumber": DEMO_PHONE_NUMBER}))
    schemas.assert_valid(P_NUMBERS, filtered)
    assert len(filtered["incoming_phone_numbers"]) == 1
    other = ok_json(api_get(simulator, f"{ACCOUNT}/IncomingPhoneNumbers.json",
                            {"PhoneNumber": "+15005550001"}))
    schemas.assert_valid(P_NUMBERS, other)
    assert other["incoming_phone_numbers"] == []


# -- 2. error bodies -------------------------------------------------------------------------


@pytest.mark.parametrize("path", [f"{ACCOUNT}/Messages.json", f"{ACCOUNT}/Balance.json",
                                  f"{ACCOUNT}.json", f"{ACCOUNT}/IncomingPhoneNumbers.json"])
def test_wrong_credentials_get_401_error_20003(simulator: SimulatorServer, path: str) -> None:
    resp = api_get(simulator, path, auth=(DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN[::-1]))
    assert_twilio_error(resp, 401, 20003)
    assert resp.headers.get("WWW-Authenticate", "").startswith("Basic")
    assert_twilio_error(api_get(simulator, path, auth=None), 401, 20003)
    assert_twilio_error(api_get(simulator, path, auth=("AC" + "ab" * 16, DEMO_AUTH_TOKEN)),
                        401, 20003)


def test_unknown_resources_get_twilio_shaped_404(simulator: SimulatorServer) -> None:
    assert_twilio_error(api_get(simulator, f"{ACCOUNT}/NoSuchResource.json"), 404, 20404)
    assert_twilio_error(api_get(simulator, "/2010-04-01/Nope"), 404, 20404)
    assert_twilio_error(api_get(simulator, f"{ACCOUNT}/Messages/SM{'0' * 32}.json"), 404, 20404)


def test_another_accounts_sid_gets_a_twilio_error(simulator: SimulatorServer) -> None:
    """Valid credentials on an Account SID that is not theirs: an error body, not a dropped line."""
    other = "/2010-04-01/Accounts/AC" + "ab" * 16
    for path in (f"{other}/Balance.json", f"{other}.json", f"{other}/Messages.json"):
        try:
            resp = api_get(simulator, path)
        except requests.ConnectionError as exc:
            pytest.fail(f"GET {path} with valid credentials for {DEMO_ACCOUNT_SID}: the simulator "
                        f"closed the connection without answering ({exc}); Twilio answers 401/404 "
                        "with a JSON error body")
        assert resp.status_code in (401, 403, 404), resp.text
        assert_twilio_error(resp, resp.status_code)


@pytest.mark.parametrize("size", ["0", "1001", "-5", "many"])
def test_page_size_outside_1_to_1000_gets_400(simulator: SimulatorServer, size: str) -> None:
    assert_twilio_error(api_get(simulator, f"{ACCOUNT}/Messages.json", {"PageSize": size}), 400)


@pytest.mark.parametrize("size", [1, 1000])
def test_page_size_bounds_are_accepted(simulator: SimulatorServer, size: int) -> None:
    page = ok_json(api_get(simulator, f"{ACCOUNT}/Messages.json", {"PageSize": size}))
    assert page["page_size"] == size and len(page["messages"]) == size


# -- 3. paging and filters -------------------------------------------------------------------


def test_paging_returns_each_message_once_newest_first(
        simulator: SimulatorServer, sim_state: SimState, clock: FakeClock,
        schemas: ResponseSchemas) -> None:
    pages = fetch_pages(simulator, {"PageSize": 100})
    assert len(pages) == 36
    for i, page in enumerate(pages):
        schemas.assert_valid(P_MESSAGES, page)
        assert page["page"] == i and page["page_size"] == 100
        assert page["start"] == 100 * i and page["end"] == 100 * i + len(page["messages"]) - 1
        assert len(page["messages"]) == 100
        assert (page["previous_page_uri"] is None) == (i == 0)
        q = parse_qs(urlsplit(page["first_page_uri"]).query)
        assert q.get("PageSize") == ["100"] and q.get("Page") == ["0"], page["first_page_uri"]
    assert pages[-1]["next_page_uri"] is None
    assert all(p["next_page_uri"] is not None for p in pages[:-1])

    messages = [m for p in pages for m in p["messages"]]
    sids = [m["sid"] for m in messages]
    assert len(sids) == len(set(sids)), "a message came back on two pages"
    assert set(sids) == {m.sid for m in sim_state.accounts[DEMO_ACCOUNT_SID].messages}
    created = [ts(m["date_created"]) for m in messages]
    assert created == sorted(created, reverse=True), "not newest first by date_created"
    assert messages[0]["date_created"] == rfc2822(clock())
    assert messages[-1]["date_created"] == rfc2822(clock() - 3599)


def test_paging_is_stable_while_new_messages_arrive(
        simulator: SimulatorServer, sim_state: SimState, clock: FakeClock) -> None:
    sim_state.advance()
    before = {m.sid for m in sim_state.accounts[DEMO_ACCOUNT_SID].messages}
    page = ok_json(api_get(simulator, f"{ACCOUNT}/Messages.json", {"PageSize": 100}))
    seen = [m["sid"] for m in page["messages"]]
    while page["next_page_uri"] is not None:
        assert len(seen) <= len(before) + 100, "paging does not end"
        clock.advance(30)  # thirty new messages between two pages
        page = ok_json(requests.get(simulator.url + page["next_page_uri"], auth=AUTH,
                                    timeout=TIMEOUT))
        seen += [m["sid"] for m in page["messages"]]
    assert len(sim_state.accounts[DEMO_ACCOUNT_SID].messages) > len(before)
    assert len(seen) == len(set(seen)), "a message came back twice"
    assert set(seen) == before


def test_to_and_from_filters(simulator: SimulatorServer) -> None:
    full = fetch_all(simulator)
    outbound = [m for m in full if m["direction"] == "outbound-api"]
    inbound = [m for m in full if m["direction"] == "inbound"]
    assert outbound and inbound
    cases = {
        "To=<a recipient>": ({"To": outbound[10]["to"]}, lambda m: m["to"] == outbound[10]["to"]),
        "To=<our number>": ({"To": DEMO_PHONE_NUMBER}, lambda m: m["to"] == DEMO_PHONE_NUMBER),
        "From=<our number>": ({"From": DEMO_PHONE_NUMBER},
                              lambda m: m["from"] == DEMO_PHONE_NUMBER),
        "From=<a sender>": ({"From": inbound[0]["from"]}, lambda m: m["from"] == inbound[0]["from"]),
        "To+From": ({"To": outbound[3]["to"], "From": DEMO_PHONE_NUMBER},
                    lambda m: m["to"] == outbound[3]["to"] and m["from"] == DEMO_PHONE_NUMBER),
    }
    assert_filters(simulator, full, cases)
    nobody = fetch_pages(simulator, {"To": "+15005550009"})
    assert nobody[0]["messages"] == [] and nobody[0]["next_page_uri"] is None


def test_date_sent_filters_in_twilio_python_datetime_format(
        simulator: SimulatorServer, clock: FakeClock) -> None:
    """``DateSent>``/``DateSent<`` as twilio-python sends them; inclusive, on ``date_sent``."""
    full = fetch_all(simulator)
    lo, hi = clock() - 2400, clock() - 1200
    cases = {
        f"DateSent>={iso_z(lo)}": ({"DateSent>": iso_z(lo)},
                                   lambda m: (sent_ts(m) or 0.0) >= lo),
        f"DateSent<={iso_z(hi)}": ({"DateSent<": iso_z(hi)},
                                   lambda m: (sent_ts(m) or float("inf")) <= hi),
        "both": ({"DateSent>": iso_z(lo), "DateSent<": iso_z(hi)},
                 lambda m: lo <= (sent_ts(m) or float("nan")) <= hi),
    }
    problems = [
        mismatch(fetch_all(simulator, **params), [m for m in full if keep(m)], what)
        for what, (params, keep) in cases.items()
    ]
    # the same window through twilio-python, which serialises datetimes this way itself
    account = twilio_client(simulator).api.v2010.accounts(DEMO_ACCOUNT_SID)
    listed = account.messages.list(date_sent_after=datetime.fromtimestamp(lo, UTC),
                                   date_sent_before=datetime.fromtimestamp(hi, UTC),
                                   page_size=1000)
    by_sid = {m["sid"]: m for m in full}
    problems.append(mismatch([by_sid[m.sid] for m in listed],
                             [m for m in full if cases["both"][1](m)], "twilio-python window"))
    errors = [p for p in problems if p]
    assert not errors, "\n".join(errors)


def test_date_sent_filters_in_day_format(
        simulator: SimulatorServer, sim_state: SimState, clock: FakeClock) -> None:
    """``YYYY-MM-DD``: messages sent on / on or before / on or after that (GMT) day."""
    midnight = (int(clock()) // 86400 + 1) * 86400
    # no traffic until 20 minutes before midnight, then 30 minutes at 60/min: two days of history
    rate, sim_state.rate_per_minute = sim_state.rate_per_minute, 0.0
    clock.advance(midnight - 1200 - clock())
    sim_state.advance()
    sim_state.rate_per_minute = rate
    clock.advance(1800)
    sim_state.advance()
    full = fetch_all(simulator)
    day1, day2 = day_of(midnight - 1), day_of(midnight)

    def sent_day(m: dict[str, Any]) -> str | None:
        t = sent_ts(m)
        return None if t is None else day_of(t)

    cases = {
        f"DateSent={day1}": ({"DateSent": day1}, lambda m: sent_day(m) == day1),
        f"DateSent<={day1}": ({"DateSent<": day1}, lambda m: (sent_day(m) or "~") <= day1),
        f"DateSent>={day2}": ({"DateSent>": day2}, lambda m: (sent_day(m) or "") >= day2),
        f"DateSent>={day1}": ({"DateSent>": day1}, lambda m: sent_day(m) is not None),
        f"DateSent<={day2}": ({"DateSent<": day2}, lambda m: sent_day(m) is not None),
    }
    assert_filters(simulator, full, cases)
    earlier = day_of(midnight - 2 * 86400)
    assert fetch_all(simulator, **{"DateSent<": earlier}) == []


# -- 4. the real twilio-python client --------------------------------------------------------


def test_twilio_python_client_reads_the_simulator(simulator: SimulatorServer) -> None:
    account = twilio_client(simulator).api.v2010.accounts(DEMO_ACCOUNT_SID)

    messages = account.messages.list(limit=250, page_size=100)
    assert len(messages) == 250
    assert len({m.sid for m in messages}) == 250
    for m in messages:
        assert m.status in MESSAGE_STATUSES, m.status
        assert isinstance(m.date_created, datetime) and m.date_created.utcoffset() is not None
        assert isinstance(m.date_updated, datetime)
        assert m.date_sent is None or isinstance(m.date_sent, datetime)
        assert m.error_code is None or isinstance(m.error_code, int)
        assert m.account_sid == DEMO_ACCOUNT_SID
    created = [m.date_created for m in messages]
    assert created == sorted(created, reverse=True)
    assert {m.direction for m in messages} <= {"inbound", "outbound-api"}

    one = account.messages(messages[42].sid).fetch()
    assert one.sid == messages[42].sid and one.status == messages[42].status
    assert one.date_created == messages[42].date_created and one.body == messages[42].body

    balance = account.balance.fetch()
    assert float(balance.balance) == 120.0 and balance.currency == "USD"

    info = account.fetch()
    assert info.sid == DEMO_ACCOUNT_SID and info.status == "active" and info.type == "Full"
    assert isinstance(info.date_created, datetime)

    numbers = account.incoming_phone_numbers.list(phone_number=DEMO_PHONE_NUMBER)
    assert [n.phone_number for n in numbers] == [DEMO_PHONE_NUMBER]
    assert numbers[0].capabilities["sms"] is True

    outbound = [m for m in messages if m.direction == "outbound-api"]
    assert [m.from_ for m in outbound] == [DEMO_PHONE_NUMBER] * len(outbound)
    assert {m.to for m in account.messages.list(to=outbound[5].to)} == {outbound[5].to}


def test_twilio_python_client_sees_errors(simulator: SimulatorServer) -> None:
    account = twilio_client(simulator, token="wrong").api.v2010.accounts(DEMO_ACCOUNT_SID)
    with pytest.raises(TwilioRestException) as exc:
        account.balance.fetch()
    assert exc.value.status == 401 and exc.value.code == 20003
    with pytest.raises(TwilioException) as listed:
        account.messages.list(limit=10)
    assert listed.value.args[1].status_code == 401

    good = twilio_client(simulator).api.v2010.accounts(DEMO_ACCOUNT_SID)
    with pytest.raises(TwilioRestException) as missing:
        good.messages("SM" + "0" * 32).fetch()
    assert missing.value.status == 404 and missing.value.code == 20404


# -- 5. scenarios ----------------------------------------------------------------------------


def test_scenario_low_balance(simulator: SimulatorServer, schemas: ResponseSchemas) -> None:
    assert ok_json(api_get(simulator, f"{ACCOUNT}/Balance.json"))["balance"] == "120.00"
    resp = set_scenario(simulator, "low_balance")
    assert resp.status_code == 200 and resp.json() == {"scenario": "low_balance"}
    balance = ok_json(api_get(simulator, f"{ACCOUNT}/Balance.json"))
    schemas.assert_valid(P_BALANCE, balance)
    assert balance["balance"] == "35.00"
    state = ok_json(requests.get(f"{simulator.url}/_simulator/state", timeout=TIMEOUT))
    assert state["scenario"] == "low_balance"


def test_scenario_out_of_credit(simulator: SimulatorServer, schemas: ResponseSchemas) -> None:
    assert set_scenario(simulator, "out_of_credit").status_code == 200
    balance = ok_json(api_get(simulator, f"{ACCOUNT}/Balance.json"))
    schemas.assert_valid(P_BALANCE, balance)
    assert balance["balance"] == "-0.42" and float(balance["balance"]) < 0


def test_scenario_number_lost(simulator: SimulatorServer, schemas: ResponseSchemas) -> None:
    path = f"{ACCOUNT}/IncomingPhoneNumbers.json"
    assert len(ok_json(api_get(simulator, path))["incoming_phone_numbers"]) == 1
    assert set_scenario(simulator, "number_lost").status_code == 200
    for params in (None, {"PhoneNumber": DEMO_PHONE_NUMBER}):
        numbers = ok_json(api_get(simulator, path, params))
        schemas.assert_valid(P_NUMBERS, numbers)
        assert numbers["incoming_phone_numbers"] == [] and numbers["next_page_uri"] is None


def test_scenario_suspended(simulator: SimulatorServer, schemas: ResponseSchemas) -> None:
    assert ok_json(api_get(simulator, f"{ACCOUNT}.json"))["status"] == "active"
    assert set_scenario(simulator, "suspended").status_code == 200
    account = ok_json(api_get(simulator, f"{ACCOUNT}.json"))
    schemas.assert_valid(P_ACCOUNT, account)
    assert account["status"] == "suspended"
    assert set_scenario(simulator, "healthy").status_code == 200
    assert ok_json(api_get(simulator, f"{ACCOUNT}.json"))["status"] == "active"


def test_unknown_scenario_is_refused(simulator: SimulatorServer) -> None:
    resp = set_scenario(simulator, "meteor_strike")
    assert resp.status_code == 400
    assert "low_balance" in resp.json()["scenarios"]
    assert ok_json(api_get(simulator, f"{ACCOUNT}/Balance.json"))["balance"] == "120.00"
    state = ok_json(requests.get(f"{simulator.url}/_simulator/state", timeout=TIMEOUT))
    assert state["scenario"] == "healthy"


# -- 6. statuses follow the clock ------------------------------------------------------------


def test_a_message_moves_from_queued_to_sent_to_final(
        simulator: SimulatorServer, sim_state: SimState, clock: FakeClock,
        schemas: ResponseSchemas) -> None:
    sim_state.advance()  # the history first, so the new message is the newest
    with sim_state.lock:
        msg = sim_state.create_message(sim_state.accounts[DEMO_ACCOUNT_SID], clock())
    created = clock()
    path = f"{ACCOUNT}/Messages/{msg.sid}.json"

    def fetch() -> dict[str, Any]:
        body = ok_json(api_get(simulator, path))
        schemas.assert_valid(P_MESSAGE, body)
        listed = fetch_all(simulator, To=msg.to)
        assert body in listed, "the list and the fetch disagree"
        return body

    queued = fetch()
    assert queued["status"] == "queued" and queued["direction"] == "outbound-api"
    assert queued["date_created"] == queued["date_updated"] == rfc2822(created)
    assert queued["date_sent"] is None and queued["error_code"] is None

    # 2 s later, or sooner for a message that settles that fast (settle_after >= 1.5 s)
    clock.advance(min(2.0, (1.0 + msg.settle_after) / 2))
    sent = fetch()
    assert sent["status"] == "sent"
    assert sent["date_created"] == queued["date_created"]
    assert sent["date_sent"] == sent["date_updated"] == rfc2822(created + 1)
    assert ts(sent["date_updated"]) > ts(queued["date_updated"])

    clock.advance(max(120.0, msg.settle_after + 1) - (clock() - created))
    final = fetch()
    assert final["status"] in FINAL_OUTBOUND
    assert final["date_sent"] == sent["date_sent"]
    assert final["date_updated"] == rfc2822(created + msg.settle_after)
    assert ts(final["date_updated"]) >= ts(sent["date_updated"])
    if final["status"] == "undelivered":
        assert isinstance(final["error_code"], int) and final["error_message"]
    else:
        assert final["error_code"] is None and final["error_message"] is None

    clock.advance(3600)
    assert fetch()["status"] == final["status"], "a final status must not change again"


# -- usage records (spend), from the usage-records subset ------------------------------------------

@pytest.fixture(scope="session")
def full_schemas() -> ResponseSchemas:
    return ResponseSchemas(load_oai(USAGE_SUBSET))


@pytest.mark.parametrize("period", ["ThisMonth", "Today"])
def test_usage_records_match_the_schema_and_add_up(simulator: SimulatorServer, sim_state: SimState,
                                                   full_schemas: ResponseSchemas,
                                                   period: str) -> None:
    path = f"/2010-04-01/Accounts/{{AccountSid}}/Usage/Records/{period}.json"
    body = ok_json(api_get(simulator, f"{ACCOUNT}/Usage/Records/{period}.json",
                           {"Category": "sms"}))
    full_schemas.assert_valid(path, body)
    (record,) = body["usage_records"]
    assert record["category"] == "sms" and record["price"] > 0
    assert int(record["count"]) > 0
    client = twilio_client(simulator)
    records = client.api.v2010.accounts(DEMO_ACCOUNT_SID).usage.records
    listed = (records.this_month if period == "ThisMonth" else records.today).list(category="sms")
    assert float(listed[0].price) == record["price"]
    # a category the simulator does not bill is an empty list, not an error
    other = ok_json(api_get(simulator, f"{ACCOUNT}/Usage/Records/{period}.json",
                            {"Category": "calls"}))
    assert other["usage_records"] == []
