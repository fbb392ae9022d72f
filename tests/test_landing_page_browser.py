"""The incident page as a browser builds it: Debian's chromium, headless, loads ``/`` from a
real ExporterServer serving hand-built snapshots, and the tests read the DOM it built, the
text and layout it rendered (over the DevTools protocol: ``tests.browser.DevTools``) and the
pixels it painted: it renders, it refreshes itself, and at a phone's width nothing scrolls
sideways.

chromium is a requirement, not an option: without it these tests fail (``.ci/run``
installs it)."""

from __future__ import annotations

import json
import re
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import requests

from sms_monitor.app import UNITS
from sms_monitor.core.snapshot import Snapshot, SnapshotHolder
from sms_monitor.outputs.http import ExporterServer
from sms_monitor.outputs.pages import _COLOURS, landing_page
from sms_monitor.simulator.scenarios import SCENARIOS
from sms_monitor.simulator.state import DEMO_AUTH_TOKEN
from tests import browser
from tests.incident_snapshots import incident_holder, incident_snapshot
from tests.snapshots import PRIVATE_SENDER, blind_database_snapshot, sample_snapshot

AREAS = [a for u in UNITS for a in u.areas]
AGE = 42.0  # seconds since the snapshot was taken, when served (plus chromium's start-up)
PHONE = (375, 812)  # an iPhone X's viewport, CSS pixels
# the shape of the demo's controls (demo.py's extra_html): forms of buttons, a long path
DEMO_HTML = (
    "<h2>Demo</h2><p>Built-in Twilio simulator at <a href='http://127.0.0.1:43123/'>"
    "http://127.0.0.1:43123</a>; practice database (SQLite) at <code>/tmp/sms-monitor-demo-"
    "k2j3h4g5/practice-database-with-a-long-name.sqlite3</code>. Switch the scenario:</p><p>"
    + "".join(f"<form method='post' action='http://127.0.0.1:43123/_simulator/scenario' "
              f"style='display:inline'><input type='hidden' name='name' value='{n}'>"
              f"<button>{n}</button></form> " for n in SCENARIOS) + "</p>")


class PageServer(ExporterServer):
    """An ExporterServer whose landing page reloads every ``refresh`` seconds (the real one
    every 30: too long to wait for in a test)."""

    refresh = 1

    def page(self, path: str, accept: str) -> tuple[int, bytes, str]:
        if path == "/":
            return 200, landing_page(self.holder, self.pages, self.extra_html,
                                     refresh=self.refresh).encode(), "text/html; charset=utf-8"
        return super().page(path, accept)


@pytest.fixture(scope="module", autouse=True)
def _chromium_installed() -> None:
    if browser.chromium() is None:
        pytest.fail(browser.MISSING, pytrace=False)


Serve = Callable[..., ExporterServer]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Serve a holder, or a snapshot (taken AGE seconds ago), on a fresh ExporterServer with
    every area (``kind=PageServer``: one whose page reloads every second)."""
    servers: list[ExporterServer] = []

    def start(what: Snapshot | SnapshotHolder, extra_html: str = "",
              kind: type[ExporterServer] = ExporterServer) -> ExporterServer:
        holder = what if isinstance(what, SnapshotHolder) else SnapshotHolder()
        if isinstance(what, Snapshot):  # moved to now, its sources' last reads with it
            shift = time.time() - AGE - what.taken_at
            holder.publish(replace(what, taken_at=what.taken_at + shift, last_success={
                k: v + shift for k, v in what.last_success.items()}))
        servers.append(kind(("127.0.0.1", 0), holder, areas=AREAS, extra_html=extra_html).start())
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


# --- reading the DOM chromium printed --------------------------------------------------


@dataclass
class Cell:
    text: str
    header: bool
    style: dict[str, str]


@dataclass
class Page:
    tables: list[list[list[Cell]]] = field(default_factory=list)
    paragraphs: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)  # text, <b>, style
    text: str = ""


def _style(attrs: list[tuple[str, str | None]]) -> dict[str, str]:
    raw = dict(attrs).get("style") or ""
    pairs = (d.split(":", 1) for d in raw.split(";") if ":" in d)
    return {k.strip(): v.strip() for k, v in pairs}


class _DomReader(HTMLParser):
    """Tables (rows of cells) and paragraphs of the serialised DOM, with their styles."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self._cell: Cell | None = None
        self._para: list[str] | None = None
        self._bold: list[str] = []
        self._in_bold = False
        self._para_style: dict[str, str] = {}
        self._texts: list[str] = []
        self._skip = 0  # inside <style>/<title>

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("style", "title", "script"):
            self._skip += 1
        elif tag == "table":
            self.page.tables.append([])
        elif tag == "tr":
            self.page.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = Cell("", tag == "th", _style(attrs))
            self.page.tables[-1][-1].append(self._cell)
        elif tag == "p":
            self._para, self._bold, self._para_style = [], [], _style(attrs)
        elif tag == "b":
            self._in_bold = True

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "title", "script"):
            self._skip -= 1
        elif tag in ("td", "th") and self._cell is not None:
            self._cell.text = self._cell.text.strip()
            self._cell = None
        elif tag == "b":
            self._in_bold = False
        elif tag == "p" and self._para is not None:
            self.page.paragraphs.append(("".join(self._para).strip(), "".join(self._bold),
                                         self._para_style))
            self._para = None

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        self._texts.append(data)
        if self._cell is not None:
            self._cell.text += data
        if self._para is not None:
            self._para.append(data)
            if self._in_bold:
                self._bold.append(data)

    def close(self) -> None:
        super().close()
        self.page.text = " ".join(self._texts)


