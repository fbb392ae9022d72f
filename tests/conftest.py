from __future__ import annotations

import email
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import Engine, create_engine, insert, text
from sqlalchemy.exc import SQLAlchemyError

from sms_monitor.config import Settings, load_settings
from sms_monitor.simulator.practice_db import create_runbook_schema, runbook_metadata, runbook_rules
from sms_monitor.simulator.server import SimulatorServer
from sms_monitor.simulator.state import (
    DEMO_ACCOUNT_SID,
    DEMO_AUTH_TOKEN,
    DEMO_PHONE_NUMBER,
    SimState,
)

T0 = 1_780_000_000.0  # a fixed "now" for simulated time


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files a test's daemon writes (the alert store) land in its own directory."""
    monkeypatch.chdir(tmp_path)


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim_state(clock: FakeClock) -> SimState:
    state = SimState(clock=clock, rate_per_minute=60.0, history_seconds=3600.0)
    state.add_account(DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN, DEMO_PHONE_NUMBER)
    return state


@pytest.fixture
def simulator(sim_state: SimState) -> Iterator[SimulatorServer]:
    server = SimulatorServer(("127.0.0.1", 0), sim_state).start()
    yield server
    server.stop()


def demo_env(url: str) -> dict[str, str]:
    return {
        "TWILIO_ACCOUNT_SID": DEMO_ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": DEMO_AUTH_TOKEN,
        "TWILIO_PHONE_NUMBER": DEMO_PHONE_NUMBER,
        "SMS_MONITOR_TWILIO_API_URL": url,
        "SMS_MONITOR_STATUSPAGE_URL": "",  # no Internet here: tests that want it set it
    }


def settings_for(url: str, **file: Any) -> Settings:
    # 60 messages a minute would saturate a long code (1/s): call the test number toll-free.
    file.setdefault("number_type", "toll_free")
    return load_settings(demo_env(url), file)


class SleepRecorder:
    """Stands in for time.sleep in retry loops: records the delays, waits for nothing."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def live_state() -> SimState:
    """A simulator on the real clock, for tests of commands that read the wall clock."""
    state = SimState(rate_per_minute=30.0, history_seconds=3600.0)  # half a long code's rate
    state.add_account(DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN, DEMO_PHONE_NUMBER)
    return state


@pytest.fixture
def live_simulator(live_state: SimState) -> Iterator[SimulatorServer]:
    server = SimulatorServer(("127.0.0.1", 0), live_state).start()
    yield server
    server.stop()


PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[Engine]:
    engine = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text("select 1"))
    except SQLAlchemyError as exc:
        pytest.fail(f"PostgreSQL is required on 127.0.0.1:5432 (.ci/run starts it): {exc}")
    yield engine
    engine.dispose()


@pytest.fixture
def pg_url(pg_admin: Engine) -> Iterator[str]:
    name = f"smsm_test_{uuid.uuid4().hex[:12]}"
    with pg_admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with pg_admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# -- alerting peers: a real SMTP server, the application database with the runbook's rules

class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], email.message.Message]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append((list(envelope.rcpt_tos), email.message_from_bytes(envelope.content)))
        return "250 OK"

    def subjects(self) -> list[str]:
        return [" ".join(str(m["Subject"]).split()) for _, m in self.messages]  # unfolded


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Smtp:
    def __init__(self) -> None:
        self.port = _free_port()
        self.inbox = Inbox()
        self.controller: Controller | None = None

    def start(self) -> None:
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"


@pytest.fixture
def smtp() -> Iterator[Smtp]:
    server = Smtp()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def app(pg_url: str, clock: FakeClock) -> str:
    engine = create_engine(pg_url)
    create_runbook_schema(engine)
    with engine.begin() as conn:
        conn.execute(insert(runbook_metadata().tables["notification_rules"]),
                     runbook_rules(["oncall@practice.example"]))
    engine.dispose()
    return pg_url


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[tuple[SimulatorServer, SimState]]:
    state = SimState(clock=clock, rate_per_minute=30.0, history_seconds=3600.0)
    state.add_account(DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN, DEMO_PHONE_NUMBER)
    server = SimulatorServer(("127.0.0.1", 0), state).start()
    yield server, state
    server.stop()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The fault matrices that ran, at the end of the output: the daemon's
    (tests/test_fault_matrix.py) and the alert path's (tests/test_alert_matrix.py)."""
    import sys

    for module, title in (("tests.test_fault_matrix", "fault matrix"),
                          ("tests.test_alert_matrix", "alert path fault matrix")):
        matrix = sys.modules.get(module)
        if matrix is not None and matrix.MATRIX:
            terminalreporter.write_sep("=", title)
            terminalreporter.write_line(matrix.matrix_markdown())
