"""The allowlist tests' local receivers need: webhooks on 127.0.0.1, plain http, loopback.

sms-monitor sends webhooks nowhere by default, https only, never to a loopback address;
a test that POSTs to a receiver on 127.0.0.1 says so as an operator would.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from sms_monitor.core.outbound import WebhookPolicy

# the [alerts] keys, for load_settings(..., {"alerts": {**LOOPBACK_ALERTS, ...}})
LOOPBACK_ALERTS: dict[str, object] = {
    "webhook_allow": ["127.0.0.1"], "webhook_allow_http": True,
    "webhook_allow_networks": ["127.0.0.0/8"]}
# the same as a policy, for Notifier(..., webhooks=LOOPBACK)
LOOPBACK = WebhookPolicy.of(["127.0.0.1"], allow_http=True, networks=["127.0.0.0/8"])
# the same for the TOML of a daemon started by a test
LOOPBACK_TOML = ('webhook_allow = ["127.0.0.1"]\nwebhook_allow_http = true\n'
                 'webhook_allow_networks = ["127.0.0.0/8"]\n')


def self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    """A certificate (and its key) for the DNS name ``name`` and 127.0.0.1, by openssl."""
    crt, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(crt), "-days", "1", "-subj", f"/CN={name}",
                    "-addext", f"subjectAltName=DNS:{name},IP:127.0.0.1"],
                   check=True, capture_output=True)
    return crt, key
