"""--web.config.file (sms_monitor.outputs.webconfig): exporter-toolkit keys implemented for real
(handshakes on loopback), the others refused by name."""

from __future__ import annotations

import base64
import socket
import ssl
import threading
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from sms_monitor.cli import main
from sms_monitor.config import ConfigError
from sms_monitor.outputs.basic_auth import AuthOutcome
from sms_monitor.outputs.webconfig import CIPHER_SUITES, WebConfig, load_web_config, san_allowed
from tests.tls_certs import self_signed

CLIENT_SANS = "DNS:prometheus.example.org,IP:10.0.0.9,email:ops@example.org,URI:spiffe://example.org/prom"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """server.crt/key (127.0.0.1) and client.crt/key (CLIENT_SANS), made once."""
    directory = tmp_path_factory.mktemp("certs")
    self_signed(directory, "server")
    self_signed(directory, "client", sans=CLIENT_SANS, cn="prometheus")
    return directory


def load(directory: Path, text: str) -> WebConfig:
    (directory / "web.yml").write_text(text)
    return load_web_config(directory / "web.yml")


def tls_config(directory: Path, extra: str = "") -> WebConfig:
    return load(directory, "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
                + extra)


def client(certs: Path, ciphers: str | None = None, max_version: ssl.TLSVersion | None = None,
           min_version: ssl.TLSVersion | None = None, cert: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=certs / "server.crt")
    if max_version:
        ctx.maximum_version = max_version
    if min_version:
        ctx.minimum_version = min_version
    if ciphers:
        ctx.set_ciphers(ciphers)
    if cert:
        ctx.load_cert_chain(certs / "client.crt", certs / "client.key")
    return ctx


def handshake(server: ssl.SSLContext, client_ctx: ssl.SSLContext) -> dict[str, Any]:
    """One TLS connection over loopback, a real server socket with ``server``'s context.
    Returns what each side saw: ``cipher``, ``version``, the server's ``peercert``; a side
    that failed has ``client_error`` / ``server_error`` instead."""
    seen: dict[str, Any] = {}
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)

        def serve() -> None:
            conn, _ = listener.accept()
            try:
                with server.wrap_socket(conn, server_side=True) as tls:
                    seen["peercert"] = tls.getpeercert()
                    tls.sendall(b"x")
            except (ssl.SSLError, OSError) as exc:
                seen["server_error"] = exc
        thread = threading.Thread(target=serve)
        thread.start()
        try:
            with socket.create_connection(listener.getsockname(), timeout=10) as raw, \
                    client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                assert tls.recv(1) == b"x"  # TLS 1.3: a refused client certificate shows here
                seen["cipher"], seen["version"], _ = tls.cipher()
        except (ssl.SSLError, OSError) as exc:
            seen["client_error"] = exc
        finally:
            thread.join(10)
    return seen


# -- cipher suites, versions ------------------------------------------------------------------

def test_cipher_suites_allow_the_listed_tls12_suite_and_refuse_others(certs: Path) -> None:
    cfg = tls_config(certs, "  max_version: TLS12\n  cipher_suites:\n"
                            "    - TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\n")
    assert cfg.tls is not None
    allowed = handshake(cfg.tls, client(certs, "ECDHE-RSA-AES128-GCM-SHA256"))
    assert (allowed.get("cipher"), allowed.get("version")) == ("ECDHE-RSA-AES128-GCM-SHA256", "TLSv1.2")
    refused = handshake(cfg.tls, client(certs, "ECDHE-RSA-AES256-GCM-SHA384"))
    assert isinstance(refused.get("client_error"), ssl.SSLError)
    assert "cipher" not in refused


def test_without_cipher_suites_both_suites_are_offered(certs: Path) -> None:
    cfg = tls_config(certs, "  max_version: TLS12\n")
    assert cfg.tls is not None
    for suite in ("ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384"):
        assert handshake(cfg.tls, client(certs, suite)).get("cipher") == suite


@pytest.mark.parametrize("prefer, expected", [("true", "ECDHE-RSA-AES256-GCM-SHA384"),
                                              ("false", "ECDHE-RSA-AES128-GCM-SHA256")])
def test_prefer_server_cipher_suites_decides_whose_order_wins(certs: Path, prefer: str,
                                                              expected: str) -> None:
    cfg = tls_config(certs, f"  prefer_server_cipher_suites: {prefer}\n  cipher_suites:\n"
                            "    - TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384\n"
                            "    - TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\n")
    assert cfg.tls is not None
    offer = client(certs, "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384",
                   max_version=ssl.TLSVersion.TLSv1_2)
    assert handshake(cfg.tls, offer).get("cipher") == expected


