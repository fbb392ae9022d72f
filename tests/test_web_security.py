"""--web.config.file: basic auth (bcrypt) and TLS on the exporter, probes left open."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
import requests

from sms_monitor.cli import main
from sms_monitor.core.snapshot import SnapshotHolder
from sms_monitor.outputs.http import ExporterServer
from sms_monitor.outputs.webconfig import load_web_config

HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode().replace("$2b$", "$2y$")


@pytest.fixture
def cert(tmp_path: Path) -> tuple[Path, Path]:
    crt, key = tmp_path / "server.crt", tmp_path / "server.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(crt), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return crt, key


def serve(config: Path) -> ExporterServer:
    return ExporterServer(("127.0.0.1", 0), SnapshotHolder(),
                          web_config=load_web_config(config)).start()


@pytest.fixture
def auth_only(tmp_path: Path) -> Iterator[ExporterServer]:
    cfg = tmp_path / "web.yml"
    cfg.write_text(f"basic_auth_users:\n  prometheus: '{HASH}'\n")
    server = serve(cfg)
    yield server
    server.stop()


def test_basic_auth_guards_metrics_and_pages_but_not_probes(auth_only: ExporterServer) -> None:
    url = auth_only.url
    assert requests.get(url + "/metrics", timeout=5).status_code == 401
    assert requests.get(url + "/", timeout=5).status_code == 401
    assert requests.get(url + "/metrics", auth=("prometheus", "wrong"), timeout=5).status_code == 401
    assert requests.get(url + "/metrics", auth=("nobody", "s3cret"), timeout=5).status_code == 401
    ok = requests.get(url + "/metrics", auth=("prometheus", "s3cret"), timeout=5)
    assert ok.status_code == 200 and "sms_monitor_build_info" in ok.text
    assert requests.get(url + "/healthz", timeout=5).status_code == 200
    assert requests.get(url + "/readyz", timeout=5).status_code == 503  # open, just not ready
    resp = requests.get(url + "/metrics", timeout=5)
    assert resp.headers["WWW-Authenticate"] == 'Basic realm="sms-monitor"'


def test_tls_with_basic_auth(tmp_path: Path, cert: tuple[Path, Path]) -> None:
    crt, key = cert
    cfg = tmp_path / "web.yml"
    cfg.write_text(f"tls_server_config:\n  cert_file: {crt.name}\n  key_file: {key.name}\n"
                   f"  min_version: TLS12\nbasic_auth_users:\n  prometheus: '{HASH}'\n")
    server = serve(cfg)
    try:
        assert server.url.startswith("https://")
        ok = requests.get(server.url + "/metrics", auth=("prometheus", "s3cret"), verify=str(crt),
                          timeout=5)
        assert ok.status_code == 200
        with pytest.raises(requests.ConnectionError):
            requests.get(server.url.replace("https", "http") + "/metrics", timeout=5)
    finally:
        server.stop()


@pytest.mark.parametrize("content", [
    "basic_auth_users:\n  prometheus: plaintext\n",
    "tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n",
    "tls_server_config:\n  cert_file: a\n",
    "unknown_key: 1\n",
    "basic_auth_users: [\n",
])
def test_bad_web_config_exits_2_before_starting(tmp_path: Path, content: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "web.yml"
    cfg.write_text(content)
    env = {"TWILIO_ACCOUNT_SID": "AC" + "0" * 32, "TWILIO_AUTH_TOKEN": "t0ken-value"}
    assert main(["run", "--web.config.file", str(cfg)], env=env) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--web.config.file" in err[0]
