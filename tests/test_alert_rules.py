"""notification_rules rows → rules, and the alert lifecycle (pure, injected time)."""

from __future__ import annotations

from typing import Any

import pytest

from sms_monitor.alerts.lifecycle import FIRING, INACTIVE, PENDING, AlertState, level_at, step
from sms_monitor.alerts.rules import BrokenRule, Rule, parse_rows, parse_rule
from sms_monitor.core.outbound import WebhookPolicy

ACCOUNTS = ("primary", "clinic-west")
CHECKS = ("delivery_rate", "balance", "overall", "optout_unprocessed")
HOOKS = WebhookPolicy.of(["hooks.example"])  # [alerts] webhook_allow = ["hooks.example"]


def row(cond: Any, name: str = "Low SMS Delivery Rate", kind: str = "alert",
        recipients: Any = ("admin@practice.com",)) -> dict[str, Any]:
    return {"rule_name": name, "rule_type": kind, "trigger_conditions": cond,
            "recipients": list(recipients) if isinstance(recipients, tuple) else recipients}


def parse(r: dict[str, Any]) -> Rule | BrokenRule | None:
    return parse_rule(r, accounts=ACCOUNTS, checks=CHECKS, max_window=3600, webhooks=HOOKS)


def test_the_runbooks_row_parses_with_natural_direction() -> None:
    rule = parse(row('{"metric": "sms_delivery_rate", "threshold": 90, "window": "1 hour"}'))
    assert isinstance(rule, Rule)
    assert (rule.metric, rule.operator, rule.threshold, rule.window) == \
        ("sms_delivery_rate", "<", 90.0, 3600.0)
    assert rule.for_seconds == 0 and rule.repeat == 4 * 3600 and rule.account is None
    assert rule.recipients == ("admin@practice.com",)
    assert rule.breached(89.9) and not rule.breached(90.0)


@pytest.mark.parametrize(("window", "seconds"), [("1 hour", 3600), ("15 minutes", 900),
                                                 ("1h", 3600), ("30m", 1800), (600, 600)])
def test_window_strings(window: Any, seconds: float) -> None:
    rule = parse(row({"metric": "sms_error_rate", "threshold": 5, "window": window}))
    assert isinstance(rule, Rule) and rule.window == seconds and rule.operator == ">"


def test_optional_keys() -> None:
    rule = parse(row({"metric": "account_balance", "threshold": "20", "operator": "<=",
                      "for": "10m", "severity": "warning", "account": "clinic-west",
                      "repeat": "1h"}))
    assert isinstance(rule, Rule)
    assert (rule.operator, rule.for_seconds, rule.severity, rule.account, rule.repeat) == \
        ("<=", 600, "warning", "clinic-west", 3600)
    rollup = parse(row({"metric": "status:overall", "account": "*"}))
    assert isinstance(rollup, Rule) and rollup.threshold == 2 and rollup.operator == ">="


@pytest.mark.parametrize(("cond", "reason"), [
    ("{not json", "not valid JSON"),
    ('["a"]', "JSON object"),
    ({"threshold": 90}, "no metric"),
    ({"metric": "sms_happiness", "threshold": 1}, "unknown metric"),
    ({"metric": "status:nonsense"}, "unknown metric"),
    ({"metric": "sms_delivery_rate"}, "not a number"),
    ({"metric": "sms_delivery_rate", "threshold": "ninety"}, "not a number"),
    ({"metric": "sms_delivery_rate", "threshold": 190}, "0-100"),
    ({"metric": "sms_delivery_rate", "threshold": 90, "window": "forever"}, "duration"),
    ({"metric": "sms_delivery_rate", "threshold": 90, "window": "2 hours"}, "longer than"),
    ({"metric": "sms_delivery_rate", "threshold": 90, "operator": "=="}, "operator"),
    ({"metric": "sms_delivery_rate", "threshold": 90, "account": "nobody"}, "not monitored"),
    ({"metric": "sms_delivery_rate", "threshold": 90, "severity": "meh"}, "severity"),
])
def test_broken_rows_say_why(cond: Any, reason: str) -> None:
    broken = parse(row(cond))
    assert isinstance(broken, BrokenRule) and broken.name == "Low SMS Delivery Rate"
    assert reason in broken.reason


