"""Replays of Twilio's signed webhooks: after a restart, and with a parameter's value
extended under the original signature. Real signatures, real HTTP, real stores (SQLite and
PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
from sqlalchemy import create_engine, inspect, text
from twilio.request_validator import RequestValidator

from sms_monitor.app import App, build
from sms_monitor.config import load_settings
from sms_monitor.core.events import InboundEvent
from sms_monitor.core.webhook_params import shape_problem
from sms_monitor.inputs.webhooks import CallbackInbox
from sms_monitor.outputs.http import ExporterServer, build_registry
from sms_monitor.simulator.server import SimulatorServer
from sms_monitor.simulator.state import DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN, SimState
from sms_monitor.storage.audit import SCHEMA_VERSION, KeywordAudit
from tests.conftest import FakeClock, SleepRecorder, demo_env
from tests.test_database import practice
from tests.test_inbound import STOPPER, audit_rows, make_monitor, quiet  # noqa: F401 (fixture)

SIGNER = RequestValidator(DEMO_AUTH_TOKEN)
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
SID = "SM" + "7a" * 16
OTHER_SID = "SM" + "8b" * 16


def stop_params(sid: str = SID, body: str = "STOP") -> dict[str, str]:
    """An incoming STOP as Twilio posts it."""
    return {"AccountSid": DEMO_ACCOUNT_SID, "ApiVersion": "2010-04-01", "Body": body,
            "From": STOPPER, "MessageSid": sid, "NumMedia": "0", "NumSegments": "1",
            "SmsMessageSid": sid, "SmsSid": sid, "SmsStatus": "received",
            "To": "+15005550006"}


def post(url: str, form: str | list[tuple[str, str]] | dict[str, str], signature: str
         ) -> requests.Response:
    body = form if isinstance(form, str) else urlencode(form)
    return requests.post(url, data=body, headers={**FORM, "X-Twilio-Signature": signature},
                         timeout=5)


def sample(monitor: App, name: str, **labels: str) -> float | None:
    return build_registry(monitor.holder, monitor.areas).get_sample_value(name, labels)


def extended(params: dict[str, str], name: str) -> dict[str, str]:
    """``params`` with ``name``'s value extended by the parameter that follows it in
    Twilio's signing order, which is dropped: the same signature holds."""
    names = sorted(params)
    after = names[names.index(name) + 1]
    out = {k: v for k, v in params.items() if k != after}
    out[name] = params[name] + after + params[after]
    return out


# -- shapes --------------------------------------------------------------------------------

def test_twilios_own_requests_have_the_shapes() -> None:
    from sms_monitor.simulator.state import DEMO_PHONE_NUMBER

    assert shape_problem(stop_params()) is None
    status = {"AccountSid": DEMO_ACCOUNT_SID, "MessageSid": "MM" + "A0" * 16,
              "SmsSid": "MM" + "A0" * 16, "MessageStatus": "undelivered",
              "SmsStatus": "undelivered", "ErrorCode": "30003", "From": "MyBrand",
              "To": "whatsapp:+14155238886", "MessagingServiceSid": "MG" + "0" * 32,
              "ApiVersion": "2010-04-01", "RawDlrDoneDate": "2611281200"}
    assert shape_problem(status) is None
    assert shape_problem({**status, "From": "12345", "ErrorCode": ""}) is None  # short code
    assert shape_problem({**status, "To": DEMO_PHONE_NUMBER}) is None


@pytest.mark.parametrize(("name", "value"), [
    ("MessageSid", SID + "NumMedia0"), ("MessageSid", SID[:-1]), ("MessageSid", "XX" + SID[2:]),
    ("MessageSid", "SM" + "g" * 32), ("SmsSid", SID + "x"), ("SmsMessageSid", ""),
    ("SmsSid", OTHER_SID),  # names of one message disagree
    ("AccountSid", DEMO_ACCOUNT_SID + "ApiVersion2010-04-01"),
    ("MessageStatus", "deliveredMessagingServiceSidMG"), ("MessageStatus", "Delivered"),
    ("SmsStatus", "received "), ("ErrorCode", "30003x"), ("ErrorCode", "-1"),
    ("From", STOPPER + "FromCityBOSTON"), ("From", ""), ("To", "+0123"),
    ("From", "averylongsenderid"), ("NumMedia", "0NumSegments1"),
    ("MessagingServiceSid", "MG1"), ("ApiVersion", "2010-04-01ToX"),
])
def test_a_value_without_its_shape_is_named(name: str, value: str) -> None:
    expected = "MessageSid" if value == OTHER_SID else name
    assert shape_problem({**stop_params(), name: value}) == expected


