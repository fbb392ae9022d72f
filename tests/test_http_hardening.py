"""The HTTP surface under attack, against ``sms-monitor run`` in a child process.

The daemon runs with 256 file descriptors and short limits (``[web]``: 2 s per request, 2 s
idle, 16 connections per source, 3 requests per connection). Attacks come from 127.0.0.2,
the operators' probes from 127.0.0.1. Deadlines are real time here (they are what is
tested); each wait is bounded and ends as soon as the server acts.
"""

from __future__ import annotations

import contextlib
import re
import resource
import select
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from twilio.request_validator import RequestValidator

from sms_monitor.simulator.server import SimulatorServer
from sms_monitor.simulator.state import DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN, DEMO_PHONE_NUMBER, SimState
from tests.conftest import demo_env
from tests.pg_cluster import free_port

ATTACKER = "127.0.0.2"
LIMITS = """
[web]
request_timeout = "2s"
idle_timeout = "2s"
max_connections_per_source = 16
max_requests_per_connection = 3
"""
SID = "SM" + "ab" * 16


def _fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


class Run:
    """``sms-monitor run`` with 256 descriptors; its stderr kept for the failure message."""

    def __init__(self, workdir: Path, sim_url: str, *args: str, config: str = LIMITS,
                 env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (workdir / "sms.toml").write_text(config)
        self.err = workdir / f"run-{self.port}.err"
        environment = {**demo_env(sim_url), "SMS_MONITOR_STATE_DIR": str(workdir / "state"),
                       "PATH": "/usr/bin:/bin", **(env or {})}
        with open(self.err, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sms_monitor.cli", "run", "--config",
                 str(workdir / "sms.toml"), "--web.listen-address", f"127.0.0.1:{self.port}",
                 *args], env=environment, cwd=workdir, stdout=subprocess.DEVNULL, stderr=err,
                preexec_fn=_fd_limit)

    def wait_ready(self, url: str | None = None) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.err.read_text()
            with contextlib.suppress(requests.RequestException):
                if requests.get((url or self.url) + "/healthz", timeout=1,
                                verify=False).status_code == 200:
                    return
            select.select([], [], [], 0.1)
        raise AssertionError("not serving: " + self.err.read_text())

    def metric(self, name: str, **labels: str) -> float:
        text = requests.get(self.url + "/metrics", timeout=5).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return float(sample.value)
        raise AssertionError(f"{name}{labels} not exported")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    state = SimState(rate_per_minute=60.0, history_seconds=600.0)
    state.add_account(DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN, DEMO_PHONE_NUMBER)
    server = SimulatorServer(("127.0.0.1", 0), state).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def daemon(sim: SimulatorServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    run = Run(tmp_path_factory.mktemp("hardening"), sim.url)
    run.wait_ready()
    yield run
    run.stop()


def connect(port: int, source: str = ATTACKER) -> socket.socket:
    s = socket.socket()
    s.bind((source, 0))
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    return s


def exchange(port: int, payload: bytes, source: str = ATTACKER) -> bytes:
    """Sends ``payload`` in one write and reads until the server closes (at most 10 s)."""
    with connect(port, source) as s:
        s.sendall(payload)
        out = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            out += chunk
        return out


def statuses(answer: bytes) -> list[int]:
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)]


def closed(s: socket.socket) -> bool:
    """Whether the server has closed ``s`` (EOF or reset), without waiting."""
    try:
        ready, _, _ = select.select([s], [], [], 0)
        return bool(ready) and s.recv(65536) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


# ------------------------------------------------------------------ slow clients


