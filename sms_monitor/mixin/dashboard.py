"""The Grafana dashboard as data: rows of panels, each with its queries.

Queries are written as :mod:`sms_monitor.mixin.promql` describes (every selector in braces);
:func:`dashboard` scopes them with the selector, baked into every query and into the
``account`` variable's, so the dashboard shows sms-monitor's series only. Panels are laid out
left to right in rows of 24 columns, in the order given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sms_monitor.mixin.promql import Selector, scoped

DS = {"type": "prometheus", "uid": "${datasource}"}
GREY = "#8e8e8e"
Steps = Sequence[tuple[str, float | None]]  # (colour, from value); the first is from -inf
Targets = Sequence[tuple[str, str]]  # (expr, legend)


@dataclass
class Panel:
    type: str
    title: str
    description: str
    targets: Targets
    w: int
    h: int = 8
    field_defaults: dict[str, Any] = field(default_factory=dict)
    overrides: list[dict[str, Any]] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Row:
    title: str
    panels: list[Panel]


def _thresholds(steps: Steps) -> dict[str, Any]:
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in steps]}


def by_ref(ref: str, *properties: tuple[str, Any]) -> dict[str, Any]:
    """An override for one query's series."""
    return {"matcher": {"id": "byFrameRefID", "options": ref},
            "properties": [{"id": k, "value": v} for k, v in properties]}


def timeseries(title: str, description: str, targets: Targets, *, w: int, h: int = 8,
               unit: str = "short", steps: Steps = (("green", None),), dashed: bool = False,
               min_: float | None = 0, max_: float | None = None, stacked: bool = False,
               bars: bool = False, sort_by_max: bool = False,
               overrides: Sequence[dict[str, Any]] = ()) -> Panel:
    """A time series panel; ``dashed`` draws the thresholds, ``sort_by_max`` puts the series
    that moved at the top of the legend (counters that are mostly 0)."""
    defaults: dict[str, Any] = {
        "unit": unit,
        "custom": {
            "drawStyle": "bars" if bars else "line",
            "lineWidth": 1,
            "fillOpacity": 80 if bars else 10,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if stacked else "none", "group": "A"},
            "thresholdsStyle": {"mode": "dashed" if dashed else "off"},
        },
        "color": {"mode": "palette-classic"},
        "thresholds": _thresholds(steps),
    }
    if min_ is not None:
        defaults["min"] = min_
    if max_ is not None:
        defaults["max"] = max_
    legend: dict[str, Any] = {"displayMode": "table", "placement": "bottom", "showLegend": True,
                              "calcs": ["lastNotNull", "max"]}
    if sort_by_max:
        legend.update(sortBy="Max", sortDesc=True)
    return Panel("timeseries", title, description, targets, w, h, defaults, list(overrides),
                 {"legend": legend, "tooltip": {"mode": "multi", "sort": "desc"}})


def stat(title: str, description: str, targets: Targets, *, w: int, h: int = 8,
         unit: str = "short", steps: Steps = (("green", None),),
         mappings: Sequence[dict[str, Any]] = (),
         overrides: Sequence[dict[str, Any]] = ()) -> Panel:
    defaults = {"unit": unit, "color": {"mode": "thresholds"}, "mappings": list(mappings),
                "thresholds": _thresholds(steps)}
    options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
               "colorMode": "value", "graphMode": "area", "justifyMode": "auto",
               "orientation": "auto", "textMode": "auto"}
    return Panel("stat", title, description, targets, w, h, defaults, list(overrides), options)