def test_non_alert_rows_are_left_alone_and_bad_recipients_reported() -> None:
    assert parse(row({"metric": "x"}, kind="digest")) is None
    rows = [row({"metric": "sms_delivery_rate", "threshold": 90}),
            row({"metric": "sms_error_rate", "threshold": 5}, name="Errors",
                recipients=["+15551234567", "ops@practice.example"]),
            row({"metric": "sms_error_rate", "threshold": 5}, name="Errors"),  # duplicate name
            row("{oops", name="Broken")]
    rules, broken = parse_rows(rows, accounts=ACCOUNTS, checks=CHECKS, max_window=3600,
                               recipient_ok=lambda r: "@" in r)
    assert [r.name for r in rules] == ["Low SMS Delivery Rate", "Errors"]
    reasons = {b.name: b.reason for b in broken}
    assert "neither an e-mail" in reasons["Errors"] or "same name" in reasons["Errors"]
    assert len(broken) == 3 and "not valid JSON" in reasons["Broken"]


@pytest.mark.parametrize(("metric", "threshold", "reason"), [
    ("sms_delivery_rate", 0.9, "threshold 0.9 looks like a ratio; sms_delivery_rate is in percent "
                               "(did you mean 90?); write \"0.9%\" if you mean 0.9 percent"),
    ("sms_error_rate", 0.05, "threshold 0.05 looks like a ratio; sms_error_rate is in percent "
                             "(did you mean 5?); write \"0.05%\" if you mean 0.05 percent"),
    ("sms_delivery_rate", "0.95", "threshold 0.95 looks like a ratio; sms_delivery_rate is in "
                                  "percent (did you mean 95?); write \"0.95%\" if you mean 0.95 "
                                  "percent"),
    ("sms_delivery_rate", 1, "threshold 1 is ambiguous (a ratio or a percent?); sms_delivery_rate "
                             "is in percent: write 100 for a ratio of 1, \"1%\" for 1 percent"),
    ("sms_error_rate", 0, "threshold 0 is ambiguous (a ratio or a percent?); sms_error_rate is "
                          "in percent: write \"0%\" for 0 percent"),
    ("sms_error_rate", -0.5, "threshold -0.5 is outside 0-100 percent"),
    ("sms_error_rate", -5, "threshold -5 is outside 0-100 percent"),
    ("sms_delivery_rate", 100.5, "threshold 100.5 is outside 0-100 percent"),
    ("sms_delivery_rate", "101%", "threshold 101 is outside 0-100 percent"),
    ("account_balance", "20%", "threshold '20%' is a percent; account_balance is in currency"),
    ("sms_delivery_rate", float("nan"), "threshold nan is not a number"),
    ("sms_delivery_rate", True, "threshold True is not a number"),
])
def test_a_percent_threshold_cannot_be_mistaken_for_a_ratio(metric: str, threshold: Any,
                                                            reason: str) -> None:
    assert parse(row({"metric": metric, "threshold": threshold})) == \
        BrokenRule("Low SMS Delivery Rate", reason)


@pytest.mark.parametrize(("metric", "threshold", "value"), [
    ("sms_delivery_rate", 1.5, 1.5), ("sms_delivery_rate", 100, 100.0),
    ("sms_delivery_rate", "90", 90.0), ("sms_delivery_rate", "90 %", 90.0),
    ("sms_error_rate", "0.5%", 0.5), ("sms_error_rate", "1%", 1.0), ("sms_error_rate", "0%", 0.0),
    ("account_balance", 0.5, 0.5), ("optout_violations", 0, 0.0),  # other units: as given
])
def test_percent_thresholds_above_one_or_with_their_sign_are_taken(
        metric: str, threshold: Any, value: float) -> None:
    rule = parse(row({"metric": metric, "threshold": threshold}))
    assert isinstance(rule, Rule) and rule.threshold == value


@pytest.mark.parametrize(("cond", "reason"), [
    ({"metric": "sms_delivery_rate", "treshold": 90},
     "trigger_conditions: unknown key 'treshold' (did you mean 'threshold'?); known keys: metric, "
     "threshold, window, operator, for, severity, account, repeat, runbook"),
    ({"metric": "sms_delivery_rate", "threshold": 90, "windw": "1h", "colour": "red"},
     "trigger_conditions: unknown keys 'windw' (did you mean 'window'?), 'colour'; known keys: "
     "metric, threshold, window, operator, for, severity, account, repeat, runbook"),
    ({"metric": "sms_delivery_rate", "threshold": 90, "window": "forever"},
     "window: expected a duration like '90s', '15m' or '1 hour', got 'forever'"),
    ({"metric": "sms_delivery_rate", "threshold": 90, "for": "a while"},
     "for: expected a duration like '90s', '15m' or '1 hour', got 'a while'"),
    ({"metric": "sms_delivery_rate", "threshold": 90, "repeat": -1},
     "repeat: duration must be positive, got -1"),
    ({"metric": "sms_delivery_rate", "threshold": 90, "runbook": ["x"]},
     "runbook ['x'] is not a section name"),
])
def test_strict_trigger_conditions_name_the_key(cond: Any, reason: str) -> None:
    assert parse(row(cond)) == BrokenRule("Low SMS Delivery Rate", reason)


