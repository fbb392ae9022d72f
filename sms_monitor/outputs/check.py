"""``sms-monitor check``'s output: a table for the terminal, one JSON object, or one Nagios line."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from sms_monitor.core.snapshot import Snapshot
from sms_monitor.core.thresholds import Threshold


def headline(snapshot: Snapshot) -> str:
    """The first line: the verdict and why (Nagios plugins put their status there)."""
    return f"OVERALL: {snapshot.overall.value.upper()} - {snapshot.verdict_detail()}"


def _number(value: float) -> str:
    return f"{value:.6g}"


def nagios_line(snapshot: Snapshot, thresholds: Mapping[str, Threshold]) -> str:
    """One line as a Nagios plugin prints it: the verdict, then performance data for every
    check with a value (``'label'=value[UOM];warn;crit;min;max``).

    A label is the check's name, or ``account/check`` where two groups have the check. The
    thresholds use the plugin guidelines' range syntax: ``0.95:`` warns below 0.95 (higher is
    better), ``7`` warns above 7. Ratios are 0-1 with min 0 and max 1, seconds carry ``s``.
    """
    checks = [c for c in snapshot.checks() if c.value is not None]
    names = Counter(c.name for c in checks)
    perf = []
    for c in checks:
        label = c.name if names[c.name] == 1 else f"{c.account}/{c.name}"
        label = label.replace("'", "").replace("=", "")
        uom = "s" if c.unit == "seconds" else ""
        warn = crit = ""
        t = thresholds.get(c.name)
        if t is not None:
            suffix = ":" if t.higher_is_better else ""
            warn, crit = _number(t.good) + suffix, _number(t.bad) + suffix
        low, high = ("0", "1") if c.unit == "ratio" else ("", "")
        assert c.value is not None
        perf.append(f"'{label}'={_number(c.value)}{uom};{warn};{crit};{low};{high}".rstrip(";"))
    line = headline(snapshot).replace("|", "/")  # '|' starts the performance data
    return f"{line} | {' '.join(perf)}" if perf else line


def render_table(snapshot: Snapshot) -> str:
    rows = [("ACCOUNT", "CHECK", "STATUS", "VALUE", "DETAIL")]
    for c in snapshot.checks():
        value = "" if c.value is None else f"{c.value:.4g}"
        rows.append((c.account, c.name, c.status.value.upper(), value, c.detail))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [headline(snapshot)]
    lines += ["  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4] for r in rows]
    blind = [s for s in snapshot.sources() if not s.ok]
    if blind:
        lines.append("")
        lines.append("SOURCES THAT COULD NOT BE READ:")
        lines += [f"  {s.name}: {s.failing_cycles} cycle(s); {s.reason}" for s in blind]
    under = weak_templates(snapshot)
    if under:
        lines.append("")
        lines.append("TEMPLATES UNDER THE DELIVERY THRESHOLD (7 days, masked):")
        for t in under:
            lines.append(f"  {t['id']}  {t['delivered']}/{t['settled']} delivered  "
                         f"[{', '.join(t['findings'])}]  {t['template']}")
    lines.append(f"OVERALL: {snapshot.overall.value.upper()}")
    return "\n".join(lines)


def weak_templates(snapshot: Snapshot) -> list[dict[str, Any]]:
    """Masked templates under the delivery threshold: for the operator at the terminal only."""
    db = snapshot.database
    if db is None or db.content is None:
        return []
    check = db.check("content")
    if check is None or not check.value:
        return []
    ranked = sorted(db.content.judged(), key=lambda t: t.delivery_ratio)
    return [{"id": t.id, "template": t.masked, "sent": t.sent, "settled": t.outcomes,
             "delivered": t.delivered, "findings": sorted(t.findings)}
            for t in ranked[:int(check.value)]]


def snapshot_json(snapshot: Snapshot) -> dict[str, Any]:
    doc: dict[str, Any] = {"overall": snapshot.overall.value,
                           "detail": snapshot.verdict_detail(),
                           "checks": [c.as_dict() for c in snapshot.checks()],
                           "sources": [{"name": s.name, "readable": s.ok,
                                        "unreadable_cycles": s.failing_cycles,
                                        "reason": s.reason} for s in snapshot.sources()]}
    under = weak_templates(snapshot)
    if under:
        doc["templates_under_threshold"] = under
    return doc
