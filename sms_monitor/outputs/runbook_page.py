"""``/runbook``: the alert runbook shipped with sms-monitor (``docs/runbook.md``), as HTML.

The incident page links every check and alert to its section here, so the link works at
3 a.m. whatever the network: it is served by the daemon that raised the alarm. Each section's
anchor is its heading (the alert's name in lower case), as in ``alerts.rules.yml``'s
``runbook_url``.
"""

from __future__ import annotations

import html
from functools import cache
from importlib import resources

import markdown

PATH = "/runbook"

_STYLE = """body{font-family:system-ui,sans-serif;max-width:50rem;margin:0 auto;padding:0 1rem;
line-height:1.45;color:#1b1b1b}code{background:#f1f1f1;padding:0 .2em;border-radius:3px;
overflow-wrap:anywhere}pre{overflow-x:auto;background:#f5f5f5;padding:.6em}
table{border-collapse:collapse;display:block;overflow-x:auto}td,th{border:1px solid #ccc;
padding:.2em .5em}h2{border-top:1px solid #ddd;padding-top:.8em}
h2:target{background:#fff4c2}a{color:#0b57d0}"""


@cache
def runbook_html() -> bytes:
    """The page, rendered once (the file does not change while the daemon runs)."""
    text = resources.files("sms_monitor").joinpath("runbook.md").read_text(encoding="utf-8")
    body = markdown.markdown(text, extensions=["toc", "tables", "fenced_code"],
                             extension_configs={"toc": {"slugify": _anchor}})
    title = html.escape(text.splitlines()[0].lstrip("# ").strip() or "runbook")
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{title}</title><style>{_STYLE}</style></head><body>"
            f'<p><a href="/">&larr; the incident page</a></p>{body}</body></html>').encode()


def _anchor(value: str, separator: str) -> str:
    """A heading's id: lower case, spaces as ``separator`` (``## smsbalancelow`` keeps its
    name, the anchor alerts.rules.yml links to)."""
    return separator.join(value.strip().lower().split())
