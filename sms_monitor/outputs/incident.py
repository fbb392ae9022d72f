"""What the incident page says, in words: pure functions of a published snapshot.

Values in the units a person reads (98.8 %, 4.2 s, 12.40 USD, 3 messages), what each check
means, its runbook section, since when it has had its status, when a firing alert escalates
next, the window's top error codes, how long ago each source was last read. No HTML here:
:mod:`sms_monitor.outputs.pages` escapes and lays out what these return.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from sms_monitor.alerts.lifecycle import DEFAULT_LEVELS, FIRING, PENDING
from sms_monitor.alerts.rules import STATUS_PREFIX, VOCABULARY
from sms_monitor.core.checks import CONTRACT_CHECKS
from sms_monitor.core.classify import CheckResult, Status
from sms_monitor.core.dbchecks import DB_CONTRACT_CHECKS
from sms_monitor.core.error_codes import meaning
from sms_monitor.core.snapshot import AccountSnapshot, AlertView, DatabaseSnapshot, Snapshot
from sms_monitor.core.status_history import Since

# The shipped runbook, served by the daemon itself (outputs/runbook_page.py): the link works
# wherever the page does. Its anchors are alerts.rules.yml's.
RUNBOOK_BASE = "/runbook"

# worst first: red, then unknown (cannot tell), then yellow
SEVERITY_ORDER = (Status.RED, Status.UNKNOWN, Status.YELLOW, Status.GREEN)

MEANINGS = {
    "api_response_time": "How long Twilio's API took to answer the Balance request: when it "
                         "is slow or fails, the application's sends are slow or fail too.",
    "delivery_rate": "The share of the window's settled outbound messages that reached the "
                     "handset: below it, patients are not getting their reminders.",
    "error_rate": "The share of the window's outbound messages carrying a Twilio error code: "
                  "the error codes below say which failure dominates.",
    "delivery_latency": "The mean time from creation to delivery of the window's delivered "
                        "messages: reminders arrive late.",
    "authentication": "Whether Twilio accepts sms-monitor's credentials: if the application "
                      "uses the same ones, it cannot send either.",
    "account_status": "The Twilio account's status: a suspended or closed account sends "
                      "nothing.",
    "balance": "The Twilio account's balance: at zero, sending stops.",
    "phone_number": "Whether the sending number is on the account and can send SMS.",
    "carrier_filtering": "Outbound messages that carriers blocked as spam (error 30007): look "
                         "at the message templates.",
    "throughput": "The busiest minute's sending rate against the number's rate limit: at the "
                  "limit, Twilio queues messages and they arrive late.",
    "unregistered_10dlc": "Messages blocked because the sending number is not registered for "
                          "US A2P 10DLC (error 30034).",
    "international_share": "How far the share of messages to other countries is above its "
                           "usual level: the signature of SMS pumping fraud.",
    "budget": "This month's spend, projected to the month's end, against the budget.",
    "invalid_phone_numbers": "Phone numbers in the application database that are not E.164: "
                             "messages to them fail.",
    "optout_unprocessed": "Clients who replied STOP more than the grace period ago and are "
                          "still opted in: they will be messaged again.",
    "sent_to_opted_out": "Messages sent to clients who opted out: a compliance breach "
                         "(TCPA/CTIA), not just a bug.",
    "queue_delay": "How long the application's SMS notifications waited between creation and "
                   "sending: reminders go out late.",
    "unexpected_sends": "Messages Twilio sent beyond what the application logged: leaked "
                        "credentials, another sender on the account, or SMS pumping.",
    "connection": "Whether sms-monitor can read the application database: while it cannot, "
                  "the database checks are unknown.",
    "reconciliation": "The share of the SMS the application logged that Twilio received: "
                      "low means sends are lost between the application and Twilio.",
    "sms_fallback": "The share of notification settings with SMS switched off: a fallback "
                    "left in place after an incident.",
    "content": "Message templates delivered under the threshold over 7 days, with what may "
               "get them filtered.",
    "twilio_status": "Twilio's own status page: when it reports an incident on SMS, the "
                     "fault is Twilio's.",
    "alert_store": "sms-monitor's alert store: while it cannot be used, alert states are not "
                   "saved and no notification_rules page is sent.",
    "audit_store": "sms-monitor's keyword audit table: while it cannot be written, opt-out "
                   "keywords are not recorded.",
}

# check -> runbook section (docs/runbook.md's anchors): (red, yellow) or one for both
RUNBOOK_SECTIONS: dict[str, str | tuple[str, str]] = {
    "delivery_rate": ("smsdeliveryratecritical", "smsdeliveryratewarning"),
    "error_rate": ("smserrorratecritical", "smserrorratewarning"),
    "delivery_latency": ("smsdeliverylatencycritical", "smsdeliverylatencywarning"),
    "api_response_time": ("twilioapislow", "twilioapidegraded"),
    "balance": ("twiliobalancecritical", "twiliobalancewarning"),
    "queue_delay": ("smsqueuedelaycritical", "smsqueuedelaywarning"),
    "authentication": "twilioauthenticationfailing",
    "account_status": "twilioaccountsuspended",
    "phone_number": "twiliosendingnumberunavailable",
    "carrier_filtering": "smscarrierfiltering",
    "content": "smscarrierfiltering",
    "sent_to_opted_out": "smssenttooptedout",
    "optout_unprocessed": "smsoptoutunprocessed",
    "unexpected_sends": "smsunexpectedsends",
    "international_share": "smsinternationalsharejump",
    "throughput": "smsdeliverylatencycritical",
    "unregistered_10dlc": "smsdeliveryratecritical",
    "invalid_phone_numbers": "smsdeliveryratecritical",
    "budget": "twiliobalancewarning",
    "sms_fallback": "fallbacks",
    "connection": "smsmonitordatabasedown",
    "alert_store": "smsalertstoredown",
    "audit_store": "smsmonitorblind",
    "overall": "smsmonitorblind",
}
BLIND_SECTION = "smsmonitorblind"  # the verdict is unknown: a source cannot be read

# an alert rule's metric -> the check whose section explains it
METRIC_CHECKS = {
    "sms_delivery_rate": "delivery_rate",
    "sms_error_rate": "error_rate",
    "sms_delivery_time": "delivery_latency",
    "sms_carrier_filtered": "carrier_filtering",
    "api_response_time": "api_response_time",
    "account_balance": "balance",
    "sms_spend_month": "budget",
    "optout_violations": "sent_to_opted_out",
    "queue_delay": "queue_delay",
}


# --- words and units ------------------------------------------------------------------


def plural(n: float, word: str) -> str:
    count = f"{n:g}" if n != int(n) else str(int(n))
    return f"{count} {word}{'' if n == 1 else 's'}"


def percent(ratio: float) -> str:
    """0.988 -> "98.8 %", 0.95 -> "95 %", 0.0004 -> "< 0.1 %"."""
    pct = ratio * 100
    if 0 < abs(pct) < 0.05:
        return "< 0.1 %"
    text = f"{pct:.1f}"
    return (text[:-2] if text.endswith(".0") else text) + " %"


def seconds(value: float) -> str:
    """0.25 -> "0.25 s", 4.2 -> "4.2 s", 95 -> "1 min 35 s", 312 -> "5 min", 4000 ->
    "1 h 6 min"."""
    if value < 1:
        return f"{value:.2f} s"
    if value < 60:
        return f"{value:.1f} s"
    return duration(value)


def duration(value: float) -> str:
    """A span in the largest two units: "45 s", "1 min 35 s", "12 min", "1 h 28 min",
    "2 d 3 h" (seconds only under 3 minutes)."""
    s = int(round(max(0.0, value)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        m, rest = divmod(s, 60)
        return f"{m} min" + (f" {rest} s" if rest and m < 3 else "")
    if s < 86400:
        h, rest = divmod(s // 60, 60)
        return f"{h} h" + (f" {rest} min" if rest else "")
    d, rest = divmod(s // 3600, 24)
    return f"{d} d" + (f" {rest} h" if rest else "")


def clock(at: float, now: float) -> str:
    """A time of day in UTC; with the date when it is not within the last day."""
    fmt = "%H:%M UTC" if abs(now - at) < 86400 else "%Y-%m-%d %H:%M UTC"
    return time.strftime(fmt, time.gmtime(at))


def ago(at: float, now: float) -> str:
    return "just now" if now - at < 1 else f"{duration(now - at)} ago"


_PHONE = re.compile(r"\+\d{7,15}\b|(?<![\w+])\d{10,15}\b")


def mask_phones(text: str) -> str:
    """Phone numbers (E.164, or 10 to 15 bare digits) masked but for their ends."""
    return _PHONE.sub(lambda m: m.group()[:3] + "•" * (len(m.group()) - 5) + m.group()[-2:], text)


def account_part(snap: Snapshot, account: str) -> AccountSnapshot | None:
    return next((a for a in snap.accounts if a.account == account), None)


def check_value(c: CheckResult, snap: Snapshot) -> str:
    """The check's value in the units a person reads, or "" when it has none to show."""
    v, unit, name = c.value, c.unit, c.name
    if name == "account_status":
        a = account_part(snap, c.account)
        return (a.facts.account_status or "") if a is not None else ""
    if v is None or unit == "status":
        return ""
    if unit == "ratio":
        if name == "international_share":
            return f"+{v * 100:.1f} points over the usual share"
        if name == "throughput":
            return f"{percent(v)} of the rate limit"
        if name == "budget":
            return f"{percent(v)} of the budget (projected)"
        return percent(v)
    if unit == "seconds":
        return seconds(v)
    if unit == "currency":
        a = account_part(snap, c.account)
        currency = a.facts.currency if a is not None and a.facts.currency else ""
        return f"{v:.2f} {currency}".strip()
    if unit in ("messages", "rows", "templates", "cycles"):
        if unit == "cycles":
            return f"unreadable for {plural(v, 'cycle')}" if v else ""
        return plural(v, unit[:-1])
    if unit == "boolean":
        if name == "authentication":
            return "refused" if v else "accepted"
        if name == "phone_number":
            return "can send SMS" if v else "cannot send SMS"
        return "yes" if v else "no"
    return f"{v:g} {unit}"


