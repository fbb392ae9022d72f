"""The fault matrix: the real daemon (``sms-monitor run`` in a child process) driven through
Twilio and database failures, with the verdict it gives, the time it takes to show and the
time it takes to recover measured.

One daemon polls the simulator and a throwaway PostgreSQL cluster (see :mod:`tests.pg_cluster`)
every second; each row injects its fault, watches ``sms_health_verdict`` on ``/metrics``
(50 ms steps) until the expected verdict shows, clears the fault and waits for green again.
Two rows start a daemon of their own: the database down at start, and SIGTERM during a hang.

The matrix is printed at the end of the run (``pytest_terminal_summary`` in conftest) and
written to ``$SMS_MONITOR_FAULT_MATRIX`` when that is set.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Connection, Engine, insert, text

from sms_monitor.simulator.practice_db import create_runbook_schema, log_sends, runbook_rules
from sms_monitor.simulator.server import SimulatorServer
from sms_monitor.simulator.state import (
    DEMO_ACCOUNT_SID,
    DEMO_AUTH_TOKEN,
    DEMO_PHONE_NUMBER,
    Faults,
    SimState,
)
from tests.conftest import demo_env
from tests.pg_cluster import MONITOR_ROLE, Cluster, find_bindir, free_port

POLL = 1.0  # seconds: the daemon's poll_interval
REQUEST_TIMEOUT = 1.0
UNREACHABLE_CYCLES = 3
STEP = 0.05  # seconds between looks at /metrics
TWILIO = "twilio:primary"
DATABASE = "database"
VERDICTS = {0.0: "green", 1.0: "yellow", 2.0: "red", -1.0: "unknown"}

CONFIG = f"""\
poll_interval = "{POLL:g}s"
request_timeout = "{REQUEST_TIMEOUT:g}s"
max_retries = 1
unreachable_cycles = {UNREACHABLE_CYCLES}
number_type = "toll_free"
max_pages = 10

[database]
statement_timeout = "1s"
connect_timeout = "1s"
"""

BINDIR = find_bindir()
needs_postgres = pytest.mark.skipif(
    BINDIR is None, reason="no PostgreSQL server binaries (initdb) on this machine: the "
                           "database rows need a throwaway cluster (.ci/run installs postgresql)")


# -- the lab: simulator, cluster, daemon ------------------------------------------------

class Daemon:
    """``sms-monitor run`` in a child process, its /metrics read as a dict of samples."""

    def __init__(self, workdir: Path, env: dict[str, str], settings: str = CONFIG) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        config = workdir / f"monitor-{self.port}.toml"
        config.write_text(settings)
        self.stderr = workdir / f"daemon-{self.port}.err"
        with open(self.stderr, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sms_monitor.cli", "run", "--config", str(config),
                 "--web.listen-address", f"127.0.0.1:{self.port}"],
                env=env, cwd=workdir, stdout=subprocess.DEVNULL, stderr=err)
        self.started = time.monotonic()

    def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        with urllib.request.urlopen(self.base + "/metrics", timeout=2) as resp:
            body = resp.read().decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(body) for s in family.samples}

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.stderr.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return -9
        return int(self.proc.returncode)


@dataclass
class Look:
    """One reading of the daemon's /metrics, ``t`` seconds after the fault went in."""

    t: float
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float]

    def get(self, name: str, **labels: str) -> float | None:
        return self.values.get((name, tuple(sorted(labels.items()))))

    @property
    def verdict(self) -> str:
        value = self.get("sms_health_verdict")
        return "absent" if value is None else VERDICTS.get(value, str(value))

    def status(self, account: str, check: str) -> str:
        value = self.get("sms_health_status", account=account, check=check)
        return "absent" if value is None else VERDICTS.get(value, str(value))

    def future_dated(self) -> float:
        return sum(v for (name, _), v in self.values.items()
                   if name == "sms_monitor_future_dated_records_total")