def test_tls13_is_untouched_by_cipher_suites(certs: Path) -> None:
    cfg = tls_config(certs, "  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, "
                            "TLS_AES_256_GCM_SHA384]\n")
    assert cfg.tls is not None
    seen = handshake(cfg.tls, client(certs))
    assert seen.get("version") == "TLSv1.3" and str(seen.get("cipher")).startswith("TLS_")


def test_max_version_refuses_newer_clients(certs: Path) -> None:
    cfg = tls_config(certs, "  max_version: TLS12\n")
    assert cfg.tls is not None
    assert "client_error" in handshake(cfg.tls, client(certs, min_version=ssl.TLSVersion.TLSv1_3))
    assert handshake(cfg.tls, client(certs)).get("version") == "TLSv1.2"


def test_every_mapped_suite_exists_in_this_openssl() -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.set_ciphers(":".join(CIPHER_SUITES.values()))
    offered = {c["name"] for c in ctx.get_ciphers()}
    assert set(CIPHER_SUITES.values()) <= offered


# -- client certificates and client_allowed_sans ----------------------------------------------

MTLS = ("  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: client.crt\n"
        "  client_allowed_sans: [{}]\n")


@pytest.mark.parametrize("allowed, passes", [
    ("prometheus.example.org", True), ("10.0.0.9", True), ("ops@example.org", True),
    ("spiffe://example.org/prom", True), ("other.example.org, 10.0.0.10", False),
    ("prometheus", False),  # the CN is not a SAN
])
def test_client_allowed_sans_on_a_real_handshake(certs: Path, allowed: str, passes: bool) -> None:
    cfg = tls_config(certs, MTLS.format(allowed))
    assert cfg.tls is not None and cfg.allowed_sans == tuple(a.strip() for a in allowed.split(","))
    seen = handshake(cfg.tls, client(certs, cert=True))
    assert san_allowed(seen["peercert"], cfg.allowed_sans) is passes


def test_a_client_without_a_certificate_is_refused(certs: Path) -> None:
    cfg = tls_config(certs, MTLS.format("prometheus.example.org"))
    assert cfg.tls is not None
    seen = handshake(cfg.tls, client(certs))
    assert "server_error" in seen and "client_error" in seen


@pytest.mark.parametrize("peercert, allowed, expected", [
    (None, ["a"], False),
    ({}, ["a"], False),  # getpeercert() of a certificate not verified
    (None, [], True),  # nothing configured, nothing asked
    ({"subjectAltName": (("DNS", "a.example"),)}, ["a.example"], True),
    ({"subjectAltName": (("DNS", "A.example"),)}, ["a.example"], False),  # exact, as in Go
    ({"subjectAltName": (("IP Address", "2001:DB8:0:0:0:0:0:1\n"),)}, ["2001:db8::1"], True),
    ({"subjectAltName": (("IP Address", "192.0.2.1"),)}, ["192.0.2.10"], False),
    ({"subjectAltName": (("email", "a@b"), ("URI", "spiffe://x/y"))}, ["spiffe://x/y"], True),
    ({"subjectAltName": (("DirName", (("commonName", "a"),)),)}, ["a"], False),
    ({"subject": ((("commonName", "a"),),)}, ["a"], False),
])
def test_san_allowed(peercert: dict[str, Any] | None, allowed: list[str], expected: bool) -> None:
    assert san_allowed(peercert, allowed) is expected


# -- headers, users -----------------------------------------------------------------------------

def test_headers_exporter_toolkit_sample(tmp_path: Path) -> None:
    cfg = load(tmp_path, "http_server_config:\n  http2: false\n  headers:\n"
                         "    X-Frame-Options: deny\n"
                         "    Strict-Transport-Security: max-age=31536000; includeSubDomains\n"
                         "    X-Content-Type-Options: nosniff\n"
                         "    X-XSS-Protection: 1\n"
                         "    Content-Security-Policy: \"default-src 'self' *.test.example.net\"\n")
    assert cfg.headers == (("X-Frame-Options", "deny"),
                           ("Strict-Transport-Security", "max-age=31536000; includeSubDomains"),
                           ("X-Content-Type-Options", "nosniff"), ("X-XSS-Protection", "1"),
                           ("Content-Security-Policy", "default-src 'self' *.test.example.net"))
    assert cfg.tls is None and not cfg.authenticator.enabled


def test_a_blank_header_is_unset(tmp_path: Path) -> None:
    assert load(tmp_path, "http_server_config:\n  headers:\n    X-XSS-Protection: ''\n").headers == ()


