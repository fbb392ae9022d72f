"""grafana/sms-monitor.json: structure, and every query parses and names only exported metrics.

Each panel's PromQL is checked by promtool (the Prometheus parser itself): the expressions,
with Grafana's variables replaced by plausible values, are written as recording rules and
`promtool check rules` must accept them. The metric names they use must be ones sms-monitor
exports (docs/metrics.md), recording rules of alerts.rules.yml, or `up`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "grafana" / "sms-monitor.json"
METRICS_DOC = ROOT / "docs" / "metrics.md"
RULES = ROOT / "alerts.rules.yml"
DATASOURCE = "${datasource}"

# Grafana's variables → values that make the query valid PromQL, as Grafana would send it.
VARIABLES = {
    "__rate_interval": "5m",
    "__interval": "1m",
    "__range": "1h",
    "__range_s": "3600",
    "__interval_ms": "60000",
    "account": ".*",
    "datasource": "prometheus",
}

FUNCTIONS_AND_KEYWORDS = {
    # aggregation operators and keywords
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk",
    "topk", "quantile", "limitk", "limit_ratio", "by", "without", "on", "ignoring", "group_left",
    "group_right", "and", "or", "unless", "bool", "offset", "atan2", "inf", "nan",
}


# --------------------------------------------------------------------------- helpers


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in panels:
        yield p
        yield from all_panels(p.get("panels", []))  # a collapsed row holds its panels


def query_panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in all_panels(dash["panels"]) if p.get("type") != "row"]


def expressions(dash: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) of every target."""
    return [(p["title"], t["expr"]) for p in query_panels(dash) for t in p.get("targets", [])
            if t.get("expr")]


def substitute(expr: str) -> str:
    def value(name: str) -> str:
        if name not in VARIABLES:
            raise AssertionError(f"unknown Grafana variable ${name} in {expr!r}")
        return VARIABLES[name]

    out = re.sub(r"\$\{(\w+)(?::\w+)?\}", lambda m: value(m.group(1)), expr)
    out = re.sub(r"\[\[(\w+)(?::\w+)?\]\]", lambda m: value(m.group(1)), out)
    out = re.sub(r"\$(\w+)", lambda m: value(m.group(1)), out)
    return out


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions (followed by
    "("), keywords, label names (inside {...} or by/without/on/ignoring/group_* lists),
    durations (inside [...]) or parts of strings and numbers."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    s = re.sub(r"\{[^}]*\}", "{}", s)
    s = re.sub(r"\[[^\]]*\]", "[]", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w.:])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()", s):
        word = m.group(1)
        if word.lower() in FUNCTIONS_AND_KEYWORDS:
            continue
        names.add(word)
    return names


def selectors(expr: str, metric: str) -> list[str]:
    """The label matchers of each occurrence of `metric` ("" when it has none)."""
    found = []
    for m in re.finditer(rf"(?<![\w:]){re.escape(metric)}(?![\w:])(\s*\{{([^}}]*)\}})?", expr):
        found.append(m.group(2) or "")
    return found