def meaning_of(c: CheckResult) -> str:
    if c.name == "connection" and c.account != "database":
        return MEANINGS.get(c.account, MEANINGS["connection"])
    return MEANINGS.get(c.name, "")


def runbook_section(name: str, status: Status, detail: str = "", value: float | None = 0.0
                    ) -> str | None:
    """The runbook anchor for a check in a status (None: the runbook's introduction)."""
    if name == "api_response_time" and status is Status.RED and (
            value is None or "failed" in detail or "unreadable" in detail):
        return "twilioapidown"  # not slow: not answering at all
    section = RUNBOOK_SECTIONS.get(name)
    if isinstance(section, tuple):
        return section[1] if status is Status.YELLOW else section[0]
    return section


def runbook_url(base: str, section: str | None) -> str:
    return base if section is None else f"{base}#{section}"


def since_words(status: Status, since: Since | None, now: float) -> str:
    """ "red for 12 min (since 20:14 UTC)"; "at least" when the change itself was not seen."""
    word = status.value
    if since is None or since.status is not status:
        return word
    if since.observed:
        return f"{word} for {duration(now - since.at)} (since {clock(since.at, now)})"
    return f"{word} for at least {duration(now - since.at)} (since {clock(since.at, now)} " \
           f"or before)"


# --- checks -----------------------------------------------------------------------------


