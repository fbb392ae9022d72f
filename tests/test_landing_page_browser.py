"""The landing page as a browser builds it: Debian's chromium, headless, loads ``/`` from a
real ExporterServer serving hand-built snapshots, and the tests read the DOM it built and
the pixels it painted.

chromium is a requirement, not an option: without it these tests fail (``.ci/run``
installs it)."""

from __future__ import annotations

import re
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from html.parser import HTMLParser
from pathlib import Path

import pytest
import requests

from sms_monitor.app import UNITS
from sms_monitor.core.snapshot import Snapshot, SnapshotHolder
from sms_monitor.outputs.http import ExporterServer
from sms_monitor.outputs.pages import _COLOURS
from sms_monitor.simulator.state import DEMO_AUTH_TOKEN
from tests import browser
from tests.snapshots import PRIVATE_SENDER, blind_database_snapshot, sample_snapshot

AREAS = [a for u in UNITS for a in u.areas]
SENDING_NUMBER = "+15005550006"
AGE = 42.0  # seconds since the snapshot was taken, when served (plus chromium's start-up)


@pytest.fixture(scope="module", autouse=True)
def _chromium_installed() -> None:
    if browser.chromium() is None:
        pytest.fail(browser.MISSING, pytrace=False)


@pytest.fixture
def serve() -> Iterator[Callable[[Snapshot], ExporterServer]]:
    """Serve a snapshot (taken AGE seconds ago) on a fresh ExporterServer with every area."""
    servers: list[ExporterServer] = []

    def start(snap: Snapshot) -> ExporterServer:
        holder = SnapshotHolder()
        holder.publish(replace(snap, taken_at=time.time() - AGE))
        servers.append(ExporterServer(("127.0.0.1", 0), holder, areas=AREAS).start())
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


def age(verdict: str) -> int:
    """The verdict line's "last poll Ns ago", checked against the age it was served at."""
    found = re.search(r"last poll (\d+)s ago", verdict)
    assert found, verdict
    assert AGE <= int(found.group(1)) <= AGE + 60
    return int(found.group(1))


def check_table(page: Page, snap: Snapshot) -> None:
    table = page.tables[0]
    assert rows(table)[0] == ["account", "check", "status", "value", "detail"]
    assert all(c.header for c in table[0])
    body = table[1:]
    checks = snap.checks()
    assert len(body) == len(checks)  # one row per check, in the snapshot's order
    for row, c in zip(body, checks, strict=True):
        account, name, status = row[0].text, row[1].text, row[2]
        assert (account, name, status.text) == (c.account, c.name, c.status.value)
        assert status.style["background"] == _COLOURS[c.status.value], (c.account, c.name)
        assert row[4].text == c.detail


def area_lines(page: Page, snap: Snapshot) -> None:
    expected = [line for a in AREAS for line in a().page_lines(snap)]
    assert expected  # delivery-time sources and the canary's last probe at least
    texts = [p[0] for p in page.paragraphs]
    assert texts[-len(expected):] == expected


def test_a_red_account_in_the_browser(serve: Callable[[Snapshot], ExporterServer]) -> None:
    snap = sample_snapshot()
    server = serve(snap)
    page = browse(server.url + "/")

    verdict = next(p for p in page.paragraphs if p[0].startswith("Overall:"))
    assert verdict[0] == (f"Overall: red (primary: delivery_rate, error_rate); "
                          f"last poll {age(verdict[0])}s ago.")
    assert verdict[1] == "red"
    assert _COLOURS["red"] in verdict[2]["border-left"]

    check_table(page, snap)
    statuses = {row[2].text for row in page.tables[0][1:]}
    assert statuses == {"green", "yellow", "red", "unknown"}  # every colour is on this page

    assert rows(page.tables[1]) == [
        ["source", "readable", "unreadable for", "reason"],
        ["twilio:primary", "yes", "0 cycle(s)", ""],
        ["database", "yes", "0 cycle(s)", ""],
        ["statuspage", "yes", "0 cycle(s)", ""],
    ]
    assert {row[1].style["background"] for row in page.tables[1][1:]} == {_COLOURS["green"]}
    area_lines(page, snap)
    assert "primary: 6 of 8 delivery times from status callbacks, 2 from polls" in page.text
    assert "canary (primary, end to end): last probe delivered in 6.5 s" in page.text


def test_a_blind_database_in_the_browser(serve: Callable[[Snapshot], ExporterServer]) -> None:
    snap = blind_database_snapshot()
    server = serve(snap)
    page = browse(server.url + "/")

    verdict = next(p for p in page.paragraphs if p[0].startswith("Overall:"))
    assert verdict[0] == (f"Overall: unknown (database unreadable (connection refused)); "
                          f"last poll {age(verdict[0])}s ago.")
    assert verdict[1] == "unknown"
    assert _COLOURS["unknown"] in verdict[2]["border-left"]

    check_table(page, snap)
    connection = next(r for r in page.tables[0] if [c.text for c in r[:2]] == ["database", "connection"])
    assert connection[2].text == "unknown"
    assert connection[4].text == "unreadable for 1 cycle (red from 3): connection refused"

    sources = page.tables[1]
    assert rows(sources) == [
        ["source", "readable", "unreadable for", "reason"],
        ["twilio:primary", "yes", "0 cycle(s)", ""],
        ["database", "no", "1 cycle(s)", "connection refused"],
        ["statuspage", "yes", "0 cycle(s)", ""],
    ]
    assert [r[1].style["background"] for r in sources[1:]] == [
        _COLOURS["green"], _COLOURS["unknown"], _COLOURS["green"]]
    area_lines(page, snap)

    # nothing private: the only phone number shown may be the sending number, no client's
    # number (the account holds an opt-out keyword from one), no credential
    assert set(re.findall(r"\+\d{7,15}", page.text)) <= {SENDING_NUMBER}
    assert PRIVATE_SENDER not in page.text and PRIVATE_SENDER[1:] not in page.text
    assert DEMO_AUTH_TOKEN not in page.text
    assert not re.search(r"\bAC[0-9a-f]{32}\b", page.text)  # no account SID either


def test_the_security_headers_are_still_sent(serve: Callable[[Snapshot], ExporterServer]) -> None:
    r = requests.get(serve(sample_snapshot()).url + "/", timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"] == "text/html; charset=utf-8"
    assert r.headers["Content-Security-Policy"] == "default-src 'none'; style-src 'unsafe-inline'"
    assert r.headers["X-Frame-Options"] == "DENY"
    assert r.headers["X-Content-Type-Options"] == "nosniff"


def test_the_screenshot_shows_every_status_colour(serve: Callable[[Snapshot], ExporterServer],
                                                    tmp_path: Path) -> None:
    server = serve(sample_snapshot())
    data = browser.screenshot(server.url + "/", tmp_path / "landing.png", 1280, 1000)
    assert len(data) > 20_000  # a page of text and coloured cells, not a blank frame
    width, height, pixels = png_pixels(data)
    assert (width, height) == (1280, 1000)
    seen: dict[bytes, int] = {}
    for line in pixels[::2]:  # every other row is plenty
        for x in range(0, len(line), 3):
            px = line[x:x + 3]
            seen[px] = seen.get(px, 0) + 1
    assert len(seen) > 50  # text is anti-aliased: many shades, not one flat colour
    assert seen.get(b"\xff\xff\xff", 0) > width * height // 8  # a white page ...
    for status, colour in _COLOURS.items():  # ... with the inline styles applied (CSP allows)
        assert seen.get(rgb(colour), 0) > 500, f"no {status} cell painted ({colour})"