class Lab:
    """What the rows act on: the simulator, the cluster and the daemon watching both."""

    def __init__(self, workdir: Path, sim: SimulatorServer, cluster: Cluster | None) -> None:
        self.workdir = workdir
        self.sim = sim
        self.cluster = cluster
        self.daemon: Daemon | None = None
        self._lock: Connection | None = None

    def endless_paging_burst(self) -> None:
        """A looping next_page_uri, and more new messages than one page holds, so the next
        read needs the second page (a read that fits one page is whole, loop or not)."""
        self.faults(endless_paging=True)
        state = self.sim.state
        now = state.clock()
        state.load(DEMO_ACCOUNT_SID, 2500, 1.0)
        if self.cluster is not None:  # the application logged them: no unexpected sends
            log_sends(self.cluster.engine(), [now - 1.0 + i / 2500 for i in range(2500)],
                      random.Random(9))

    # the daemon
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "SMS_MONITOR_"))}
        env.update(demo_env(self.sim.url))
        env["SMS_MONITOR_STATE_DIR"] = str(self.workdir)
        if self.cluster is not None:
            env["SMS_MONITOR_DATABASE_URL"] = self.cluster.url(MONITOR_ROLE)
        return env

    def start_daemon(self) -> Daemon:
        self.daemon = Daemon(self.workdir, self.env())
        return self.daemon

    def look(self, since: float) -> Look | None:
        assert self.daemon is not None
        try:
            return Look(time.monotonic() - since, self.daemon.samples())
        except OSError:
            return None  # not listening yet

    def watch(self, since: float, until: Callable[[Look], bool], timeout: float,
              trace: list[tuple[float, str]]) -> Look | None:
        """Read /metrics every STEP until ``until`` holds (that Look) or ``timeout`` seconds
        from now (None); every change of verdict goes into ``trace``."""
        deadline = time.monotonic() + timeout
        while True:
            look = self.look(since)
            if look is not None:
                if not trace or trace[-1][1] != look.verdict:
                    trace.append((look.t, look.verdict))
                if until(look):
                    return look
            if time.monotonic() >= deadline:
                return None
            time.sleep(STEP)  # the next look at a child process's /metrics

    # the simulator
    def faults(self, **values: object) -> None:
        resp = requests.post(f"{self.sim.url}/_simulator/faults", json=values, timeout=5)
        assert resp.status_code == 200, resp.text

    def scenario(self, name: str) -> None:
        resp = requests.post(f"{self.sim.url}/_simulator/scenario", data={"name": name},
                             timeout=5)
        assert resp.status_code == 200, resp.text

    # the database
    @property
    def pg(self) -> Cluster:
        assert self.cluster is not None
        return self.cluster

    def lock_clients(self) -> None:
        conn = self.pg.engine().connect()
        conn.execute(text("BEGIN"))
        conn.execute(text("LOCK TABLE clients IN ACCESS EXCLUSIVE MODE"))
        self._lock = conn

    def unlock_clients(self) -> None:
        if self._lock is not None:
            self._lock.rollback()
            self._lock.close()
            self._lock = None