def states(title: str, description: str, targets: Targets, values: Sequence[tuple[int, str, str]],
           *, w: int = 24, h: int = 8) -> Panel:
    """A state timeline; ``values`` are (value, text, colour), lowest first."""
    mapping = {"type": "value", "options": {
        str(v): {"text": text, "color": colour, "index": i}
        for i, (v, text, colour) in enumerate(values)}}
    steps: list[tuple[str, float | None]] = [(values[0][2], None)]
    steps += [(colour, v) for v, _, colour in values[1:]]
    defaults = {"color": {"mode": "thresholds"}, "mappings": [mapping],
                "thresholds": _thresholds(steps), "custom": {"fillOpacity": 80, "lineWidth": 0}}
    options = {"showValue": "never", "mergeValues": True, "alignValue": "left", "rowHeight": 0.9,
               "legend": {"showLegend": True, "displayMode": "list", "placement": "bottom"},
               "tooltip": {"mode": "single", "sort": "none"}}
    return Panel("state-timeline", title, description, targets, w, h, defaults, [], options)


HEALTH = ((-1, "unknown", GREY), (0, "green", "green"), (1, "yellow", "yellow"), (2, "red", "red"))
YES_NO = ((0, "no", "red"), (1, "yes", "green"))
UP_DOWN = ((0, "down", "red"), (1, "up", "green"))
ALERT_STATES = ((0, "inactive", "green"), (1, "pending", "yellow"), (2, "firing", "red"))
A = 'account=~"$account"'
RATE = "[$__rate_interval]"
# twilio_api_request_duration_seconds has an account label only with
# per_account_request_histograms: the selected accounts, or the series summed over them all
REQUESTS = 'account=~"$account|"'
OVERALL, NOT_OVERALL = 'check="overall"', 'check!="overall"'
THROUGHPUT, ACTIVE, DATABASE = 'check="throughput"', 'status="active"', 'account="database"'
UNSENT, CALLBACK = 'state="unsent"', 'source="callback"'
TARGETS = 'target=~"${account}|[*]|database"'  # an account, the roll-up or the database
SOURCES, ACCOUNT_SOURCES = 'source=~"twilio:${account}|database"', 'source=~"twilio:${account}"'
YEAR = 365 * 86400  # "Projected time to empty" shows no more than a year: "not draining"


def q(metric: str, *matchers: str) -> str:
    """A vector selector (the selector is added when the dashboard is rendered)."""
    return f"{metric}{{{', '.join(matchers)}}}"


def quantiles(metric: str, by: str, legend: str, matcher: str = A) -> list[tuple[str, str]]:
    return [(f"histogram_quantile({p}, sum by ({by}, le) (rate({q(metric, matcher)}{RATE})))",
             f"{legend} p{round(p * 100)}") for p in (0.5, 0.9, 0.99)]


