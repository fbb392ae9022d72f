"""`sms-monitor mixin render`: the shipped rules and dashboard are its default output, every
expression selects sms-monitor's own series, runbook links land on sections that exist."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from sms_monitor.cli import main
from sms_monitor.mixin import DASHBOARD_FILE, RULES_FILE, MixinConfig, Selector, SelectorError, render
from sms_monitor.mixin.promql import bare_metrics, scoped
from tests.test_grafana_dashboard import metric_names, selectors

ROOT = Path(__file__).resolve().parent.parent
RUNBOOK = ROOT / "docs" / "runbook.md"
CUSTOM = 'job="sms-prod", env=~"eu|us"'


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found on PATH: install Debian's prometheus package; .ci/run does")
    return path


def rules_of(text: str) -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(text)["groups"] for r in g["rules"]]


def dashboard_exprs(text: str) -> list[tuple[str, str]]:
    def walk(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [q for p in panels for q in (p, *walk(p.get("panels", [])))]

    dash = json.loads(text)
    out = [(p["title"], t["expr"]) for p in walk(dash["panels"]) for t in p.get("targets", [])]
    out += [(f"variable {v['name']}", re.sub(r"^label_values\((.*), \w+\)$", r"\1", v["query"]))
            for v in dash["templating"]["list"] if v["type"] == "query"]
    return out


def template_queries(text: str) -> list[str]:
    """The PromQL of the Go template `query "..."` calls in annotations."""
    return [bytes(q, "utf-8").decode("unicode_escape")
            for q in re.findall(r'query "((?:[^"\\]|\\.)*)"', text)]


# --------------------------------------------------------------------------- in sync


def test_the_shipped_files_are_the_default_render(tmp_path: Path) -> None:
    assert main(["mixin", "render", "--out", str(tmp_path)]) == 0
    for name in (RULES_FILE, DASHBOARD_FILE):
        rendered, shipped = (tmp_path / name).read_bytes(), (ROOT / name).read_bytes()
        assert rendered == shipped, (f"{name} is not what `sms-monitor mixin render` writes: "
                                     "change sms_monitor/mixin/ and run `sms-monitor mixin "
                                     "render` at the repository's root")


def test_render_prints_what_it_wrote(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["mixin", "render", "--out", str(tmp_path / "new")]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "new" / RULES_FILE),
                                               str(tmp_path / "new" / DASHBOARD_FILE)]


@pytest.mark.parametrize(("args", "message"), [
    (["--selector", ""], "the selector is empty"),
    (["--selector", "job=sms-monitor"], "expected label matchers"),
    (["--selector", 'job=~".*"'], "matches every series"),
    (["--selector", 'job="a" env="b"'], "expected a comma"),
    (["--runbook-url", "https://wiki.example/runbook#top"], "without an anchor"),
    (["--dashboard-url", "https://grafana.example/d/x with space"], "without spaces"),
])
def test_a_bad_value_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           args: list[str], message: str) -> None:
    assert main(["mixin", "render", "--out", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- the selector


def test_selectors_parse_and_print() -> None:
    s = Selector.parse('{job="sms-prod", env=~"eu|us",}')
    assert str(s) == 'job="sms-prod", env=~"eu|us"' and s.labels == ("job", "env")
    assert str(Selector.parse(r'job="a\"b"')) == r'job="a\"b"'
    with pytest.raises(SelectorError, match="__name__"):
        Selector.parse('__name__="up"')


def test_scoping_adds_the_selector_to_every_vector_selector_and_nothing_else() -> None:
    sel = Selector.parse(CUSTOM)
    assert scoped('max by (KEEP, account) (x{account=~"$account"}) / y{} or z:a:b{}', sel) == \
        (f'max by (job, env, account) (x{{{CUSTOM}, account=~"$account"}}) / y{{{CUSTOM}}} '
         f"or z:a:b{{{CUSTOM}}}")
    assert scoped('s{source=~"twilio:${account}"}', sel) == \
        f's{{{CUSTOM}, source=~"twilio:${{account}}"}}'
    with pytest.raises(ValueError, match="with braces"):
        scoped("max(up)", sel)
    assert bare_metrics('sum(rate(a{}[5m])) by (x) + vector(1) - time() offset 1h') == set()


@pytest.mark.parametrize("selector", ['job="sms-monitor"', CUSTOM])
def test_every_expression_selects_sms_monitors_own_series(selector: str) -> None:
    files = render(MixinConfig.of(selector=selector))
    exprs = [(r.get("alert") or r["record"], r["expr"]) for r in rules_of(files[RULES_FILE])]
    exprs += [("annotation query", q) for q in template_queries(files[RULES_FILE])]
    exprs += dashboard_exprs(files[DASHBOARD_FILE])
    assert len(exprs) > 100
    unscoped = []
    for where, expr in exprs:
        for name in metric_names(expr):
            for matchers in selectors(expr, name):
                if not matchers.startswith(selector):
                    unscoped.append(f"{where}: {name}{{{matchers}}} in {expr}")
    assert not unscoped, "\n".join(unscoped)


def test_aggregations_keep_the_selectors_labels() -> None:
    """Two deployments rendered with different selectors never share a recording rule's
    series, and their alerts say which deployment they are about."""
    rules = rules_of(render(MixinConfig.of(selector=CUSTOM))[RULES_FILE])
    for r in rules:
        for grouping in re.findall(r"\bby \(([^)]*)\)", r["expr"]):
            assert grouping.startswith("job, env"), (r.get("alert") or r["record"], r["expr"])


def test_custom_render_passes_promtool(tmp_path: Path) -> None:
    config = MixinConfig.of(selector=CUSTOM, runbook_url="https://wiki.example/sms/runbook",
                            dashboard_url="https://grafana.example/d/sms-monitor/sms?orgId=1")
    (tmp_path / "rules.yml").write_text(render(config)[RULES_FILE])
    result = subprocess.run([promtool(), "check", "rules", str(tmp_path / "rules.yml")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_foreign_series_test_fails_on_an_unscoped_rule(tmp_path: Path) -> None:
    """tests/rules/foreign_series.yml has teeth: without the selector another exporter's
    twilio_account_balance pages."""
    shipped = (ROOT / RULES_FILE).read_text()
    unscoped = shipped.replace('job="sms-monitor", ', "").replace('{job="sms-monitor"}', "")
    assert not [line for line in unscoped.splitlines()
                if "expr:" in line and 'job="sms-monitor"' in line]
    (tmp_path / "tests" / "rules").mkdir(parents=True)
    (tmp_path / RULES_FILE).write_text(unscoped)
    shutil.copy(ROOT / "tests" / "rules" / "foreign_series.yml", tmp_path / "tests" / "rules")
    result = subprocess.run([promtool(), "test", "rules", "tests/rules/foreign_series.yml"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0, result.stdout
    assert "TwilioBalanceCritical" in result.stdout + result.stderr


# --------------------------------------------------------------------------- links


def runbook_anchors() -> set[str]:
    """The anchors of docs/runbook.md's headings, as GitHub makes them."""
    anchors = set()
    for heading in re.findall(r"^#{1,6} (.+?)\s*$", RUNBOOK.read_text(encoding="utf-8"), re.M):
        anchors.add(re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-"))
    return anchors


def test_every_runbook_link_lands_on_a_section_of_the_shipped_runbook() -> None:
    base = "https://wiki.example/sms/runbook.md"
    rules = rules_of(render(MixinConfig.of(runbook_url=base))[RULES_FILE])
    anchors = runbook_anchors()
    for r in (r for r in rules if "alert" in r):
        url = r["annotations"]["runbook_url"]
        assert url == f"{base}#{r['alert'].lower()}", url
        assert url.split("#", 1)[1] in anchors, f"docs/runbook.md has no section for {url}"


def test_dashboard_links_use_the_dashboard_url() -> None:
    url = "https://grafana.example/d/sms-monitor/sms?orgId=1"
    files = render(MixinConfig.of(dashboard_url=url, runbook_url="https://wiki.example/rb"))
    alerts = [r for r in rules_of(files[RULES_FILE]) if "alert" in r]
    links = {r["alert"]: r["annotations"]["dashboard"] for r in alerts}
    assert links["TwilioBalanceCritical"] == f"{url}&var-account={{{{ $labels.account }}}}"
    assert links["SmsMonitorDown"] == url
    for r in alerts:  # an account's alert opens the dashboard on its account
        assert ("$labels.account" in links[r["alert"]]) == \
            ("account" in re.findall(r"\bby \(([^)]*)\)", r["expr"])[0].split(", ")
             if "by (" in r["expr"] else "account:" in r["expr"]), r["alert"]
    dash = json.loads(files[DASHBOARD_FILE])
    assert [link["url"] for link in dash["links"]] == ["https://wiki.example/rb"]
