"""Outbound requests under control: where webhook notifications may go.

The allowlist (``[alerts] webhook_allow``), https only, no loopback / private / metadata
address unless a network allows it, the name resolved once and the checked address
connected to, no redirects. Real receivers on loopback (BackgroundHTTPServer, one with TLS),
the real resolver for ``localhost``, the engine end to end with PostgreSQL and aiosmtpd.
"""

from __future__ import annotations

import ipaddress
import json
import ssl
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import structlog
from sqlalchemy import create_engine, text

from sms_monitor.alerts.notify import Notification, Notifier, SendError
from sms_monitor.alerts.rules import BrokenRule, parse_rows
from sms_monitor.background_server import BackgroundHTTPServer
from sms_monitor.config import ConfigError, load_settings
from sms_monitor.core.outbound import (
    NOT_ALLOWED,
    NOT_HTTPS,
    REFUSED_ADDRESS,
    AllowEntry,
    WebhookPolicy,
    address_class,
    shown,
)
from sms_monitor.simulator.server import SimulatorServer
from sms_monitor.simulator.state import SimState
from tests.conftest import FakeClock, Smtp, demo_env
from tests.loopback import LOOPBACK, LOOPBACK_ALERTS, self_signed

N = Notification(rule="Low Twilio Balance", account="primary", event="firing",
                 severity="critical", metric="account_balance", value=-0.42, threshold=50.0,
                 operator="<", since=1_780_000_000.0, at=1_780_000_060.0, level=1,
                 runbook_section="Issue 4", key="Low Twilio Balance|primary|firing|1")