ROWS = [
    Row("Health", [
        states("Overall health",
               'sms_health_status{check="overall"} per account: the worst known check (green 0, '
               "yellow 1, red 2; grey is unknown, i.e. every check unknown). The pseudo-account "
               '"database" carries the application database checks.',
               [(f"max by (account) ({q('sms_health_status', A, OVERALL)})",
                 "{{account}}")], HEALTH, h=5),
        states("Health by check",
               'sms_health_status per account and check (README "Checks" and "Database checks" '
               "give each check's thresholds). Grey is unknown: too few samples, or the source "
               "could not be read.",
               [(f"max by (account, check) ({q('sms_health_status', A, NOT_OVERALL)})",
                 "{{account}} {{check}}")], HEALTH, h=12),
    ]),
    Row("Delivery", [
        timeseries("Delivery rate",
                   "sms_delivery_success_ratio: delivered / (delivered + undelivered + failed) of "
                   "outbound messages created in the window. Dashed lines: 90 % (red below) and "
                   "95 % (green above; exactly 95 % is still yellow). Absent when the message log "
                   "could not be read.",
                   [(f"min by (account) ({q('sms_delivery_success_ratio', A)})", "{{account}}")],
                   w=8, unit="percentunit", max_=1, dashed=True,
                   steps=(("red", None), ("yellow", 0.9), ("green", 0.95))),
        timeseries("Delivery latency p50 / p90 / p99",
                   "Creation → delivery time from the histogram sms_delivery_latency_seconds "
                   "(each delivered message observed once), quantiles of its rate over "
                   "$__rate_interval, next to the delivery_latency check's value (window mean). "
                   "Dashed lines: 10 s and 30 s, the check's yellow and red bounds.",
                   [*quantiles("sms_delivery_latency_seconds_bucket", "account", "{{account}}"),
                    (f"max by (account) ({q('sms_delivery_latency_mean_seconds', A)})",
                     "{{account}} mean (check)")],
                   w=8, unit="s", dashed=True,
                   steps=(("green", None), ("yellow", 10), ("red", 30))),
        timeseries("Error ratio",
                   "sms_error_ratio: outbound messages with a Twilio error code / all outbound "
                   "messages in the window. Dashed lines: 2 % (yellow) and 5 % (red above).",
                   [(f"max by (account) ({q('sms_error_ratio', A)})", "{{account}}")],
                   w=8, unit="percentunit", dashed=True,
                   steps=(("green", None), ("yellow", 0.02), ("red", 0.05))),
        timeseries("Errors by code",
                   "sms_window_error_messages: messages in the window by Twilio error code. "
                   "30003/30005 unreachable or unknown handset (bad numbers), 30007 carrier "
                   "filtering, 30034 unregistered 10DLC, 21610 the recipient unsubscribed, 21211 "
                   "invalid To. A window count, not a rate.",
                   [(f"max by (account, error_code) ({q('sms_window_error_messages', A)})",
                     "{{account}} {{error_code}}"),
                    (f"max by (account) ({q('sms_window_carrier_filtered_messages', A)})",
                     "{{account}} carrier filtered (30007)")], w=12),
        timeseries("Messages in window by status",
                   "sms_window_messages: messages created in the window by direction and Twilio "
                   "status.",
                   [(f"max by (account, direction, status) ({q('sms_window_messages', A)})",
                     "{{account}} {{direction}} {{status}}")], w=12),
    ]),
    Row("Throughput", [
        timeseries("Throughput utilisation",
                   "sms_throughput_utilisation_ratio: outbound messages in the busiest minute of "
                   "the window, per second, / the sending number's limit (number_type: long code "
                   "1/s, toll-free 3/s, short code 100/s, 10DLC throughput_limit). The throughput "
                   "check: yellow from 80 %, red above 100 % (messages queue at Twilio).",
                   [(f"max by (account) ({q('sms_throughput_utilisation_ratio', A)})",
                     "{{account}}")], w=12, unit="percentunit", dashed=True,
                   steps=(("green", None), ("yellow", 0.8), ("red", 1.0))),
        timeseries("Peak send rate",
                   "sms_throughput_peak_messages_per_second: outbound messages created in the "
                   "busiest minute of the window, per second, and the throughput check's status "
                   "(right axis: 0 green, 1 yellow, 2 red).",
                   [(f"max by (account) ({q('sms_throughput_peak_messages_per_second', A)})",
                     "{{account}} peak msg/s"),
                    (f"max by (account) ({q('sms_health_status', A, THROUGHPUT)})",
                     "{{account}} throughput status")], w=12,
                   overrides=[by_ref("B", ("custom.axisPlacement", "right"), ("unit", "none"),
                                     ("min", -1), ("max", 2), ("custom.drawStyle", "line"),
                                     ("custom.lineStyle", {"fill": "dash", "dash": [10, 10]}))]),
    ]),
    Row("Twilio account and cost", [
        timeseries("Balance",
                   "twilio_account_balance in its currency, and where it would be in 24 h at the "
                   "rate of the last 6 h (predict_linear). Dashed lines: 50 (yellow below) and 20 "
                   "(red below); at 0 sending stops.",
                   [(f"min by (account, currency) ({q('twilio_account_balance', A)})",
                     "{{account}} ({{currency}})"),
                    (f"min by (account, currency) (predict_linear("
                     f"{q('twilio_account_balance', A)}[6h], 86400))",
                     "{{account}} ({{currency}}) projected in 24 h")],
                   w=10, min_=None, dashed=True,
                   steps=(("red", None), ("yellow", 20), ("green", 50))),
        stat("Projected time to empty",
             "Balance / its rate of decrease over the last 6 h (deriv): how long until the "
             "balance reaches 0 at the current burn; 0 once it is empty. A balance that is not "
             "falling (or was just topped up) reads \"not draining\" (a year or more).",
             [(f"clamp(min by (account, currency) ({q('twilio_account_balance', A)}) / "
               f"clamp_min(max by (account, currency) (-deriv("
               f"{q('twilio_account_balance', A)}[6h])), 1e-9), 0, {YEAR})",
               "{{account}} ({{currency}})")],
             w=6, unit="s", steps=(("red", None), ("yellow", 86400), ("green", 604800)),
             mappings=[{"type": "range", "options": {
                 "from": YEAR, "to": None,
                 "result": {"text": "not draining", "color": "green", "index": 0}}}]),
        states("Account, sending number, Twilio reachable",
               "Per account: the account is active (twilio_account_status; red when suspended "
               "or closed), the sending number is on the account with SMS capability "
               "(twilio_phone_number_sms_capable), and the last poll fully succeeded "
               "(twilio_up).",
               [(f"max by (account) ({q('twilio_account_status', A, ACTIVE)}) or "
                 f"max by (account) (0 * {q('twilio_account_status', A)})",
                 "{{account}} account active"),
                (f"min by (account, phone_number) ({q('twilio_phone_number_sms_capable', A)})",
                 "{{account}} {{phone_number}} SMS capable"),
                (f"min by (account) ({q('twilio_up', A)})", "{{account}} Twilio poll ok")],
               YES_NO, w=8),
        timeseries("SMS spend (Usage Records)",
                   "twilio_sms_spend: today's and this month's SMS spend (UTC, so far) from "
                   "Twilio's Usage Records, read every usage_interval (10 min).",
                   [(f"max by (account, period, currency) ({q('twilio_sms_spend', A)})",
                     "{{account}} {{period}} ({{currency}})")], w=8),
        timeseries("Window spend by destination",
                   "sms_window_spend: price of the outbound messages created in the window by "
                   "destination calling code (unknown when not derivable), stacked.",
                   [(f"max by (account, country_code) ({q('sms_window_spend', A)})",
                     "{{account}} +{{country_code}}")], w=8, stacked=True),
        timeseries("Budget projection and message mix",
                   "sms_budget_projected_ratio: month-to-date spend projected to the month's end "
                   "/ monthly_budget (only with a budget; yellow from 80 %, red above 100 %); "
                   "sms_window_international_ratio: share of outbound messages outside "
                   "home_country_code.",
                   [(f"max by (account) ({q('sms_budget_projected_ratio', A)})",
                     "{{account}} budget projected"),
                    (f"max by (account) ({q('sms_window_international_ratio', A)})",
                     "{{account}} international")],
                   w=8, unit="percentunit", dashed=True,
                   steps=(("green", None), ("yellow", 0.8), ("red", 1.0))),
    ]),
    Row("Twilio API", [
        timeseries("API response time",
                   "twilio_api_response_time_seconds: the cycle's Balance request (the "
                   "api_response_time check; dashed lines at 3 s and 7 s), and p50/p90/p99 of "
                   "every request from the histogram twilio_api_request_duration_seconds over "
                   "$__rate_interval (retries counted as separate requests; over every account "
                   "unless per_account_request_histograms is on).",
                   [(f"max by (account) ({q('twilio_api_response_time_seconds', A)})",
                     "{{account}} Balance probe"),
                    *quantiles("twilio_api_request_duration_seconds_bucket", "account",
                               "{{account}} requests", REQUESTS)],
                   w=8, unit="s", dashed=True,
                   steps=(("green", None), ("yellow", 3), ("red", 7))),
        timeseries("Requests by code",
                   'rate(twilio_api_requests_total) by HTTP status; code="error" is no response '
                   "at all (timeout, connection error). 429s mean Twilio is rate limiting us.",
                   [(f"sum by (account, code) (rate({q('twilio_api_requests_total', A)}{RATE}))",
                     "{{account}} {{code}}")], w=8, unit="reqps", stacked=True),
        timeseries("Request duration p90 by endpoint",
                   "p90 of twilio_api_request_duration_seconds per endpoint over "
                   "$__rate_interval (per account with per_account_request_histograms; "
                   "else over every account).",
                   [(f"histogram_quantile(0.9, sum by (account, endpoint, le) (rate("
                     f"{q('twilio_api_request_duration_seconds_bucket', REQUESTS)}{RATE})))",
                     "{{account}} {{endpoint}}")], w=8, unit="s"),
    ]),
    Row("Application database", [
        states("Database checks",
               'sms_health_status of the pseudo-account "database": the runbook\'s diagnosis '
               "queries against the application database (only with SMS_MONITOR_DATABASE_URL). "
               'Grey: the query failed; see "Database query errors".',
               [(f"max by (check) ({q('sms_health_status', DATABASE, NOT_OVERALL)})",
                 "{{check}}")], HEALTH, h=7),
        timeseries("Opt-out compliance",
                   "sms_sent_to_opted_out_messages: outbound messages in the window to clients "
                   "with has_opted_out = true; sms_optout_unprocessed_messages: STOP keywords "
                   "older than the grace period from clients still opted in. Anything above 0 is "
                   "a compliance breach (red).",
                   [(f"max({q('sms_sent_to_opted_out_messages')})", "sent to opted-out"),
                    (f"max({q('sms_optout_unprocessed_messages')})", "opt-outs unprocessed")],
                   w=8, dashed=True, steps=(("green", None), ("red", 1))),
        timeseries("Invalid phone numbers",
                   "sms_clients_invalid_phone_numbers: non-null clients.phone / "
                   "clients.cell_phone values that are not E.164 (yellow above 0).",
                   [(f"max by (column) ({q('sms_clients_invalid_phone_numbers')})",
                     "{{column}}")], w=8, steps=(("green", None), ("yellow", 1))),
        timeseries("Notification queue delay",
                   "sms_notification_queue_delay_seconds: mean sent_at - created_at of SMS "
                   "notifications created in the last hour (dashed lines at 60 s and 300 s); "
                   "unsent notifications of the last hour on the right axis.",
                   [(f"max({q('sms_notification_queue_delay_seconds')})", "mean delay"),
                    (f"max by (state) ({q('sms_notifications_last_hour', UNSENT)})",
                     "unsent (last hour)")],
                   w=8, unit="s", dashed=True,
                   steps=(("green", None), ("yellow", 60), ("red", 300)),
                   overrides=[by_ref("B", ("unit", "short"), ("custom.axisPlacement", "right"))]),
        timeseries("Reconciliation ratio",
                   "sms_reconciliation_ratio: outbound messages Twilio received / SMS recipients "
                   "the application logged over the same span; below 1 means SMS that never "
                   "reached Twilio (yellow under 98 %, red under 90 %).",
                   [(f"max({q('sms_reconciliation_ratio')})", "Twilio / logged")],
                   w=8, unit="percentunit", dashed=True,
                   steps=(("red", None), ("yellow", 0.9), ("green", 0.98))),
        stat("SMS disabled in notification settings",
             "sms_notification_settings_sms_disabled: appointment_notification_settings rows "
             "with send_via_sms = false, and their share of all rows (the sms_fallback check: "
             "yellow from 90 %, a rollback left in place).",
             [(f"max({q('sms_notification_settings_sms_disabled')})", "rows with SMS off"),
              (f"max({q('sms_notification_settings_sms_disabled')}) / "
               f"max({q('sms_notification_settings_rows')})", "share of rows")],
             w=8, overrides=[by_ref("B", ("unit", "percentunit"), ("thresholds", _thresholds(
                 (("green", None), ("yellow", 0.9)))))]),
        timeseries("Content templates",
                   "sms_content_templates_under_threshold: templates (7 days, more than 10 SMS) "
                   "delivered under the delivery_rate red bound (yellow above 0), out of "
                   "sms_content_templates; sms_content_findings by rule. `sms-monitor check` "
                   "prints the masked templates.",
                   [(f"max({q('sms_content_templates_under_threshold')})", "under threshold"),
                    (f"max({q('sms_content_templates')})", "templates"),
                    (f"max by (rule) ({q('sms_content_findings')})", "finding: {{rule}}")], w=8),
    ]),
    Row("Alert engine (notification_rules)", [
        states("Alert states",
               "sms_alert_state per rule and target (an account, * for the roll-up, or "
               "database): inactive, pending, firing. `sms-monitor alerts` lists values and last "
               "notifications.",
               [(f"max by (rule, target, severity) "
                 f"({q('sms_alert_state', TARGETS)})",
                 "{{rule}} [{{target}}] {{severity}}")], ALERT_STATES, h=9),
        timeseries("Alert notifications",
                   "sms_alert_notifications_total: notifications per channel and outcome over "
                   "each $__rate_interval (increase); every channel and outcome is counted from "
                   "0. Failed sends are retried with backoff from the outbox.",
                   [(f"sum by (channel, outcome) "
                     f"(increase({q('sms_alert_notifications_total')}{RATE}))",
                     "{{channel}} {{outcome}}")], w=12, stacked=True, bars=True,
                   sort_by_max=True),
        stat("Alert outbox and leader",
             "sms_alert_outbox_pending: notifications decided but not delivered yet; "
             "sms_alert_leader summed over replicas (exactly 1 expected); invalid "
             "notification_rules rows (sms_alert_rule_invalid, 0 for each usable row); alert "
             "store usable.",
             [(f"max({q('sms_alert_outbox_pending')})", "outbox pending"),
              (f"sum({q('sms_alert_leader')})", "leaders"),
              (f"sum({q('sms_alert_rule_invalid')})", "invalid rules"),
              (f"min({q('sms_alert_store_up')})", "store up")],
             w=12, overrides=[
                 by_ref("A", ("thresholds", _thresholds(
                     (("green", None), ("yellow", 1), ("red", 20))))),
                 by_ref("B", ("thresholds", _thresholds(
                     (("red", None), ("green", 1), ("red", 2))))),
                 by_ref("C", ("thresholds", _thresholds((("green", None), ("yellow", 1))))),
                 by_ref("D", ("thresholds", _thresholds((("red", None), ("green", 1))))),
             ]),
    ]),
    Row("Real time: webhooks, opt-outs, canary", [
        timeseries("Canary end-to-end latency",
                   "sms_canary_latency_seconds: send to delivered of the last successful probe "
                   "(API round trip in api mode). Dashed: 10 s and 30 s (SmsCanarySlow fires "
                   "above 30 s for 15 minutes).",
                   [(f"max by (account, mode) ({q('sms_canary_latency_seconds', A)})",
                     "{{account}} {{mode}}")],
                   w=6, unit="s", dashed=True,
                   steps=(("green", None), ("yellow", 10), ("red", 30))),
        timeseries("Canary probes by result",
                   "increase(sms_canary_probes_total) by result: delivered / accepted are good; "
                   "failed, timeout and send_error are not (SmsCanaryFailing fires when every "
                   "probe fails for 15 minutes).",
                   [(f"sum by (account, result) "
                     f"(increase({q('sms_canary_probes_total', A)}{RATE}))",
                     "{{account}} {{result}}")], w=6),
        timeseries("Webhook requests by outcome",
                   "rate(sms_monitor_webhook_requests_total) by endpoint (status, inbound) and "
                   "outcome: accepted, duplicate, or why a request was refused (unsigned, "
                   "bad_signature, unknown_account, malformed, too_large, rate_limited); every "
                   "outcome is counted from 0.",
                   [(f"sum by (endpoint, outcome) "
                     f"(rate({q('sms_monitor_webhook_requests_total')}{RATE}))",
                     "{{endpoint}} {{outcome}}")], w=6, unit="reqps", sort_by_max=True),
        timeseries("Keywords and callback-timed deliveries",
                   "increase(sms_inbound_keywords_total) by kind (optout, optin, help) from "
                   "/twilio/inbound, and the share of deliveries whose time came from a status "
                   "callback rather than a poll (sms_delivery_latency_source_total).",
                   [(f"sum by (account, kind) "
                     f"(increase({q('sms_inbound_keywords_total', A)}{RATE}))",
                     "{{account}} {{kind}}"),
                    (f"sum by (account) (rate("
                     f"{q('sms_delivery_latency_source_total', A, CALLBACK)}{RATE})) / "
                     f"sum by (account) (rate({q('sms_delivery_latency_source_total', A)}{RATE}))",
                     "{{account}} callback share")], w=6),
    ]),
    Row("sms-monitor itself", [
        states("Scrape targets and poll sources",
               "up per replica (Prometheus can scrape it) and sms_monitor_up per source (the "
               "last poll of twilio:<account> or the database fully succeeded).",
               [(q("up"), "scrape {{instance}}"),
                (f"min by (source) ({q('sms_monitor_up', SOURCES)})",
                 "poll {{source}}")], UP_DOWN, w=12),
        timeseries("Time since last successful poll",
                   "time() - sms_monitor_last_success_timestamp_seconds per source (the freshest "
                   "replica). Dashed lines: 300 s and 600 s (SmsMonitorPollsStale fires past "
                   "600 s for 5 minutes).",
                   [(f"time() - max by (source) ("
                     f"{q('sms_monitor_last_success_timestamp_seconds', ACCOUNT_SOURCES)})",
                     "{{source}}")], w=12, unit="s", dashed=True,
                   steps=(("green", None), ("yellow", 300), ("red", 600))),
        timeseries("Poll duration",
                   "sms_monitor_poll_duration_seconds: duration of the last poll of each account "
                   "(per replica); sms_monitor_database_poll_duration_seconds for the database.",
                   [(f"max by (account, instance) ({q('sms_monitor_poll_duration_seconds', A)})",
                     "{{account}} {{instance}}"),
                    (f"max by (instance) ({q('sms_monitor_database_poll_duration_seconds')})",
                     "database {{instance}}")], w=8, unit="s"),
        timeseries("Poll errors",
                   "rate(sms_monitor_poll_errors_total) by part (balance, account, phone_number, "
                   "messages, usage, poll) and cause (timeout, connection, auth, server_error, "
                   "client_error, malformed, budget, skipped, internal); every pair is counted "
                   "from 0, the ones that moved head the legend.",
                   [(f"sum by (account, part, cause) "
                     f"(rate({q('sms_monitor_poll_errors_total', A)}{RATE}))",
                     "{{account}} {{part}} {{cause}}")], w=8, unit="ops", stacked=True,
                   sort_by_max=True),
        timeseries("Twilio retries",
                   "rate(twilio_api_retries_total) by reason: 429 (rate limited), 5xx, "
                   "connection.",
                   [(f"sum by (account, reason) (rate({q('twilio_api_retries_total', A)}{RATE}))",
                     "{{account}} {{reason}}")], w=8, unit="ops", stacked=True, sort_by_max=True),
        timeseries("Database query errors",
                   "rate(sms_monitor_database_query_errors_total) by query and cause (schema, "
                   "permission, timeout, read_only, unreachable, error, internal); every pair is "
                   "counted from 0, the ones that moved head the legend. The affected database "
                   "checks are unknown meanwhile.",
                   [(f"sum by (query, cause) "
                     f"(rate({q('sms_monitor_database_query_errors_total')}{RATE}))",
                     "{{query}} {{cause}}")], w=12, unit="ops", stacked=True, sort_by_max=True),
        timeseries("Poll cycles, malformed records, memory",
                   "rate(sms_monitor_poll_cycles_total) per replica; "
                   "rate(sms_monitor_malformed_records_total) (message records skipped); "
                   "sms_monitor_window_records held in memory (right axis).",
                   [(f"sum by (instance) (rate({q('sms_monitor_poll_cycles_total')}{RATE}))",
                     "cycles {{instance}}"),
                    (f"sum by (account) (rate({q('sms_monitor_malformed_records_total', A)}{RATE}))",
                     "malformed {{account}}"),
                    (f"max by (account, instance) ({q('sms_monitor_window_records', A)})",
                     "window records {{account}} {{instance}}")],
                   w=6, unit="ops",
                   overrides=[by_ref("C", ("unit", "short"), ("custom.axisPlacement", "right"))]),
        stat("Versions running",
             "sms_monitor_build_info: replicas per version, and replicas ready "
             "(sms_monitor_ready).",
             [(f"count by (version) ({q('sms_monitor_build_info')})", "{{version}}"),
              (f"sum({q('sms_monitor_ready')})", "ready")], w=6, steps=(("blue", None),)),
    ]),
]


