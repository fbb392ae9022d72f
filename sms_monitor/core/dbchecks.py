"""The database checks: the runbook's diagnosis queries joined with Twilio's message log.

Pure: takes the database facts and what the Twilio windows hold, returns checks.
They are reported under the pseudo-account ``database``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from sms_monitor.core.classify import CheckResult, Status, grade, overall_check
from sms_monitor.core.content import ContentReport
from sms_monitor.core.facts import DatabaseFacts
from sms_monitor.core.frozen import Immutable
from sms_monitor.core.keywords import OPTIN, OPTOUT
from sms_monitor.core.peers import peer_hash
from sms_monitor.core.records import MessageRecord
from sms_monitor.core.thresholds import Threshold

GROUP = "database"
DB_CHECK_NAMES = ("invalid_phone_numbers", "optout_unprocessed", "sent_to_opted_out",
                  "queue_delay", "unexpected_sends", "connection", "reconciliation",
                  "sms_fallback", "content")
# the contract's database checks decide ``overall``; the rest are advisory
DB_CONTRACT_CHECKS = DB_CHECK_NAMES[:DB_CHECK_NAMES.index("connection") + 1]


@dataclass(frozen=True)
class KeywordEvent:
    number: str  # E.164 sender, in memory only
    created: float
    kind: str


def optout_candidates(events: Iterable[KeywordEvent], now: float, grace: float
                      ) -> dict[str, float]:
    """Numbers whose latest keyword is an opt-out older than the grace period -> its time."""
    latest: dict[str, KeywordEvent] = {}
    for e in events:
        if e.kind not in (OPTOUT, OPTIN):
            continue
        if e.number not in latest or e.created > latest[e.number].created:
            latest[e.number] = e
    return {n: e.created for n, e in latest.items() if e.kind == OPTOUT and e.created <= now - grace}


def latest_optouts(events: Iterable[KeywordEvent]) -> dict[int, float]:
    """Peer hash -> time of the latest opt-out keyword, for any age."""
    out: dict[int, float] = {}
    for e in events:
        h = peer_hash(e.number)
        if e.kind == OPTOUT and h is not None and e.created > out.get(h, float("-inf")):
            out[h] = e.created
    return out


@dataclass(frozen=True)
class DatabaseView(Immutable):
    """Everything the database checks need from the Twilio side, computed by the monitor."""

    candidates: Mapping[str, float] = field(default_factory=dict)  # number -> STOP time
    outbound: tuple[MessageRecord, ...] = ()  # outbound records in the window, all accounts
    optout_times: Mapping[int, float] = field(default_factory=dict)  # peer -> STOP time
    refused_21610: int = 0
    twilio_in_span: int | None = None  # outbound Twilio messages in the reconciliation span
    messages_ok: bool = True
    content: ContentReport | None = None  # the latest 7-day template report, if any yet


def database_checks(facts: DatabaseFacts, view: DatabaseView, thresholds: Mapping[str, Threshold],
                    min_samples: int, fallback_share: float, grace: float,
                    unexpected: tuple[float, int] = (1.1, 10),
                    connection: CheckResult | None = None) -> list[CheckResult]:
    """The database group's checks, in :data:`DB_CHECK_NAMES` order, then ``overall``.

    ``unexpected`` is (ratio, margin): Twilio sending more than ``logged * ratio + margin``
    outbound messages in the reconciliation span is red. ``connection`` is the source's
    connection check (see :func:`sms_monitor.core.sources.connection_check`).
    """
    def failed(name: str, query: str, unit: str) -> CheckResult:
        return CheckResult(name, GROUP, Status.UNKNOWN, None, unit,
                           f"query failed: {facts.failures.get(query, 'not run')}")

    def twilio_unreadable(name: str, unit: str) -> CheckResult:
        return CheckResult(name, GROUP, Status.UNKNOWN, None, unit, "Twilio message log unreadable")

    checks: list[CheckResult] = []

    if facts.invalid_phones is None:
        checks.append(failed("invalid_phone_numbers", "invalid_phone_numbers", "rows"))
    else:
        total = sum(facts.invalid_phones.values())
        detail = ", ".join(f"{k}: {v}" for k, v in facts.invalid_phones.items()) + " not E.164"
        checks.append(CheckResult("invalid_phone_numbers", GROUP,
                                  Status.YELLOW if total else Status.GREEN, float(total), "rows",
                                  detail))

    if facts.client_optout is None:
        checks.append(failed("optout_unprocessed", "optout_lookup", "messages"))
    elif not view.messages_ok:
        checks.append(twilio_unreadable("optout_unprocessed", "messages"))
    else:
        pending = [n for n in view.candidates if facts.client_optout.get(n) is False]
        checks.append(CheckResult(
            "optout_unprocessed", GROUP, Status.RED if pending else Status.GREEN,
            float(len(pending)), "messages",
            f"{len(pending)} opt-out keyword(s) older than {grace:g}s from clients still opted in"))

    if facts.opted_out is None:
        checks.append(failed("sent_to_opted_out", "opted_out_clients", "messages"))
    elif not view.messages_ok:
        checks.append(twilio_unreadable("sent_to_opted_out", "messages"))
    else:
        n = sent_to_opted_out(view.outbound, facts.opted_out, view.optout_times)
        checks.append(CheckResult(
            "sent_to_opted_out", GROUP, Status.RED if n else Status.GREEN, float(n), "messages",
            f"{n} sent to opted-out clients in the window; "
            f"{view.refused_21610} refused by Twilio (21610)"))

    checks.append(queue_check(facts, thresholds["queue_delay"]))

    logged, sent = facts.logged_recipients, view.twilio_in_span
    if logged is None:
        checks.append(failed("unexpected_sends", "reconciliation", "messages"))
    elif sent is None or not view.messages_ok:
        checks.append(twilio_unreadable("unexpected_sends", "messages"))
    else:
        ratio, margin = unexpected
        limit = logged * ratio + margin
        checks.append(CheckResult(
            "unexpected_sends", GROUP, Status.RED if sent > limit else Status.GREEN,
            float(max(0, sent - logged)), "messages",
            f"Twilio sent {sent} outbound messages in the span, the application logged "
            f"{logged} (red above {limit:g})"))
    if connection is not None:
        checks.append(connection)

    if logged is None:
        checks.append(failed("reconciliation", "reconciliation", "ratio"))
    elif sent is None or not view.messages_ok:
        checks.append(twilio_unreadable("reconciliation", "ratio"))
    elif logged < min_samples:
        checks.append(CheckResult("reconciliation", GROUP, Status.UNKNOWN,
                                  sent / logged if logged else None, "ratio",
                                  f"{logged} SMS logged (fewer than {min_samples})"))
    else:
        ratio = sent / logged
        checks.append(CheckResult(
            "reconciliation", GROUP, grade(ratio, thresholds["reconciliation"]), ratio, "ratio",
            f"Twilio received {sent} of {logged} SMS the application logged"))

    if facts.sms_disabled is None or facts.settings_rows is None:
        checks.append(failed("sms_fallback", "sms_fallback", "ratio"))
    elif facts.settings_rows == 0:
        checks.append(CheckResult("sms_fallback", GROUP, Status.UNKNOWN, None, "ratio",
                                  "no notification settings rows"))
    else:
        share = facts.sms_disabled / facts.settings_rows
        checks.append(CheckResult(
            "sms_fallback", GROUP, Status.YELLOW if share >= fallback_share else Status.GREEN,
            share, "ratio",
            f"SMS switched off in {facts.sms_disabled} of {facts.settings_rows} settings rows"))

    report = view.content
    if report is None:
        failure = facts.failures.get("content")
        checks.append(CheckResult("content", GROUP, Status.UNKNOWN, None, "templates",
                                  f"query failed: {failure}" if failure else "not read yet"))
    elif report.templates and not report.judged():
        # e.g. an application that logs "sent" and never records Twilio's outcome: nothing
        # to judge, rather than every template "0 delivered"
        checks.append(CheckResult(
            "content", GROUP, Status.UNKNOWN, None, "templates",
            f"{len(report.templates)} templates in 7 days, none with {report.min_sent} "
            f"delivery outcomes in notification_logs.status (delivered, read, undelivered, "
            f"failed)"))
    else:
        threshold = thresholds["delivery_rate"].bad
        under = report.under(threshold)
        rules = ", ".join(f"{k}: {v}" for k, v in report.findings.items() if v)
        checks.append(CheckResult(
            "content", GROUP, Status.YELLOW if under else Status.GREEN, float(len(under)),
            "templates", f"{len(under)} of {len(report.judged())} templates delivered under "
                         f"{threshold:.0%} in 7 days" + (f"; findings {rules}" if rules else "")))

    checks.append(overall_check(GROUP, checks, DB_CONTRACT_CHECKS))
    return checks


def queue_check(facts: DatabaseFacts, threshold: Threshold) -> CheckResult:
    """Mean send delay of the last hour's SMS rows (the contract's value). When none of them
    was sent, the oldest unsent row's wait is graded instead: a queue that sends nothing at
    all is red, not unknown. (While rows are being sent, an unsent one may be a failure the
    application never retries; it does not change the grade.)"""
    waited = facts.queue_oldest_unsent
    if "queue_delay" in facts.failures:
        return CheckResult("queue_delay", GROUP, Status.UNKNOWN, None, "seconds",
                           f"query failed: {facts.failures['queue_delay']}")
    if facts.queue_delay is None and waited is None:
        return CheckResult("queue_delay", GROUP, Status.UNKNOWN, None, "seconds",
                           "no SMS notification in the last hour")
    detail = (f"mean over {facts.queue_sent} SMS notifications of the last hour"
              if facts.queue_delay is not None else "no SMS notification sent in the last hour")
    if waited is not None:
        detail += f"; {facts.queue_unsent} not sent yet, the oldest waiting {waited:.0f}s"
    value = facts.queue_delay if facts.queue_delay is not None else waited
    assert value is not None
    return CheckResult("queue_delay", GROUP, grade(value, threshold), value, "seconds", detail)


def sent_to_opted_out(outbound: Iterable[MessageRecord], opted_out: frozenset[int],
                      optout_times: Mapping[int, float]) -> int:
    """Outbound messages to opted-out clients, not counting those sent before a STOP we saw."""
    n = 0
    for r in outbound:
        if r.peer is None or r.peer not in opted_out:
            continue
        stop = optout_times.get(r.peer)
        if stop is not None and r.created < stop:
            continue
        n += 1
    return n