class Receiver(BackgroundHTTPServer):
    """Keeps (path, headers, body) of every POST; answers ``status`` (with ``location``)."""

    def __init__(self, status: int = 200, location: str | None = None,
                 host: str = "127.0.0.1") -> None:
        self.posts: list[tuple[str, dict[str, str], Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.posts.append((self.path, dict(self.headers), json.loads(raw)))
                self.send_response(status)
                if location is not None:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

        super().__init__((host, 0), Handler)
        self.start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class TlsReceiver(Receiver):
    """The same over TLS with ``cert``; keeps the SNI names clients sent."""

    def __init__(self, cert: tuple[Path, Path]) -> None:
        self.sni: list[str | None] = []
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(*cert)
        self.context.sni_callback = lambda sock, name, ctx: self.sni.append(name)
        super().__init__()

    def get_request(self) -> tuple[Any, Any]:
        sock, address = super().get_request()
        return self.context.wrap_socket(sock, server_side=True,
                                        do_handshake_on_connect=False), address

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client refusing the certificate: expected by one test


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def names(mapping: dict[str, list[str]]) -> Any:
    """A resolver answering from ``mapping`` and counting its calls."""
    calls: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        return mapping[host]
    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


# -- the policy (pure) -----------------------------------------------------------------------

POLICY = WebhookPolicy.of(["hooks.example.com", "*.corp.example", "alerts.example.net:8443",
                           "https://chat.example.org/hooks/sms/"])


@pytest.mark.parametrize(("url", "reason"), [
    ("https://hooks.example.com/services/T0/B0/secret", None),
    ("https://HOOKS.example.com./x", None),  # case and a trailing dot are the same host
    ("https://hooks.example.com:8443/x", None),  # a host entry: any port
    ("https://a.corp.example/x", None),
    ("https://a.b.corp.example/x", None),
    ("https://corp.example/x", NOT_ALLOWED),  # *. is the subdomains, not the name
    ("https://evilcorp.example/x", NOT_ALLOWED),
    ("https://alerts.example.net:8443/x", None),
    ("https://alerts.example.net/x", NOT_ALLOWED),  # host:port is that port only
    ("https://chat.example.org/hooks/sms/", None),
    ("https://chat.example.org/hooks/sms", None),
    ("https://chat.example.org/hooks/sms/team?key=1", None),
    ("https://chat.example.org/hooks/smsx", NOT_ALLOWED),  # segment by segment
    ("https://chat.example.org/hooks/other", NOT_ALLOWED),
    ("https://chat.example.org/hooks/sms/../other", NOT_ALLOWED),  # no climbing out
    ("https://chat.example.org/hooks/sms/%2e%2e/other", NOT_ALLOWED),
    ("https://chat.example.org:444/hooks/sms/", NOT_ALLOWED),  # a prefix's port is its own
    ("https://hooks.example.com.evil.example/x", NOT_ALLOWED),
    ("https://evil.example/?u=https://hooks.example.com/", NOT_ALLOWED),
    ("https://hooks.example.com@evil.example/x", NOT_ALLOWED),  # the host is evil.example
    ("http://hooks.example.com/x", NOT_HTTPS),  # https only by default
    ("http://chat.example.org/hooks/sms/", NOT_HTTPS),
    ("ftp://hooks.example.com/x", NOT_ALLOWED),
    ("https://127.0.0.1/x", NOT_ALLOWED),
])
def test_the_allowlist(url: str, reason: str | None) -> None:
    refusal = POLICY.check_url(url)
    assert (refusal.reason if refusal else None) == reason
    if refusal is not None:  # never the path, the query or a password in the reason
        assert "secret" not in refusal.detail and "key=" not in refusal.detail
        assert "/hooks/" not in refusal.detail and "/services" not in refusal.detail
        assert "\n" not in refusal.detail


def test_nothing_is_allowed_by_default_and_http_only_when_the_key_says_so() -> None:
    assert WebhookPolicy().check_url("https://hooks.example.com/x").reason == NOT_ALLOWED
    http = WebhookPolicy.of(["hooks.example.com"], allow_http=True)
    assert http.check_url("http://hooks.example.com/x") is None


@pytest.mark.parametrize(("address", "kind"), [
    ("127.0.0.1", "loopback"), ("127.8.9.10", "loopback"), ("::1", "loopback"),
    ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("192.168.1.1", "private"),
    ("fd12:3456::1", "private"), ("fc00::1", "private"),
    ("100.64.0.1", "shared"), ("100.127.255.254", "shared"),
    ("169.254.1.1", "link-local"), ("fe80::1", "link-local"),
    ("169.254.169.254", "metadata"), ("fd00:ec2::254", "metadata"),
    ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("224.0.0.1", "multicast"), ("ff02::1", "multicast"),
    ("::ffff:127.0.0.1", "loopback"), ("::ffff:10.0.0.1", "private"),  # IPv4-mapped
    ("64:ff9b::a9fe:a9fe", "metadata"),  # NAT64 of 169.254.169.254
    ("2002:7f00:1::1", "loopback"),  # 6to4 of 127.0.0.1
    ("8.8.8.8", None), ("2606:4700::1111", None), ("64:ff9b::808:808", None),
    ("100.63.255.255", None), ("100.128.0.0", None),
])
def test_address_classes(address: str, kind: str | None) -> None:
    assert address_class(ipaddress.ip_address(address)) == kind


def test_networks_allow_private_addresses_and_only_an_exact_entry_allows_metadata() -> None:
    ten = WebhookPolicy.of(networks=["10.0.0.0/8", "::1/128"])
    assert ten.check_address(ipaddress.ip_address("10.9.8.7")) is None
    assert ten.check_address(ipaddress.ip_address("::1")) is None
    refusal = ten.check_address(ipaddress.ip_address("192.168.0.1"))
    assert refusal is not None and refusal.reason == REFUSED_ADDRESS
    assert "192.168.0.1 (private)" in refusal.detail
    everything = WebhookPolicy.of(networks=["0.0.0.0/0", "169.254.0.0/16", "::/0"])
    for metadata in ("169.254.169.254", "fd00:ec2::254"):
        refused = everything.check_address(ipaddress.ip_address(metadata))
        assert refused is not None and "(metadata)" in refused.detail
    assert everything.check_address(ipaddress.ip_address("169.254.1.1")) is None
    exact = WebhookPolicy.of(networks=["169.254.169.254/32"])
    assert exact.check_address(ipaddress.ip_address("169.254.169.254")) is None
    # the metadata name is refused before any lookup, whatever the allowlist says
    named = WebhookPolicy.of(["metadata.google.internal"], allow_http=True,
                             networks=["169.254.0.0/16"])
    refused = named.check_url("http://metadata.google.internal/computeMetadata/v1/")
    assert refused is not None and refused.reason == REFUSED_ADDRESS


def test_shown_keeps_scheme_host_and_port_only() -> None:
    assert shown("https://u:pw@hooks.example.com:8443/services/T/B/tok?x=1") == \
        "https://hooks.example.com:8443/…"
    assert shown("https://hooks.example.com") == "https://hooks.example.com"
    assert shown("http://[::1]:9/x") == "http://[::1]:9/…"


@pytest.mark.parametrize(("entry", "problem"), [
    ("", "an empty entry"), ("*.1.2.3.4", "not an address"), ("host:99999", "1-65535"),
    ("ftp://x.example/", "https://host"), ("https://u:p@x.example/", "no user or password"),
    ("https://x.example/?k=v", "no query"), ("https://x.example/a/../b", ". or .."),
    ("hooks example", "not a host name"), ("*", "not a host name"),
])
def test_bad_allowlist_entries_are_named(entry: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem.replace(".", r"\.").replace("*", r"\*")):
        AllowEntry.parse(entry)


# -- configuration ---------------------------------------------------------------------------

ENV = demo_env("http://127.0.0.1:9") | {"SMS_MONITOR_DATABASE_URL": "sqlite://"}


@pytest.mark.parametrize(("alerts", "message"), [
    ({"level1": ["https://hooks.example.com/services/T/B/secret"]},
     "alerts.level1: https://hooks.example.com/… is not in [alerts] webhook_allow (not_allowed)"),
    ({"webhook_allow": ["127.0.0.1"], "webhook_allow_http": True,
      "level2": ["ops@practice.example", "http://127.0.0.1:9090/-/quit"]},
     "alerts.level2: http://127.0.0.1:9090/… is 127.0.0.1 (loopback), refused without a network "
     "in [alerts] webhook_allow_networks (refused_address)"),
    ({"webhook_allow": ["hooks.example.com"], "level3": ["http://hooks.example.com/x"]},
     "alerts.level3: http://hooks.example.com/…: plain http:// is refused, https:// only unless "
     "[alerts] webhook_allow_http = true (not_https)"),
    ({"webhook_allow": ["http://hooks.example.com/sms/"]},
     "alerts.webhook_allow: http://hooks.example.com/… is an http:// prefix: set "
     "webhook_allow_http = true or use https://"),
    ({"webhook_allow_networks": ["10.0.0.1/8"]},
     "alerts.webhook_allow_networks: '10.0.0.1/8' is not a network in CIDR form (10.0.0.1/8 "
     "has host bits set)"),
    ({"webhook_allow": "hooks.example.com"},
     "alerts.webhook_allow: expected a list of host names or URL prefixes"),
    ({"webhook_allow_http": "yes"}, "alerts.webhook_allow_http"),
    ({"smtp_allow_plain_auth": 1}, "alerts.smtp_allow_plain_auth"),
])
def test_configuration_errors_name_the_key(alerts: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(ENV, {"alerts": alerts})
    assert message in str(err.value)
    assert "secret" not in str(err.value) and "/-/quit" not in str(err.value)


def test_the_defaults_are_safe_and_the_keys_make_a_policy() -> None:
    s = load_settings(ENV, {})
    assert s.alerts is not None
    assert (s.alerts.webhook_allow, s.alerts.webhook_allow_http, s.alerts.webhook_allow_networks,
            s.alerts.smtp_allow_plain_auth) == ((), False, (), False)
    assert s.alerts.webhook_policy == WebhookPolicy()
    s = load_settings(ENV, {"alerts": {**LOOPBACK_ALERTS, "level1": ["http://127.0.0.1:9/x"]}})
    assert s.alerts is not None and s.alerts.webhook_policy == LOOPBACK


# -- the sender against real receivers -------------------------------------------------------

def test_loopback_is_refused_even_when_allowlisted_until_a_network_allows_it(
        receiver: Receiver) -> None:
    no_networks = WebhookPolicy.of(["127.0.0.1"], allow_http=True)
    with pytest.raises(SendError) as err:
        Notifier(None, None, webhooks=no_networks).send(receiver.url + "/hook", N)
    assert err.value.refused == REFUSED_ADDRESS and err.value.permanent
    assert str(err.value) == (f"webhook refused: http://127.0.0.1:{receiver.port}/… is "
                              "127.0.0.1 (loopback), refused without a network in [alerts] "
                              "webhook_allow_networks")
    assert receiver.posts == []
    Notifier(None, None, webhooks=LOOPBACK).send(receiver.url + "/hook", N)
    assert [p for p, _, _ in receiver.posts] == ["/hook"]


def test_a_url_off_the_allowlist_gets_nothing(receiver: Receiver) -> None:
    other_port = WebhookPolicy.of([f"127.0.0.1:{receiver.port + 1}"], allow_http=True,
                                  networks=["127.0.0.0/8"])
    for policy, reason in ((WebhookPolicy(), NOT_HTTPS), (other_port, NOT_ALLOWED)):
        with pytest.raises(SendError) as err:
            Notifier(None, None, webhooks=policy).send(receiver.url + "/-/quit", N)
        assert err.value.refused == reason
        assert "/-/quit" not in str(err.value)
    assert receiver.posts == []


def test_https_only_unless_allowed(receiver: Receiver) -> None:
    https_only = WebhookPolicy.of(["127.0.0.1"], networks=["127.0.0.0/8"])
    with pytest.raises(SendError) as err:
        Notifier(None, None, webhooks=https_only).send(receiver.url + "/hook", N)
    assert err.value.refused == NOT_HTTPS
    assert receiver.posts == []


def test_a_redirect_is_not_followed() -> None:
    second = Receiver()
    first = Receiver(status=302, location=second.url + "/hook")
    try:
        with pytest.raises(SendError) as err:
            Notifier(None, None, webhooks=LOOPBACK).send(first.url + "/hook", N)
        assert str(err.value) == "webhook 127.0.0.1 answered 302 (redirects are not followed)"
        assert not err.value.permanent  # a failed send, retried with backoff
        assert len(first.posts) == 1 and second.posts == []
        with pytest.raises(SendError) as err:  # Alertmanager, configured by the operator: also
            Notifier(None, None, alertmanager_url=first.url).send_alertmanager(N)
        assert str(err.value) == "Alertmanager answered 302 (redirects are not followed)"
        assert len(first.posts) == 2 and second.posts == []
    finally:
        first.stop()
        second.stop()


def test_a_name_resolving_to_loopback_is_refused_unless_its_network_is_allowed(
        receiver: Receiver) -> None:
    url = f"http://localhost:{receiver.port}/hook"  # the system's resolver: 127.0.0.1 (::1)
    by_name = WebhookPolicy.of(["localhost"], allow_http=True)
    assert by_name.check_url(url) is None  # a name: only resolving it tells
    with pytest.raises(SendError) as err:
        Notifier(None, None, webhooks=by_name).send(url, N)
    assert err.value.refused == REFUSED_ADDRESS
    assert f"http://localhost:{receiver.port}/… resolves to " in str(err.value)
    assert "(loopback)" in str(err.value)
    assert receiver.posts == []
    allowed = WebhookPolicy.of(["localhost"], allow_http=True, networks=["127.0.0.0/8", "::1/128"])
    Notifier(None, None, webhooks=allowed).send(url, N)
    ((path, headers, body),) = receiver.posts
    assert path == "/hook" and headers["Host"] == f"localhost:{receiver.port}"
    assert body["rule"] == N.rule


def test_the_checked_address_is_the_one_connected_to(receiver: Receiver) -> None:
    policy = WebhookPolicy.of(["hooks.test"], allow_http=True, networks=["127.0.0.0/8"])
    resolver = names({"hooks.test": ["127.0.0.1"]})
    Notifier(None, None, webhooks=policy, resolver=resolver).send(
        f"http://hooks.test:{receiver.port}/hook?team=ops", N)
    # resolved once, here; hooks.test exists in no DNS, so nothing resolved it again
    assert resolver.calls == ["hooks.test"]
    ((path, headers, _),) = receiver.posts
    assert path == "/hook?team=ops" and headers["Host"] == f"hooks.test:{receiver.port}"
    # an answer mixing an allowed address with a refused one is refused as a whole
    rebinding = names({"hooks.test": ["127.0.0.1", "169.254.169.254"]})
    with pytest.raises(SendError) as err:
        Notifier(None, None, webhooks=policy, resolver=rebinding).send(
            f"http://hooks.test:{receiver.port}/hook", N)
    assert err.value.refused == REFUSED_ADDRESS and "169.254.169.254 (metadata)" in str(err.value)
    assert len(receiver.posts) == 1


def test_an_ipv6_loopback_receiver_needs_its_network_too() -> None:
    server = Receiver(host="::1")
    try:
        url = server.url + "/hook"  # http://[::1]:port/hook
        with pytest.raises(SendError) as err:
            Notifier(None, None, webhooks=WebhookPolicy.of(["[::1]"], allow_http=True)).send(url, N)
        assert err.value.refused == REFUSED_ADDRESS and "::1 (loopback)" in str(err.value)
        assert server.posts == []
        Notifier(None, None, webhooks=WebhookPolicy.of(["::1"], allow_http=True,
                                                       networks=["::1/128"])).send(url, N)
        ((path, headers, _),) = server.posts
        assert path == "/hook" and headers["Host"] == f"[::1]:{server.port}"
    finally:
        server.stop()


def test_a_name_that_does_not_resolve_is_a_retried_failure() -> None:
    def fail(host: str, port: int) -> list[str]:
        import socket

        raise socket.gaierror(-2, "Name or service not known")
    policy = WebhookPolicy.of(["hooks.test"])
    with pytest.raises(SendError) as err:
        Notifier(None, None, webhooks=policy, resolver=fail).send("https://hooks.test/x", N)
    assert str(err.value) == "webhook hooks.test failed: its name was not resolved (gaierror)"
    assert not err.value.permanent


def test_https_to_the_checked_address_verifies_the_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert = self_signed(tmp_path, "hooks.test")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert[0]))  # requests' variable, still honoured
    server = TlsReceiver(cert)
    try:
        policy = WebhookPolicy.of(["hooks.test", "other.test"], networks=["127.0.0.0/8"])
        resolver = names({"hooks.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
        notifier = Notifier(None, None, webhooks=policy, resolver=resolver)
        notifier.send(f"https://hooks.test:{server.port}/hook", N)
        ((path, headers, _),) = server.posts
        assert path == "/hook" and headers["Host"] == f"hooks.test:{server.port}"
        assert server.sni == ["hooks.test"]  # the name, though the connection went to the IP
        with pytest.raises(SendError) as err:  # the certificate is not other.test's
            notifier.send(f"https://other.test:{server.port}/hook", N)
        assert str(err.value).startswith("webhook other.test failed: SSLError")
        assert len(server.posts) == 1
    finally:
        server.stop()


# -- the engine: refused by rule name, before anything is sent --------------------------------

def insert_rule(app: str, name: str, recipients: list[str]) -> None:
    engine = create_engine(app)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO notification_rules (rule_name, rule_type, "
                          "trigger_conditions, recipients) VALUES (:n, 'alert', "
                          "'{\"metric\": \"account_balance\", \"threshold\": 50}', :r)"),
                     {"n": name, "r": recipients})
    engine.dispose()


def test_a_rule_aimed_at_prometheus_admin_endpoints_is_refused_by_name_and_never_posts(
        app: str, sim: tuple[SimulatorServer, SimState], smtp: Smtp, clock: FakeClock,
        tmp_path: Path, receiver: Receiver) -> None:
    from sms_monitor.outputs.http import build_registry
    from tests.test_alert_engine import monitor, settings

    server, state = sim
    quit_url = f"http://127.0.0.1:{receiver.port}/-/quit"
    delete = f"http://127.0.0.1:{receiver.port}/api/v1/admin/tsdb/delete_series?match[]=up"
    insert_rule(app, "Prom", ["prom@practice.example", quit_url, delete])
    state.set_scenario("out_of_credit")
    store = f"sqlite:///{tmp_path / 'alerts.db'}"
    for alerts, reason in (({}, NOT_HTTPS),
                           ({"webhook_allow": ["127.0.0.1"], "webhook_allow_http": True},
                            REFUSED_ADDRESS)):
        m = monitor(settings(app, server, smtp, store, **alerts), clock)
        with structlog.testing.capture_logs() as logs:
            m.run_cycle()
            clock.advance(60)
            m.run_cycle()
        snap = m.holder.published
        assert snap is not None and snap.alerts is not None
        problem = dict(snap.alerts.broken)["Prom"]
        assert problem.startswith("recipients: 2 refused (") and f"({reason})" in problem
        assert problem.endswith("; they get no notification")
        registry = build_registry(m.holder, m.areas)
        assert registry.get_sample_value("sms_alert_recipients_refused",
                                         {"rule": "Prom", "reason": reason}) == 2
        assert registry.get_sample_value("sms_alert_rule_invalid", {"rule": "Prom"}) == 1
        (line,) = [e for e in logs if e["event"] == "alert_rule_unusable"]
        assert line["rule"] == "Prom" and "/-/quit" not in line["reason"] \
            and "delete_series" not in line["reason"]
        assert m.alerts is not None
        assert all(r["recipient"] not in (quit_url, delete) for r in m.alerts.store.unsent())
        m.close()
    assert receiver.posts == []  # never a POST
    # the rule's other recipient is paged, once
    assert len([r for r, msg in smtp.inbox.messages
                if r == ["prom@practice.example"] and "Prom" in str(msg["Subject"])]) == 1


def test_a_send_refused_at_resolution_is_given_up_not_retried(
        app: str, sim: tuple[SimulatorServer, SimState], smtp: Smtp, clock: FakeClock,
        tmp_path: Path, receiver: Receiver) -> None:
    from sms_monitor.outputs.http import build_registry
    from tests.test_alert_engine import monitor, settings

    server, state = sim
    url = f"http://localhost:{receiver.port}/hook"
    insert_rule(app, "Local", ["local@practice.example", url])
    state.set_scenario("out_of_credit")
    m = monitor(settings(app, server, smtp, f"sqlite:///{tmp_path / 'alerts.db'}",
                         webhook_allow=["localhost"], webhook_allow_http=True), clock)
    with structlog.testing.capture_logs() as logs:
        m.run_cycle()
        for _ in range(3):  # past a retry's backoff (30 s, then 60 s), before level 2 (30 m)
            clock.advance(300)
            m.run_cycle()
    assert receiver.posts == []
    refused = [e for e in logs if e["event"] == "notification_refused"]
    assert [(e["rule"], e["reason"], e["channel"]) for e in refused] == \
        [("Local", REFUSED_ADDRESS, "webhook")]  # once: not retried
    assert "/hook" not in refused[0]["detail"] and "(loopback)" in refused[0]["detail"]
    registry = build_registry(m.holder, m.areas)
    assert registry.get_sample_value("sms_alert_notifications_refused_total",
                                     {"rule": "Local", "reason": REFUSED_ADDRESS}) == 1
    assert registry.get_sample_value("sms_alert_notifications_total",
                                     {"channel": "webhook", "outcome": "refused"}) == 1
    assert registry.get_sample_value("sms_alert_notifications_total",
                                     {"channel": "webhook", "outcome": "failed"}) == 0
    assert registry.get_sample_value("sms_alert_outbox_pending") == 0
    assert m.alerts is not None
    with m.alerts.store.engine.connect() as conn:
        (row,) = conn.execute(text("SELECT sent_at, attempts, last_error FROM "
                                   "sms_monitor_outbox WHERE recipient = :r"), {"r": url}).all()
    assert row.sent_at is not None and row.attempts == 1
    assert row.last_error.startswith("given up: webhook refused: http://localhost:")
    # the e-mail recipient of the same rule was paged
    assert len([r for r, _ in smtp.inbox.messages if r == ["local@practice.example"]]) == 1
    m.close()


def test_rules_check_names_refused_recipients_before_anything_is_sent(
        app: str, tmp_path: Path, receiver: Receiver,
        capsys: pytest.CaptureFixture[str]) -> None:
    from sms_monitor.cli import main

    insert_rule(app, "Prom", ["prom@practice.example",
                              f"http://127.0.0.1:{receiver.port}/-/quit"])
    insert_rule(app, "Local", ["local@practice.example",
                               f"https://localhost:{receiver.port}/hook"])
    toml = tmp_path / "sms-monitor.toml"
    toml.write_text('[alerts]\nwebhook_allow = ["localhost"]\n')
    env = demo_env("http://127.0.0.1:9") | {"SMS_MONITOR_DATABASE_URL": app,
                                            "SMS_MONITOR_ALERT_STORE_URL":
                                                f"sqlite:///{tmp_path / 'alerts.db'}"}
    assert main(["rules", "check", "--config", str(toml)], env=env) == 1
    out = capsys.readouterr().out
    prom = next(line for line in out.splitlines() if line.startswith("WARN Prom:"))
    assert f"(recipients: 1 refused (http://127.0.0.1:{receiver.port}/…: plain http:// is " \
           "refused, https:// only unless [alerts] webhook_allow_http = true (not_https)); " \
           "they get no notification)" in prom
    local = next(line for line in out.splitlines() if line.startswith("WARN Local:"))
    assert "1 refused when resolved now (https://localhost:" in local
    assert "(loopback)" in local and "(refused_address)" in local and "/hook" not in local
    assert "7 usable, 2 with problems, 0 not alert rows" in out
    assert receiver.posts == []


def test_parse_rows_keeps_the_rest_of_a_rule_with_a_refused_recipient() -> None:
    row = {"rule_name": "R", "rule_type": "alert",
           "trigger_conditions": {"metric": "sms_error_rate", "threshold": 5},
           "recipients": ["a@b.example", "https://hooks.example.com/x", "https://evil.example/x"]}
    rules, broken = parse_rows([row], accounts=["primary"], checks=[], max_window=3600,
                               webhooks=WebhookPolicy.of(["hooks.example.com"]))
    assert [r.recipients for r in rules] == [("a@b.example", "https://hooks.example.com/x")]
    assert rules[0].refused == ((NOT_ALLOWED, "https://evil.example/… is not in [alerts] "
                                              "webhook_allow"),)
    assert broken == [BrokenRule("R", "recipients: 1 refused (https://evil.example/… is not in "
                                      "[alerts] webhook_allow (not_allowed)); they get no "
                                      "notification")]
    row["recipients"] = ["https://evil.example/x"]
    _, broken = parse_rows([row], accounts=["primary"], checks=[], max_window=3600)
    assert broken == [BrokenRule("R", "recipients: none usable: 1 refused (https://evil.example/… "
                                      "is not in [alerts] webhook_allow (not_allowed)), so nobody "
                                      "would be notified")]


def test_a_given_up_row_is_settled_but_never_counts_as_sent(tmp_path: Path) -> None:
    from sms_monitor.alerts.store import AlertStore
    from tests.test_alert_sending import queue

    store = AlertStore(f"sqlite:///{tmp_path / 'a.db'}")
    store.migrate()
    queue(store, N, "https://hooks.example.com/x", 1.0)
    (row,) = store.unsent()
    assert not store.give_up(row["id"], 2.0, "refused", "me")  # only its claimer may
    assert store.claim(row["id"], "me", 2.0, 3.0) and store.give_up(row["id"], 2.0, "refused", "me")
    assert store.unsent() == [] and store.pending_count() == 0
    assert store.last_sent() == {}  # not delivered
    assert not store.mark_sent(row["id"], 3.0, "me")  # settled: nothing more to record
    store.close()


def test_start_warns_about_smtp_credentials_that_may_go_without_tls(tmp_path: Path) -> None:
    from sms_monitor.app import build_alert_engine

    env = ENV | {"SMS_MONITOR_SMTP_URL": "smtp://alerts:s3cr3t-pw@relay.example:587",
                 "SMS_MONITOR_ALERT_STORE_URL": f"sqlite:///{tmp_path / 'a.db'}"}
    for alerts, expected in (({}, "they are sent only after STARTTLS"),
                             ({"smtp_allow_plain_auth": True}, "cross the network in clear")):
        with structlog.testing.capture_logs() as logs:
            engine = build_alert_engine(load_settings(env, {"alerts": alerts}), FakeClock())
        engine.close()
        (line,) = [e for e in logs if e["event"] == "smtp_credentials_without_tls"]
        assert line["log_level"] == "warning" and expected in line["reason"]
        assert "s3cr3t-pw" not in line["reason"]
        assert engine.notifier.smtp_allow_plain_auth == bool(alerts)
    with structlog.testing.capture_logs() as logs:
        engine = build_alert_engine(load_settings(
            env | {"SMS_MONITOR_SMTP_URL": "smtps://alerts:s3cr3t-pw@relay.example"}, {}),
            FakeClock())
    engine.close()
    assert not [e for e in logs if e["event"] == "smtp_credentials_without_tls"]
