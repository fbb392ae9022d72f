"""Regenerate the README's pictures of the incident page (the landing page ``/``).

    python docs/make_screenshots.py [--out-dir docs]

- ``incident-page.png``: a red incident at desktop width (1280 px), the whole page;
- ``incident-page-phone.png``: the same at a phone's width (375 x 812 CSS px, scale 2), the
  first screen, as it opens;
- ``landing-page.png``: a blind database (the verdict unknown, never green), 1280 px.

The incident is the tests' hand-built one (``tests.incident_snapshots``: an hour of cycles,
delivery failing for 50 minutes, three messages to an opted-out client for 7, alerts firing
and escalating), served by a local ExporterServer with every metric area and photographed by
Debian's headless chromium (``apt-get install chromium fonts-dejavu-core``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=ROOT / "docs")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))  # the tests' snapshots and browser helper
    from sms_monitor.app import UNITS
    from sms_monitor.core.snapshot import SnapshotHolder
    from sms_monitor.outputs.http import ExporterServer
    from tests import browser
    from tests.incident_snapshots import incident_holder
    from tests.snapshots import blind_database_snapshot

    if browser.chromium() is None:
        print(browser.MISSING, file=sys.stderr)
        return 1
    areas = [a for u in UNITS for a in u.areas]
    blind = SnapshotHolder()
    now = time.time()
    blind.publish(blind_database_snapshot(now - 12))
    shots = [  # file, holder, (width, height), mobile and scale, whole page
        ("incident-page.png", incident_holder(now), (1280, 900), False, 1.0, True),
        ("incident-page-phone.png", incident_holder(now), (375, 812), True, 2.0, False),
        ("landing-page.png", blind, (1280, 900), False, 1.0, True),
    ]
    for name, holder, (width, height), mobile, scale, whole in shots:
        server = ExporterServer(("127.0.0.1", 0), holder, areas=areas).start()
        try:
            with browser.DevTools() as tab:
                tab.emulate(width, height, mobile, scale)
                tab.navigate(server.url + "/")
                data = tab.screenshot(args.out_dir / name, whole_page=whole)
        finally:
            server.stop()
        print(f"{args.out_dir / name}: {len(data) // 1024} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