# the checks that say a source cannot be read (the others of its part are then unknown)
CONNECTION_CHECKS = frozenset({"connection", "api_response_time", "alert_store", "audit_store"})


@dataclass(frozen=True)
class CheckLine:
    check: CheckResult
    advisory: bool  # shown, not part of the verdict


def counted(snap: Snapshot) -> list[CheckLine]:
    """Every check but the groups' ``overall`` rows, each marked advisory or not."""
    out = []
    for part in snap.parts.values():
        for c in part.checks:
            if c.name == "overall":
                continue
            if part.verdict is None:
                advisory = True
            elif isinstance(part, AccountSnapshot):
                advisory = c.name not in CONTRACT_CHECKS
            elif isinstance(part, DatabaseSnapshot):
                advisory = c.name not in DB_CONTRACT_CHECKS
            else:
                advisory = False
            out.append(CheckLine(c, advisory))
    return out


def worst_first(lines: Sequence[CheckLine]) -> list[CheckLine]:
    """Not green, worst first: red, unknown, yellow; in each, counted before advisory, and
    a source's connection check (the cause) before the others. An advisory check that is
    unknown comes last (nothing known, and it would not count); otherwise in the snapshot's
    order."""
    def rank(ln: CheckLine) -> tuple[int, bool, bool]:
        status = ln.check.status
        cause = ln.check.name not in CONNECTION_CHECKS
        if ln.advisory and status is Status.UNKNOWN:
            return len(SEVERITY_ORDER), True, cause
        return SEVERITY_ORDER.index(status), ln.advisory, cause

    return sorted((ln for ln in lines if ln.check.status is not Status.GREEN), key=rank)