@pytest.mark.parametrize("endpoint", ["/twilio/status", "/twilio/inbound"])
def test_extended_values_and_repeated_names_are_refused(endpoint: str) -> None:
    inbox = CallbackInbox({DEMO_ACCOUNT_SID: DEMO_AUTH_TOKEN})
    params = stop_params() if endpoint.endswith("inbound") else {
        "AccountSid": DEMO_ACCOUNT_SID, "ApiVersion": "2010-04-01", "MessageSid": SID,
        "MessageStatus": "delivered", "SmsSid": SID, "SmsStatus": "delivered",
        "To": STOPPER}
    url = "https://hooks.example" + endpoint
    sig = SIGNER.compute_signature(url, params)
    for name in ("AccountSid", "MessageSid", "MessageStatus" if "status" in endpoint
                 else "From", "ApiVersion"):
        forged = extended(params, name)
        assert SIGNER.validate(url, forged, sig)  # Twilio's scheme lets it through ...
        code = inbox.handle(endpoint, "https://hooks.example", urlencode(forged).encode(),
                            sig, "10.0.0.1")
        # ... the shapes do not (an account no one configured is not even looked up)
        assert code == (403 if name == "AccountSid" else 400)
    twice = urlencode([*params.items(), ("MessageSid", OTHER_SID)]).encode()
    assert inbox.handle(endpoint, "https://hooks.example", twice, sig, "10.0.0.1") == 400
    kind = "inbound" if endpoint.endswith("inbound") else "status"
    assert inbox.counts() == {(kind, "malformed"): 4, (kind, "unknown_account"): 1}
    assert inbox.drain() == []
    # without a valid signature the shapes are not even looked at: 403 whatever it holds
    forged = urlencode(extended(params, "MessageSid")).encode()
    assert inbox.handle(endpoint, "https://hooks.example", forged, None, "10.0.0.2") == 403
    assert inbox.handle(endpoint, "https://hooks.example", forged, "x" * 28, "10.0.0.2") == 403
    assert inbox.counts()[kind, "unsigned"] == inbox.counts()[kind, "bad_signature"] == 1
    # the request as Twilio sent it passes
    assert inbox.handle(endpoint, "https://hooks.example", urlencode(params).encode(), sig,
                        "10.0.0.1") in (200, 204)


# -- through the monitor ---------------------------------------------------------------------

@pytest.fixture(params=["sqlite", "postgresql"])
def audit_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state' / 'audit.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def app_db(pg_url: str, clock: FakeClock) -> str:
    practice(pg_url, datetime.fromtimestamp(clock(), UTC))
    return pg_url


class Running:
    """One daemon's worth: the app, its HTTP server, the deadlines it asked for."""

    def __init__(self, app_db: str, sim: SimulatorServer, clock: FakeClock, audit_url: str
                 ) -> None:
        self.monitor = make_monitor(app_db, sim, clock, audit_url)
        self.deadlines: list[float] = []
        self.monitor.on_deadline = self.deadlines.append
        self.server = self.monitor.exporter(("127.0.0.1", 0)).start()
        self.url = self.server.url + "/twilio/inbound"

    def stop(self) -> None:
        self.server.stop()
        self.monitor.close()


@pytest.fixture
def daemons() -> Iterator[list[Running]]:
    """The daemons a test started (with :func:`start`), stopped at its end."""
    started: list[Running] = []
    yield started
    for d in started:
        d.stop()


def start(daemons: list[Running], app_db: str, sim: SimulatorServer, clock: FakeClock,
          audit_url: str) -> Running:
    daemons.append(Running(app_db, sim, clock, audit_url))
    return daemons[-1]


def keyword_events(monitor: App) -> list[Any]:
    snap = monitor.run_cycle()
    assert snap.webhooks is not None
    return list(snap.webhooks.keywords)


