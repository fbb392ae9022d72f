"""The docs keep up with the code: every exported metric is documented, examples load."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from sms_monitor.app import build
from sms_monitor.config import load_settings
from sms_monitor.outputs.http import build_registry
from sms_monitor.simulator.server import SimulatorServer
from tests.conftest import FakeClock, SleepRecorder, settings_for

ROOT = Path(__file__).resolve().parents[1]


def test_every_exported_metric_is_in_the_metrics_reference(simulator: SimulatorServer,
                                                           clock: FakeClock) -> None:
    from prometheus_client.exposition import generate_latest

    monitor = build(settings_for(simulator.url), clock=clock, sleep=SleepRecorder())
    monitor.run_cycle()
    text = generate_latest(build_registry(monitor.holder, monitor.areas)).decode()
    doc = (ROOT / "docs" / "metrics.md").read_text()
    documented = set(re.findall(r"`((?:sms|twilio)_[a-z_]+)`", doc))
    for family in text_string_to_metric_families(text):
        if family.name.startswith("process_"):
            continue
        name = family.name + ("_total" if family.type == "counter" else "")
        assert name in documented, f"{name} is exported but not in docs/metrics.md"


def test_example_config_is_valid() -> None:
    data = tomllib.loads((ROOT / "examples" / "sms-monitor.toml").read_text())
    env = {"CLINIC_WEST_AUTH_TOKEN": "a" * 32, "BACKUP_AUTH_TOKEN": "b" * 32}
    settings = load_settings(env, data)
    assert [a.name for a in settings.accounts] == ["clinic-west", "backup"]


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = "python3 -m venv .venv && . .venv/bin/activate && pip install -q -e '.[test]' && pytest -q"
    assert command in readme
    assert command in ci