def browse(url: str) -> Page:
    dom = browser.dump_dom(url)
    # What the browser built, not what the server sent: chromium adds the <tbody> itself.
    assert "<tbody>" in dom and "<tbody>" not in requests.get(url, timeout=10).text
    reader = _DomReader()
    reader.feed(dom)
    reader.close()
    return reader.page


def rows(table: list[list[Cell]]) -> list[list[str]]:
    return [[c.text for c in row] for row in table]


# --- reading the pixels chromium painted (PNG, decoded with zlib) ----------------------


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB bytes) of an 8-bit, non-interlaced RGB or RGBA PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, chunks, header = 8, [], b""
    while pos < len(data):
        (length,), chunk_type = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        if chunk_type == b"IHDR":
            header = body
        elif chunk_type == b"IDAT":
            chunks.append(body)
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
    channels = 3 if colour == 2 else 4
    stride = width * channels
    raw = zlib.decompress(b"".join(chunks))
    out: list[bytes] = []
    previous = bytearray(stride)
    low7, high = int.from_bytes(b"\x7f" * stride), int.from_bytes(b"\x80" * stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if kind == 2:  # "Up", the commonest: add the row above bytewise, all at once
            row, above = int.from_bytes(line), int.from_bytes(previous)
            line = bytearray((((row & low7) + (above & low7)) ^ ((row ^ above) & high)).to_bytes(stride))
            kind = 0
        for i in range(stride if kind else 0):  # undo the row's filter (PNG spec, section 9)
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + pred) & 0xFF
        previous = line
        out.append(bytes(b for i, b in enumerate(line) if i % channels < 3) if channels == 4
                   else bytes(line))
    return width, height, out


def rgb(hex_colour: str) -> bytes:
    return bytes.fromhex(hex_colour.lstrip("#"))


# --- the tests -----------------------------------------------------------------------------

# What the page shows, as chromium renders it (innerText: badges and the verdict's colour
# word are upper case on screen; a collapsed <details> shows only its summary).
RENDERED = """JSON.stringify({
  verdict: document.querySelector('.verdict').innerText,
  verdictColour: getComputedStyle(document.querySelector('.verdict')).backgroundColor,
  meta: document.querySelector('.meta').innerText,
  checks: [...document.querySelectorAll('.card.check')].map(c => c.innerText.split('\\n').filter(x => x)),
  checkLinks: [...document.querySelectorAll('.card.check a')].map(a => a.href),
  alerts: [...document.querySelectorAll('.card.alert')].map(c => c.innerText.split('\\n').filter(x => x)),
  errors: [...document.querySelectorAll('table.errors tr')].map(r => r.innerText),
  sources: [...document.querySelectorAll('table.sources tr')].map(r => r.innerText),
  greens: document.querySelector('details.greens summary').innerText,
  greensOpen: document.querySelector('details.greens').open,
  greensShown: document.querySelector('details.greens table').checkVisibility(),
  refresh: document.querySelector('meta[http-equiv=refresh]').content,
  headings: [...document.querySelectorAll('h2')].map(h => h.innerText),
})"""


def rendered(url: str, width: int = 1280, height: int = 1000, mobile: bool = False
             ) -> dict[str, Any]:
    with browser.DevTools() as tab:
        tab.emulate(width, height, mobile)
        tab.navigate(url)
        page: dict[str, Any] = json.loads(tab.evaluate(RENDERED))
    return page


