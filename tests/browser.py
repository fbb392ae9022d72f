"""Debian's chromium, headless, as the tests' (and docs/make_screenshots.py's) browser.

Only chromium's own flags are used: ``--dump-dom`` prints the DOM the browser built from a
page, ``--screenshot`` writes a PNG of it. Each call starts a fresh browser with a
throw-away profile, so concurrent runs do not share state.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

MISSING = ("chromium is not installed: the landing page is tested in a real browser. "
           "Install Debian's chromium (`apt-get install -y --no-install-recommends chromium "
           "fonts-dejavu-core`; .ci/run does this).")


def chromium() -> str | None:
    """The browser's path, or None when it is not installed."""
    return shutil.which("chromium")


def _run(url: str, *flags: str, timeout: float = 60.0) -> str:
    browser = chromium()
    if browser is None:
        raise RuntimeError(MISSING)
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        done = subprocess.run(
            [browser, "--headless=new", "--no-sandbox", "--disable-gpu",
             "--disable-dev-shm-usage", "--no-first-run", "--disable-extensions",
             f"--user-data-dir={profile}", *flags, url],
            capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"chromium exited with {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


def dump_dom(url: str) -> str:
    """The DOM chromium built from ``url``, serialised."""
    return _run(url, "--dump-dom")


def screenshot(url: str, path: Path, width: int = 1280, height: int = 1000) -> bytes:
    """A PNG of ``url`` in a ``width`` x ``height`` window, written to ``path`` and returned."""
    path.unlink(missing_ok=True)
    _run(url, f"--screenshot={path}", f"--window-size={width},{height}", "--hide-scrollbars",
         "--force-color-profile=srgb", "--force-device-scale-factor=1")
    if not path.exists():
        raise RuntimeError(f"chromium wrote no screenshot to {path}")
    return path.read_bytes()
