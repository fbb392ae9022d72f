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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import yaml

from sms_monitor.config import ConfigError

KEY = "--web.config.file"
_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
             "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_CLIENT_AUTH = {"NoClientCert": ssl.CERT_NONE, "RequestClientCert": ssl.CERT_OPTIONAL,
                "RequireAnyClientCert": ssl.CERT_REQUIRED,
                "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
                "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}
# Probes, and Twilio's callbacks (they authenticate by signature instead).
OPEN_PATHS = ("/healthz", "/readyz", "/twilio/status", "/twilio/inbound")


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


def load_web_config(path: str | Path) -> WebConfig:
    """Parse and validate; every problem is a ConfigError (exit status 2)."""
    base = Path(path).parent
    try:
        raw: Any = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(KEY, f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(KEY, f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ConfigError(KEY, "expected a mapping")
    unknown = set(raw) - {"tls_server_config", "basic_auth_users", "http_server_config"}
    if unknown:
        raise ConfigError(f"{KEY}: {sorted(unknown)[0]}", "unknown key")
    users: dict[str, bytes] = {}
    for user, hashed in (raw.get("basic_auth_users") or {}).items():
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            raise ConfigError(f"{KEY}: basic_auth_users.{user}", "expected a bcrypt hash")
        users[str(user)] = hashed.replace("$2y$", "$2b$", 1).encode()
    tls = None
    tc = raw.get("tls_server_config")
    if tc:
        if not isinstance(tc, dict) or not tc.get("cert_file") or not tc.get("key_file"):
            raise ConfigError(f"{KEY}: tls_server_config", "needs cert_file and key_file")
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        version = tc.get("min_version", "TLS12")
        if version not in _VERSIONS:
            raise ConfigError(f"{KEY}: tls_server_config.min_version",
                              f"expected one of {', '.join(_VERSIONS)}")
        tls.minimum_version = _VERSIONS[version]
        try:
            tls.load_cert_chain(base / tc["cert_file"], base / tc["key_file"])
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"{KEY}: tls_server_config.cert_file",
                              f"cannot load the certificate or key: {exc}") from None
        auth = tc.get("client_auth_type", "NoClientCert")
        if auth not in _CLIENT_AUTH:
            raise ConfigError(f"{KEY}: tls_server_config.client_auth_type",
                              f"expected one of {', '.join(_CLIENT_AUTH)}")
        tls.verify_mode = _CLIENT_AUTH[auth]
        if tc.get("client_ca_file"):
            try:
                tls.load_verify_locations(base / tc["client_ca_file"])
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"{KEY}: tls_server_config.client_ca_file",
                                  f"cannot load: {exc}") from None
        elif auth == "RequireAndVerifyClientCert":
            raise ConfigError(f"{KEY}: tls_server_config.client_ca_file",
                              "required with RequireAndVerifyClientCert")
    return WebConfig(tls=tls, users=users)