NOBODY = "recipients: none, so nobody would be notified; list e-mail addresses or https:// URLs"


@pytest.mark.parametrize(("recipients", "reason"), [
    (None, NOBODY), ([], NOBODY), (["", "  "], NOBODY), ("{}", NOBODY), ("", NOBODY),
    ("[]", NOBODY),
    (["+15551234567"], "recipients: none of the 1 is an e-mail address or an https:// URL "
                       "(never SMS), so nobody would be notified"),
    ("{+15551234567,http://hooks.example/x}", "recipients: none usable: 1 is neither an e-mail "
                                              "address nor an https:// URL (never SMS); 1 "
                                              "refused (http://hooks.example/…: plain http:// "
                                              "is refused, https:// only unless [alerts] "
                                              "webhook_allow_http = true (not_https)), so "
                                              "nobody would be notified"),
    ([None], "recipients: none of the 1 is an e-mail address or an https:// URL (never SMS), "
             "so nobody would be notified"),
    ({"to": "a@b.example"}, "recipients must be an array of e-mail addresses or https:// URLs"),
    ("[not json", "recipients must be an array of e-mail addresses or https:// URLs"),
])
def test_a_rule_nobody_receives_is_broken(recipients: Any, reason: str) -> None:
    cond = {"metric": "sms_delivery_rate", "threshold": 90}
    assert parse(row(cond, recipients=recipients)) == BrokenRule("Low SMS Delivery Rate", reason)


@pytest.mark.parametrize(("recipients", "usable"), [
    (["a@b.example", "https://hooks.example/x"], ("a@b.example", "https://hooks.example/x")),
    ('["a@b.example", " https://hooks.example/x "]', ("a@b.example", "https://hooks.example/x")),
    ("{a@b.example,https://hooks.example/x}", ("a@b.example", "https://hooks.example/x")),
    ('{"a@b.example","https://hooks.example/x?a=1,2"}',
     ("a@b.example", "https://hooks.example/x?a=1,2")),
    ("a@b.example", ("a@b.example",)),
    (["a@b.example", "a@b.example"], ("a@b.example",)),
])
def test_recipients_as_array_json_or_array_literal(recipients: Any, usable: tuple[str, ...]) -> None:
    rule = parse(row({"metric": "sms_delivery_rate", "threshold": 90}, recipients=recipients))
    assert isinstance(rule, Rule) and rule.recipients == usable and rule.skipped == 0


def test_level1_or_alertmanager_receive_a_rule_that_lists_nobody() -> None:
    rows = [row({"metric": "sms_delivery_rate", "threshold": 90}, recipients=[]),
            row({"metric": "sms_error_rate", "threshold": 5}, name="Errors",
                recipients=["+15551234567"])]
    rules, broken = parse_rows(rows, accounts=ACCOUNTS, checks=CHECKS, max_window=3600,
                               always_notified=["lead@practice.example"])
    assert [(r.name, r.recipients) for r in rules] == [("Low SMS Delivery Rate", ()),
                                                         ("Errors", ())]
    assert broken == [BrokenRule("Errors", "recipients: 1 recipient(s) are neither an e-mail "
                                           "address nor an https:// URL; they are skipped "
                                           "(never SMS)")]
    _, broken = parse_rows(rows, accounts=ACCOUNTS, checks=CHECKS, max_window=3600)
    assert [b.name for b in broken] == ["Low SMS Delivery Rate", "Errors"]


RULE = Rule(name="r", metric="sms_delivery_rate", threshold=90.0, operator="<", window=3600,
            for_seconds=0.0, severity="critical", account=None, repeat=4 * 3600,
            recipients=("a@b.example",), runbook="x")


