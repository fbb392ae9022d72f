"""``--web.config.file``: TLS, basic auth and response headers for the HTTP surface, in the
format of Prometheus's exporter-toolkit (docs/web-configuration.md there), so one file works
for sms-monitor and other exporters::

    tls_server_config:
      cert_file: server.crt              # paths relative to this file
      key_file: server.key
      min_version: TLS12                 # TLS10..TLS13, default TLS12
      max_version: TLS13                 # default TLS13
      cipher_suites:                     # TLS 1.2 and older, Go's names, in preference order
        - TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        - TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
      prefer_server_cipher_suites: true  # default true: the order above wins
      client_auth_type: RequireAndVerifyClientCert   # default NoClientCert
      client_ca_file: ca.crt             # required with any client_auth_type but NoClientCert
      client_allowed_sans:               # the client certificate must carry one of these SANs
        - prometheus.example.org         # (DNS, IP, e-mail or URI; needs RequireAndVerifyClientCert)
    http_server_config:
      headers:                           # only these five, as in exporter-toolkit
        Strict-Transport-Security: max-age=31536000
        X-Content-Type-Options: nosniff  # nosniff only
        X-Frame-Options: deny            # deny or sameorigin
        X-XSS-Protection: "1; mode=block"
        Content-Security-Policy: "default-src 'self'"
    basic_auth_users:
      prometheus: $2y$10$...             # bcrypt only (htpasswd -nBC 10 "" | tr -d ':\\n')

Every path but ``/healthz`` and ``/readyz`` (probes) and Twilio's webhooks (signed) needs the
credentials when users are configured; see :mod:`sms_monitor.outputs.basic_auth` for how they
are checked (cache, dummy hash, throttle).

Where it differs from exporter-toolkit: the file is read once, at start (exporter-toolkit
re-reads it per request); TLS 1.3's suites are always on (as in Go: they may be listed and are
ignored); ``RequestClientCert`` and ``RequireAnyClientCert`` verify a certificate against
``client_ca_file`` like their ``Verify`` twins (Python's ssl cannot accept one unverified), so
``client_ca_file`` is required with them. exporter-toolkit keys sms-monitor does not implement
are refused by name rather than ignored: ``cert``, ``key`` and ``client_ca`` (inline PEM),
``curve_preferences``, ``http2: true`` (HTTP/1.1 only) and ``rate_limit``. Any other key is
unknown. Every problem is one line naming the key, exit status 2.

``client_allowed_sans`` cannot be enforced by :class:`ssl.SSLContext` alone: the server calls
:func:`san_allowed` with the connection's ``getpeercert()`` once the handshake is done and
closes the connection when it answers False.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar

import yaml
from pydantic import BeforeValidator, Field, ValidationError, ValidationInfo, field_validator, model_validator

from sms_monitor.config import ConfigError, KeyProblem, Section, dotted, first_problem
from sms_monitor.inputs.webhooks import INBOUND_PATH, STATUS_PATH
from sms_monitor.outputs.basic_auth import Authenticator, bcrypt_cost

KEY = "--web.config.file"
_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
             "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
# Python's ssl verifies every client certificate it accepts (against client_ca_file).
_CLIENT_AUTH = {"NoClientCert": ssl.CERT_NONE, "RequestClientCert": ssl.CERT_OPTIONAL,
                "RequireAnyClientCert": ssl.CERT_REQUIRED,
                "RequireClientCert": ssl.CERT_REQUIRED,  # exporter-toolkit's old name
                "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
                "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}
# Go's crypto/tls names (tls.CipherSuites(): the ones exporter-toolkit takes) -> OpenSSL's.
CIPHER_SUITES = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
}
# TLS 1.3's: always on, in Go and here; listed, they are ignored.
TLS13_SUITES = ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256")
# exporter-toolkit's extraHTTPHeaders: name -> the values it allows (None: any)
HEADERS: dict[str, tuple[str, ...] | None] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}
# Probes, and Twilio's callbacks (they authenticate by signature instead).
OPEN_PATHS = ("/healthz", "/readyz", STATUS_PATH, INBOUND_PATH)


@dataclass(frozen=True)
class WebConfig:
    """What ``--web.config.file`` asks of the server."""

    tls: ssl.SSLContext | None = None
    authenticator: Authenticator = field(default_factory=lambda: Authenticator({}), repr=False)
    allowed_sans: tuple[str, ...] = ()  # client certificates must carry one (san_allowed)
    headers: tuple[tuple[str, str], ...] = ()  # added to every response


def san_allowed(peercert: Mapping[str, Any] | None, allowed: Sequence[str]) -> bool:
    """Whether a client certificate passes ``client_allowed_sans`` (exporter-toolkit's rule:
    one of its subject alternative names, DNS, IP, e-mail or URI, equals an entry; IP
    addresses compare as addresses). ``peercert`` is ``SSLSocket.getpeercert()``: None or
    empty (no certificate, or one not verified) never passes a non-empty list; an empty list
    lets everything through."""
    if not allowed:
        return True
    if not peercert:
        return False
    wanted = set(allowed)
    wanted_ips = {ip for ip in map(_ip, allowed) if ip is not None}
    for kind, value in peercert.get("subjectAltName", ()):
        if kind in ("DNS", "email", "URI") and value in wanted:
            return True
        if kind == "IP Address" and (ip := _ip(value.strip())) is not None and ip in wanted_ips:
            return True
    return False


def _ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def _bcrypt_hash(value: object) -> bytes:
    hashed = value.encode() if isinstance(value, str) else b""
    try:
        bcrypt_cost(hashed)
    except ValueError:
        raise ValueError("expected a bcrypt hash ($2y$10$..., from htpasswd -nBC 10)") from None
    return hashed.replace(b"$2y$", b"$2b$", 1)


def _one_of(choices: Mapping[str, object]) -> BeforeValidator:
    def check(value: object) -> str:
        if not isinstance(value, str) or value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return value
    return BeforeValidator(check)


class _ToolkitSection(Section):
    """A section that names the exporter-toolkit keys it does not implement."""

    refused: ClassVar[dict[str, str]] = {}

    @classmethod
    def check_keys(cls, data: Mapping[Any, Any]) -> None:
        for key, reason in cls.refused.items():
            if key in data:
                raise KeyProblem(key, reason)
        super().check_keys(data)


_INLINE = "inline PEM is not supported; use cert_file, key_file and client_ca_file"


class TLSServerConfig(_ToolkitSection):
    """``tls_server_config``: the server's certificate and key, versions and cipher suites,
    and optional client certificates (paths relative to the file)."""

    refused: ClassVar[dict[str, str]] = {
        "cert": _INLINE, "key": _INLINE, "client_ca": _INLINE,
        "curve_preferences": "not supported: OpenSSL's default groups are used",
    }

    cert_file: str
    key_file: str
    min_version: Annotated[str, _one_of(_VERSIONS)] = "TLS12"
    max_version: Annotated[str, _one_of(_VERSIONS)] = "TLS13"
    cipher_suites: list[str] | None = None
    prefer_server_cipher_suites: bool = True
    client_auth_type: Annotated[str, _one_of(_CLIENT_AUTH)] = "NoClientCert"
    client_ca_file: str | None = None
    client_allowed_sans: list[str] | None = None

    @field_validator("cipher_suites")
    @classmethod
    def _known_suites(cls, value: list[str] | None) -> list[str] | None:
        for name in value or ():
            if name not in CIPHER_SUITES and name not in TLS13_SUITES:
                raise ValueError(f"unknown cipher suite {name!r}; known: Go's tls.CipherSuites() "
                                 "names, e.g. TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TLSServerConfig:
        if _VERSIONS[self.max_version] < _VERSIONS[self.min_version]:
            raise KeyProblem("max_version", f"{self.max_version} is below min_version "
                                            f"{self.min_version}")
        if self.cipher_suites is not None:
            if not self.cipher_suites:
                raise KeyProblem("cipher_suites", "empty: remove the key for the defaults")
            if self.min_version != "TLS13" and not set(self.cipher_suites) - set(TLS13_SUITES):
                raise KeyProblem("cipher_suites", "lists only TLS 1.3 suites, which are always "
                                                  "on: add TLS 1.2 suites or set min_version: TLS13")
        if self.client_auth_type != "NoClientCert" and not self.client_ca_file:
            raise KeyProblem("client_ca_file", f"required with {self.client_auth_type}: client "
                                               "certificates are verified against it")
        if self.client_ca_file and self.client_auth_type == "NoClientCert":
            raise KeyProblem("client_auth_type", "NoClientCert with a client_ca_file: set "
                                                 "RequireAndVerifyClientCert")
        if self.client_allowed_sans is not None:
            if not self.client_allowed_sans:
                raise KeyProblem("client_allowed_sans", "empty: list at least one SAN or remove "
                                                        "the key")
            if self.client_auth_type != "RequireAndVerifyClientCert":
                raise KeyProblem("client_allowed_sans",
                                 "needs client_auth_type: RequireAndVerifyClientCert")
        return self


def _header_value(value: object) -> object:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)  # X-XSS-Protection: 1, as YAML reads it
    return value


class HTTPServerConfig(_ToolkitSection):
    """``http_server_config``: response headers (HTTP/2 is not served)."""

    http2: bool | None = None
    headers: dict[str, Annotated[str, BeforeValidator(_header_value)]] = Field(default_factory=dict)

    @field_validator("http2")
    @classmethod
    def _http1_only(cls, value: bool | None) -> bool | None:
        if value:
            raise ValueError("HTTP/2 is not served: set false or remove the key")
        return value

    @field_validator("headers", mode="before")
    @classmethod
    def _allowed_headers(cls, value: object) -> object:
        for name, content in (value or {}).items() if isinstance(value, Mapping) else ():
            if name not in HEADERS:
                raise KeyProblem(str(name), f"cannot be configured; allowed: {', '.join(HEADERS)}")
            content = _header_value(content)
            allowed = HEADERS[name]
            if allowed is not None and content not in allowed:
                raise KeyProblem(name, f"expected one of {', '.join(allowed)}")
            if isinstance(content, str) and any(c in content for c in "\r\n\0"):
                raise KeyProblem(name, "must be one line")
        return value


class WebConfigFile(_ToolkitSection):
    """The ``--web.config.file`` document (exporter-toolkit format)."""

    refused: ClassVar[dict[str, str]] = {
        "rate_limit": "not supported: failed logins are throttled per source address instead",
    }

    tls_server_config: TLSServerConfig | None = None
    http_server_config: HTTPServerConfig | None = None
    basic_auth_users: dict[str, Annotated[bytes, BeforeValidator(_bcrypt_hash)]] = Field(
        default_factory=dict, repr=False)  # user -> bcrypt hash

    @field_validator("tls_server_config", "http_server_config", "basic_auth_users", mode="before")
    @classmethod
    def _empty_is_absent(cls, value: object, info: ValidationInfo) -> object:
        if value is None or value == {}:
            return {} if info.field_name == "basic_auth_users" else None
        return value


def _tls_context(tc: TLSServerConfig, base: Path) -> ssl.SSLContext:
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.minimum_version = _VERSIONS[tc.min_version]
    tls.maximum_version = _VERSIONS[tc.max_version]
    suites = [CIPHER_SUITES[name] for name in tc.cipher_suites or () if name in CIPHER_SUITES]
    if suites:
        try:
            tls.set_ciphers(":".join(suites))
        except ssl.SSLError:
            raise ConfigError(f"{KEY}: tls_server_config.cipher_suites",
                              "none is available in this OpenSSL") from None
        offered = {c["name"] for c in tls.get_ciphers()}
        missing = [go for go in tc.cipher_suites or ()
                   if go in CIPHER_SUITES and CIPHER_SUITES[go] not in offered]
        if missing:
            raise ConfigError(f"{KEY}: tls_server_config.cipher_suites",
                              f"{missing[0]} is not available in this OpenSSL")
    if tc.prefer_server_cipher_suites:
        tls.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        tls.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        tls.load_cert_chain(base / tc.cert_file, base / tc.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{KEY}: tls_server_config.cert_file",
                          f"cannot load the certificate or key: {exc}") from None
    tls.verify_mode = _CLIENT_AUTH[tc.client_auth_type]
    if tc.client_ca_file:
        try:
            tls.load_verify_locations(base / tc.client_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"{KEY}: tls_server_config.client_ca_file",
                              f"cannot load: {exc}") from None
    return tls


def load_web_config(path: str | Path) -> WebConfig:
    """Parse and validate; every problem is a ConfigError (exit status 2)."""
    try:
        raw: Any = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(KEY, f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(KEY, f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw or {}, dict):
        raise ConfigError(KEY, "expected a mapping")
    try:
        doc = WebConfigFile.model_validate(raw or {})
    except ValidationError as exc:
        loc, reason = first_problem(exc)
        raise ConfigError(f"{KEY}: {dotted(loc)}", reason) from None
    tc = doc.tls_server_config
    tls = _tls_context(tc, Path(path).parent) if tc else None
    headers = doc.http_server_config.headers if doc.http_server_config else {}
    return WebConfig(tls=tls, authenticator=Authenticator(doc.basic_auth_users),
                     allowed_sans=tuple(tc.client_allowed_sans or ()) if tc else (),
                     headers=tuple((k, v) for k, v in headers.items() if v.strip()))
