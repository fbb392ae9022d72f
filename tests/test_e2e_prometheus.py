"""End to end with the real peers: `sms-monitor demo` scraped by Prometheus, alerts in Alertmanager.

One stack per module (Debian's `prometheus` and `prometheus-alertmanager`, no mocks):

    demo (simulator + daemon, 0.25 s polls, one retry per failed request)
        <- Prometheus (0.5 s scrape and evaluation, a copy of alerts.rules.yml with only
           the `for:` durations shortened) -> Alertmanager

Checked through Prometheus's HTTP API: every rule of alerts.rules.yml loads and evaluates
without error, every recording rule and the key queries return data, every metric an alert
reads is exported, and every panel query of grafana/sms-monitor.json returns data on the
healthy demo, with no exception: labelled counters start at 0, the demo configures a
monthly budget and notification_rules. Then the simulator runs out of credit:
`TwilioBalanceCritical` must reach Alertmanager with its labels, and resolve when the balance
is back. The tests share the stack and run in file order (healthy first).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from tests.test_cli import _free_port

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "alerts.rules.yml"
DASHBOARD = ROOT / "grafana" / "sms-monitor.json"
MISSING_BINARY = "install Debian's prometheus and prometheus-alertmanager; .ci/run does"
SHORT_FOR = "1s"  # every alert's `for:` in the test's copy of the rules
SHORT_FOR_SECONDS = 1
INTERVAL = "500ms"  # Prometheus's scrape and rule evaluation interval (and scrape timeout)
DEMO_POLL_INTERVAL = "0.25"  # seconds; a demo poll cycle takes ~0.06 s
DEMO_CONFIG = "max_retries = 1\n"  # an outage fails a poll after one back-off, not three
POLL = 0.05  # seconds between two looks at another process's state
DATA_TIMEOUT = 30.0  # for rates and recording rules to have the samples they need
ALERT_TIMEOUT = 60.0

T = TypeVar("T")


# --------------------------------------------------------------------------- processes


def _binary(name: str) -> str:
    path = shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None)
    if path is None:
        pytest.fail(f"{name} not found: {MISSING_BINARY}", pytrace=False)
    return path


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"({path}: {exc})"
    return f"--- last lines of {path.name} ---\n" + "\n".join(text[-lines:])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _spawn(stack: ExitStack, cmd: list[str], log: Path, **kwargs: Any) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=kwargs.pop("stdout", out), stderr=out, **kwargs)
    stack.callback(_stop, proc)
    return proc


def _wait_until(probe: Callable[[], T | None], what: str, timeout: float,
                proc: subprocess.Popen[bytes] | None = None, log: Path | None = None) -> T:
    """Poll a real server until probe() returns something; fail with its log otherwise."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: process exited with {proc.returncode}\n"
                                 + (_tail(log) if log else ""))
        try:
            result = probe()
            if result is not None:
                return result
        except (OSError, ValueError) as exc:  # not listening yet, or a half-written answer
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last})\n"
                                 + (_tail(log) if log else ""))
        time.sleep(POLL)  # waiting for another process, not timing our own code


# --------------------------------------------------------------------------- HTTP


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def _get_json(url: str) -> Any:
    status, body = _get(url)
    assert status == 200, f"GET {url}: HTTP {status}: {body[:500]}"
    return json.loads(body)


def _ready(url: str, expect: str = "") -> Callable[[], bool | None]:
    def probe() -> bool | None:
        status, body = _get(url)
        return True if status == 200 and body.startswith(expect) else None
    return probe


