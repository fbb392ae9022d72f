"""The docs keep up with the code: every exported metric is documented, examples load."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from sms_monitor.app import build
from sms_monitor.config import load_file, load_settings
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
    data = load_file(ROOT / "examples" / "sms-monitor.toml")
    env = {"CLINIC_WEST_AUTH_TOKEN": "a" * 32, "BACKUP_AUTH_TOKEN": "b" * 32}
    settings = load_settings(env, data)
    assert [a.name for a in settings.accounts] == ["clinic-west", "backup"]


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "```sh\nscripts/test\n```" in readme
    assert ci.rstrip().endswith("\nscripts/test")
    script = (ROOT / "scripts" / "test").read_text()
    # it installs every peer the tests need, then runs pytest in the project's venv
    for package in ("prometheus", "prometheus-alertmanager", "chromium", "postgresql"):
        assert f"missing+=({package}" in script
    assert script.rstrip().endswith("pip install -q -e '.[test]' && pytest -q \"$@\"")


def _documented_keys(doc: str) -> tuple[set[tuple[str, str]], set[str]]:
    """(section, key) pairs the reference's tables list (section "" is the top level), and
    the environment variables they name. A table's section is its heading's ``[section]``;
    the Environment table's second column is the file key a variable sets."""
    keys: set[tuple[str, str]] = set()
    variables: set[str] = set()
    section, columns = "", 1
    for line in doc.splitlines():
        if line.startswith("#"):
            found = re.search(r"`\[\[?(\w+)", line)
            section = found.group(1) if found else {"## Database": "database",
                                                    "## Alerts": "alerts"}.get(line, "")
            columns = 2 if line == "## Environment" else 1
            continue
        if not line.startswith("| `"):
            continue
        for cell in line.split("|")[1:1 + columns]:
            for token in re.findall(r"`([^`]+)`", cell):
                if re.fullmatch(r"(SMS_MONITOR|TWILIO)_[A-Z_]+", token):
                    variables.add(token)
                elif m := re.fullmatch(r"\[(\w+)\] (\w+)", token):  # [canary] to
                    keys.add((m.group(1), m.group(2)))
                elif m := re.fullmatch(r"\[\[?(\w+)(?:\.(\w+))?[^\]]*\]\]?", token):
                    # [[accounts]] and [thresholds.<check>] (top level), [database.tables]
                    keys.add((section, m.group(2)) if m.group(1) == section else ("", m.group(1)))
                else:
                    keys.add((section, token))
    return keys, variables


def test_the_configuration_reference_lists_every_key_of_every_model() -> None:
    from sms_monitor.config import ENVIRONMENT, PRIMARY, SECTIONS

    keys, variables = _documented_keys((ROOT / "docs" / "configuration.md").read_text())
    declared = {(name, key) for name, model in SECTIONS.items() for key in model.file_keys()
                if not (name == "" and key in SECTIONS and key not in ("accounts", "thresholds"))}
    assert declared - keys == set(), "settable keys missing from docs/configuration.md"
    assert keys - declared == set(), "docs/configuration.md lists keys no model declares"
    read = {*ENVIRONMENT, *PRIMARY, "SMS_MONITOR_STATE_DIR", "SMS_MONITOR_CONFIG",
            "SMS_MONITOR_WEB_CONFIG_FILE"}
    assert variables == read
    for var, path in ENVIRONMENT.items():  # each variable's row names the key it sets
        row = next(line for line in (ROOT / "docs" / "configuration.md").read_text().splitlines()
                   if line.startswith(f"| `{var}`"))
        shown = f"[{path[0]}] {path[1]}" if len(path) == 2 else path[0]
        assert f"`{shown}`" in row or var == "SMS_MONITOR_ALERT_STORE_URL" and "`store_url`" in row


def _cli_options() -> set[tuple[str, str]]:
    """(command, option) for every option of every (sub)command the parser knows; an
    option every command shares is listed under "" (the reference's "Every command")."""
    import argparse

    from sms_monitor.cli import _parser

    found: set[tuple[str, str]] = set()

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}".strip())
            elif not isinstance(action, argparse._HelpAction | argparse._VersionAction) and path:
                found.add((path, action.option_strings[0] if action.option_strings
                           else action.dest))

    walk(_parser(), "")
    common = {opt for _, opt in found if all((cmd, opt) in found for cmd in
                                              {c for c, _ in found if " " not in c})}
    return {("" if opt in common else cmd, opt) for cmd, opt in found}


def test_the_cli_reference_lists_every_option_of_every_command() -> None:
    documented: set[tuple[str, str]] = set()
    command = ""
    for line in (ROOT / "docs" / "cli.md").read_text().splitlines():
        if m := re.fullmatch(r"## `sms-monitor ([a-z ]+)`", line):
            command = m.group(1)
        elif line == "## Every command":
            command = ""
        elif m := re.match(r"\| `([^` ]+)", line):
            documented.add((command, m.group(1)))
    assert documented == _cli_options()


def test_the_example_configuration_names_every_key() -> None:
    """Every key of every section appears in examples/sms-monitor.toml, set or commented out
    (``# key = default``) under its section's header (``[web]`` or ``# [canary]``)."""
    from sms_monitor.config import SECTIONS

    named: set[tuple[str, str]] = set()
    section = ""
    for line in (ROOT / "examples" / "sms-monitor.toml").read_text().splitlines():
        text = line.lstrip("# ").rstrip()
        if header := re.fullmatch(r"\[\[?([a-z_]+)(?:\.([a-z_]+))?[^\]]*\]\]?", text):
            section = header.group(1)
            named.add(("", section))
            if header.group(2):
                named.add((section, header.group(2)))
            continue
        for key in re.findall(r"(?:^|[{,]\s*)([a-z_0-9]+)\s*=", text):
            named.add((section, key))  # [thresholds]: the check's name, then green and red
    declared = {(name, key) for name, model in SECTIONS.items() for key in model.file_keys()}
    assert declared - named == set(), "keys missing from examples/sms-monitor.toml"