def _panel(p: Panel, selector: Selector, panel_id: int, x: int, y: int) -> dict[str, Any]:
    targets = []
    for i, (expr, legend) in enumerate(p.targets):
        targets.append({"datasource": DS, "refId": chr(ord("A") + i),
                        "expr": scoped(expr, selector), "legendFormat": legend,
                        "range": True, "instant": False})
    return {"type": p.type, "title": p.title, "description": p.description, "datasource": DS,
            "targets": targets,
            "fieldConfig": {"defaults": p.field_defaults, "overrides": p.overrides},
            "options": p.options, "id": panel_id,
            "gridPos": {"h": p.h, "w": p.w, "x": x, "y": y}}


def panels(selector: Selector) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    y = 0
    for row in ROWS:
        out.append({"type": "row", "title": row.title, "collapsed": False, "panels": [],
                    "id": len(out) + 1, "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}})
        y += 1
        x, line_h = 0, 0
        for p in row.panels:
            if x + p.w > 24:
                x, y, line_h = 0, y + line_h, 0
            out.append(_panel(p, selector, len(out) + 1, x, y))
            x, line_h = x + p.w, max(line_h, p.h)
        y += line_h
    return out


def dashboard(selector: Selector, runbook_url: str) -> dict[str, Any]:
    account_query = f"label_values({scoped(q('sms_health_status'), selector)}, account)"
    return {
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts", "type": "dashboard"}]},
        "description": "sms-monitor: SMS health, delivery, cost and Twilio API per account, the "
                       "application database checks, the alert engine and the monitor itself, "
                       f"for the series {selector}. Metrics: docs/metrics.md. Generated by "
                       "`sms-monitor mixin render`.",
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [{"title": "Runbook", "type": "link", "icon": "doc", "targetBlank": True,
                   "url": runbook_url}],
        "panels": panels(selector),
        "refresh": "1m",
        "schemaVersion": 39,
        "tags": ["sms-monitor", "twilio", "sms"],
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource",
             "query": "prometheus", "current": {}, "hide": 0, "includeAll": False,
             "multi": False, "options": [], "refresh": 1, "regex": "", "skipUrlSync": False},
            {"name": "account", "label": "Account", "type": "query", "datasource": DS,
             "definition": account_query, "query": account_query, "current": {}, "hide": 0,
             "includeAll": True, "multi": True, "options": [], "refresh": 2, "regex": "",
             "skipUrlSync": False, "sort": 1},
        ]},
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "title": "sms-monitor",
        "uid": "sms-monitor",
        "version": 1,
        "weekStart": "",
    }