def test_the_incident_page_in_the_browser(serve: Serve) -> None:
    page = rendered(serve(incident_holder(time.time())).url + "/")

    assert page["verdict"] == ("Overall: RED — 3 checks red: delivery_rate (primary), "
                               "error_rate (primary), sent_to_opted_out (database)")
    assert page["verdictColour"] == "rgb(198, 40, 40)"  # _COLOURS["red"]
    assert re.fullmatch(r"Last poll 1[2-9] s ago \(\d\d:\d\d UTC\) · this page refreshes "
                        r"every 30 s", page["meta"]), page["meta"]
    assert page["refresh"] == "30"
    assert page["headings"] == ["Needs attention (8)", "Alerts (2 firing)",
                                "Error codes (last 1 h)", "Sources", "More"]

    heads = [c[0] for c in page["checks"]]
    assert heads == ["RED delivery_rate · primary", "RED error_rate · primary",
                     "RED sent_to_opted_out · database", "YELLOW balance · primary",
                     "YELLOW carrier_filtering · primary", "YELLOW queue_delay · database",
                     "UNKNOWN international_share · primary advisory: not in the verdict",
                     "UNKNOWN content · database advisory: not in the verdict"]
    first = page["checks"][0]
    assert re.fullmatch(r"82 % · red for 50 min \(since \d\d:\d\d UTC\)", first[1]), first
    assert first[2] == "82 of 100 delivered in 1h"
    assert first[3].startswith("The share of the window's settled outbound messages")
    assert first[4] == "Runbook: smsdeliveryratecritical"
    # the runbook the daemon serves itself: the link works wherever the page does
    assert page["checkLinks"][0].endswith("/runbook#smsdeliveryratecritical")
    assert [c[1].split(" · ")[0] for c in page["checks"][:6]] == [
        "82 %", "18 %", "3 messages", "35.00 USD", "4 messages", "1 min 35 s"]

    assert [a[0] for a in page["alerts"]] == [
        "FIRING Low SMS Delivery Rate · primary · critical",
        "FIRING Opt-out violations · database · critical",
        "PENDING Low Twilio Balance · primary · warning"]
    assert re.fullmatch(r"Escalation: level 2 of 3; level 3 at \d\d:\d\d UTC \(in 1 h (19|20) min\)",
                        page["alerts"][0][2]), page["alerts"][0]

    assert page["errors"] == [
        "code\tmessages\tmeaning",
        "30003\t9\tunreachable handset: switched off or out of coverage",
        "30005\t5\tunknown handset: the number does not exist",
        "30007\t4\tcarrier filtering: the message was flagged as spam"]
    assert page["sources"][0] == "source\tstate\tlast read"
    assert [r.split("\t")[:2] for r in page["sources"][1:]] == [
        ["twilio:primary", "READABLE"], ["database", "READABLE"], ["statuspage", "READABLE"]]

    # the green checks: collapsed, their table not laid out until opened
    assert page["greens"] == "13 green checks"
    assert page["greensOpen"] is False and page["greensShown"] is False


def test_a_blind_database_in_the_browser(serve: Serve) -> None:
    server = serve(blind_database_snapshot())
    page = browse(server.url + "/")

    verdict = page.paragraphs[0]
    assert verdict[0] == "Overall: unknown — database unreadable (connection refused)"
    assert verdict[1] == "unknown"
    assert verdict[2]["background"] == _COLOURS["unknown"]
    meta = page.paragraphs[1][0]
    assert re.fullmatch(r"Last poll (\d+) s ago \(\d\d:\d\d UTC\) · this page refreshes every "
                        r"30 s · Runbook: smsmonitorblind", meta), meta
    assert AGE <= int(meta.split()[2]) <= AGE + 60

    sources = page.tables[-2]
    assert rows(sources)[0] == ["source", "state", "last read"]
    assert rows(sources)[2][:2] == ["database", "unreadable for 1 cycle connection refused"]
    assert re.fullmatch(r"1 min 4\d s ago", rows(sources)[2][2])

    # nothing private: no client's number (the account holds an opt-out keyword from one),
    # no phone number unmasked at all, no credential, no account SID
    assert not re.findall(r"\+\d{7,15}", page.text)
    assert PRIVATE_SENDER not in page.text and PRIVATE_SENDER[1:] not in page.text
    assert DEMO_AUTH_TOKEN not in page.text
    assert not re.search(r"\bAC[0-9a-f]{32}\b", page.text)


