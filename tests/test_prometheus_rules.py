"""alerts.rules.yml: promtool's syntax check, its unit tests in tests/rules/, and house conventions."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "alerts.rules.yml"
RULE_TESTS = ROOT / "tests" / "rules"
RUNBOOK = ROOT / "docs" / "runbook.md"
RUNBOOK_URL = "docs/runbook.md#"  # the mixin's default: the repository's copy
SEVERITIES = {"critical", "warning"}
ANNOTATIONS = ("summary", "description", "runbook_url", "dashboard")
ALERT_NAME = re.compile(r"^(Sms|Twilio)([A-Z][a-z0-9]+)+$")


def load(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = load(RULES)["groups"]
    return groups


def alerts() -> list[dict[str, Any]]:
    return [r for g in rule_groups() for r in g["rules"] if "alert" in r]


def rule_test_files() -> list[Path]:
    return sorted(RULE_TESTS.glob("*.yml"))


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found on PATH: install Debian's prometheus package; .ci/run does")
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), cwd=ROOT, capture_output=True, text=True, timeout=300)


def report(result: subprocess.CompletedProcess[str]) -> str:
    return (f"{' '.join(result.args)} exited {result.returncode}\n"
            f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}")


# --------------------------------------------------------------------------- promtool


def test_promtool_check_rules() -> None:
    result = run(promtool(), "check", "rules", RULES.relative_to(ROOT).as_posix())
    assert result.returncode == 0, report(result)


def test_promtool_unit_tests_pass() -> None:
    files = [p.relative_to(ROOT).as_posix() for p in rule_test_files()]
    assert files, f"no promtool unit tests in {RULE_TESTS}"
    result = run(promtool(), "test", "rules", *files)
    assert result.returncode == 0, report(result)


# --------------------------------------------------------------------------- conventions


@pytest.fixture(params=[a["alert"] for a in alerts()])
def alert(request: pytest.FixtureRequest) -> dict[str, Any]:
    return next(a for a in alerts() if a["alert"] == request.param)


def test_alert_name(alert: dict[str, Any]) -> None:
    assert ALERT_NAME.match(alert["alert"]), \
        f"{alert['alert']}: names start with Sms or Twilio and are CamelCase (SmsQueueDelayWarning)"


def test_alert_severity(alert: dict[str, Any]) -> None:
    severity = (alert.get("labels") or {}).get("severity")
    assert severity in SEVERITIES, \
        f"{alert['alert']}: labels.severity is {severity!r}, not one of {sorted(SEVERITIES)}"


def test_alert_annotations(alert: dict[str, Any]) -> None:
    annotations = alert.get("annotations") or {}
    missing = [k for k in ANNOTATIONS if not str(annotations.get(k, "")).strip()]
    assert not missing, f"{alert['alert']}: missing annotations {missing}"


def test_runbook_anchor_is_the_lowercase_alert_name(alert: dict[str, Any]) -> None:
    url = (alert.get("annotations") or {}).get("runbook_url", "")
    assert url == RUNBOOK_URL + alert["alert"].lower(), f"{alert['alert']}: runbook_url is {url!r}"
    headings = set(re.findall(r"^## (\S+)\s*$", RUNBOOK.read_text(encoding="utf-8"), flags=re.M))
    assert alert["alert"].lower() in headings, f"docs/runbook.md has no '## {alert['alert'].lower()}'"


def alert_tests() -> list[dict[str, Any]]:
    return [case for path in rule_test_files() for group in load(path).get("tests") or []
            for case in group.get("alert_rule_test") or []]


def test_every_alert_has_promtool_unit_tests(alert: dict[str, Any]) -> None:
    cases = [c for c in alert_tests() if c.get("alertname") == alert["alert"]]
    assert cases, f"{alert['alert']} has no alert_rule_test in tests/rules/*.yml: add one"
    assert any(c.get("exp_alerts") for c in cases), \
        f"{alert['alert']}: no test in tests/rules/ expects it to fire"
    assert any(not c.get("exp_alerts") for c in cases), \
        f"{alert['alert']}: no test in tests/rules/ expects it to stay quiet"


@pytest.mark.parametrize("path", rule_test_files(), ids=lambda p: p.name)
def test_rule_test_file_setup(path: Path) -> None:
    """Each test file loads the real rules and evaluates recording rules before alerts.

    Without group_eval_order promtool 2.42 evaluates the groups in random order on each run, and an
    alert reading a recording rule then fires one evaluation late now and then: a flaky test.
    """
    spec = load(path)
    assert spec.get("rule_files") == ["../../alerts.rules.yml"], f"{path.name}: rule_files"
    recording = [g["name"] for g in rule_groups() if not any("alert" in r for r in g["rules"])]
    alerting = [g["name"] for g in rule_groups() if g["name"] not in recording]
    assert spec.get("group_eval_order") == recording + alerting, \
        f"{path.name}: group_eval_order must list the recording groups, then the alerting groups"
