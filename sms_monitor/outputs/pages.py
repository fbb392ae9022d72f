"""The landing page ``/``: an incident view.

The verdict first, in words and colour; then the checks that are not green, worst first,
each with its value in human units, since when, what it means and its runbook section;
the alerts firing, with their escalation; the window's top error codes; each source's last
read; the green checks, collapsed. It refreshes itself (a meta refresh: the CSP allows no
script), fits a phone's width, and shows no phone number unmasked. The words come from
:mod:`sms_monitor.outputs.incident`; this module escapes and lays them out.
"""

from __future__ import annotations

import html
import time
from collections.abc import Sequence

from sms_monitor import __version__
from sms_monitor.alerts.lifecycle import DEFAULT_LEVELS, FIRING
from sms_monitor.core.classify import Status
from sms_monitor.core.error_codes import docs_url
from sms_monitor.core.snapshot import AlertsSnapshot, Published, Snapshot, SnapshotHolder
from sms_monitor.core.status_history import StatusHistory
from sms_monitor.outputs import incident as words
from sms_monitor.outputs.incident import RUNBOOK_BASE
from sms_monitor.outputs.metrics import Area

__all__ = ["RUNBOOK_BASE", "landing_page"]

_COLOURS = {"green": "#2e7d32", "yellow": "#b8860b", "red": "#c62828", "unknown": "#616161"}
_SEVERITY_COLOURS = {"critical": _COLOURS["red"], "warning": _COLOURS["yellow"]}
REFRESH_SECONDS = 30

_STYLE = (
    "*{box-sizing:border-box}"
    "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0 auto;"
    "max-width:62em;padding:.6em .8em 2em;line-height:1.4;color:#1a1a1a;background:#fff;"
    "overflow-wrap:anywhere}"
    "a{color:#0b57d0}"
    "h2{font-size:1.1em;margin:1.4em 0 .4em;border-bottom:1px solid #ddd;padding-bottom:.2em}"
    ".top{display:flex;flex-wrap:wrap;justify-content:space-between;gap:.2em 1em;"
    "font-size:.9em;color:#555}"
    ".verdict{color:#fff;font-size:1.3em;padding:.5em .7em;border-radius:.3em;margin:.4em 0}"
    ".verdict b{text-transform:uppercase;letter-spacing:.03em}"
    ".verdict.yellow,.badge.yellow{color:#1a1a1a}"
    ".meta{color:#555;font-size:.9em;margin:.2em 0 .8em}"
    ".card{border:1px solid #ddd;border-left:.5em solid;border-radius:.3em;"
    "padding:.4em .7em;margin:.6em 0}"
    ".card p{margin:.2em 0}"
    ".badge{display:inline-block;color:#fff;font-weight:bold;font-size:.85em;"
    "padding:0 .45em;border-radius:.2em;text-transform:uppercase}"
    ".value{font-size:1.15em;font-weight:bold}"
    ".means{color:#444;font-size:.92em}"
    ".tag{font-size:.8em;color:#555;border:1px solid #bbb;border-radius:.2em;padding:0 .3em}"
    "table{border-collapse:collapse;width:100%}"
    "td,th{padding:.3em .5em;text-align:left;vertical-align:top;border-bottom:1px solid #ddd}"
    ".num{white-space:nowrap}"
    "summary{cursor:pointer;font-weight:bold;margin:1em 0 .4em}"
    ".extra{margin:.6em 0}"
    "@media (max-width:600px){body{padding:.4em .5em 2em}.verdict{font-size:1.15em}"
    "td,th{padding:.25em .3em}}"
)


def _e(text: object) -> str:
    """Escaped, with any phone number masked."""
    return html.escape(words.mask_phones(str(text)))


def _badge(text: str, colour_key: str, colour: str | None = None) -> str:
    background = colour or _COLOURS[colour_key]
    return (f"<span class='badge {html.escape(colour_key)}' style='background:{background}'>"
            f"{_e(text)}</span>")


def _link(url: str, text: str) -> str:
    return f"<a href='{html.escape(url, quote=True)}'>{_e(text)}</a>"


def _value(value: str) -> str:
    return f"<span class='value'>{_e(value)}</span> · " if value else ""


def _runbook(base: str, section: str | None) -> str:
    return _link(words.runbook_url(base, section),
                 "Runbook: " + (section or "sms-monitor alert runbook"))