def test_the_security_headers_are_still_sent(serve: Serve) -> None:
    r = requests.get(serve(sample_snapshot()).url + "/", timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"] == "text/html; charset=utf-8"
    assert r.headers["Content-Security-Policy"] == "default-src 'none'; style-src 'unsafe-inline'"
    assert r.headers["X-Frame-Options"] == "DENY"
    assert r.headers["X-Content-Type-Options"] == "nosniff"


def test_it_refreshes_itself(serve: Serve) -> None:
    """Loaded red; the holder publishes a green snapshot; the page reloads on its own (a meta
    refresh, allowed by the CSP where a script would not be) and shows green."""
    holder = SnapshotHolder()
    holder.publish(incident_snapshot(time.time() - 5))
    server = serve(holder, kind=PageServer)
    verdict = "document.querySelector('.verdict').innerText"
    with browser.DevTools() as tab:
        tab.navigate(server.url + "/")
        assert tab.evaluate(verdict).startswith("Overall: RED")
        first_load = tab.evaluate("performance.timeOrigin")

        holder.publish(incident_snapshot(time.time(), failing=False, violating=False))
        deadline, loads = time.monotonic() + 15, 0
        while not tab.evaluate(verdict).startswith("Overall: GREEN"):
            left = deadline - time.monotonic()
            assert left > 0, f"no reload showed green within 15 s ({loads} reloads)"
            if tab.wait_for("Page.loadEventFired", left) is not None:
                loads += 1
        assert loads >= 1
        assert tab.evaluate("performance.timeOrigin") > first_load  # a new document
        assert tab.evaluate("document.querySelector('.meta').innerText").endswith(
            "this page refreshes every 1 s")


# every element's right edge, and every element that scrolls sideways itself
LAYOUT = """JSON.stringify({
  innerWidth: innerWidth,
  scrollWidth: document.documentElement.scrollWidth,
  bodyScrollWidth: document.body.scrollWidth,
  fontSize: getComputedStyle(document.body).fontSize,
  past: [...document.querySelectorAll('body *')]
    .filter(e => e.getClientRects().length && e.getBoundingClientRect().right > innerWidth + 0.5)
    .map(e => e.tagName + '.' + e.className + ': ' + e.getBoundingClientRect().right),
  scrollers: [...document.querySelectorAll('body *')]
    .filter(e => e.scrollWidth > e.clientWidth + 1
            && ['auto', 'scroll'].includes(getComputedStyle(e).overflowX))
    .map(e => e.tagName + '.' + e.className),
})"""


@pytest.mark.parametrize("case", ["incident", "sample", "blind"])
def test_nothing_scrolls_sideways_at_phone_width(serve: Serve, case: str) -> None:
    builders: dict[str, Callable[[], Snapshot | SnapshotHolder]] = {
        "incident": lambda: incident_holder(time.time()),
        "sample": sample_snapshot, "blind": blind_database_snapshot}
    what = builders[case]()
    server = serve(what, extra_html=DEMO_HTML)
    with browser.DevTools() as tab:
        tab.emulate(*PHONE, mobile=True)
        tab.navigate(server.url + "/")
        closed = json.loads(tab.evaluate(LAYOUT))
        # and with the green checks' table opened, the widest part of the page
        tab.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
        opened = json.loads(tab.evaluate(LAYOUT))
        text = tab.evaluate("document.body.innerText")
    assert "Overall: " in text and "Switch the scenario" in text  # the demo's part is shown
    for layout in (closed, opened):
        assert layout["innerWidth"] == PHONE[0]  # the meta viewport: no zooming out
        assert layout["scrollWidth"] <= layout["innerWidth"], layout
        assert layout["bodyScrollWidth"] <= layout["innerWidth"], layout
        assert layout["past"] == [], layout["past"]
        assert layout["scrollers"] == [], layout["scrollers"]
        assert layout["fontSize"] == "16px"  # readable without zooming


def test_the_screenshot_shows_every_status_colour(serve: Serve, tmp_path: Path) -> None:
    server = serve(sample_snapshot())
    # tall enough for the whole page: the green badges are the sources', near its end
    data = browser.screenshot(server.url + "/", tmp_path / "landing.png", 1280, 2400)
    assert len(data) > 20_000  # a page of text and coloured cells, not a blank frame
    width, height, pixels = png_pixels(data)
    assert (width, height) == (1280, 2400)
    seen: dict[bytes, int] = {}
    for line in pixels[::2]:  # every other row is plenty
        for x in range(0, len(line), 3):
            px = line[x:x + 3]
            seen[px] = seen.get(px, 0) + 1
    assert len(seen) > 50  # text is anti-aliased: many shades, not one flat colour
    assert seen.get(b"\xff\xff\xff", 0) > width * height // 8  # a white page ...
    for status, colour in _COLOURS.items():  # ... with the inline styles applied (CSP allows)
        assert seen.get(rgb(colour), 0) > 300, f"no {status} painted ({colour})"
