"""The landing page ``/``: every check, the verdict, and each area's lines."""

from __future__ import annotations

import html
import time
from collections.abc import Sequence

from sms_monitor import __version__
from sms_monitor.core.snapshot import SnapshotHolder
from sms_monitor.outputs.metrics import Area

_COLOURS = {"green": "#2e7d32", "yellow": "#b8860b", "red": "#c62828", "unknown": "#616161"}


def landing_page(holder: SnapshotHolder, areas: Sequence[Area] = (), extra_html: str = "") -> str:
    snap = holder.current
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>sms-monitor</title>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{padding:.3em .8em;text-align:left;border-bottom:1px solid #ddd}"
        "td.s{color:#fff;font-weight:bold;min-width:5em}td.s.yellow{color:#1a1a1a}"
        "td.v{white-space:nowrap}p.verdict{font-size:1.25em}div.t{overflow-x:auto}"
        "@media (max-width:600px){body{margin:.8em}td,th{padding:.25em .4em}}"
        "</style></head><body>",
        f"<h1>sms-monitor {html.escape(__version__)}</h1>",
        "<p><a href='/metrics'>/metrics</a> · <a href='/healthz'>/healthz</a> · "
        "<a href='/readyz'>/readyz</a></p>",
    ]
    if snap is None:
        parts.append("<p>Waiting for the first poll cycle.</p>")
    else:
        age = max(0.0, time.time() - snap.taken_at)
        verdict = snap.overall.value
        parts.append(f"<p class='verdict' style='border-left:.5em solid {_COLOURS[verdict]};"
                     f"padding-left:.5em'>"
                     f"Overall: <b>{verdict}</b> ({html.escape(snap.verdict_detail())}); "
                     f"last poll {age:.0f}s ago.</p>")
        parts.append("<div class='t'><table><tr><th>account</th><th>check</th><th>status</th><th>value</th>"
                     "<th>detail</th></tr>")
        for c in snap.checks():
            value = "" if c.value is None or c.unit == "status" else f"{c.value:.4g} {c.unit}"
            colour = _COLOURS[c.status.value]
            parts.append(
                f"<tr><td>{html.escape(c.account)}</td><td>{html.escape(c.name)}</td>"
                f"<td class='s {c.status.value}' style='background:{colour}'>{c.status.value}</td>"
                f"<td class='v'>{html.escape(value)}</td><td>{html.escape(c.detail)}</td></tr>")
        parts.append("</table></div>")
        parts.append("<h2>Sources</h2><div class='t'><table><tr><th>source</th><th>readable</th>"
                     "<th>unreadable for</th><th>reason</th></tr>")
        for src in snap.sources():
            state = "green" if src.ok else "unknown"
            parts.append(
                f"<tr><td>{html.escape(src.name)}</td><td class='s {state}' style='background:"
                f"{_COLOURS[state]}'>{'yes' if src.ok else 'no'}</td>"
                f"<td>{src.failing_cycles} cycle(s)</td><td>{html.escape(src.reason)}</td></tr>")
        parts.append("</table></div>")
        parts.extend(f"<p>{html.escape(line)}</p>" for a in areas for line in a.page_lines(snap))
    parts.append(extra_html)
    parts.append("</body></html>")
    return "".join(parts)