def landing_page(holder: SnapshotHolder, areas: Sequence[Area] = (), extra_html: str = "", *,
                 refresh: int | None = REFRESH_SECONDS, runbook_base: str = RUNBOOK_BASE,
                 levels: Sequence[float] = DEFAULT_LEVELS, now: float | None = None) -> str:
    """The page for what ``holder`` published. ``refresh``: seconds between reloads (None:
    never); ``runbook_base``: the runbook's URL, sections are its anchors; ``levels``: when
    the escalation levels start (``[alerts]``'s); ``extra_html`` is shown under the verdict
    as given (the demo's scenario switch)."""
    now = time.time() if now is None else now
    published = holder.published
    snap = published.snapshot if published is not None else None
    status = snap.overall.value if snap is not None else "unknown"
    head = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{'waiting' if snap is None else status.upper()} · sms-monitor</title>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<meta http-equiv='refresh' content='{max(1, int(refresh))}'>"
        if refresh is not None else "",
        f"<style>{_STYLE}</style></head><body>",
        f"<div class='top'><span>sms-monitor {html.escape(__version__)}</span><span>"
        "<a href='/metrics'>/metrics</a> · <a href='/healthz'>/healthz</a> · "
        f"<a href='/readyz'>/readyz</a> · {_link(runbook_base, 'runbook')}</span></div>",
    ]
    if published is None or snap is None:
        body = ["<p class='verdict unknown' style='background:"
                f"{_COLOURS['unknown']}'>Waiting for the first poll cycle.</p>", extra_html]
    else:
        body = _incident(published, snap, areas, extra_html, refresh, runbook_base, levels, now)
    return "".join([*head, *body, "</body></html>"])


def _incident(published: Published, snap: Snapshot, areas: Sequence[Area], extra_html: str,
              refresh: int | None, runbook_base: str, levels: Sequence[float],
              now: float) -> list[str]:
    status = snap.overall.value
    age = max(0.0, now - snap.taken_at)
    meta = f"Last poll {words.duration(age)} ago ({words.clock(snap.taken_at, now)})"
    if refresh:
        meta += f" · this page refreshes every {max(1, int(refresh))} s"
    if status == "unknown":
        blind = words.runbook_url(runbook_base, words.BLIND_SECTION)
        meta += f" · {_link(blind, 'Runbook: ' + words.BLIND_SECTION)}"
    out = [
        f"<p class='verdict {status}' style='background:{_COLOURS[status]}'>"
        f"Overall: <b>{status}</b> — {_e(words.verdict_words(snap))}</p>",
        f"<p class='meta'>{meta}</p>",
    ]
    if extra_html:
        out.append(f"<div class='extra'>{extra_html}</div>")
    out += _checks(snap, published.history, runbook_base, now)
    out += _alerts(published.alerts, snap, runbook_base, levels, now)
    out += _errors(snap)
    out += _sources(snap, now)
    out += _greens(snap)
    lines = [line for a in areas for line in a.page_lines(snap)]
    if lines:
        out.append("<h2>More</h2>")
        out.extend(f"<p>{_e(line)}</p>" for line in lines)
    return out


def _checks(snap: Snapshot, history: StatusHistory, runbook_base: str, now: float
            ) -> list[str]:
    bad = words.worst_first(words.counted(snap))
    if not bad:
        return ["<h2>Checks</h2><p>Every check is green.</p>"]
    out = [f"<h2>Needs attention ({len(bad)})</h2>"]
    for line in words.fold_blind(snap, bad):
        if isinstance(line, words.Blind):
            out.append(_blind(line, runbook_base))
            continue
        c = line.check
        s = c.status.value
        value = words.check_value(c, snap)
        since = words.since_words(c.status, history.since(c.account, c.name), now)
        section = words.runbook_section(c.name, c.status, c.detail, c.value)
        out.append(
            f"<div class='card check {s}' style='border-left-color:{_COLOURS[s]}'>"
            f"<p class='head'>{_badge(s, s)} <b>{_e(c.name)}</b> · {_e(c.account)}"
            + (" <span class='tag'>advisory: not in the verdict</span>" if line.advisory else "")
            + "</p>"
            + f"<p>{_value(value)}{_e(since)}</p>"
            + (f"<p class='detail'>{_e(c.detail)}</p>" if c.detail and c.detail != value else "")
            + (f"<p class='means'>{_e(words.meaning_of(c))}</p>" if words.meaning_of(c) else "")
            + f"<p>{_runbook(runbook_base, section)}"
            + (" · <a href='https://status.twilio.com'>status.twilio.com</a>"
               if c.name == "twilio_status" else "")
            + "</p></div>")
    return out


def _blind(group: words.Blind, runbook_base: str) -> str:
    names = ", ".join(ln.check.name + (" (advisory)" if ln.advisory else "")
                      for ln in group.checks)
    colour = _COLOURS["unknown"]
    why = ", ".join(group.sources) + (f" ({group.reason})" if group.reason else "")
    return (f"<div class='card check unknown' style='border-left-color:{colour}'>"
            f"<p class='head'>{_badge('unknown', 'unknown')} <b>"
            f"{_e(words.plural(len(group.checks), 'check'))}</b> · {_e(group.account)}</p>"
            f"<p>cannot be computed while {_e(why)} cannot be read</p>"
            f"<p class='detail'>{_e(names)}</p>"
            f"<p>{_runbook(runbook_base, group.section)}</p></div>")