def test_a_slowloris_from_another_address_never_starves_the_probes(daemon: Run) -> None:
    refused_before = daemon.metric("sms_monitor_http_connections_refused_total",
                                   listener="web", reason="per_source")
    attackers: list[socket.socket] = []
    for _ in range(300):  # more than the daemon's 256 descriptors
        with contextlib.suppress(OSError):
            s = connect(daemon.port)
            with contextlib.suppress(OSError):
                s.send(b"GET / HTTP/1.1\r\nHost: x\r\n")  # a head that never ends
            attackers.append(s)
    try:
        for _ in range(20):  # the operators' probes and scrapes are all answered
            assert requests.get(daemon.url + "/healthz", timeout=2).status_code == 200
        assert requests.get(daemon.url + "/metrics", timeout=2).status_code == 200
        assert daemon.metric("sms_monitor_http_connections_refused_total", listener="web",
                             reason="per_source") - refused_before >= 300 - 16
        # the 16 admitted ones trickle a byte every 0.3 s: the 2 s deadline still ends them
        started = time.monotonic()
        open_ = [s for s in attackers if not closed(s)]
        assert 0 < len(open_) <= 16
        while open_ and time.monotonic() - started < 6:
            select.select([], [], [], 0.3)
            for s in open_:
                with contextlib.suppress(OSError):
                    s.send(b"X")
            open_ = [s for s in open_ if not closed(s)]
        assert open_ == [], "slow heads outlived request_timeout"
        assert time.monotonic() - started < 2 + 1.5
        assert daemon.metric("sms_monitor_http_deadline_exceeded_total", listener="web") >= 1
    finally:
        for s in attackers:
            s.close()


def test_an_idle_keep_alive_connection_is_closed(daemon: Run) -> None:
    with connect(daemon.port, "127.0.0.1") as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while not answer.endswith(b"\r\n\r\nok\n"):
            answer += s.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        ready, _, _ = select.select([s], [], [], 6)
        assert ready and s.recv(10) == b""
        assert 1.5 < time.monotonic() - started < 3.5


def test_keep_alive_ends_after_max_requests_per_connection(daemon: Run) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    answer = exchange(daemon.port, request * 3, "127.0.0.1")
    assert statuses(answer) == [200, 200, 200]
    assert answer.count(b"Connection: close") == 1 and answer.rfind(b"Connection: close") > \
        answer.rfind(b"HTTP/1.1 200", 0, answer.rfind(b"HTTP/1.1 200"))


# ------------------------------------------------------------------ request smuggling


