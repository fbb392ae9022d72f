"""Test certificates made with the ``openssl`` command: self-signed, one day, RSA 2048."""

from __future__ import annotations

import subprocess
from pathlib import Path


def self_signed(directory: Path, name: str, sans: str = "IP:127.0.0.1",
                cn: str = "127.0.0.1") -> tuple[Path, Path]:
    """``(name.crt, name.key)`` in ``directory``; ``sans`` as openssl's subjectAltName takes
    it (``DNS:a,IP:1.2.3.4,email:x@y,URI:spiffe://z``). A self-signed certificate is its own
    CA: pass it as ``client_ca_file`` to trust it as a client certificate."""
    crt, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(crt), "-days", "1", "-subj", f"/CN={cn}",
                    "-addext", f"subjectAltName={sans}"], check=True, capture_output=True)
    return crt, key
