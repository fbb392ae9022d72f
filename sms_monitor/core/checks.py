"""Turn one account's facts and window statistics into the contract's checks."""

from __future__ import annotations

from dataclasses import replace

from sms_monitor.core.classify import CheckResult, Status, grade, overall_check
from sms_monitor.core.facts import UNREACHABLE, AccountFacts
from sms_monitor.core.sources import SourceState
from sms_monitor.core.stats import WindowStats
from sms_monitor.core.thresholds import Threshold

UNREGISTERED_10DLC_ERROR = "30034"
CHECK_NAMES = (
    "api_response_time",
    "delivery_rate",
    "error_rate",
    "delivery_latency",
    "authentication",
    "account_status",
    "balance",
    "phone_number",
    "carrier_filtering",
    # beyond the contract: shown and exported, but advisory (not in ``overall``)
    "throughput",
    "unregistered_10dlc",
    "international_share",
    "budget",
)
CONTRACT_CHECKS = CHECK_NAMES[:CHECK_NAMES.index("carrier_filtering") + 1]


def _window_label(seconds: float) -> str:
    if seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:.0f}s"  # (a restarted window is a fraction of a second longer)


def account_checks(
    account: str,
    facts: AccountFacts,
    stats: WindowStats | None,
    thresholds: dict[str, Threshold],
    min_samples: int,
    throughput_limit: float = 1.0,
    budget: float | None = None,
    month_elapsed: float = 1.0,
    source: SourceState | None = None,
    unreachable_cycles: int = 3,
    incomplete: str | None = None,
    international_baseline: float | None = None,
) -> list[CheckResult]:
    """Every per-account check in contract order, followed by ``overall``.

    ``throughput_limit`` is the sending number's rate in messages per second. ``source`` says
    how long the account has been unreadable: from ``unreachable_cycles`` on, its
    connection check (``api_response_time``) is red whatever the Balance probe said.
    ``incomplete`` says how much of the window has been read when it has not been read
    whole: every check computed on the window is then unknown (never a verdict on part of
    the data).
    """
    if incomplete is not None:
        stats = None
    checks = [
        _connection(_api_response_time(account, facts, thresholds["api_response_time"]),
                    source, unreachable_cycles),
        *_message_checks(account, facts, stats, thresholds, min_samples, incomplete),
        _throughput(account, facts, stats, thresholds["throughput"], throughput_limit, incomplete),
        _unregistered(account, facts, stats, incomplete),
        _international(account, facts, stats, thresholds["international_share"], min_samples,
                       international_baseline, incomplete),
        _authentication(account, facts),
        _account_status(account, facts),
        _balance(account, facts, thresholds["balance"]),
        _phone_number(account, facts),
    ]
    if budget is not None:
        checks.append(_budget(account, facts, thresholds["budget"], budget, month_elapsed))
    checks.sort(key=lambda c: CHECK_NAMES.index(c.name))
    checks.append(overall_check(account, checks, CONTRACT_CHECKS))
    return checks


def _connection(probe: CheckResult, source: SourceState | None, limit: int) -> CheckResult:
    if source is None or source.ok or source.failing_cycles < limit \
            or probe.status is Status.RED:
        return probe
    return replace(probe, status=Status.RED,
                   detail=f"Twilio unreadable for {source.failing_cycles} cycles "
                          f"({source.reason}); {probe.detail}")


def _api_response_time(account: str, facts: AccountFacts, t: Threshold) -> CheckResult:
    name = "api_response_time"
    failure = facts.failures.get("balance")
    if failure in UNREACHABLE:
        return CheckResult(name, account, Status.RED, facts.balance_seconds, "seconds",
                           f"Balance request failed: {failure}")
    if facts.balance_seconds is None or failure is not None:
        return CheckResult(name, account, Status.UNKNOWN, None, "seconds",
                           f"Balance request failed: {failure or 'not run'}")
    s = facts.balance_seconds
    return CheckResult(name, account, grade(s, t), s, "seconds", f"Balance answered in {s:.3f}s")