# --------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    demo: str
    simulator: str
    prometheus: str
    alertmanager: str
    logs: list[Path]

    def diagnostics(self) -> str:
        return "\n".join(_tail(p, 15) for p in self.logs)

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query; a PromQL error fails the test with Prometheus's message."""
        url = f"{self.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        status, body = _get(url)
        answer = json.loads(body)
        assert status == 200 and answer.get("status") == "success", \
            f"query {expr!r}: HTTP {status}: {answer.get('errorType')}: {answer.get('error')}"
        data = answer["data"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        assert data["resultType"] == "vector", data
        return list(data["result"])

    def scenario(self, name: str) -> None:
        body = urllib.parse.urlencode({"name": name}).encode()
        with urllib.request.urlopen(f"{self.simulator}/_simulator/scenario", body, timeout=5) as resp:
            assert resp.status == 200, resp.status

    def prometheus_alerts(self, name: str) -> list[dict[str, Any]]:
        alerts = _get_json(f"{self.prometheus}/api/v1/alerts")["data"]["alerts"]
        return [a for a in alerts if a["labels"].get("alertname") == name]

    def alertmanager_alerts(self, name: str) -> list[dict[str, Any]]:
        query = urllib.parse.urlencode({"filter": f'alertname="{name}"'})
        return list(_get_json(f"{self.alertmanager}/api/v2/alerts?{query}"))


def waiting_alerts(rules: str) -> list[str]:
    """The alerts of a rules file that have a `for:` duration."""
    groups = yaml.safe_load(rules)["groups"]
    return [r["alert"] for g in groups for r in g["rules"] if "alert" in r and "for" in r]


def shorten_for(rules: str) -> str:
    """The shipped rules with every `for:` set to SHORT_FOR and nothing else changed."""
    short, count = re.subn(r"(?m)^(\s+for:\s*)\S+[ \t]*$", rf"\g<1>{SHORT_FOR}", rules)
    alerts = len(waiting_alerts(rules))
    assert count == alerts, f"{count} `for:` lines for {alerts} alerts with `for` in {RULES.name}"
    for old, new in zip(rules.splitlines(), short.splitlines(), strict=True):
        assert old == new or re.match(r"\s+for:", old), (old, new)
    return short


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus_bin = _binary("prometheus")
    alertmanager_bin = _binary("prometheus-alertmanager")
    tmp = tmp_path_factory.mktemp("e2e")
    demo_port, am_port, prom_port = _free_port(), _free_port(), _free_port()
    demo_url = f"http://127.0.0.1:{demo_port}"
    am_url = f"http://127.0.0.1:{am_port}"
    prom_url = f"http://127.0.0.1:{prom_port}"
    demo_log, am_log, prom_log = tmp / "demo.err", tmp / "alertmanager.log", tmp / "prometheus.log"

    with ExitStack() as procs:
        # 1. the demo: simulator, practice database and daemon in one process
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "SMS_MONITOR_"))}
        env["SMS_MONITOR_POLL_INTERVAL"] = DEMO_POLL_INTERVAL
        (tmp / "demo.toml").write_text(DEMO_CONFIG)
        demo = _spawn(procs, [sys.executable, "-m", "sms_monitor.cli", "demo", "--scenario", "healthy",
                              "--config", str(tmp / "demo.toml"),
                              "--web.listen-address", f"127.0.0.1:{demo_port}"],
                      demo_log, env=env, cwd=tmp, stdout=subprocess.DEVNULL)

        # 2. Alertmanager: everything to a receiver that sends nothing, no cluster
        (tmp / "alertmanager.yml").write_text(
            "route:\n"
            "  receiver: 'null'\n"
            "  group_by: [alertname, account]\n"
            "  group_wait: 1s\n"
            "  group_interval: 1s\n"
            "  repeat_interval: 1h\n"
            "receivers:\n"
            "  - name: 'null'\n")
        am = _spawn(procs, [alertmanager_bin, f"--config.file={tmp / 'alertmanager.yml'}",
                            f"--storage.path={tmp / 'alertmanager-data'}",
                            f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address="],
                    am_log, cwd=tmp)

        # 3. Prometheus with the shipped rules, only the `for:` durations shortened
        (tmp / "alerts.rules.yml").write_text(shorten_for(RULES.read_text()))
        (tmp / "prometheus.yml").write_text(
            "global:\n"
            f"  scrape_interval: {INTERVAL}\n"
            f"  scrape_timeout: {INTERVAL}\n"
            f"  evaluation_interval: {INTERVAL}\n"
            "rule_files:\n"
            f"  - {tmp / 'alerts.rules.yml'}\n"
            "alerting:\n"
            "  alertmanagers:\n"
            "    - static_configs:\n"
            f"        - targets: ['127.0.0.1:{am_port}']\n"
            "scrape_configs:\n"
            "  - job_name: sms-monitor\n"
            "    static_configs:\n"
            f"      - targets: ['127.0.0.1:{demo_port}']\n")
        prom = _spawn(procs, [prometheus_bin, f"--config.file={tmp / 'prometheus.yml'}",
                              f"--storage.tsdb.path={tmp / 'prometheus-data'}",
                              f"--web.listen-address=127.0.0.1:{prom_port}"],
                      prom_log, cwd=tmp)

        _wait_until(_ready(f"{demo_url}/readyz", "ready"), "the demo's /readyz", 30, demo, demo_log)
        found = re.search(r"simulator at (http://127\.0\.0\.1:\d+)/", demo_log.read_text())
        assert found, _tail(demo_log)
        _wait_until(_ready(f"{am_url}/-/ready"), "Alertmanager's /-/ready", 30, am, am_log)
        _wait_until(_ready(f"{prom_url}/-/ready"), "Prometheus's /-/ready", 30, prom, prom_log)
        yield Stack(demo_url, found.group(1), prom_url, am_url, [demo_log, prom_log, am_log])


# --------------------------------------------------------------------------- queries


def _finite(sample: dict[str, Any]) -> bool:
    return math.isfinite(float(sample["value"][1]))


def _wait_for_data(stack: Stack, exprs: dict[str, str],
                   timeout: float = DATA_TIMEOUT) -> dict[str, list[dict[str, Any]]]:
    """Run every query until each returns at least one finite sample; return the results.

    Rates and the recording rules need a few scrapes and evaluations after start, hence the
    polling; a query still empty at the deadline is a failure naming it.
    """
    results: dict[str, list[dict[str, Any]]] = {}
    pending = dict(exprs)
    deadline = time.monotonic() + timeout
    while pending:
        for key, expr in list(pending.items()):
            samples = stack.query(expr)
            if any(_finite(s) for s in samples):
                results[key] = samples
                del pending[key]
        if not pending:
            break
        if time.monotonic() > deadline:
            lines = [f"  {key}: {expr}  ->  {stack.query(expr) or 'no data'}"
                     for key, expr in pending.items()]
            raise AssertionError(f"{len(pending)} queries have no data after {timeout:.0f} s:\n"
                                 + "\n".join(lines) + "\n" + stack.diagnostics())
        time.sleep(POLL)  # the next scrape / rule evaluation
    return results


def _values(samples: list[dict[str, Any]]) -> list[float]:
    return [float(s["value"][1]) for s in samples]


_NOT_METRICS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
                "bool", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (enough for the expressions of our rules)."""
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers, with their strings
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)  # grouping labels
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    names = re.findall(r"(?<![\w:.])([A-Za-z_:][\w:]*)\b(?!\s*\()", expr)  # not functions
    return {n for n in names if n.lower() not in _NOT_METRICS}


def test_metric_names_of_an_expression() -> None:
    assert metric_names('max(up{job="sms-monitor"}) == 0 or absent(up{job="sms-monitor"})') == {"up"}
    assert metric_names("time() - max by (source) (sms_monitor_last_success_timestamp_seconds) > 600") \
        == {"sms_monitor_last_success_timestamp_seconds"}
    assert metric_names("histogram_quantile(0.9, sum by (account, le) (rate(x_bucket[15m])))") == {"x_bucket"}
    assert metric_names("account:a:min <= 0.95 and account:a:min >= 0.90") == {"account:a:min"}


def test_shorten_for_changes_only_the_durations() -> None:
    shipped = RULES.read_text()
    short = shorten_for(shipped)
    assert re.findall(r"(?m)^\s+for:\s*(\S+)$", short) == [SHORT_FOR] * len(waiting_alerts(shipped))
    assert re.sub(r"(?m)^(\s+for:).*$", r"\1", short) == re.sub(r"(?m)^(\s+for:).*$", r"\1", shipped)


def test_every_rule_loads_and_every_recording_rule_has_data(stack: Stack) -> None:
    groups = _get_json(f"{stack.prometheus}/api/v1/rules")["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    shipped = RULES.read_text()
    records = re.findall(r"(?m)^\s+- record:\s*(\S+)\s*$", shipped)
    alerts = re.findall(r"(?m)^\s+- alert:\s*(\S+)\s*$", shipped)
    assert sorted(r["name"] for r in rules) == sorted(records + alerts)
    waiting = set(waiting_alerts(shipped))
    assert all(r["duration"] == (SHORT_FOR_SECONDS if r["name"] in waiting else 0)
               for r in rules if r["type"] == "alerting")

    _wait_for_data(stack, {name: name for name in records})

    # once every recording rule has data, every rule has been evaluated: none may fail
    rules = [r for g in _get_json(f"{stack.prometheus}/api/v1/rules")["data"]["groups"] for r in g["rules"]]
    broken = [(r["name"], r["health"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert not broken, broken

    # an alert on a metric nobody exports could never fire: the demo exports all of them,
    # labelled counters from 0 (the canary's success and latency once a probe has settled)
    read = {m for r in rules if r["type"] == "alerting" for m in metric_names(r["query"])}
    _wait_for_data(stack, {m: f"count({m})" if m != "up" else m for m in sorted(read)})


KEY_QUERIES = {
    "health": "sms_health_status",
    "delivery ratio": "sms_delivery_success_ratio",
    "latency p90":
        "histogram_quantile(0.9, sum by (account, le) (rate(sms_delivery_latency_seconds_bucket[1m])))",
    "balance": "twilio_account_balance",
    "request rate": "rate(twilio_api_requests_total[1m])",
    "invalid numbers": "sms_clients_invalid_phone_numbers",
    "leader": "sms_alert_leader",
    "target up": 'up{job="sms-monitor"}',
}


def test_key_queries_return_data(stack: Stack) -> None:
    got = _wait_for_data(stack, KEY_QUERIES)
    health = {(s["metric"]["account"], s["metric"]["check"]) for s in got["health"]}
    assert {("primary", "overall"), ("database", "overall")} <= health, health
    assert all(0 < v <= 1 for v in _values(got["delivery ratio"])), got["delivery ratio"]
    assert [s["metric"]["account"] for s in got["latency p90"]] == ["primary"]
    assert all(v > 0 for v in _values(got["latency p90"])), got["latency p90"]
    assert [(s["metric"]["account"], s["metric"]["currency"]) for s in got["balance"]] == [("primary", "USD")]
    assert _values(got["balance"])[0] > 50, got["balance"]  # the healthy scenario's balance
    assert max(_values(got["request rate"])) > 0, got["request rate"]
    assert {s["metric"]["column"] for s in got["invalid numbers"]} == {"phone", "cell_phone"}
    assert _values(got["leader"]) == [1.0]
    assert _values(got["target up"]) == [1.0]


# --------------------------------------------------------------------------- Grafana

# Grafana's variables, replaced as Grafana would for "All" accounts over a short range.
GRAFANA_VARIABLES = {
    "__rate_interval": "1m",
    "__interval": "1m",
    "__interval_ms": "60000",
    "__range": "5m",
    "__range_s": "300",
    "__range_ms": "300000",
    "account": ".*",
}


def grafana_expr(expr: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group("a") or match.group("b") or match.group("c")
        assert name in GRAFANA_VARIABLES, f"unknown Grafana variable ${name} in {expr!r}: add it"
        return GRAFANA_VARIABLES[name]

    out = re.sub(r"\$\{(?P<a>\w+)(?::\w+)?\}|\[\[(?P<b>\w+)(?::\w+)?\]\]|\$(?P<c>\w+)", value, expr)
    # "All" accounts is a regex: an equality matcher on the variable would match nothing
    return re.sub(r'(\w+)="\.\*"', r'\1=~".*"', out)


def test_grafana_expr_substitution() -> None:
    assert grafana_expr('rate(x{account=~"$account"}[$__rate_interval])') == 'rate(x{account=~".*"}[1m])'
    assert grafana_expr('x{source=~"twilio:${account}", a="[[account]]"}') \
        == 'x{source=~"twilio:.*", a=~".*"}'
    with pytest.raises(AssertionError, match="unknown Grafana variable"):
        grafana_expr("x[$__unknown]")


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # a collapsed row holds its panels


SCENARIO_TIMEOUT = 45.0


def back_to_healthy(stack: Stack) -> None:
    stack.scenario("healthy")
    _wait_for_data(stack, {"twilio up": "min(twilio_up) == 1",
                           "balance": "account:twilio_account_balance:min > 50"}, SCENARIO_TIMEOUT)


def test_every_grafana_panel_returns_data(stack: Stack) -> None:
    """Every query of every panel, and the account variable's, has data on the healthy demo:
    no exception, no scenario needed (an empty panel is a question at 3 a.m.)."""
    assert DASHBOARD.exists(), f"{DASHBOARD.relative_to(ROOT)} is missing"
    dashboard = json.loads(DASHBOARD.read_text())
    targets = {(p["title"], t.get("refId", "?")): t["expr"]
               for p in _panels(dashboard["panels"]) for t in p.get("targets", []) if t.get("expr")}
    assert len(targets) >= 60, f"{len(targets)} panel queries in the dashboard"

    # the account variable's own query, label_values(sms_health_status{job=...}, account)
    variable = next(v for v in dashboard["templating"]["list"] if v["name"] == "account")
    found = re.fullmatch(r"label_values\((.+), account\)", variable["query"])
    assert found, variable["query"]
    accounts = _get_json(f"{stack.prometheus}/api/v1/label/account/values?"
                         + urllib.parse.urlencode({"match[]": found.group(1)}))["data"]
    assert "primary" in accounts, accounts

    _wait_for_data(stack, {f"{title} / {ref}": grafana_expr(expr)
                           for (title, ref), expr in targets.items()})


# --------------------------------------------------------------------------- alerting


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _gone(stack: Stack, alert: str) -> bool | None:
    """Neither pending nor firing in Prometheus, and not active in Alertmanager."""
    if stack.prometheus_alerts(alert):
        return None
    now = datetime.now(UTC)
    active = [a for a in stack.alertmanager_alerts(alert)
              if a["status"]["state"] == "active" and _parse_time(a["endsAt"]) > now]
    return None if active else True


def test_balance_alert_reaches_alertmanager_and_resolves(stack: Stack) -> None:
    alert = "TwilioBalanceCritical"
    managers = _get_json(f"{stack.prometheus}/api/v1/alertmanagers")["data"]["activeAlertmanagers"]
    assert [m["url"] for m in managers] == [f"{stack.alertmanager}/api/v2/alerts"], managers
    back_to_healthy(stack)
    # an earlier test's out_of_credit may have fired it: start from a resolved alert
    _wait_until(lambda: _gone(stack, alert), f"{alert} to be resolved before the test", ALERT_TIMEOUT)

    try:
        stack.scenario("out_of_credit")  # balance -0.42

        def in_alertmanager() -> dict[str, Any] | None:
            for a in stack.alertmanager_alerts(alert):
                if (a["labels"].get("account") == "primary" and a["labels"].get("severity") == "critical"
                        and a["status"]["state"] == "active"):
                    return a
            return None

        fired = _wait_until(in_alertmanager, f"{alert} in Alertmanager", ALERT_TIMEOUT)
        assert fired["labels"]["currency"] == "USD"
        assert [r["name"] for r in fired["receivers"]] == ["null"]
        assert "-0.42 USD" in fired["annotations"]["description"], fired["annotations"]
        assert fired["annotations"]["runbook_url"].endswith("#twiliobalancecritical")
        firing = stack.prometheus_alerts(alert)
        assert [(a["state"], float(a["value"])) for a in firing] == [("firing", -0.42)], firing
    finally:
        stack.scenario("healthy")

    _wait_until(lambda: _gone(stack, alert), f"{alert} to resolve in Prometheus and Alertmanager",
                ALERT_TIMEOUT)