def test_a_stop_replayed_after_a_restart_counts_once(
        daemons: list[Running], app_db: str, quiet: SimulatorServer,  # noqa: F811
        clock: FakeClock, audit_url: str) -> None:
    first = start(daemons, app_db, quiet, clock, audit_url)
    params = stop_params()
    captured = SIGNER.compute_signature(first.url, params)
    assert post(first.url, params, captured).status_code == 200
    assert len(first.deadlines) == 1 and len(keyword_events(first.monitor)) == 1
    assert first.monitor.audit is not None and first.monitor.audit.flush()
    first.stop()
    daemons.remove(first)

    # a restart on the same port would be signed for the same URL; ours differs, so the
    # attacker's capture is re-signed for it: the same request, the same SID
    again = start(daemons, app_db, quiet, clock, audit_url)
    replay = SIGNER.compute_signature(again.url, params)
    answer = post(again.url, params, replay)
    assert answer.status_code == 200  # Twilio (or the replayer) is not asked to retry
    assert answer.content.endswith(b"<Response></Response>")
    assert again.deadlines == []  # no opt-out deadline
    assert keyword_events(again.monitor) == []  # no opt-out event
    assert sample(again.monitor, "sms_monitor_webhook_requests_total",
                  endpoint="inbound", outcome="duplicate") == 1
    assert not sample(again.monitor, "sms_monitor_webhook_requests_total",
                      endpoint="inbound", outcome="accepted")
    assert not sample(again.monitor, "sms_inbound_keywords_total", account="primary",
                      kind="optout")
    assert again.monitor.audit is not None and again.monitor.audit.flush()
    assert [r["message_sid"] for r in audit_rows(audit_url)] == [SID]

    # a new message from the same sender is new
    other = stop_params(OTHER_SID)
    assert post(again.url, other, SIGNER.compute_signature(again.url, other)).status_code == 200
    assert len(again.deadlines) == 1
    again.monitor.audit.flush()
    assert [r["message_sid"] for r in audit_rows(audit_url)] == [SID, OTHER_SID]


def test_an_extended_message_sid_under_the_original_signature_records_nothing(
        daemons: list[Running], app_db: str, quiet: SimulatorServer,  # noqa: F811
        clock: FakeClock, audit_url: str) -> None:
    running = start(daemons, app_db, quiet, clock, audit_url)
    params = stop_params()
    captured = SIGNER.compute_signature(running.url, params)
    assert post(running.url, params, captured).status_code == 200
    forged = extended(params, "MessageSid")  # MessageSid=<sid>NumMedia0, no NumMedia
    assert forged["MessageSid"] == SID + "NumMedia0"
    assert SIGNER.validate(running.url, forged, captured)
    assert post(running.url, forged, captured).status_code == 400
    assert len(running.deadlines) == 1 and len(keyword_events(running.monitor)) == 1
    assert sample(running.monitor, "sms_monitor_webhook_requests_total",
                  endpoint="inbound", outcome="malformed") == 1
    assert sample(running.monitor, "sms_inbound_keywords_total", account="primary",
                  kind="optout") == 1
    assert running.monitor.audit is not None and running.monitor.audit.flush()
    assert [r["message_sid"] for r in audit_rows(audit_url)] == [SID]


def test_an_extended_message_sid_alone_is_refused_and_nothing_is_created(
        daemons: list[Running], app_db: str, quiet: SimulatorServer,  # noqa: F811
        clock: FakeClock, tmp_path: Path) -> None:
    store = tmp_path / "state" / "audit.db"
    running = start(daemons, app_db, quiet, clock, f"sqlite:///{store}")
    params = stop_params()
    captured = SIGNER.compute_signature(running.url, params)
    assert post(running.url, extended(params, "MessageSid"), captured).status_code == 400
    twice = urlencode([*params.items(), ("MessageSid", OTHER_SID)])
    assert post(running.url, twice, captured).status_code == 400
    assert running.deadlines == [] and keyword_events(running.monitor) == []
    assert not store.exists()  # no row was ever queued


# -- the store's layout ----------------------------------------------------------------------

LAYOUT_1 = """CREATE TABLE {t} (id INTEGER NOT NULL PRIMARY KEY {auto}, received_at FLOAT NOT NULL,
account VARCHAR(100) NOT NULL, message_sid VARCHAR(64) NOT NULL, kind VARCHAR(10) NOT NULL,
keyword VARCHAR(40) NOT NULL, number_masked VARCHAR(20) NOT NULL)"""