def _message_checks(
    account: str,
    facts: AccountFacts,
    stats: WindowStats | None,
    thresholds: dict[str, Threshold],
    min_samples: int,
    incomplete: str | None = None,
) -> list[CheckResult]:
    names = ("delivery_rate", "error_rate", "delivery_latency", "carrier_filtering")
    if stats is None or not facts.messages_ok:
        why = incomplete or \
            f"message log unreadable: {facts.failures.get('messages', 'not polled')}"
        units = ("ratio", "ratio", "seconds", "messages")
        return [CheckResult(n, account, Status.UNKNOWN, None, u, why)
                for n, u in zip(names, units, strict=True)]
    w = _window_label(stats.window_seconds)
    out = []

    def ratio_check(name: str, ratio: float | None, samples: int, detail: str,
                    counted: str) -> CheckResult:
        """Graded once ``min_samples`` messages are ``counted``, unknown before."""
        if ratio is None or samples < min_samples:
            return CheckResult(name, account, Status.UNKNOWN, ratio, "ratio",
                               f"{detail} (fewer than {min_samples} {counted})")
        return CheckResult(name, account, grade(ratio, thresholds[name]), ratio, "ratio", detail)

    out.append(ratio_check("delivery_rate", stats.delivery_ratio, stats.settled,
                           f"{stats.delivered} of {stats.settled} delivered in {w}", "settled"))
    out.append(ratio_check("error_rate", stats.error_ratio, stats.outbound,
                           f"{stats.with_error} of {stats.outbound} outbound with an error code "
                           f"in {w}", "sent"))

    mean = stats.latency_mean
    if mean is None:
        out.append(CheckResult("delivery_latency", account, Status.UNKNOWN, None, "seconds",
                               f"no message delivered in {w}"))
    else:
        out.append(CheckResult("delivery_latency", account,
                               grade(mean, thresholds["delivery_latency"]), mean, "seconds",
                               f"mean over {stats.latency_count} delivered in {w}"))

    n = stats.carrier_filtered
    out.append(CheckResult("carrier_filtering", account, Status.YELLOW if n else Status.GREEN,
                           float(n), "messages", f"{n} failed with error 30007 in {w}"))
    return out


def _throughput(account: str, facts: AccountFacts, stats: WindowStats | None, t: Threshold,
                limit: float, incomplete: str | None = None) -> CheckResult:
    if stats is None or not facts.messages_ok:
        return CheckResult("throughput", account, Status.UNKNOWN, None, "ratio",
                           incomplete or "message log unreadable")
    rate = stats.peak_minute / 60.0
    util = rate / limit
    return CheckResult("throughput", account, grade(util, t), util, "ratio",
                       f"busiest minute {rate:.2f}/s against a limit of {limit:g}/s")


def projected_spend(month_to_date: float, month_elapsed: float) -> float:
    """Straight-line projection of the month's spend from what it cost so far."""
    return month_to_date / max(month_elapsed, 1 / 744)  # at least one hour into the month


def _budget(account: str, facts: AccountFacts, t: Threshold, budget: float,
            month_elapsed: float) -> CheckResult:
    if facts.spend_month is None:
        return CheckResult("budget", account, Status.UNKNOWN, None, "ratio",
                           f"usage unreadable: {facts.failures.get('usage', 'not polled')}")
    projected = projected_spend(facts.spend_month, month_elapsed)
    ratio = projected / budget
    cur = facts.spend_currency or ""
    return CheckResult("budget", account, grade(ratio, t), ratio, "ratio",
                       f"{facts.spend_month:.2f} {cur} so far, projected {projected:.2f} of "
                       f"{budget:.2f} this month")