@dataclass(frozen=True)
class Blind:
    """The unknown checks of a part whose source cannot be read, shown as one: they all
    wait on the same thing."""

    account: str
    sources: tuple[str, ...]  # the part's unreadable sources
    reason: str
    checks: tuple[CheckLine, ...]

    @property
    def section(self) -> str:
        if "database" in self.sources:
            return "smsmonitordatabasedown"
        if any(s.startswith("twilio:") for s in self.sources):
            return "twilioapidown"
        return BLIND_SECTION


def fold_blind(snap: Snapshot, lines: Sequence[CheckLine]) -> list[CheckLine | Blind]:
    """``lines`` with the unknown checks of each part that cannot be read (but its
    connection check) folded into one :class:`Blind`, where the first of them was."""
    blind: dict[str, tuple[str, ...]] = {}
    reasons: dict[str, str] = {}
    for part in snap.parts.values():
        down = [s for s in part.sources if not s.ok]
        for c in part.checks:
            if down:
                blind[c.account] = tuple(s.name for s in down)
                reasons[c.account] = "; ".join(s.reason for s in down if s.reason)
    folded: dict[str, list[CheckLine]] = {}
    for ln in lines:
        c = ln.check
        if c.status is Status.UNKNOWN and c.account in blind and c.name not in CONNECTION_CHECKS:
            folded.setdefault(c.account, []).append(ln)
    out: list[CheckLine | Blind] = []
    for ln in lines:
        group = folded.get(ln.check.account, [])
        if ln not in group:
            out.append(ln)
        elif len(group) == 1:
            out.append(ln)  # one check: shown as itself
        elif ln is group[0]:
            account = ln.check.account
            out.append(Blind(account, blind[account], reasons[account], tuple(group)))
    return out


def verdict_words(snap: Snapshot) -> str:
    """What the verdict rests on, after its colour: "2 checks red: delivery_rate (primary),
    sent_to_opted_out (database)"."""
    status = snap.overall
    if status is Status.GREEN or (status is Status.UNKNOWN
                                  and any(not s.ok for s in snap.sources())):
        return snap.verdict_detail()
    if status is Status.UNKNOWN:
        return "nothing known yet"
    named = [ln.check for ln in counted(snap) if ln.check.status is status and not ln.advisory]
    text = f"{plural(len(named), 'check')} {status.value}: " + \
        ", ".join(f"{c.name} ({c.account})" for c in named)
    blind = [s.name for s in snap.sources() if not s.ok]
    if blind:
        text += "; unreadable: " + ", ".join(blind)
    return text