def documented_metrics() -> dict[str, set[str]]:
    """Exported series name → its labels, from the tables of docs/metrics.md."""
    exported: dict[str, set[str]] = {}
    for line in METRICS_DOC.read_text(encoding="utf-8").splitlines():
        m = re.match(r"\|\s*`([a-z_:][a-z0-9_:*]*)`\s*\|\s*([a-z]*)\s*\|([^|]*)\|", line)
        if not m or m.group(1).endswith("*"):
            continue
        name, kind = m.group(1), m.group(2)
        labels = set(re.findall(r"`(\w+)`", m.group(3)))
        if kind == "histogram":
            for suffix in ("_bucket", "_sum", "_count"):
                exported[name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
        else:
            exported[name] = labels
    return exported


def recording_rules() -> set[str]:
    return set(re.findall(r"^\s*-\s*record:\s*(\S+)\s*$", RULES.read_text(encoding="utf-8"), re.M))


def promtool() -> str:
    path = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
    if path is None:
        pytest.fail("promtool is required to check the dashboard's PromQL (install prometheus' promtool)")
    return path


# --------------------------------------------------------------------------- the helpers themselves


def test_metric_name_extraction() -> None:
    assert metric_names('time() - max by (source) (sms_monitor_last_success_timestamp_seconds'
                        '{source=~"twilio:.*"})') == {"sms_monitor_last_success_timestamp_seconds"}
    assert metric_names("histogram_quantile(0.9, sum by (account, le) (rate(x_bucket{a=\"b\"}[5m])))") \
        == {"x_bucket"}
    assert metric_names("max(a) / max(b) > 1e-9 and on (account) c offset 5m") == {"a", "b", "c"}
    assert metric_names('up{job="sms-monitor"} or vector(0)') == {"up"}
    assert selectors('max by (a) (foo{account=~"$account"}) or bar + foo', "foo") == \
        ['account=~"$account"', ""]


def test_documented_metrics_are_read() -> None:
    exported = documented_metrics()
    assert "sms_health_status" in exported and exported["sms_health_status"] == {"account", "check"}
    assert "twilio_api_requests_total" in exported
    assert {"sms_delivery_latency_seconds_bucket", "sms_delivery_latency_seconds_count"} <= set(exported)
    assert "sms_delivery_latency_seconds" not in exported
    assert "account:sms_health_status:max" in recording_rules()


# --------------------------------------------------------------------------- structure


def test_identity_and_variables() -> None:
    dash = load_dashboard()
    assert dash["uid"] == "sms-monitor"
    assert dash["title"] == "sms-monitor"
    assert dash["schemaVersion"] >= 39
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    account = variables["account"]
    assert account["type"] == "query"
    query = account["query"]
    query = query.get("query") if isinstance(query, dict) else query
    assert re.sub(r"\s", "", query) == 'label_values(sms_health_status{job="sms-monitor"},account)'
    assert account["multi"] is True and account["includeAll"] is True
    assert account["datasource"]["uid"] == DATASOURCE


def test_every_panel_has_title_description_datasource_and_targets() -> None:
    dash = load_dashboard()
    panels = list(all_panels(dash["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels:
        assert p.get("title", "").strip(), f"panel {p.get('id')} has no title"
        pos = p["gridPos"]
        assert pos["x"] + pos["w"] <= 24, p["title"]
        if p["type"] == "row":
            continue
        assert p.get("description", "").strip(), f"{p['title']!r} has no description"
        assert p.get("datasource", {}).get("uid") == DATASOURCE, p["title"]
        assert p.get("targets"), f"{p['title']!r} has no targets"
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t.get("expr", "").strip(), f"{p['title']!r} target {t.get('refId')} has no expr"
            assert t.get("datasource", {}).get("uid") == DATASOURCE, f"{p['title']!r} {t['refId']}"


def test_rates_use_rate_interval() -> None:
    for title, expr in expressions(load_dashboard()):
        for m in re.finditer(r"\b(rate|irate|increase)\s*\(", expr):
            window = re.match(r"[^\[]*\[([^\]]+)\]", expr[m.end():])
            assert window, f"{title!r}: {m.group(1)}() without a range: {expr}"
            assert window.group(1) == "$__rate_interval", f"{title!r}: {expr}"


def test_every_metric_is_selected_with_the_mixins_selector() -> None:
    """Another exporter's series of the same name never reach a panel (tests/test_mixin.py
    checks the same for any selector)."""
    for title, expr in expressions(load_dashboard()):
        for name in metric_names(expr):
            for matchers in selectors(expr, name):
                assert matchers.startswith('job="sms-monitor"'), f"{title!r}: {name} in {expr}"


def test_account_labelled_metrics_are_filtered_by_the_variable() -> None:
    exported = documented_metrics()
    for title, expr in expressions(load_dashboard()):
        for name in metric_names(expr):
            if "account" not in exported.get(name, set()):
                continue
            for matchers in selectors(expr, name):
                # "${account}|": also the series summed over the accounts, which have no
                # account label (per_account_request_histograms = false)
                assert re.search(r'account\s*=~\s*"\$(account|\{account\})\|?"', matchers) or \
                    re.search(r'account\s*=\s*"database"', matchers), \
                    f"{title!r}: {name} is not filtered by $account in {expr}"


def test_state_timeline_with_health_mappings() -> None:
    dash = load_dashboard()
    timelines = [p for p in query_panels(dash) if p["type"] == "state-timeline"
                 and any("sms_health_status" in t["expr"] for t in p["targets"])]
    exprs = " ".join(t["expr"] for p in timelines for t in p["targets"])
    assert 'check="overall"' in exprs and 'check!="overall"' in exprs, \
        "want state timelines for the overall and the per-check health"
    for p in timelines:
        options: dict[str, dict[str, Any]] = {}
        for mapping in p["fieldConfig"]["defaults"]["mappings"]:
            if mapping["type"] == "value":
                options.update(mapping["options"])
        assert set(options) == {"-1", "0", "1", "2"}, p["title"]
        assert options["-1"]["text"].lower() == "unknown"
        assert (options["0"]["color"], options["1"]["color"], options["2"]["color"]) == \
            ("green", "yellow", "red"), p["title"]
        grey = options["-1"]["color"].lower()
        hexgrey = re.fullmatch(r"#([0-9a-f]{2})\1\1", grey)
        assert grey in {"grey", "gray", "text"} or hexgrey, f"{p['title']!r}: unknown is {grey}"


def panel_using(dash: dict[str, Any], metric: str) -> dict[str, Any]:
    for p in query_panels(dash):
        if any(metric in metric_names(t["expr"]) for t in p["targets"]):
            return p
    raise AssertionError(f"no panel uses {metric}")


def test_delivery_rate_thresholds_are_drawn() -> None:
    p = panel_using(load_dashboard(), "sms_delivery_success_ratio")
    defaults = p["fieldConfig"]["defaults"]
    steps = [s["value"] for s in defaults["thresholds"]["steps"]]
    assert 0.90 in steps and 0.95 in steps
    assert defaults["custom"]["thresholdsStyle"]["mode"] != "off"


def test_required_queries_are_present() -> None:
    exprs = [e for _, e in expressions(load_dashboard())]
    joined = "\n".join(exprs)
    for q in (0.5, 0.9, 0.99):
        assert re.search(rf"histogram_quantile\({q},[^\n]*sms_delivery_latency_seconds_bucket", joined), q
    assert re.search(r"(predict_linear|deriv)\(twilio_account_balance\{[^}]*\}\[6h\]", joined)
    assert "rate(twilio_api_requests_total{" in joined
    used = set().union(*(metric_names(e) for e in exprs))
    wanted = {
        "sms_health_status", "sms_delivery_success_ratio", "sms_window_error_messages", "sms_error_ratio",
        "twilio_account_balance", "twilio_api_response_time_seconds",
        "twilio_api_request_duration_seconds_bucket", "sms_throughput_utilisation_ratio",
        "twilio_sms_spend", "sms_window_spend", "sms_clients_invalid_phone_numbers",
        "sms_optout_unprocessed_messages", "sms_sent_to_opted_out_messages",
        "sms_notification_queue_delay_seconds", "sms_reconciliation_ratio",
        "sms_notification_settings_sms_disabled", "sms_content_templates_under_threshold",
        "sms_alert_state", "sms_alert_notifications_total", "sms_alert_outbox_pending", "sms_alert_leader",
        "up", "sms_monitor_up", "sms_monitor_last_success_timestamp_seconds",
        "sms_monitor_poll_duration_seconds", "twilio_api_retries_total", "sms_monitor_poll_errors_total",
    }
    assert wanted <= used, f"not on the dashboard: {sorted(wanted - used)}"
    assert 'up{job="sms-monitor"}' in joined


# --------------------------------------------------------------------------- PromQL


def test_every_metric_is_exported() -> None:
    known = set(documented_metrics()) | recording_rules() | {"up"}
    unknown = {}
    for title, expr in expressions(load_dashboard()):
        missing = metric_names(expr) - known
        if missing:
            unknown[title] = (sorted(missing), expr)
    assert not unknown, f"metrics sms-monitor does not export: {json.dumps(unknown, indent=2)}"


def test_every_expression_parses_with_promtool(tmp_path: Path) -> None:
    tool = promtool()
    exprs = expressions(load_dashboard())
    assert exprs
    rules = []
    for i, (_, expr) in enumerate(exprs):
        substituted = substitute(expr)
        assert "$" not in substituted, f"unsubstituted variable in {substituted!r}"
        rules.append({"record": f"dash:q{i}", "expr": substituted})
    path = tmp_path / "dashboard.rules.yml"
    # JSON is YAML: no YAML library needed, and promtool reads it as a rules file.
    path.write_text(json.dumps({"groups": [{"name": "dash", "rules": rules}]}, indent=2), encoding="utf-8")
    result = subprocess.run([tool, "check", "rules", str(path)], capture_output=True, text=True,
                            timeout=60, check=False)
    index = "\n".join(f"dash:q{i}  [{title}]  {rules[i]['expr']}" for i, (title, _) in enumerate(exprs))
    assert result.returncode == 0, (f"promtool check rules failed (exit {result.returncode}):\n"
                                    f"{result.stdout}\n{result.stderr}\nqueries:\n{index}")
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout, result.stdout


def test_promtool_rejects_a_broken_expression(tmp_path: Path) -> None:
    """The check above would be worthless if promtool accepted anything."""
    path = tmp_path / "broken.rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "dash", "rules": [
        {"record": "dash:q0", "expr": "sum by (account (rate(x[5m]))"}]}]}), encoding="utf-8")
    result = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode != 0, result.stdout + result.stderr


# --------------------------------------------------------------------------- provisioning


def test_provisioning_examples() -> None:
    provider = (ROOT / "grafana" / "provisioning" / "dashboards" / "sms-monitor.yml").read_text()
    assert re.search(r"^apiVersion:\s*1\s*$", provider, re.M)
    assert re.search(r"^\s*type:\s*file\s*$", provider, re.M)
    assert re.search(r"^\s*path:\s*\S+", provider, re.M)
    datasource = (ROOT / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    assert re.search(r"^\s*type:\s*prometheus\s*$", datasource, re.M)
    assert re.search(r"^\s*url:\s*http", datasource, re.M)
