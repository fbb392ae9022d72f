"""The incident page (outputs/pages.py, outputs/incident.py) rendered from hand-built
snapshots: exact words, human units and order. The browser tests
(test_landing_page_browser.py) check what chromium makes of it."""

from __future__ import annotations

import html
import re
from dataclasses import replace
from pathlib import Path

import pytest

from sms_monitor.alerts.rules import VOCABULARY
from sms_monitor.core.checks import CHECK_NAMES
from sms_monitor.core.classify import CheckResult, Status
from sms_monitor.core.dbchecks import DB_CHECK_NAMES
from sms_monitor.core.error_codes import ERROR_MEANINGS, meaning
from sms_monitor.core.snapshot import AlertsSnapshot, AlertView, SnapshotHolder
from sms_monitor.core.sources import SourceState
from sms_monitor.outputs import incident
from sms_monitor.outputs.incident import (
    RUNBOOK_BASE,
    check_value,
    duration,
    percent,
    runbook_section,
    seconds,
)
from sms_monitor.outputs.pages import landing_page
from tests.incident_snapshots import incident_holder, incident_snapshot
from tests.snapshots import (
    HEALTHY_FACTS,
    T0,
    account,
    blind_database_snapshot,
    message,
    sample_snapshot,
    snapshot,
)

ROOT = Path(__file__).resolve().parents[1]
RB = RUNBOOK_BASE + "#"


