"""What a rule measures, for each of its targets: pure, from the cycle's snapshot and windows."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sms_monitor.alerts import explain
from sms_monitor.alerts.rules import VOCABULARY, Rule
from sms_monitor.core.classify import Status, worst
from sms_monitor.core.dbchecks import DB_CHECK_NAMES, GROUP
from sms_monitor.core.records import MessageRecord
from sms_monitor.core.snapshot import AccountSnapshot, Snapshot
from sms_monitor.core.stats import WindowStats, window_stats

ROLLUP = "*"
DATABASE_METRICS = ("optout_violations", "queue_delay")


@dataclass(frozen=True)
class AlertInputs:
    now: float
    snapshot: Snapshot
    records: Mapping[str, Sequence[MessageRecord]]  # account -> records held for its window
    # (target, window) -> statistics, so rules sharing a window share one pass over the records
    stats_cache: dict[tuple[str, float], WindowStats] = field(default_factory=dict)
    min_samples: int = 10  # ratios over fewer messages are unknown: a quiet night pages nobody


def targets(rule: Rule, accounts: Sequence[str]) -> list[str]:
    """Which alert instances a rule has: per account, the roll-up, one account, or the database."""
    if rule.metric in DATABASE_METRICS or (rule.check in DB_CHECK_NAMES):
        return [GROUP]
    if rule.account is None:
        return list(accounts)
    return [rule.account]


def _accounts(inputs: AlertInputs, target: str) -> list[AccountSnapshot]:
    return [a for a in inputs.snapshot.accounts if target in (ROLLUP, a.account)]


def value(rule: Rule, target: str, inputs: AlertInputs) -> float | None:
    """The rule's value for the target in the rule's unit, or None when it is not known."""
    snap = inputs.snapshot
    if target == GROUP:
        db = snap.database
        if db is None:
            return None
        if rule.metric == "queue_delay":
            return db.facts.queue_delay
        if rule.metric == "optout_violations":
            if db.sent_to_opted_out is None or db.optout_unprocessed is None:
                return None
            return float(db.sent_to_opted_out + db.optout_unprocessed)
        check = db.check(rule.check) if rule.check is not None else None
        return None if check is None or check.status is Status.UNKNOWN else float(check.status.code)

    accounts = _accounts(inputs, target)
    if not accounts:
        return None
    if rule.check is not None:
        statuses = [c.status if (c := a.check(rule.check)) is not None else Status.UNKNOWN
                    for a in accounts]
        overall = worst(statuses)
        return None if overall is Status.UNKNOWN else float(overall.code)

    if rule.metric in ("sms_delivery_rate", "sms_error_rate", "sms_delivery_time",
                       "sms_carrier_filtered"):
        if not all(a.read_whole_since(inputs.now - rule.window) for a in accounts):
            return None
        st = _stats(rule, target, inputs)
        assert st is not None
        if rule.metric == "sms_delivery_rate":
            if st.delivery_ratio is None or st.settled < inputs.min_samples:
                return None
            return st.delivery_ratio * 100
        if rule.metric == "sms_error_rate":
            if st.error_ratio is None or st.outbound < inputs.min_samples:
                return None
            return st.error_ratio * 100
        if rule.metric == "sms_delivery_time":
            return st.latency_mean
        return float(st.carrier_filtered)

    facts = [a.facts for a in accounts]
    if rule.metric == "api_response_time":
        return _known_max(f.balance_seconds for f in facts)
    if rule.metric == "account_balance":
        known = [f.balance for f in facts if f.balance is not None]
        return min(known) if len(known) == len(facts) else None
    if rule.metric == "sms_spend_month":
        known = [f.spend_month for f in facts if f.spend_month is not None]
        return sum(known) if len(known) == len(facts) else None
    return None


def _known_max(values: Iterable[float | None]) -> float | None:
    """The largest value, or None when any is unknown (or there are none)."""
    known = list(values)
    if not known or any(v is None for v in known):
        return None
    return max(v for v in known if v is not None)


def _stats(rule: Rule, target: str, inputs: AlertInputs) -> WindowStats | None:
    """The statistics of the rule's window for the target (shared with its value)."""
    accounts = _accounts(inputs, target)
    if not accounts:
        return None
    st = inputs.stats_cache.get((target, rule.window))
    if st is None:
        records: list[MessageRecord] = []
        for a in accounts:
            records.extend(inputs.records.get(a.account, ()))
        st = inputs.stats_cache[target, rule.window] = window_stats(records, inputs.now,
                                                                     rule.window)
    return st


def _currency(rule: Rule, accounts: Sequence[AccountSnapshot]) -> str:
    """The currency of a balance or spend rule's value, when every account agrees on one."""
    if rule.metric == "account_balance":
        found = {a.facts.currency for a in accounts}
    elif rule.metric == "sms_spend_month":
        found = {a.facts.spend_currency or a.facts.currency for a in accounts}
    else:
        return ""
    return next(iter(found)) or "" if len(found) == 1 else ""


def _checks_past(rule: Rule, target: str, inputs: AlertInputs, runbook_base: str | None
                 ) -> tuple[tuple[str, str, str, str, str], ...]:
    """A status: rule's checks whose status is past its threshold, worst first: for
    ``status:overall`` the checks that made it red, each with its detail and runbook."""
    if rule.check is None:
        return ()
    if target == GROUP:
        db = inputs.snapshot.database
        checks = list(db.checks) if db is not None else []
    else:
        checks = [c for a in _accounts(inputs, target) for c in a.checks]
    wanted = [c for c in checks if c.status is not Status.UNKNOWN
              and (c.name != "overall" if rule.check == "overall" else c.name == rule.check)
              and rule.breached(float(c.status.code))]
    wanted.sort(key=lambda c: -c.status.code)
    return tuple((c.account, c.name, c.status.value, " ".join(c.detail.split())[:200],
                  explain.check_link(runbook_base, c.name)) for c in wanted)


def explanation(rule: Rule, target: str, inputs: AlertInputs, runbook_base: str | None
                ) -> dict[str, Any]:
    """What a notification of the rule's alert on ``target`` explains besides its value: the
    unit, the currency, the window, the top error codes in it (message metrics and status
    rules of accounts), and a status rule's checks past its threshold."""
    spec = VOCABULARY.get(rule.metric)
    unit = "status" if rule.check is not None else (spec.unit if spec else "")
    out: dict[str, Any] = {"unit": unit, "window": rule.window if spec and spec.windowed else 0.0}
    if target != GROUP:
        accounts = _accounts(inputs, target)
        out["currency"] = _currency(rule, accounts)
        if (spec is not None and spec.windowed) or rule.check is not None:
            st = _stats(rule, target, inputs) if accounts else None
            if st is not None:
                out["errors"] = explain.top_errors(st.by_error)
                out["errors_window"] = rule.window
    out["checks"] = _checks_past(rule, target, inputs, runbook_base)
    return out