def _alerts(alerts: AlertsSnapshot | None, snap: Snapshot, runbook_base: str,
            levels: Sequence[float], now: float) -> list[str]:
    if alerts is None:
        return ["<h2>Alerts</h2><p>No alert state yet: no notification_rules are evaluated "
                "here, or their first evaluation is still to come.</p>"]
    live = words.alerts_worst_first(alerts.alerts)
    firing = sum(1 for a in live if a.state == FIRING)
    out = [f"<h2>Alerts ({firing} firing)</h2>"]
    if not alerts.store_ok:
        url = words.runbook_url(runbook_base, "smsalertstoredown")
        out.append(f"<p>The alert store cannot be used: alert states are not known and no "
                   f"page is sent ({_link(url, 'runbook')}).</p>")
    if not alerts.rules_readable:
        url = words.runbook_url(runbook_base, "smsalertrulesunreadable")
        out.append(f"<p>notification_rules cannot be read: every alert keeps the state it had "
                   f"({_link(url, 'runbook')}).</p>")
    if alerts.broken:
        url = words.runbook_url(runbook_base, "smsalertruleinvalid")
        out.append(f"<p>{_e(words.plural(len(alerts.broken), 'rule'))} unusable: "
                   + "; ".join(f"{_e(name)} ({_e(reason)})" for name, reason in alerts.broken)
                   + f" ({_link(url, 'runbook')}).</p>")
    if not live:
        out.append("<p>No alert is firing.</p>")
    for a in live:
        key = "red" if a.severity == "critical" else "yellow"
        colour = _SEVERITY_COLOURS.get(a.severity, _COLOURS["red"]) if a.state == FIRING \
            else _COLOURS["unknown"]
        badge_key = key if a.state == FIRING else "unknown"
        value = words.alert_value(a, snap)
        span = "" if a.since is None else (
            f"{a.state} for {words.duration(now - a.since)} "
            f"(since {words.clock(a.since, now)})")
        escalation = words.escalation(a, now, levels)
        section = words.alert_section(a)
        target = "all accounts" if a.target == "*" else a.target
        out.append(
            f"<div class='card alert {a.state}' style='border-left-color:{colour}'>"
            f"<p class='head'>{_badge(a.state, badge_key, colour)} <b>{_e(a.rule)}</b> · "
            f"{_e(target)} · {_e(a.severity)}</p>"
            f"<p>{_value(value)}{_e(span)}</p>"
            + (f"<p>Escalation: {_e(escalation)}</p>" if escalation else
               "<p>Fires if it lasts.</p>" if a.state != FIRING else "")
            + f"<p>{_runbook(runbook_base, section)}</p>"
            + "</div>")
    return out


def _errors(snap: Snapshot) -> list[str]:
    window = words.window_label(snap)
    out = [f"<h2>Error codes{f' (last {window})' if window else ''}</h2>"]
    errors = words.top_errors(snap)
    if not errors:
        return [*out, "<p>No message in the window carries an error code.</p>"]
    several = len(snap.accounts) > 1
    out.append("<table class='errors'><tr><th>code</th><th>messages</th><th>meaning</th></tr>")
    for e in errors:
        where = f" ({', '.join(e.accounts)})" if several else ""
        out.append(f"<tr><td class='num'>{_link(docs_url(e.code), e.code)}</td>"
                   f"<td class='num'>{e.count}</td><td>{_e(e.meaning + where)}</td></tr>")
    out.append("</table>")
    return out


def _sources(snap: Snapshot, now: float) -> list[str]:
    out = ["<h2>Sources</h2><table class='sources'><tr><th>source</th><th>state</th>"
           "<th>last read</th></tr>"]
    for s in words.source_lines(snap, now):
        key = "green" if s.ok else "unknown"
        out.append(f"<tr><td>{_e(s.name)}</td><td>{_badge(s.state, key)}"
                   + (f" {_e(s.reason)}" if s.reason else "")
                   + f"</td><td class='num'>{_e(s.last_read)}</td></tr>")
    out.append("</table>")
    return out


def _greens(snap: Snapshot) -> list[str]:
    greens = [c for c in snap.checks() if c.status is Status.GREEN]
    if not greens:
        return []
    out = [f"<details class='greens'><summary>{words.plural(len(greens), 'green check')}"
           "</summary><table><tr><th>check</th><th>account</th><th>value</th><th>detail</th></tr>"]
    for c in greens:
        out.append(f"<tr><td>{_e(c.name)}</td><td>{_e(c.account)}</td>"
                   f"<td class='num'>{_e(words.check_value(c, snap))}</td>"
                   f"<td>{_e(c.detail)}</td></tr>")
    out.append("</table></details>")
    return out