def seed(engine: Engine) -> None:
    """A healthy little practice: clients with E.164 numbers (none opted out), SMS on in
    every settings row, the runbook's alert rules."""
    md = create_runbook_schema(engine)
    t = md.tables
    clients = [{"id": i, "portal_user_id": 1000 + i, "name": f"Client {i}",
                "phone": f"+1202555{i:04d}", "cell_phone": None, "has_opted_out": False}
               for i in range(1, 41)]
    with engine.begin() as conn:
        conn.execute(insert(t["clients"]), clients)
        conn.execute(insert(t["appointment_notification_settings"]),
                     [{"client_id": c["id"], "send_via_sms": True, "send_via_email": True}
                      for c in clients])
        conn.execute(insert(t["notification_rules"]), runbook_rules(["oncall@practice.example"]))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fault-matrix")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster | None]:
    if BINDIR is None:
        yield None
        return
    pg = Cluster(BINDIR)
    try:
        pg.init()
        pg.start()
        pg.create_database()
        seed(pg.engine())
        pg.sql(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {MONITOR_ROLE}")
        yield pg
    finally:
        pg.destroy()  # stopped (immediately) and removed, whatever happened


@pytest.fixture(scope="module")
def lab(workdir: Path, cluster: Cluster | None) -> Iterator[Lab]:
    state = SimState(rate_per_minute=30.0, history_seconds=3600.0)
    state.add_account(DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN, DEMO_PHONE_NUMBER)
    if cluster is not None:  # the application logs every SMS it hands to Twilio
        writer, rng = cluster.engine(), random.Random(5)
        state.on_outbound = lambda sent: log_sends(writer, sent, rng)
    state.advance()  # the hour of history, logged before the daemon's first read
    sim = SimulatorServer(("127.0.0.1", 0), state).start()
    lab = Lab(workdir, sim, cluster)
    try:
        yield lab
    finally:
        if lab.daemon is not None:
            lab.daemon.stop()
        lab.unlock_clients()
        sim.stop()


@pytest.fixture(scope="module")
def daemon(lab: Lab) -> Daemon:
    """The shared daemon, green before the first row."""
    d = lab.start_daemon()
    trace: list[tuple[float, str]] = []
    green = lab.watch(d.started, lambda look: look.verdict == "green", 40.0, trace)
    assert green is not None, f"the daemon never went green: {trace}\n{d.tail()}"
    return d


# -- the rows ---------------------------------------------------------------------------

Action = Callable[[Lab], None]


@dataclass(frozen=True)
class Row:
    id: str
    fault: str
    expected: str  # as the matrix prints it
    inject: Action
    clear: Action
    first: str  # the first verdict other than green after the fault: "unknown" or "red"
    red: tuple[str, str] | None  # (account, check) red at the end, None: no red expected
    source: str | None = None  # the source unreadable meanwhile, if any
    within: float | None = None  # seconds from injection the first verdict must show within
    timeout: float = 30.0  # seconds to wait for each expected verdict
    needs_db: bool = False


def _faults(**values: object) -> Action:
    return lambda lab: lab.faults(**values)


def _clear(*names: str) -> Action:
    defaults = vars(Faults())
    return lambda lab: lab.faults(**{n: defaults[n] for n in names})


def _scenario(name: str) -> Action:
    return lambda lab: lab.scenario(name)


def _sql(*statements: str) -> Action:
    return lambda lab: lab.pg.sql(*statements)


# The next cycle starts within one poll interval of the injection; "within two poll
# intervals of the cycle that follows" is at most three intervals from the injection.
NEXT_TWO = 3 * POLL

ROWS = [
    Row("auth_401", "Twilio 401 (auth_failure scenario)", "red at once (authentication)",
        _scenario("auth_failure"), _scenario("healthy"), "red", ("primary", "authentication")),
    Row("number_404", "404 on the number (number_not_found)",
        "unknown, red after 3 cycles (api_response_time)",
        _faults(number_not_found=True), _clear("number_not_found"), "unknown",
        ("primary", "api_response_time"), TWILIO),
    Row("rate_limit_storm", "429 storm, Retry-After 1 (rate_limit_every=1)",
        "unknown within 2 poll intervals, then red",
        _faults(rate_limit_every=1, retry_after=1), _clear("rate_limit_every", "retry_after"),
        "unknown", ("primary", "api_response_time"), TWILIO, within=NEXT_TWO, timeout=40.0),
    Row("server_5xx", "5xx on every request (server_error_every=1)", "unknown, then red",
        _faults(server_error_every=1), _clear("server_error_every"), "unknown",
        ("primary", "api_response_time"), TWILIO),
    Row("hang", f"hang past the timeout (delay={2 * REQUEST_TIMEOUT:g}s)",
        "red (api_response_time: timeout) within 2 poll intervals",
        _faults(delay=2 * REQUEST_TIMEOUT), _clear("delay"), "red",
        ("primary", "api_response_time"), within=NEXT_TWO),
    Row("malformed_json", "malformed JSON (malformed_messages)", "unknown, then red",
        _faults(malformed_messages=True), _clear("malformed_messages"), "unknown",
        ("primary", "api_response_time"), TWILIO),
    Row("truncated_json", "truncated JSON (truncated_json)", "unknown, then red",
        _faults(truncated_json=True), _clear("truncated_json"), "unknown",
        ("primary", "api_response_time"), TWILIO),
    Row("endless_paging", "endless next_page_uri, with a burst of 2,500 new messages",
        "unknown (window not read whole), never green; then red",
        Lab.endless_paging_burst, _clear("endless_paging"), "unknown",
        ("primary", "api_response_time"), TWILIO, timeout=15.0),
    Row("db_killed", "database killed mid-run (pg_ctl stop -m immediate), restarted",
        "unknown, red after 3 cycles (database/connection)",
        lambda lab: lab.pg.stop_hard(), lambda lab: lab.pg.start(), "unknown",
        ("database", "connection"), DATABASE, needs_db=True),
    Row("db_slow", "slow queries (clients locked; statement_timeout 1s)",
        "unknown, then red (database/connection)",
        Lab.lock_clients, Lab.unlock_clients, "unknown", ("database", "connection"), DATABASE,
        timeout=40.0, needs_db=True),
    Row("db_missing_column", "missing column (clients.has_opted_out renamed)",
        "unknown, then red (database/connection)",
        _sql("ALTER TABLE clients RENAME COLUMN has_opted_out TO x"),
        _sql("ALTER TABLE clients RENAME COLUMN x TO has_opted_out"), "unknown",
        ("database", "connection"), DATABASE, needs_db=True),
    Row("db_no_select", "role without SELECT on notification_logs",
        "unknown, then red (database/connection)",
        _sql(f"REVOKE SELECT ON notification_logs FROM {MONITOR_ROLE}"),
        _sql(f"GRANT SELECT ON notification_logs TO {MONITOR_ROLE}"), "unknown",
        ("database", "connection"), DATABASE, needs_db=True),
    # last of the shared daemon's rows: future-dated records may hold its window's horizon
    Row("clock_skew", "clock skew +3600 s (future-dated messages)",
        "unknown (future-dated counted, left out, window checks unknown), then red",
        _faults(clock_skew=3600.0), _clear("clock_skew"), "unknown",
        ("primary", "api_response_time"), TWILIO, timeout=15.0),
]

# rows with a daemon of their own (run by their own tests, listed in the matrix all the same)
DB_DOWN_AT_START = "db_down_at_start"
SIGTERM = "sigterm_in_hang"
ORDER = [r.id for r in ROWS[:8]] + [DB_DOWN_AT_START] + [r.id for r in ROWS[8:]] + [SIGTERM]


@dataclass
class Result:
    fault: str
    expected: str
    trace: list[tuple[float, str]] = field(default_factory=list)
    shown: float | None = None
    red_at: float | None = None
    recovered: float | None = None
    outcome: str = "FAILED"
    note: str = ""

    def given(self) -> str:
        steps = " → ".join(f"{v} ({t:.1f} s)" for t, v in self.trace)
        return (steps or "-") + (f"; {self.note}" if self.note else "")


MATRIX: dict[str, Result] = {}


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def matrix_markdown() -> str:
    lines = ["| fault | expected verdict | verdict given | time to show | time to red "
             "| time to recover | row |",
             "|---|---|---|---|---|---|---|"]
    for key in ORDER:
        r = MATRIX.get(key)
        if r is not None:
            lines.append(f"| {r.fault} | {r.expected} | {r.given()} | {_secs(r.shown)} "
                         f"| {_secs(r.red_at)} | {_secs(r.recovered)} | {r.outcome} |")
    return "\n".join(lines)


def write_matrix() -> None:
    target = os.environ.get("SMS_MONITOR_FAULT_MATRIX")
    if target and MATRIX:
        Path(target).write_text(matrix_markdown() + "\n")


@contextmanager
def recorded(key: str, result: Result) -> Iterator[Result]:
    MATRIX[key] = result
    try:
        yield result
    except BaseException:
        result.outcome = "FAILED"
        raise
    else:
        result.outcome = "ok"
    finally:
        write_matrix()


def observe(lab: Lab, row: Row, result: Result, since: float) -> None:
    """Watch from ``since`` (the injection) until the row's expected verdicts have shown,
    asserting the way there."""
    trace = result.trace

    def settled(look: Look) -> bool:
        return look.verdict not in ("green", "absent")

    first = lab.watch(since, settled, row.timeout, trace)
    assert first is not None, f"{row.id}: still green {row.timeout:g} s after the fault"
    result.shown = first.t
    if row.first != "any":
        assert first.verdict == row.first, f"{row.id}: first verdict {first.verdict}"
    if row.source is not None and first.verdict == "unknown":
        assert first.get("sms_monitor_up", source=row.source) == 0.0
    if row.red is not None:
        account, check = row.red

        def red(look: Look) -> bool:
            assert look.verdict != "green", f"{row.id}: green again before red ({trace})"
            return look.verdict == "red" and look.status(account, check) == "red"

        last = lab.watch(since, red, row.timeout, trace)
        assert last is not None, f"{row.id}: no red {account}/{check} ({trace})"
        result.red_at = last.t
        if row.source is not None and row.first == "unknown":
            cycles = last.get("sms_monitor_source_unreadable_cycles", source=row.source)
            assert cycles is not None and cycles >= UNREACHABLE_CYCLES, cycles
    if row.within is not None:
        assert result.shown <= row.within, \
            f"{row.id}: showed after {result.shown:.1f} s, not within {row.within:g} s"


def recover(lab: Lab, row: Row, result: Result) -> None:
    cleared = time.monotonic()
    row.clear(lab)
    trace: list[tuple[float, str]] = []
    green = lab.watch(cleared, lambda look: look.verdict == "green", 40.0, trace)
    if green is not None:
        result.recovered = green.t
    else:
        result.note = f"not green 40 s after clearing ({trace})"


@pytest.mark.parametrize("row", [
    pytest.param(r, id=r.id, marks=[
        *([needs_postgres] if r.needs_db else [])])
    for r in ROWS])
def test_fault(row: Row, lab: Lab, daemon: Daemon) -> None:
    trace: list[tuple[float, str]] = []
    assert lab.watch(time.monotonic(), lambda look: look.verdict == "green", 40.0, trace), \
        f"not green before the fault: {trace}"
    result = Result(row.fault, row.expected)
    with recorded(row.id, result):
        injected = time.monotonic()
        row.inject(lab)
        try:
            observe(lab, row, result, injected)
            if row.id == "clock_skew":
                skewed = lab.watch(injected, lambda look: look.future_dated() > 0, 5.0,
                                   result.trace)
                assert skewed is not None, "future-dated messages not counted"
        finally:
            recover(lab, row, result)
        assert result.recovered is not None, result.note
        assert daemon.proc.poll() is None, daemon.tail()


@needs_postgres
def test_database_down_at_start(lab: Lab, daemon: Daemon, workdir: Path) -> None:
    """A daemon started while its database is down: unknown, then red; green once it is up."""
    result = Result("database down at start (cluster stopped), then started",
                    "unknown, red after 3 cycles (database/connection)")
    row = Row(DB_DOWN_AT_START, result.fault, result.expected, lambda lab: None,
              lambda lab: lab.pg.start(), "unknown", ("database", "connection"), DATABASE)
    with recorded(DB_DOWN_AT_START, result):
        lab.pg.stop_hard()
        own = Lab(workdir, lab.sim, lab.cluster)
        fresh = own.start_daemon()
        try:
            observe(own, row, result, fresh.started)
            # the daemon answers even before its first cycle: its verdict is never green
            assert all(v != "green" for _, v in result.trace), result.trace
            recover(own, row, result)
            assert result.recovered is not None, result.note
        finally:
            if not lab.pg.running():
                lab.pg.start()
            assert fresh.stop() == 0, fresh.tail()


def test_sigterm_in_the_middle_of_a_hang(workdir: Path, live_state: SimState) -> None:
    """SIGTERM while a Twilio request hangs: the daemon exits 0 within 5 s."""
    result = Result("SIGTERM during a hang (delay 60 s, request_timeout raised to 30 s)",
                    "exit status 0 within 5 s")
    with recorded(SIGTERM, result):
        sim = SimulatorServer(("127.0.0.1", 0), live_state).start()
        try:
            lab = Lab(workdir / "sigterm", sim, None)
            lab.workdir.mkdir()
            # a request that is still waiting when the signal comes
            lab.faults(delay=60.0)
            d = Daemon(lab.workdir, lab.env(),
                       CONFIG.replace(f'request_timeout = "{REQUEST_TIMEOUT:g}s"',
                                      'request_timeout = "30s"'))
            lab.daemon = d
            deadline = time.monotonic() + 20
            while live_state.requests < 1 and time.monotonic() < deadline:
                time.sleep(STEP)  # until the daemon's first request is held
            assert live_state.requests >= 1, d.tail()
            signalled = time.monotonic()
            d.proc.send_signal(signal.SIGTERM)
            try:
                rc = d.proc.wait(timeout=10)
            finally:
                d.stop()
            result.shown = time.monotonic() - signalled
            result.trace = [(result.shown, f"exit {rc}")]
            assert rc == 0, d.tail()
            assert result.shown < 5.0
        finally:
            sim.stop()


def test_matrix_is_printed() -> None:
    """(Runs last: writes the matrix file once more with every row in it.)"""
    write_matrix()
    assert all(key in ORDER for key in MATRIX)
