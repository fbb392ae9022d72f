"""``--web.config.file``: TLS and basic auth for the HTTP surface, in the format of
Prometheus's exporter-toolkit, so one file works for sms-monitor and other exporters::

    tls_server_config:
      cert_file: server.crt
      key_file: server.key
      min_version: TLS12            # TLS10..TLS13
      client_auth_type: RequireAndVerifyClientCert   # optional, with client_ca_file
      client_ca_file: ca.crt
    basic_auth_users:
      prometheus: $2y$10$...         # bcrypt hashes only (htpasswd -nBC 10 "" | tr -d ':')

Every path but ``/healthz`` and ``/readyz`` (liveness and readiness probes) needs the
credentials when users are configured.
"""

from __future__ import annotations

import base64
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import bcrypt
import yaml
from pydantic import BeforeValidator, Field, ValidationError, ValidationInfo, field_validator, model_validator

from sms_monitor.config import ConfigError, KeyProblem, Section, dotted, first_problem
from sms_monitor.inputs.webhooks import INBOUND_PATH, STATUS_PATH

KEY = "--web.config.file"
_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
             "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_CLIENT_AUTH = {"NoClientCert": ssl.CERT_NONE, "RequestClientCert": ssl.CERT_OPTIONAL,
                "RequireAnyClientCert": ssl.CERT_REQUIRED,
                "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
                "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}
# Probes, and Twilio's callbacks (they authenticate by signature instead).
OPEN_PATHS = ("/healthz", "/readyz", STATUS_PATH, INBOUND_PATH)


@dataclass(frozen=True)
class WebConfig:
    tls: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict, repr=False)  # user -> bcrypt hash
    # headers already verified (bcrypt is slow on purpose; Prometheus scrapes every 15 s)
    _verified: dict[str, bool] = field(default_factory=dict, repr=False, compare=False)

    def authorised(self, header: str | None) -> bool:
        if not self.users:
            return True
        if not header or not header.startswith("Basic "):
            return False
        if header in self._verified:
            return True
        ok = self._check(header)
        if ok:
            if len(self._verified) > 64:
                self._verified.clear()
            self._verified[header] = True
        return ok

    def _check(self, header: str) -> bool:
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        hashed = self.users.get(user)
        if hashed is None:
            bcrypt.checkpw(b"x", _DUMMY)  # same work for unknown users: no user enumeration
            return False
        return bcrypt.checkpw(password.encode(), hashed)


_DUMMY = bcrypt.hashpw(b"dummy", bcrypt.gensalt(rounds=10))


def _bcrypt_hash(value: object) -> bytes:
    if not isinstance(value, str) or not value.startswith(("$2a$", "$2b$", "$2y$")):
        raise ValueError("expected a bcrypt hash")
    return value.replace("$2y$", "$2b$", 1).encode()


def _one_of(choices: Mapping[str, object]) -> BeforeValidator:
    def check(value: object) -> str:
        if not isinstance(value, str) or value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return value
    return BeforeValidator(check)


class TLSServerConfig(Section):
    """``tls_server_config``: the server's certificate and key, and optional client certificates
    (paths relative to the file)."""

    cert_file: str
    key_file: str
    min_version: Annotated[str, _one_of(_VERSIONS)] = "TLS12"
    client_auth_type: Annotated[str, _one_of(_CLIENT_AUTH)] = "NoClientCert"
    client_ca_file: str | None = None

    @model_validator(mode="after")
    def _ca_for_verification(self) -> TLSServerConfig:
        if self.client_auth_type == "RequireAndVerifyClientCert" and not self.client_ca_file:
            raise KeyProblem("client_ca_file", "required with RequireAndVerifyClientCert")
        return self


class WebConfigFile(Section):
    """The ``--web.config.file`` document (exporter-toolkit format)."""

    tls_server_config: TLSServerConfig | None = None
    basic_auth_users: dict[str, Annotated[bytes, BeforeValidator(_bcrypt_hash)]] = Field(
        default_factory=dict, repr=False)  # user -> bcrypt hash
    http_server_config: dict[str, Any] | None = None  # accepted for compatibility, unused

    @field_validator("tls_server_config", "basic_auth_users", mode="before")
    @classmethod
    def _empty_is_absent(cls, value: object, info: ValidationInfo) -> object:
        if value is None or value == {}:
            return None if info.field_name == "tls_server_config" else {}
        return value


def _tls_context(tc: TLSServerConfig, base: Path) -> ssl.SSLContext:
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.minimum_version = _VERSIONS[tc.min_version]
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
    tls = _tls_context(doc.tls_server_config, Path(path).parent) if doc.tls_server_config else None
    return WebConfig(tls=tls, users=dict(doc.basic_auth_users))