def test_users_become_an_authenticator(tmp_path: Path) -> None:
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode().replace("$2b$", "$2y$")
    cfg = load(tmp_path, f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    header = "Basic " + base64.b64encode(b"prometheus:s3cret").decode()
    assert cfg.authenticator.enabled and cfg.authenticator.quick(header, "127.0.0.1") is None
    assert cfg.authenticator.verify(header, "127.0.0.1").outcome is AuthOutcome.OK
    assert "s3cret" not in repr(cfg) and hashed not in repr(cfg)


def test_empty_file_and_empty_sections_configure_nothing(tmp_path: Path) -> None:
    for text in ("", "tls_server_config:\nhttp_server_config:\nbasic_auth_users:\n"):
        cfg = load(tmp_path, text)
        assert cfg == WebConfig(authenticator=cfg.authenticator)
        assert not cfg.authenticator.enabled


# -- refused -------------------------------------------------------------------------------------

TLS = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"


@pytest.mark.parametrize("text, key, words", [
    # exporter-toolkit keys not implemented: refused by name, not ignored
    ("rate_limit:\n  interval: 1s\n  burst: 5\n", "rate_limit", "not supported"),
    (TLS + "  curve_preferences: [X25519]\n", "tls_server_config.curve_preferences", "not supported"),
    ("tls_server_config:\n  cert: PEM\n  key_file: server.key\n", "tls_server_config.cert", "inline"),
    (TLS + "  key: PEM\n", "tls_server_config.key", "inline"),
    (TLS + "  client_ca: PEM\n", "tls_server_config.client_ca", "inline"),
    ("http_server_config:\n  http2: true\n", "http_server_config.http2", "HTTP/2"),
    # keys nobody has
    ("web_server_config: {}\n", "web_server_config", "unknown key"),
    (TLS + "  cipher_suite: []\n", "tls_server_config.cipher_suite", "unknown key"),
    ("http_server_config:\n  header: {}\n", "http_server_config.header", "unknown key"),
    # values
    ("http_server_config:\n  headers:\n    Server: x\n", "http_server_config.headers.Server",
     "cannot be configured"),
    ("http_server_config:\n  headers:\n    x-frame-options: deny\n",
     "http_server_config.headers.x-frame-options", "cannot be configured"),
    ("http_server_config:\n  headers:\n    X-Frame-Options: allow-from x\n",
     "http_server_config.headers.X-Frame-Options", "deny, sameorigin"),
    ("http_server_config:\n  headers:\n    X-Content-Type-Options: ''\n",
     "http_server_config.headers.X-Content-Type-Options", "nosniff"),
    ("http_server_config:\n  headers:\n    Content-Security-Policy: \"a\\r\\nSet-Cookie: x\"\n",
     "http_server_config.headers.Content-Security-Policy", "one line"),
    (TLS + "  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n", "tls_server_config.cipher_suites",
     "TLS_RSA_WITH_RC4_128_SHA"),
    (TLS + "  cipher_suites: [ECDHE-RSA-AES128-GCM-SHA256]\n", "tls_server_config.cipher_suites",
     "unknown cipher suite"),
    (TLS + "  cipher_suites: [TLS_AES_128_GCM_SHA256]\n", "tls_server_config.cipher_suites",
     "only TLS 1.3"),
    (TLS + "  cipher_suites: []\n", "tls_server_config.cipher_suites", "empty"),
    (TLS + "  min_version: TLS13\n  max_version: TLS12\n", "tls_server_config.max_version", "below"),
    (TLS + "  max_version: TLS14\n", "tls_server_config.max_version", "TLS13"),
    (TLS + "  client_allowed_sans: [a]\n", "tls_server_config.client_allowed_sans",
     "RequireAndVerifyClientCert"),
    (TLS + "  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: server.crt\n"
           "  client_allowed_sans: [a]\n", "tls_server_config.client_allowed_sans",
     "RequireAndVerifyClientCert"),
    (TLS + "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: server.crt\n"
           "  client_allowed_sans: []\n", "tls_server_config.client_allowed_sans", "empty"),
    (TLS + "  client_auth_type: RequireAnyClientCert\n", "tls_server_config.client_ca_file",
     "required"),
    (TLS + "  client_ca_file: server.crt\n", "tls_server_config.client_auth_type", "NoClientCert"),
    ("basic_auth_users:\n  u: $2y$03$" + "a" * 53 + "\n", "basic_auth_users.u", "bcrypt"),
])
def test_refused_by_name_with_exit_status_2(certs: Path, tmp_path: Path, text: str, key: str,
                                            words: str, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("server.crt", "server.key"):
        (tmp_path / name).write_bytes((certs / name).read_bytes())
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, text)
    assert raised.value.key == f"--web.config.file: {key}"
    assert words in raised.value.reason and "\n" not in str(raised.value)
    env = {"TWILIO_ACCOUNT_SID": "AC" + "0" * 32, "TWILIO_AUTH_TOKEN": "t0ken-value"}
    assert main(["run", "--web.config.file", str(tmp_path / "web.yml")], env=env) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--web.config.file: {key}:" in err[0]
