"""Regenerate docs/landing-page.png, the README's picture of the landing page.

    python docs/make_screenshots.py [--out PATH] [--width 1280] [--height 1200]

It serves a page built from the tests' hand-made snapshot of a blind database
(``tests.snapshots.blind_database_snapshot``: the verdict unknown, never green) on a local
ExporterServer with every metric area, and has Debian's headless chromium photograph it
(``apt-get install chromium fonts-dejavu-core``).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "landing-page.png")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1200)  # the whole page
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))  # the tests' snapshots and browser helper
    from sms_monitor.app import UNITS
    from sms_monitor.core.snapshot import SnapshotHolder
    from sms_monitor.outputs.http import ExporterServer
    from tests import browser
    from tests.snapshots import blind_database_snapshot

    if browser.chromium() is None:
        print(browser.MISSING, file=sys.stderr)
        return 1
    holder = SnapshotHolder()
    holder.publish(replace(blind_database_snapshot(), taken_at=time.time() - 12))
    server = ExporterServer(("127.0.0.1", 0), holder,
                            areas=[a for u in UNITS for a in u.areas]).start()
    try:
        data = browser.screenshot(server.url + "/", args.out, args.width, args.height)
    finally:
        server.stop()
    print(f"{args.out}: {len(data) // 1024} KB, {args.width}x{args.height}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
