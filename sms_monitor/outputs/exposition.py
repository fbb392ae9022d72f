"""/metrics, rendered once per published snapshot and gzip-compressed once, not per scrape.

The exposition has two parts:

- the **snapshot's families** (every area, the alert state, build info, readiness): they
  change only when the poll loop publishes a snapshot or the alert engine publishes its
  state, i.e. when :attr:`SnapshotHolder.published` is replaced by a new object. They are
  rendered once per format asked for (the classic text format, OpenMetrics), compressed
  once when a scraper accepts gzip, and reused by every scrape until the next publish. The
  cache is keyed by the published object's identity: nothing else says what changed. The server subscribes
  :meth:`ExpositionCache.warm` to the holder, so the formats scrapers have asked for are
  rendered in the publisher's thread right after each publish; a scrape arriving meanwhile
  is served the previous render, so no scrape waits for one (at 1,000 accounts a render
  takes seconds). Once ``publish()`` has returned, every scrape sees what it published.
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
        # formats scrapers asked for (content type -> encoder, gzip?): what warm() renders
        self._wanted: dict[str, tuple[Callable[[CollectorRegistry], bytes], bool]] = {}

    def _snapshot_part(self, encoder: Callable[[CollectorRegistry], bytes], ctype: str,
                       compress: bool) -> bytes:
        wanted = self._wanted.get(ctype)
        if wanted is None and len(self._wanted) < MAX_FORMATS or \
                wanted is not None and compress and not wanted[1]:
            self._wanted[ctype] = (encoder, compress or wanted is not None and wanted[1])
        if not self._lock.acquire(blocking=False):
            # the publisher is rendering the next snapshot: the last complete render serves
            # meanwhile (one cycle old, for at most one render's time)
            stale = self._entry.formats.get(ctype)
            if stale is not None and (stale.compressed is not None or not compress):
                return stale.compressed if compress and stale.compressed else stale.plain
            self._lock.acquire()
        try:
            return self._render_locked(self.holder.published, encoder, ctype, compress)
        finally:
            self._lock.release()

    def _render_locked(self, published: Published | None,
                       encoder: Callable[[CollectorRegistry], bytes], ctype: str,
                       compress: bool) -> bytes:
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
        if not compress:
            return rendered.plain
        if rendered.compressed is None:
            rendered.compressed = gzip.compress(rendered.plain, GZIP_LEVEL, mtime=0)
        return rendered.compressed

    def warm(self) -> None:
        """Render the formats scrapers have asked for, for what was just published: called
        by :class:`SnapshotHolder` after each publish, in the publisher's thread, so no
        scrape waits for a render (a scrape meanwhile gets the previous one)."""
        published = self.holder.published
        with self._lock:
            for ctype, (encoder, compress) in list(self._wanted.items()):
                self._render_locked(published, encoder, ctype, compress)

    def render(self, accept: str, accept_encoding: str = "") -> tuple[bytes, str, bool]:
        """(body, content type, gzip-encoded?) for a scrape's Accept and Accept-Encoding."""
        encoder, ctype = choose_encoder(accept)
        compress = gzip_accepted(accept_encoding)
        head = self._snapshot_part(encoder, ctype, compress)
        tail = encoder(self.live)
        if compress:
            return head + gzip.compress(tail, LIVE_GZIP_LEVEL, mtime=0), ctype, True
        return head + tail, ctype, False
