"""/metrics, rendered once per published snapshot and gzip-compressed once, not per scrape.

The exposition has two parts:

- the **snapshot's families** (every area, the alert state, build info, readiness): they
  change only when the poll loop publishes a snapshot or the alert engine publishes its
  state, i.e. when :attr:`SnapshotHolder.published` is replaced by a new object. They are
  rendered on the first scrape after such a change (once per format asked for: the classic
  text format, OpenMetrics), compressed once when a scraper accepts gzip, and reused by
  every scrape until the next publish. The cache is keyed by the published object's
  identity, so no hook into the poll loop or the alert engine is needed.
- the **live families** (``process_*``, the HTTP server's own counters): they change between
  cycles, cost microseconds, and are rendered per scrape and appended.

A gzip body is the cached compressed snapshot part followed by a second gzip member with the
live part: RFC 1952 allows a file of several members, and Prometheus (Go's ``gzip.Reader``),
curl and Python's ``gzip`` read them as one stream.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from sms_monitor.core.snapshot import Published, SnapshotHolder

OPENMETRICS_EOF = b"# EOF\n"
MAX_FORMATS = 4  # formats cached per snapshot; further (odd) Accept headers render per scrape
GZIP_LEVEL = 6  # the snapshot part is compressed once per cycle: worth the better ratio
LIVE_GZIP_LEVEL = 1  # a few kB per scrape


def gzip_accepted(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header admits gzip (``gzip;q=0`` refuses it)."""
    for item in accept_encoding.split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() not in ("gzip", "x-gzip", "*"):
            continue
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    return float(value) > 0
                except ValueError:
                    return False
        return True
    return False


@dataclass
class _Rendered:
    """One format of one published snapshot: its text, and its gzip once asked for."""

    plain: bytes
    compressed: bytes | None = None


@dataclass
class _Entry:
    published: Published | None
    formats: dict[str, _Rendered] = field(default_factory=dict)


class ExpositionCache:
    """/metrics bodies: the snapshot part cached per published object, the live part fresh."""

    def __init__(self, holder: SnapshotHolder, snapshot: CollectorRegistry,
                 live: CollectorRegistry) -> None:
        self.holder = holder
        self.snapshot = snapshot
        self.live = live
        self._lock = threading.Lock()  # one render per snapshot, however many scrape at once
        self._entry = _Entry(published=None)
        self._fresh = True  # nothing rendered yet (None is also "not ready")
        self.renders = 0  # snapshot parts rendered (the tests and the benchmark read it)

    def _snapshot_part(self, encoder: Callable[[CollectorRegistry], bytes], ctype: str,
                       compress: bool) -> bytes:
        published = self.holder.published
        with self._lock:
            entry = self._entry
            if self._fresh or entry.published is not published:
                entry = self._entry = _Entry(published)
                self._fresh = False
            rendered = entry.formats.get(ctype)
            if rendered is None:
                plain = encoder(self.snapshot)
                self.renders += 1
                if plain.endswith(OPENMETRICS_EOF):  # the live part ends the exposition
                    plain = plain[:-len(OPENMETRICS_EOF)]
                rendered = _Rendered(plain)
                if len(entry.formats) < MAX_FORMATS:
                    entry.formats[ctype] = rendered
            if compress and rendered.compressed is None:
                rendered.compressed = gzip.compress(rendered.plain, GZIP_LEVEL, mtime=0)
            return rendered.compressed if compress else rendered.plain  # type: ignore[return-value]

    def render(self, accept: str, accept_encoding: str = "") -> tuple[bytes, str, bool]:
        """(body, content type, gzip-encoded?) for a scrape's Accept and Accept-Encoding."""
        encoder, ctype = choose_encoder(accept)
        compress = gzip_accepted(accept_encoding)
        head = self._snapshot_part(encoder, ctype, compress)
        tail = encoder(self.live)
        if compress:
            return head + gzip.compress(tail, LIVE_GZIP_LEVEL, mtime=0), ctype, True
        return head + tail, ctype, False