def test_a_layout_1_store_is_upgraded_and_its_replayed_rows_kept_aside(audit_url: str) -> None:
    engine = create_engine(audit_url)
    if audit_url.startswith("sqlite"):
        Path(audit_url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    auto = "AUTOINCREMENT" if audit_url.startswith("sqlite") else "GENERATED ALWAYS AS IDENTITY"
    table = "sms_monitor_keyword_events"
    with engine.begin() as conn:  # what an older sms-monitor left: a STOP replayed twice
        conn.exec_driver_sql(LAYOUT_1.format(t=table, auto=auto))
        for at, sid in ((1.0, SID), (2.0, OTHER_SID), (3.0, SID), (4.0, SID)):
            conn.execute(text(f"INSERT INTO {table} (received_at, account, message_sid, kind, "
                              "keyword, number_masked) VALUES (:at, 'primary', :sid, 'optout', "
                              "'STOP', '+*********01')"), {"at": at, "sid": sid})
    audit = KeywordAudit(audit_url, accounts={DEMO_ACCOUNT_SID: "primary"})
    try:
        event = InboundEvent(DEMO_ACCOUNT_SID, SID, STOPPER, "optout", "STOP", 5.0)
        assert audit.claim(event, wait=30.0) is False  # known from before the upgrade
        fresh = InboundEvent(DEMO_ACCOUNT_SID, "SM" + "9c" * 16, STOPPER, "optout", "STOP", 6.0)
        assert audit.claim(fresh, wait=30.0) is True
        assert (audit.written, audit.dropped, audit.queued) == (1, 0, 0)
    finally:
        audit.close()
    with engine.connect() as conn:
        kept = conn.execute(text(f"SELECT received_at, message_sid FROM {table} ORDER BY id"))
        assert [tuple(r) for r in kept] == [(1.0, SID), (2.0, OTHER_SID), (6.0, "SM" + "9c" * 16)]
        aside = conn.execute(text(f"SELECT received_at FROM {table}_duplicates ORDER BY id"))
        assert [r[0] for r in aside] == [3.0, 4.0]
        version = conn.execute(text("SELECT version FROM sms_monitor_keyword_audit_version"))
        assert [r[0] for r in version] == [SCHEMA_VERSION]
        unique = [i for i in inspect(conn).get_indexes(table) if i["unique"]]
        assert [i["column_names"] for i in unique] == [["message_sid"]]
    engine.dispose()
    again = KeywordAudit(audit_url)  # an upgraded store is left as it is
    try:
        again.record(event)
        assert again.flush() and (again.written, again.dropped) == (0, 0)
    finally:
        again.close()


def test_a_store_of_a_newer_layout_is_not_written(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    audit = KeywordAudit(url)
    audit.record(InboundEvent(DEMO_ACCOUNT_SID, SID, STOPPER, "optout", "STOP", 1.0))
    assert audit.flush()
    with audit.engine.begin() as conn:
        conn.execute(text("UPDATE sms_monitor_keyword_audit_version SET version = 99"))
    audit.close()
    newer = KeywordAudit(url)
    try:
        assert newer.claim(InboundEvent(DEMO_ACCOUNT_SID, OTHER_SID, STOPPER, "optout", "STOP",
                                        2.0), wait=30.0) is None
        assert newer.last_error == "AuditStoreError" and newer.queued == 1  # kept, not lost
        # a store known to fail is not waited for again
        assert newer.claim(InboundEvent(DEMO_ACCOUNT_SID, SID, STOPPER, "optout", "STOP", 3.0),
                           wait=30.0) is None
    finally:
        newer.close()


# -- status callbacks: why they are not remembered durably ------------------------------------

def test_a_status_callback_replayed_after_a_restart_changes_nothing(
        clock: FakeClock) -> None:
    state = SimState(clock=clock, rate_per_minute=0.0, history_seconds=600.0)
    state.add_account(DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN, "+15005550006")
    sim = SimulatorServer(("127.0.0.1", 0), state).start()
    settings = load_settings(demo_env(sim.url), {"number_type": "toll_free", "window": "10m"})
    acc = state.accounts[DEMO_ACCOUNT_SID]
    with state.lock:
        sid = state.create_message(acc, clock() - 0.5, to="+15550109999").sid
    clock.advance(120)  # settled at the simulator
    status = next(m for m in acc.messages if m.sid == sid).final_status
    params = {"AccountSid": DEMO_ACCOUNT_SID, "ApiVersion": "2010-04-01", "MessageSid": sid,
              "MessageStatus": status, "SmsSid": sid, "SmsStatus": status}
    try:
        for _ in range(2):  # the first run, then a restart
            monitor = build(settings, clock=clock, sleep=SleepRecorder())
            server: ExporterServer = monitor.exporter(("127.0.0.1", 0)).start()
            try:
                monitor.run_cycle()  # the poll reads the message as it is
                window = monitor.accounts[0].window
                before = (window.records[sid], window.latency.count, dict(window.timed))
                url = server.url + "/twilio/status"
                for _ in range(3):
                    assert post(url, params,
                                SIGNER.compute_signature(url, params)).status_code == 204
                monitor.run_cycle()
                record = window.records[sid]
                assert (record.status, record.updated) == (before[0].status, before[0].updated)
                assert (window.latency.count, dict(window.timed)) == before[1:]
            finally:
                server.stop()
                monitor.close()
    finally:
        sim.stop()