# --- alerts -----------------------------------------------------------------------------


def alert_value(a: AlertView, snap: Snapshot) -> str:
    v = a.value
    if v is None:
        return ""
    if a.metric.startswith(STATUS_PREFIX):
        return {0: "green", 1: "yellow", 2: "red"}.get(int(v), f"{v:g}")
    spec = VOCABULARY.get(a.metric)
    unit = spec.unit if spec is not None else ""
    if unit == "percent":
        return percent(v / 100)
    if unit == "seconds":
        return seconds(v)
    if unit == "messages":
        return plural(v, "message")
    if unit == "currency":
        accounts = [x for x in snap.accounts if a.target in ("*", x.account)]
        currency = next((x.facts.currency for x in accounts if x.facts.currency), "")
        return f"{v:.2f} {currency}".strip()
    return f"{v:g}"


def alert_section(a: AlertView) -> str | None:
    check = a.metric[len(STATUS_PREFIX):] if a.metric.startswith(STATUS_PREFIX) \
        else METRIC_CHECKS.get(a.metric)
    if check is None:
        return None
    status = Status.YELLOW if a.severity == "warning" else Status.RED
    return runbook_section(check, status, value=a.value)


def escalation(a: AlertView, now: float, levels: Sequence[float] = DEFAULT_LEVELS) -> str:
    """ "level 1 of 3; level 2 at 20:56 UTC (in 30 min)" for a firing alert."""
    if a.state != FIRING or a.since is None:
        return ""
    n = len(levels)
    level = min(max(a.level, 1), n)
    text = f"level {level} of {n}"
    if level >= n:
        return text + " (the last)"
    due = a.since + levels[level]
    when = "due now" if due <= now else f"in {duration(due - now)}"
    return f"{text}; level {level + 1} at {clock(due, now)} ({when})"


def alerts_worst_first(alerts: Sequence[AlertView]) -> list[AlertView]:
    """Firing then pending; critical before warning; the longest-standing first."""
    live = [a for a in alerts if a.state in (FIRING, PENDING)]
    return sorted(live, key=lambda a: (a.state != FIRING, a.severity != "critical",
                                       a.since if a.since is not None else float("inf")))


# --- error codes and sources ------------------------------------------------------------


@dataclass(frozen=True)
class ErrorLine:
    code: str
    count: int
    accounts: tuple[str, ...]
    meaning: str


def top_errors(snap: Snapshot, limit: int = 5) -> list[ErrorLine]:
    """The window's commonest error codes across accounts, with what they mean."""
    counts: Counter[str] = Counter()
    where: dict[str, list[str]] = {}
    for a in snap.accounts:
        if a.stats is None:
            continue
        for code, n in a.stats.by_error.items():
            if n:
                counts[code] += n
                where.setdefault(code, []).append(a.account)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
    return [ErrorLine(code, n, tuple(where[code]), meaning(code)) for code, n in ranked]


def window_label(snap: Snapshot) -> str:
    spans = {a.stats.window_seconds for a in snap.accounts if a.stats is not None}
    return duration(spans.pop()) if len(spans) == 1 else ""


@dataclass(frozen=True)
class SourceLine:
    name: str
    ok: bool
    state: str  # "readable", "unreadable for 3 cycles"
    last_read: str  # "5 s ago", "not since start", ""
    reason: str


def source_lines(snap: Snapshot, now: float) -> list[SourceLine]:
    out = []
    for s in snap.sources():
        state = "readable" if s.ok else (
            f"unreadable for {plural(s.failing_cycles, 'cycle')}" if s.failing_cycles
            else "unreadable")
        at = snap.last_success.get(s.name)
        if at is not None:
            last = ago(at, now)
        else:
            last = "not since start" if s.name.startswith("twilio:") or s.name in (
                "database", "statuspage") else ""
        out.append(SourceLine(s.name, s.ok, state, last, s.reason))
    return out