def test_fire_at_once_without_for_then_resolve_with_hysteresis() -> None:
    s = AlertState("r", "primary")
    s, ev = step(s, RULE, 95.0, 0)
    assert s.state == INACTIVE and ev == []
    s, ev = step(s, RULE, 89.0, 60)
    assert s.state == FIRING and [e.kind for e in ev] == ["firing"] and s.level == 1
    s, ev = step(s, RULE, 90.5, 120)  # back over 90, but inside the 2 % margin: no flap
    assert s.state == FIRING and ev == []
    s, ev = step(s, RULE, 89.9, 180)
    assert ev == []
    s, ev = step(s, RULE, 91.8, 240)  # 90 + 2 % of 90 = 91.8: resolved
    assert s.state == INACTIVE and [e.kind for e in ev] == ["resolved"]
    assert ev[0].since == 60


def test_pending_for_then_firing_and_unknown_changes_nothing() -> None:
    rule = Rule(**{**RULE.__dict__, "for_seconds": 300.0})
    s = AlertState("r", "primary")
    s, ev = step(s, rule, 80.0, 0)
    assert s.state == PENDING and ev == []
    s, ev = step(s, rule, None, 200)  # unknown value: still pending, nothing sent
    assert s.state == PENDING and ev == []
    s, ev = step(s, rule, 80.0, 299)
    assert s.state == PENDING
    s, ev = step(s, rule, 80.0, 300)
    assert s.state == FIRING and ev[0].kind == "firing" and ev[0].since == 300
    s2, ev = step(AlertState("r", "p", PENDING, since=0.0), rule, 95.0, 100)
    assert s2.state == INACTIVE and ev == []


def test_escalation_and_repeat_timing() -> None:
    rule = Rule(**{**RULE.__dict__, "repeat": 3600.0})
    s, ev = step(AlertState("r", "primary"), rule, 50.0, 0)
    kinds = []
    for t in range(60, 4 * 3600, 60):
        s, ev = step(s, rule, 50.0, t)
        kinds += [(t, e.kind, e.level) for e in ev]
    assert kinds[0] == (1800, "escalated", 2)  # 30 minutes
    assert (7200, "escalated", 3) in kinds  # 120 minutes
    repeats = [t for t, k, _ in kinds if k == "repeat"]
    assert repeats == [5400, 10800]  # an hour after the last notification each time
    assert [level_at(x) for x in (0, 1799, 1800, 7199, 7200)] == [1, 1, 2, 2, 3]


def test_a_zero_threshold_resolves_when_the_count_is_back_to_zero() -> None:
    rule = Rule(**{**RULE.__dict__, "metric": "optout_violations", "operator": ">",
                   "threshold": 0.0})
    s, ev = step(AlertState("r", "database"), rule, 1.0, 0)
    assert s.state == FIRING
    s, ev = step(s, rule, 0.0, 60)
    assert s.state == INACTIVE and [e.kind for e in ev] == ["resolved"]


# -- lengths and shapes: what the alert store could not hold is refused when rules load ------

def test_rule_names_longer_than_200_characters_or_with_control_characters_are_refused() -> None:
    cond = {"metric": "sms_error_rate", "threshold": 5}
    assert isinstance(parse(row(cond, name="N" * 200)), Rule)
    long = parse(row(cond, name="N" * 250))
    assert long == BrokenRule("N" * 250, "rule_name is 250 characters long; at most 200 are "
                                         "allowed")
    for name in ("Two\nlines", "NUL\x00", "Tab\there"):
        got = parse(row(cond, name=name))
        assert isinstance(got, BrokenRule) and "control character" in got.reason


def test_recipients_longer_than_the_store_holds_are_skipped_and_reported() -> None:
    cond = {"metric": "sms_error_rate", "threshold": 5}
    email = "a" * 64 + "@" + "b" * 251 + ".com"  # 320: the longest address
    url = "https://hooks.example/" + "p" * 378  # 400
    ok = parse(row(cond, recipients=(email, url)))
    assert isinstance(ok, Rule) and ok.recipients == (email, url) and ok.too_long == 0
    rules, broken = parse_rows([row(cond, recipients=(email, "x" + email, url + "p",
                                                     "+15551234567"))],
                               accounts=ACCOUNTS, checks=CHECKS, max_window=3600, webhooks=HOOKS)
    assert [r.recipients for r in rules] == [(email,)]
    assert broken == [BrokenRule("Low SMS Delivery Rate",
                                 "recipients: 1 recipient(s) are neither an e-mail address nor an "
                                 "https:// URL; they are skipped (never SMS); recipients: 2 "
                                 "recipient(s) are too long (an e-mail address at most 320 "
                                 "characters, a URL at most 400); they are skipped")]
    alone = parse(row(cond, recipients=(url + "p",)))
    assert isinstance(alone, BrokenRule) and "too long" in alone.reason \
        and "nobody would be notified" in alone.reason