def text(fragment: str) -> str:
    """The words of an HTML fragment, as a reader sees them (tags dropped, one space)."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def cards(page: str, kind: str) -> list[list[str]]:
    """Each card of a kind ("check", "alert"): the words of its paragraphs."""
    found = re.findall(rf"<div class='card {kind} [^']*'[^>]*>(.*?)</div>", page)
    return [[text(p) for p in re.findall(r"<p[^>]*>(.*?)</p>", c)] for c in found]


def links(page: str, kind: str) -> list[str]:
    found = re.findall(rf"<div class='card {kind} [^']*'[^>]*>(.*?)</div>", page)
    return [re.findall(r"href='([^']*)'", c)[-1] for c in found]


def table(page: str, cls: str) -> list[list[str]]:
    body = re.search(rf"<table class='{cls}'>(.*?)</table>", page)
    assert body, cls
    return [[text(c) for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row)]
            for row in re.findall(r"<tr>(.*?)</tr>", body.group(1))]


def page_of(snap_holder: SnapshotHolder, **kw: object) -> str:
    return landing_page(snap_holder, now=T0, **kw)  # type: ignore[arg-type]


def holder_of(*snaps: object) -> SnapshotHolder:
    h = SnapshotHolder()
    for s in snaps:
        h.publish(s)  # type: ignore[arg-type]
    return h


# --- units ----------------------------------------------------------------------------


def test_values_in_the_units_a_person_reads() -> None:
    assert [percent(x) for x in (0.9819, 0.988, 0.95, 1.0, 0.0, 0.0004, 0.1234)] == \
        ["98.2 %", "98.8 %", "95 %", "100 %", "0 %", "< 0.1 %", "12.3 %"]
    assert [seconds(x) for x in (0.25, 4.2, 59.94, 95, 312, 4000)] == \
        ["0.25 s", "4.2 s", "59.9 s", "1 min 35 s", "5 min", "1 h 6 min"]
    assert [duration(x) for x in (0, 45, 95, 179, 180, 400, 725, 3600, 5280, 183_600)] == \
        ["0 s", "45 s", "1 min 35 s", "2 min 59 s", "3 min", "6 min", "12 min", "1 h",
         "1 h 28 min", "2 d 3 h"]

    snap = incident_snapshot(T0)

    def value(account_name: str, name: str) -> str:
        c = next(c for c in snap.checks() if (c.account, c.name) == (account_name, name))
        return check_value(c, snap)

    assert value("primary", "delivery_rate") == "82 %"
    assert value("primary", "error_rate") == "18 %"
    assert value("primary", "delivery_latency") == "4.2 s"
    assert value("primary", "api_response_time") == "0.25 s"
    assert value("primary", "balance") == "35.00 USD"
    assert value("primary", "carrier_filtering") == "4 messages"
    assert value("primary", "authentication") == "accepted"
    assert value("primary", "account_status") == "active"
    assert value("primary", "phone_number") == "can send SMS"
    assert value("primary", "throughput") == "3.3 % of the rate limit"
    assert value("database", "sent_to_opted_out") == "3 messages"
    assert value("database", "queue_delay") == "1 min 35 s"
    assert value("database", "invalid_phone_numbers") == "0 rows"
    assert value("database", "reconciliation") == "100 %"

    def alone(**kw: object) -> str:
        return check_value(CheckResult(**kw), snap)  # type: ignore[arg-type]

    assert alone(name="authentication", account="primary", status=Status.RED, value=1.0,
                 unit="boolean") == "refused"
    assert alone(name="phone_number", account="primary", status=Status.RED, value=0.0,
                 unit="boolean") == "cannot send SMS"
    assert alone(name="carrier_filtering", account="primary", status=Status.YELLOW, value=1.0,
                 unit="messages") == "1 message"
    assert alone(name="international_share", account="primary", status=Status.YELLOW,
                 value=0.07, unit="ratio") == "+7.0 points over the usual share"
    assert alone(name="budget", account="primary", status=Status.RED, value=1.12,
                 unit="ratio") == "112 % of the budget (projected)"
    assert alone(name="connection", account="database", status=Status.RED, value=3.0,
                 unit="cycles") == "unreadable for 3 cycles"
    assert alone(name="content", account="database", status=Status.YELLOW, value=2.0,
                 unit="templates") == "2 templates"
    assert alone(name="overall", account="primary", status=Status.RED, value=2.0,
                 unit="status") == ""
    assert alone(name="delivery_rate", account="primary", status=Status.UNKNOWN, value=None,
                 unit="ratio") == ""


@pytest.mark.parametrize("snap", [sample_snapshot(), blind_database_snapshot(),
                                  incident_snapshot(T0)])
def test_no_raw_unit_names_on_the_page(snap: object) -> None:
    words = text(page_of(holder_of(snap)).split("<body>")[1])
    assert not re.search(r"\b(ratio|boolean)\b", words), words
    assert not re.search(r"\b0\.\d{3,}\b", words)  # no raw ratios such as 0.9819


# --- the verdict --------------------------------------------------------------------


def test_the_verdict_comes_first_in_words_and_colour() -> None:
    page = page_of(incident_holder(T0))
    assert "<title>RED · sms-monitor</title>" in page
    body = page.split("<body>")[1]
    first = re.search(r"<p[^>]*>.*?</p>", body)
    assert first and first.group() == (
        "<p class='verdict red' style='background:#c62828'>Overall: <b>red</b> — 3 checks red: "
        "delivery_rate (primary), error_rate (primary), sent_to_opted_out (database)</p>")
    assert "<p class='meta'>Last poll 12 s ago (20:26 UTC) · this page refreshes every 30 s</p>" \
        in page


def test_the_verdict_in_every_colour() -> None:
    blind = page_of(holder_of(blind_database_snapshot()))
    assert "Overall: <b>unknown</b> — database unreadable (connection refused)</p>" in blind
    assert f"<a href='{RB}smsmonitorblind'>Runbook: smsmonitorblind</a>" in blind
    assert "<title>UNKNOWN · sms-monitor</title>" in blind

    records = [message(f"SM{i:02d}", T0 - 60 * i) for i in range(1, 21)]
    records.append(message("SM90", T0 - 30, "undelivered", error=30007, after=9.0))
    yellow = page_of(holder_of(snapshot(account("primary", records))))
    assert ("Overall: <b>yellow</b> — 2 checks yellow: error_rate (primary), carrier_filtering "
            "(primary)</p>") in yellow  # 1 of 21 with an error: 4.8 %
    assert "#b8860b'>Overall: <b>yellow</b>" in yellow

    green = page_of(holder_of(snapshot(account("primary", records[:-1]))))
    assert "Overall: <b>green</b> — every counted check green or quiet; 1 source readable</p>" \
        in green
    assert "Overall: <b>green</b>" in green and "#2e7d32'>Overall" in green
    # only the advisory international_share (learning its baseline) is not green
    assert [c[0] for c in cards(green, "check")] == [
        "unknown international_share · primary advisory: not in the verdict"]


def test_waiting_for_the_first_cycle() -> None:
    page = landing_page(SnapshotHolder(), extra_html="<form id='demo'></form>")
    assert "Waiting for the first poll cycle." in page
    assert "<meta http-equiv='refresh' content='30'>" in page
    assert "<form id='demo'></form>" in page


# --- checks ---------------------------------------------------------------------------


def test_checks_not_green_worst_first_with_since_value_meaning_and_runbook() -> None:
    page = page_of(incident_holder(T0))
    assert "<h2>Needs attention (8)</h2>" in page
    m = incident.MEANINGS
    assert cards(page, "check") == [
        ["red delivery_rate · primary", "82 % · red for 50 min (since 19:36 UTC)",
         "82 of 100 delivered in 1h", m["delivery_rate"], "Runbook: smsdeliveryratecritical"],
        ["red error_rate · primary", "18 % · red for 50 min (since 19:36 UTC)",
         "18 of 100 outbound with an error code in 1h", m["error_rate"],
         "Runbook: smserrorratecritical"],
        ["red sent_to_opted_out · database", "3 messages · red for 7 min (since 20:19 UTC)",
         "3 sent to opted-out clients in the window; 0 refused by Twilio (21610)",
         m["sent_to_opted_out"], "Runbook: smssenttooptedout"],
        # a counted yellow before an advisory unknown
        ["yellow balance · primary", "35.00 USD · yellow for 50 min (since 19:36 UTC)",
         m["balance"], "Runbook: twiliobalancewarning"],
        ["yellow carrier_filtering · primary", "4 messages · yellow for 50 min (since 19:36 UTC)",
         "4 failed with error 30007 in 1h", m["carrier_filtering"],
         "Runbook: smscarrierfiltering"],
        ["yellow queue_delay · database", "1 min 35 s · yellow for 7 min (since 20:19 UTC)",
         "mean over 60 SMS notifications of the last hour", m["queue_delay"],
         "Runbook: smsqueuedelaywarning"],
        # unknown since the first snapshot the holder saw: "at least"
        ["unknown international_share · primary advisory: not in the verdict",
         "unknown for at least 1 h (since 19:26 UTC or before)",
         "0.0% international; learning the usual share", m["international_share"],
         "Runbook: smsinternationalsharejump"],
        ["unknown content · database advisory: not in the verdict",
         "unknown for at least 1 h (since 19:26 UTC or before)", "not read yet", m["content"],
         "Runbook: smscarrierfiltering"],
    ]
    assert links(page, "check") == [RB + s for s in (
        "smsdeliveryratecritical", "smserrorratecritical", "smssenttooptedout",
        "twiliobalancewarning", "smscarrierfiltering", "smsqueuedelaywarning",
        "smsinternationalsharejump", "smscarrierfiltering")]
    # the badge says the status in words, in its colour
    assert "<span class='badge red' style='background:#c62828'>red</span> <b>delivery_rate</b>" \
        in page


def test_unknown_comes_between_red_and_yellow() -> None:
    page = page_of(holder_of(sample_snapshot()))
    assert [c[0] for c in cards(page, "check")] == [
        "red delivery_rate · primary",
        "red error_rate · primary",
        "yellow carrier_filtering · primary",
        "yellow invalid_phone_numbers · database",
        "yellow twilio_status · twilio advisory: not in the verdict",
        "unknown international_share · primary advisory: not in the verdict",
        "unknown content · database advisory: not in the verdict",
    ]
    blind = page_of(holder_of(blind_database_snapshot()))
    assert cards(blind, "check") == [
        # the database's connection check, then its checks that wait on it, as one
        ["unknown connection · database",
         "unreadable for 1 cycle · unknown for at least 0 s (since 20:26 UTC or before)",
         "unreadable for 1 cycle (red from 3): connection refused",
         incident.MEANINGS["connection"], "Runbook: smsmonitordatabasedown"],
        ["unknown 8 checks · database",
         "cannot be computed while database (connection refused) cannot be read",
         "invalid_phone_numbers, optout_unprocessed, sent_to_opted_out, queue_delay, "
         "unexpected_sends, reconciliation (advisory), sms_fallback (advisory), "
         "content (advisory)", "Runbook: smsmonitordatabasedown"],
        ["yellow twilio_status · twilio advisory: not in the verdict",
         "yellow for at least 0 s (since 20:26 UTC or before)",
         "REST API: degraded_performance; open incidents: Delayed SMS to Canada",
         incident.MEANINGS["twilio_status"],
         "Runbook: sms-monitor alert runbook · status.twilio.com"],
        ["unknown international_share · primary advisory: not in the verdict",
         "unknown for at least 0 s (since 20:26 UTC or before)",
         "0.0% international; learning the usual share", incident.MEANINGS["international_share"],
         "Runbook: smsinternationalsharejump"],
    ]
    assert "<h2>Needs attention (11)</h2>" in blind


def test_an_unreadable_account_is_one_cause_and_one_group() -> None:
    facts = replace(HEALTHY_FACTS, messages_ok=False, balance=None, balance_seconds=None,
                    account_status=None, phone_found=None, credentials_accepted=False,
                    failures={"balance": "timeout", "messages": "timeout",
                              "account": "skipped", "phone_number": "skipped"})
    down = account("primary", facts=facts, up=False,
                   source=SourceState("twilio:primary", False, 2, "timeout"))
    page = page_of(holder_of(snapshot(down)))
    assert "Overall: <b>red</b> — 1 check red: api_response_time (primary); unreadable: " \
           "twilio:primary</p>" in page
    assert cards(page, "check") == [
        ["red api_response_time · primary", "red for at least 0 s (since 20:26 UTC or before)",
         "Balance request failed: timeout", incident.MEANINGS["api_response_time"],
         "Runbook: twilioapidown"],
        ["unknown 11 checks · primary",
         "cannot be computed while twilio:primary (timeout) cannot be read",
         "delivery_rate, error_rate, delivery_latency, authentication, account_status, "
         "balance, phone_number, carrier_filtering, throughput (advisory), unregistered_10dlc "
         "(advisory), international_share (advisory)", "Runbook: twilioapidown"],
    ]


def test_the_api_check_links_to_api_down_when_twilio_does_not_answer() -> None:
    assert runbook_section("api_response_time", Status.RED, "Balance answered in 8.000s", 8.0) \
        == "twilioapislow"
    assert runbook_section("api_response_time", Status.RED,
                           "Balance request failed: timeout", None) == "twilioapidown"
    assert runbook_section("api_response_time", Status.YELLOW, "", 4.0) == "twilioapidegraded"
    assert runbook_section("twilio_status", Status.YELLOW) is None  # the runbook's top


def test_green_checks_are_collapsed_below() -> None:
    page = page_of(incident_holder(T0))
    greens = re.search(r"<details class='greens'><summary>13 green checks</summary>(.*?)"
                       r"</details>", page)
    assert greens
    rows = [[text(c) for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", r)]
            for r in re.findall(r"<tr>(.*?)</tr>", greens.group(1))]
    assert rows[:3] == [["check", "account", "value", "detail"],
                        ["api_response_time", "primary", "0.25 s", "Balance answered in 0.250s"],
                        ["delivery_latency", "primary", "4.2 s", "mean over 82 delivered in 1h"]]
    assert len(rows) == 14
    assert page.index("<details class='greens'>") > page.index("<h2>Sources</h2>")


# --- alerts ---------------------------------------------------------------------------


def test_alerts_with_their_escalation() -> None:
    page = page_of(incident_holder(T0))
    assert "<h2>Alerts (2 firing)</h2>" in page
    assert cards(page, "alert") == [
        ["firing Low SMS Delivery Rate · primary · critical",
         "82 % · firing for 40 min (since 19:46 UTC)",
         "Escalation: level 2 of 3; level 3 at 21:46 UTC (in 1 h 20 min)",
         "Runbook: smsdeliveryratecritical"],
        ["firing Opt-out violations · database · critical",
         "3 messages · firing for 6 min (since 20:20 UTC)",
         "Escalation: level 1 of 3; level 2 at 20:50 UTC (in 23 min)",
         "Runbook: smssenttooptedout"],
        ["pending Low Twilio Balance · primary · warning",
         "35.00 USD · pending for 2 min (since 20:24 UTC)", "Fires if it lasts.",
         "Runbook: twiliobalancewarning"],
    ]  # the inactive "Slow Twilio API" is not shown

    # [alerts] level2_after / level3_after move the next escalation
    fast = page_of(incident_holder(T0), levels=(0.0, 600.0, 1200.0))
    assert cards(fast, "alert")[0][2] == "Escalation: level 2 of 3; level 3 at 20:06 UTC " \
                                         "(due now)"
    top = AlertView("Low SMS Delivery Rate", "*", "firing", 82.0, T0 - 9000, 3, T0, "critical",
                    "sms_delivery_rate")
    assert incident.escalation(top, T0) == "level 3 of 3 (the last)"


def test_alert_values_in_their_metric_units() -> None:
    snap = incident_snapshot(T0)

    def shown(metric: str, v: float) -> str:
        return incident.alert_value(AlertView("r", "primary", "firing", v, T0, 1, T0,
                                              "critical", metric), snap)

    assert shown("sms_delivery_rate", 88.5) == "88.5 %"
    assert shown("sms_error_rate", 5.25) == "5.2 %"
    assert shown("sms_delivery_time", 42.0) == "42.0 s"
    assert shown("api_response_time", 0.5) == "0.50 s"
    assert shown("account_balance", 12.4) == "12.40 USD"
    assert shown("sms_spend_month", 310.0) == "310.00 USD"
    assert shown("optout_violations", 1.0) == "1 message"
    assert shown("sms_carrier_filtered", 3.0) == "3 messages"
    assert shown("queue_delay", 400.0) == "6 min"
    assert shown("queue_delay", 95.0) == "1 min 35 s"
    assert shown("status:overall", 2.0) == "red"
    assert shown("status:balance", 1.0) == "yellow"
    # every metric of the vocabulary has a runbook section
    for metric, spec in VOCABULARY.items():
        view = AlertView("r", "primary", "firing", 1.0, T0, 1, T0, "critical", metric)
        assert incident.alert_section(view) is not None, (metric, spec)


def test_the_alert_engine_s_own_troubles() -> None:
    h = holder_of(incident_snapshot(T0))
    assert "No alert state yet" in page_of(h)
    h.publish_alerts(AlertsSnapshot(leader=True))
    assert "<h2>Alerts (0 firing)</h2><p>No alert is firing.</p>" in page_of(h)
    h.publish_alerts(AlertsSnapshot(leader=True, store_ok=False, rules_readable=False,
                                    broken=(("Typo rule", "unknown metric 'sms_delivry_rate'"),)))
    page = page_of(h)
    assert f"no page is sent (<a href='{RB}smsalertstoredown'>runbook</a>)" in page
    assert f"keeps the state it had (<a href='{RB}smsalertrulesunreadable'>runbook</a>)" in page
    assert ("1 rule unusable: Typo rule (unknown metric &#x27;sms_delivry_rate&#x27;) "
            f"(<a href='{RB}smsalertruleinvalid'>runbook</a>)") in page


# --- error codes and sources ----------------------------------------------------------


def test_top_error_codes_with_twilio_s_meaning() -> None:
    page = page_of(incident_holder(T0))
    assert "<h2>Error codes (last 1 h)</h2>" in page
    assert table(page, "errors") == [
        ["code", "messages", "meaning"],
        ["30003", "9", "unreachable handset: switched off or out of coverage"],
        ["30005", "5", "unknown handset: the number does not exist"],
        ["30007", "4", "carrier filtering: the message was flagged as spam"],
    ]
    assert "<a href='https://www.twilio.com/docs/api/errors/30003'>30003</a>" in page
    assert meaning("30999") == "see Twilio's error reference"
    assert all(code.isdigit() and len(code) == 5 for code in ERROR_MEANINGS)

    quiet = page_of(holder_of(snapshot(account("primary", [message("SM1", T0 - 60)]))))
    assert "<p>No message in the window carries an error code.</p>" in quiet

    two = snapshot(account("primary", [message("SM1", T0 - 60, "failed", error=30007)]),
                   account("backup", [message("SM2", T0 - 60, "failed", error=30007),
                                      message("SM3", T0 - 50, "failed", error=21610)]))
    assert table(page_of(holder_of(two)), "errors")[1:] == [
        ["30007", "2", "carrier filtering: the message was flagged as spam (primary, backup)"],
        ["21610", "1", "the recipient replied STOP: Twilio refuses to message them (backup)"],
    ]


def test_each_source_s_last_read() -> None:
    assert table(page_of(incident_holder(T0)), "sources") == [
        ["source", "state", "last read"],
        ["twilio:primary", "readable", "13 s ago"],
        ["database", "readable", "13 s ago"],
        ["statuspage", "readable", "59 s ago"],
    ]
    assert table(page_of(holder_of(blind_database_snapshot())), "sources") == [
        ["source", "state", "last read"],
        ["twilio:primary", "readable", "5 s ago"],
        ["database", "unreadable for 1 cycle connection refused", "1 min 5 s ago"],
        ["statuspage", "readable", "not since start"],
    ]


# --- refresh, links, escaping -------------------------------------------------------


def test_refresh_interval_and_runbook_base() -> None:
    h = incident_holder(T0)
    assert "<meta http-equiv='refresh' content='30'>" in page_of(h)
    assert "<meta http-equiv='refresh' content='2'>" in page_of(h, refresh=2)
    assert "refreshes every 2 s" in page_of(h, refresh=2)
    none = page_of(h, refresh=None)
    assert "http-equiv" not in none and "refreshes every" not in none
    own = page_of(h, runbook_base="https://wiki.example/sms-runbook")
    assert "<a href='https://wiki.example/sms-runbook#smssenttooptedout'>" in own
    assert RUNBOOK_BASE not in own


def test_everything_is_escaped_and_no_phone_number_is_shown_whole() -> None:
    snap = sample_snapshot()
    db = snap.database
    assert db is not None
    evil = CheckResult("queue_delay", "database", Status.RED, 400.0, "seconds",
                       "<script>alert(1)</script> oldest for +15017122661 and 4155550123")
    checks = tuple(evil if c.name == "queue_delay" else c for c in db.checks)
    snap = replace(snap, parts={**snap.parts, "database": replace(db, checks=checks)})
    page = page_of(holder_of(snap), extra_html="<form action='/_simulator/scenario'></form>")
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; oldest for +15•••••••61 and 415•••••23" in page
    assert "+15017122661" not in page and "4155550123" not in page
    assert "<div class='extra'><form action='/_simulator/scenario'></form></div>" in page
    # the demo's controls come right under the verdict
    assert page.index("class='extra'") < page.index("<h2>Needs attention")
    # message SIDs and timestamps are not phone numbers
    assert incident.mask_phones("SM0123456789012345 at 1780000000.5") == \
        "SM0123456789012345 at 178•••••00.5"


def test_every_runbook_section_named_exists() -> None:
    doc = (ROOT / "docs" / "runbook.md").read_text()
    anchors = {h.strip().lower().replace(" ", "-") for h in re.findall(r"^## (.+)$", doc, re.M)}
    named: set[str] = {incident.BLIND_SECTION, "twilioapidown", "smsalertstoredown",
                       "smsalertrulesunreadable", "smsalertruleinvalid"}
    for section in incident.RUNBOOK_SECTIONS.values():
        named.update((section,) if isinstance(section, str) else section)
    assert named <= anchors, named - anchors
    # every check has a meaning and a section (or the runbook's top, said so)
    for name in (*CHECK_NAMES, *DB_CHECK_NAMES, "alert_store", "audit_store"):
        assert incident.MEANINGS.get(name), name
        assert name in incident.RUNBOOK_SECTIONS or name in ("reconciliation",), name