@pytest.mark.parametrize(("name", "payload"), [
    ("content-length and transfer-encoding",
     b"POST /twilio/status HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("two equal content-lengths",
     b"POST /twilio/status HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n"
     b"\r\nabcGET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("two different content-lengths",
     b"POST /twilio/status HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 40\r\n"
     b"\r\nabcGET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("a bare LF", b"GET /healthz HTTP/1.1\nHost: x\r\n\r\nGET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("a folded header",
     b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n Transfer-Encoding: chunked\r\n\r\n"),
    ("a transfer coding other than chunked",
     b"POST /twilio/status HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
     b"0\r\n\r\nGET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("a padded content-length name",
     b"POST /twilio/status HTTP/1.1\r\nHost: x\r\nContent-Length : 3\r\n\r\nabc"),
])
def test_ambiguous_requests_get_400_and_the_connection_closes(daemon: Run, name: str,
                                                              payload: bytes) -> None:
    answer = exchange(daemon.port, payload)
    assert statuses(answer) == [400], f"{name}: {answer[:300]!r}"


def test_an_ambiguous_request_pipelined_after_a_good_one_is_refused(daemon: Run) -> None:
    answer = exchange(daemon.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                      b"POST /twilio/status HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                      b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert statuses(answer) == [200, 400]


def test_a_body_is_never_read_as_a_request(daemon: Run) -> None:
    smuggled = b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"
    # answered 404 without reading the body: the connection closes, the body is never parsed
    answer = exchange(daemon.port, b"POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: "
                      + str(len(smuggled)).encode() + b"\r\n\r\n" + smuggled)
    assert statuses(answer) == [404] and b"ready" not in answer
    # a GET's unread body is drained: the next real request is the next answer
    answer = exchange(daemon.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: "
                      + str(len(smuggled)).encode() + b"\r\n\r\n" + smuggled
                      + b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert statuses(answer) == [200, 404]


def test_an_oversized_body_is_refused_before_it_is_read(daemon: Run) -> None:
    with connect(daemon.port) as s:
        s.sendall(b"POST /twilio/status HTTP/1.1\r\nHost: x\r\nContent-Type: application/"
                  b"x-www-form-urlencoded\r\nContent-Length: 100000000\r\n\r\n")
        answer = s.recv(65536)
        assert statuses(answer) == [413]
        ready, _, _ = select.select([s], [], [], 5)
        assert ready and s.recv(10) == b""  # closed: the 100 MB are never drained


# ------------------------------------------------------------------ Twilio's door


def signed_post(url: str, signed_for: str, sid: str = SID) -> int:
    params = {"AccountSid": DEMO_ACCOUNT_SID, "MessageSid": sid, "MessageStatus": "delivered",
              "ApiVersion": "2010-04-01"}
    signature = RequestValidator(DEMO_AUTH_TOKEN).compute_signature(signed_for, params)
    return requests.post(url, data=urlencode(params), timeout=5, headers={
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": signature}).status_code


def test_the_webhook_door_apart_from_the_operators_door(
        sim: SimulatorServer, tmp_path: Path) -> None:
    hook_port = free_port()
    run = Run(tmp_path, sim.url, "--web.webhook-address", f"127.0.0.1:{hook_port}",
              env={"SMS_MONITOR_PUBLIC_URL": "https://sms.example.org"})
    try:
        run.wait_ready()
        hooks = f"http://127.0.0.1:{hook_port}"
        for path in ("/metrics", "/", "/healthz"):  # the operators' pages are not here
            assert requests.get(hooks + path, timeout=5).status_code == 404
        # and the webhooks are not on the operators' door
        assert signed_post(run.url + "/twilio/status",
                           "https://sms.example.org/twilio/status") == 404
        # signatures are checked against public_url alone, whatever the Host header says
        assert signed_post(hooks + "/twilio/status", hooks + "/twilio/status") == 403
        assert signed_post(hooks + "/twilio/status", "https://sms.example.org/twilio/status") \
            == 204
    finally:
        run.stop()


@pytest.mark.parametrize("env", [{}, {"SMS_MONITOR_WEBHOOK_LISTEN_ADDRESS": "0.0.0.0:0"}])
def test_webhooks_off_loopback_need_public_url(sim: SimulatorServer, tmp_path: Path,
                                               env: dict[str, str]) -> None:
    args = () if env else ("--web.webhook-address", "0.0.0.0:0")
    result = subprocess.run(
        [sys.executable, "-m", "sms_monitor.cli", "run", *args],
        env={**demo_env(sim.url), **env, "PATH": "/usr/bin:/bin"}, cwd=tmp_path,
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "webhook" in lines[0] and "public_url" in lines[0], lines


def test_without_public_url_webhooks_stay_off_a_public_listener(
        sim: SimulatorServer, tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sms_monitor.cli", "run", "--web.listen-address",
         f"0.0.0.0:{port}"], env={**demo_env(sim.url), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException):
                if requests.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            select.select([], [], [], 0.1)
        # a request signed for the URL its Host header names is not taken on trust
        assert signed_post(url + "/twilio/status", url + "/twilio/status") == 404
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert "webhooks_not_served" in err


# ------------------------------------------------------------------ TLS


@pytest.fixture(scope="module")
def tls_daemon(sim: SimulatorServer, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[tuple[Run, Path]]:
    workdir = tmp_path_factory.mktemp("tls")
    crt, key = workdir / "server.crt", workdir / "server.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(crt), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    (workdir / "web.yml").write_text("tls_server_config:\n  cert_file: server.crt\n"
                                     "  key_file: server.key\n")
    run = Run(workdir, sim.url, "--web.config.file", str(workdir / "web.yml"))
    run.url = run.url.replace("http://", "https://")
    run.wait_ready()
    yield run, crt
    run.stop()


def test_a_tls_handshake_that_never_ends_is_cut_at_request_timeout(
        tls_daemon: tuple[Run, Path]) -> None:
    run, crt = tls_daemon
    silent = [connect(run.port) for _ in range(16)]  # connected, never a ClientHello
    try:
        started = time.monotonic()
        assert requests.get(run.url + "/healthz", verify=str(crt), timeout=2).status_code == 200
        ready, _, _ = select.select(silent, [], [], 6)
        while len(ready) < len(silent) and time.monotonic() - started < 6:
            ready, _, _ = select.select(silent, [], [], 6 - (time.monotonic() - started))
        assert len(ready) == len(silent) and all(closed(s) for s in silent)
        assert time.monotonic() - started < 2 + 1.5
    finally:
        for s in silent:
            s.close()
    context = ssl.create_default_context(cafile=str(crt))
    with socket.create_connection(("127.0.0.1", run.port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert tls.recv(65536).startswith(b"HTTP/1.1 200")


def test_the_container_health_check_probes_over_tls(tls_daemon: tuple[Run, Path]) -> None:
    run, crt = tls_daemon
    web = crt.parent / "web.yml"

    def probe(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sms_monitor.cli", "probe", *args],
            env={"PATH": "/usr/bin:/bin", "SMS_MONITOR_LISTEN_ADDRESS": f"0.0.0.0:{run.port}",
                 **env}, capture_output=True, text=True, timeout=30)

    # as the Dockerfile runs it: the listen address and the web config from the environment
    ok = probe(SMS_MONITOR_WEB_CONFIG_FILE=str(web))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == f"sms-monitor probe: https://127.0.0.1:{run.port}/healthz: 200\n"
    assert probe("--web.config.file", str(web)).returncode == 0
    plain = probe()  # no web config: plain HTTP against a TLS listener fails, and says so
    assert plain.returncode == 1 and plain.stderr.startswith("sms-monitor probe: http://")


# ------------------------------------------------------------------ basic auth, client certificates


@pytest.fixture(scope="module")
def locked_daemon(sim: SimulatorServer, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[tuple[Run, dict[str, Path]]]:
    """TLS with client certificates narrowed to one name, a security header, one user."""
    import bcrypt

    from tests.tls_certs import self_signed

    workdir = tmp_path_factory.mktemp("locked")
    server_crt, _ = self_signed(workdir, "server")
    ok_crt, ok_key = self_signed(workdir, "prometheus", sans="DNS:prometheus.internal",
                                 cn="prometheus")
    bad_crt, bad_key = self_signed(workdir, "intruder", sans="DNS:intruder.internal",
                                   cn="intruder")
    (workdir / "clients.pem").write_text(ok_crt.read_text() + bad_crt.read_text())
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    (workdir / "web.yml").write_text(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: clients.pem\n"
        "  client_allowed_sans: [prometheus.internal]\n"
        "http_server_config:\n  headers:\n    Strict-Transport-Security: max-age=31536000\n"
        f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    run = Run(workdir, sim.url, "--web.config.file", str(workdir / "web.yml"))
    run.url = run.url.replace("http://", "https://")
    files = {"ca": server_crt, "ok_crt": ok_crt, "ok_key": ok_key, "bad_crt": bad_crt,
             "bad_key": bad_key}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert run.proc.poll() is None, run.err.read_text()
        with contextlib.suppress(requests.RequestException):
            if requests.get(run.url + "/healthz", cert=(str(ok_crt), str(ok_key)),
                            verify=str(server_crt), timeout=1).status_code == 200:
                break
        select.select([], [], [], 0.1)
    yield run, files
    run.stop()


class as_prometheus:  # noqa: N801 - reads as what it does
    """requests.get with the allowed client certificate and the server's CA."""

    def __init__(self, f: dict[str, Path]) -> None:
        self.kw = {"cert": (str(f["ok_crt"]), str(f["ok_key"])), "verify": str(f["ca"])}

    def get(self, url: str, **kw: object) -> requests.Response:
        return requests.get(url, **self.kw, **kw)  # type: ignore[arg-type]


def test_client_certificates_and_passwords(locked_daemon: tuple[Run, dict[str, Path]]) -> None:
    run, f = locked_daemon
    # per request: a Session's verify would lose to $REQUESTS_CA_BUNDLE
    ok = as_prometheus(f)
    good = ok.get(run.url + "/metrics", auth=("prometheus", "s3cret"), timeout=5)
    assert good.status_code == 200 and "sms_monitor_build_info" in good.text
    assert good.headers["Strict-Transport-Security"] == "max-age=31536000"
    # a certificate the CA list trusts but whose names are not allowed: closed, unanswered
    with pytest.raises(requests.ConnectionError):
        requests.get(run.url + "/healthz", cert=(str(f["bad_crt"]), str(f["bad_key"])),
                     verify=str(f["ca"]), timeout=5)
    # no certificate at all: the handshake fails (under TLS 1.3 the client sees it as the
    # connection closing)
    with pytest.raises(requests.ConnectionError):
        requests.get(run.url + "/healthz", verify=str(f["ca"]), timeout=5)
    # an over-long password for a real user, an unknown user, a wrong password: one plain 401
    for user, password in (("prometheus", "x" * 73), ("nobody", "s3cret"), ("prometheus", "no")):
        resp = ok.get(run.url + "/metrics", auth=(user, password), timeout=10)
        assert resp.status_code == 401 and resp.headers["WWW-Authenticate"] == \
            'Basic realm="sms-monitor"', (user, password)
    assert "Traceback" not in run.err.read_text()


def test_failed_passwords_are_throttled_per_source_and_good_scrapes_go_on(
        locked_daemon: tuple[Run, dict[str, Path]]) -> None:
    run, f = locked_daemon
    # per request: a Session's verify would lose to $REQUESTS_CA_BUNDLE
    ok = as_prometheus(f)
    assert ok.get(run.url + "/", auth=("prometheus", "s3cret"), timeout=5).status_code == 200
    codes = [ok.get(run.url + "/metrics", auth=("prometheus", f"wrong{i}"), timeout=10).status_code
             for i in range(14)]
    assert 429 in codes and set(codes) <= {401, 429}
    throttled = ok.get(run.url + "/metrics", auth=("prometheus", "wrong"), timeout=10)
    assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) >= 1
    # the credential verified before is still served from the cache
    assert ok.get(run.url + "/metrics", auth=("prometheus", "s3cret"), timeout=5).status_code \
        == 200
    text = ok.get(run.url + "/metrics", auth=("prometheus", "s3cret"), timeout=5).text
    assert 'sms_monitor_http_auth_refusals_total{listener="web",outcome="throttled"}' in text


# ------------------------------------------------------------------ outbound requests, replays


def test_rule_rows_aimed_at_internal_endpoints_get_nothing(
        sim: SimulatorServer, tmp_path: Path) -> None:
    """notification_rules rows aimed at a Prometheus's admin API on this host: the rule
    fires, its refused recipients are named, and nothing is POSTed anywhere."""
    from http.server import BaseHTTPRequestHandler

    from sqlalchemy import create_engine, insert

    from sms_monitor.background_server import BackgroundHTTPServer
    from sms_monitor.simulator.practice_db import create_runbook_schema

    posts: list[str] = []

    class Admin(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            posts.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    admin = BackgroundHTTPServer(("127.0.0.1", 0), Admin).start()
    db = tmp_path / "practice.db"
    engine = create_engine(f"sqlite:///{db}")
    tables = create_runbook_schema(engine).tables
    rules = [("Low Twilio Balance", [f"{admin.url}/-/quit",
                                     f"{admin.url}/api/v1/admin/tsdb/delete_series",
                                     "oncall@practice.example"]),
             ("Low SMS Delivery Rate", ["https://hooks.elsewhere.example/x",
                                        "oncall@practice.example"])]
    with engine.begin() as conn:
        conn.execute(insert(tables["notification_rules"]), [
            {"rule_name": name, "rule_type": "alert", "recipients": to,
             "trigger_conditions": {"metric": "account_balance", "threshold": 10**9}
             if name.startswith("Low Twilio") else
             {"metric": "sms_delivery_rate", "threshold": 100, "window": "1 hour"}}
            for name, to in rules])
    engine.dispose()
    # the operator allows this host over http, but not its (loopback) network
    config = 'poll_interval = "1s"\n' + LIMITS + '[alerts]\nwebhook_allow = ["127.0.0.1"]\n' \
                                                 'webhook_allow_http = true\n'
    run = Run(tmp_path, sim.url, config=config,
              env={"SMS_MONITOR_DATABASE_URL": f"sqlite:///{db}"})
    try:
        run.wait_ready()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until the rules were evaluated twice over
            with contextlib.suppress(AssertionError):
                if run.metric("sms_monitor_poll_cycles_total") >= 3:
                    break
            select.select([], [], [], 0.2)
        text = requests.get(run.url + "/metrics", timeout=5).text
        assert ('sms_alert_recipients_refused{reason="refused_address",'
                'rule="Low Twilio Balance"} 2.0') in text
        assert 'sms_alert_recipients_refused{reason="not_allowed",rule="Low SMS Delivery Rate"} ' \
               '1.0' in text
        # both rules fire (a balance under 10^9, delivery under 100 %); e-mail is their only
        # recipient left, and no webhook was POSTed
        assert text.count('sms_alert_state{') >= 2 and posts == []
    finally:
        run.stop()
        admin.stop()


def test_a_replayed_stop_counts_once_across_a_restart(sim: SimulatorServer,
                                                      tmp_path: Path) -> None:
    from sqlalchemy import create_engine, text

    audit = tmp_path / "audit.db"
    config = 'poll_interval = "1s"\n' + LIMITS + f'[inbound]\naudit_url = "sqlite:///{audit}"\n'
    stop = {"AccountSid": DEMO_ACCOUNT_SID, "MessageSid": "SM" + "cd" * 16,
            "SmsMessageSid": "SM" + "cd" * 16, "SmsSid": "SM" + "cd" * 16,
            "From": "+15550100009", "To": DEMO_PHONE_NUMBER, "Body": "STOP", "NumMedia": "0",
            "ApiVersion": "2010-04-01"}

    # signed once, for the URL Twilio calls (public_url): the very same request each time
    signature = RequestValidator(DEMO_AUTH_TOKEN).compute_signature(
        "https://sms.example.org/twilio/inbound", stop)

    def post(run: Run, params: dict[str, str]) -> int:
        return requests.post(run.url + "/twilio/inbound", data=urlencode(params), timeout=5,
                             headers={"Content-Type": "application/x-www-form-urlencoded",
                                      "X-Twilio-Signature": signature}).status_code

    codes = []
    for _ in range(2):  # the same signed STOP, then again after a restart
        run = Run(tmp_path, sim.url, config=config,
                  env={"SMS_MONITOR_PUBLIC_URL": "https://sms.example.org"})
        try:
            run.wait_ready()
            codes.append(post(run, stop))
            # the MessageSid extended by the next parameter's name and value, signature kept:
            # Twilio's signature concatenates names and values, so it still matches
            extended = {k: v for k, v in stop.items() if k != "NumMedia"}
            extended["MessageSid"] = stop["MessageSid"] + "NumMedia0"
            codes.append(post(run, extended))
            deadline = time.monotonic() + 15  # the counts are published by the next cycle
            while time.monotonic() < deadline:
                outcomes = requests.get(run.url + "/metrics", timeout=5).text
                if 'outcome="malformed"} 1.0' in outcomes:
                    break
                select.select([], [], [], 0.2)
        finally:
            run.stop()
    assert codes == [200, 400, 200, 400]
    assert 'sms_monitor_webhook_requests_total{endpoint="inbound",outcome="duplicate"} 1.0' \
        in outcomes
    engine = create_engine(f"sqlite:///{audit}")
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT count(*) FROM sms_monitor_keyword_events")).scalar()
    engine.dispose()
    assert rows == 1
    assert oct(audit.stat().st_mode & 0o777) == "0o600"