def _unregistered(account: str, facts: AccountFacts, stats: WindowStats | None,
                  incomplete: str | None = None) -> CheckResult:
    if stats is None or not facts.messages_ok:
        return CheckResult("unregistered_10dlc", account, Status.UNKNOWN, None, "messages",
                           incomplete or "message log unreadable")
    n = stats.by_error.get(UNREGISTERED_10DLC_ERROR, 0)
    return CheckResult("unregistered_10dlc", account, Status.RED if n else Status.GREEN, float(n),
                       "messages", f"{n} blocked with error 30034 (unregistered 10DLC number)")


def _international(account: str, facts: AccountFacts, stats: WindowStats | None, t: Threshold,
                   min_samples: int, baseline: float | None,
                   incomplete: str | None = None) -> CheckResult:
    """How far the window's share of international destinations is above the account's
    usual share: the signature of SMS pumping fraud (advisory)."""
    name = "international_share"
    if stats is None or not facts.messages_ok:
        return CheckResult(name, account, Status.UNKNOWN, None, "ratio",
                           incomplete or "message log unreadable")
    share = stats.international_ratio
    if share is None or stats.outbound < min_samples:
        return CheckResult(name, account, Status.UNKNOWN, None, "ratio",
                           f"{stats.outbound} outbound in the window (fewer than {min_samples})")
    if baseline is None:
        return CheckResult(name, account, Status.UNKNOWN, None, "ratio",
                           f"{share:.1%} international; learning the usual share")
    jump = round(max(0.0, share - baseline), 9)  # 15 % - 10 % is 5 points, not 4.99...
    return CheckResult(name, account, grade(jump, t), jump, "ratio",
                       f"{share:.1%} international in the window against a usual "
                       f"{baseline:.1%} ({stats.international} of {stats.outbound})")


def _authentication(account: str, facts: AccountFacts) -> CheckResult:
    if facts.auth_failed:
        return CheckResult("authentication", account, Status.RED, 1.0, "boolean",
                           "Twilio answered 401 (error 20003): check the auth token")
    if not facts.credentials_accepted:
        return CheckResult("authentication", account, Status.UNKNOWN, None, "boolean",
                           "no successful answer from Twilio")
    return CheckResult("authentication", account, Status.GREEN, 0.0, "boolean", "credentials accepted")


def _account_status(account: str, facts: AccountFacts) -> CheckResult:
    status = facts.account_status
    if status is None:
        return CheckResult("account_status", account, Status.UNKNOWN, None, "status",
                           f"account unreadable: {facts.failures.get('account', 'not polled')}")
    level = Status.GREEN if status == "active" else (
        Status.RED if status in ("suspended", "closed") else Status.UNKNOWN)
    return CheckResult("account_status", account, level, None, "status", f"account is {status}")


def _balance(account: str, facts: AccountFacts, t: Threshold) -> CheckResult:
    if facts.balance is None:
        return CheckResult("balance", account, Status.UNKNOWN, None, "currency",
                           f"balance unreadable: {facts.failures.get('balance', 'not polled')}")
    cur = facts.currency or ""
    return CheckResult("balance", account, grade(facts.balance, t), facts.balance, "currency",
                       f"{facts.balance:.2f} {cur}".strip())


def _phone_number(account: str, facts: AccountFacts) -> CheckResult:
    name = "phone_number"
    if not facts.phone_number:
        return CheckResult(name, account, Status.UNKNOWN, None, "boolean",
                           "no sending number configured")
    if facts.phone_found is None:
        return CheckResult(name, account, Status.UNKNOWN, None, "boolean",
                           f"numbers unreadable: {facts.failures.get('phone_number', 'not polled')}")
    if not facts.phone_found:
        return CheckResult(name, account, Status.RED, 0.0, "boolean",
                           "sending number not among the account's numbers")
    if not facts.phone_sms_capable:
        return CheckResult(name, account, Status.RED, 0.0, "boolean",
                           "sending number has no SMS capability")
    return CheckResult(name, account, Status.GREEN, 1.0, "boolean", "sending number can send SMS")
