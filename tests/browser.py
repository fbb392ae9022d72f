"""Debian's chromium, headless, as the tests' (and docs/make_screenshots.py's) browser.

``dump_dom`` and ``screenshot`` use chromium's own flags: ``--dump-dom`` prints the DOM the
browser built from a page, ``--screenshot`` writes a PNG of it. :class:`DevTools` drives a
browser over the DevTools protocol (on a pipe, no port, no extra package) for what flags
cannot do: run JavaScript in the page, emulate a phone, see the page reload itself. Each
browser is fresh, with a throw-away profile, so concurrent runs do not share state.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

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


class DevTools:
    """One headless chromium driven over the DevTools protocol on a pipe
    (``--remote-debugging-pipe``: it reads commands on fd 3 and writes on fd 4, each message
    JSON ended by a NUL), with one page: navigate, evaluate JavaScript in the page (the
    protocol's ``Runtime.evaluate`` is not subject to the page's CSP, which forbids scripts),
    wait for the page to load again (a meta refresh), emulate a phone's viewport.

        with DevTools() as tab:
            tab.emulate(375, 812, mobile=True)
            tab.navigate(url)
            width = tab.evaluate("document.documentElement.scrollWidth")
    """

    def __init__(self, timeout: float = 30.0) -> None:
        browser = chromium()
        if browser is None:
            raise RuntimeError(MISSING)
        self.timeout = timeout
        self._profile = tempfile.TemporaryDirectory(prefix="chromium-")
        to_child, self._write = os.pipe()  # our commands: the child's fd 3
        self._read, from_child = os.pipe()  # its answers: the child's fd 4

        def fds_3_and_4() -> None:  # in the child, before exec: above 10 first, then 3 and 4
            high_in = fcntl.fcntl(to_child, fcntl.F_DUPFD, 10)
            high_out = fcntl.fcntl(from_child, fcntl.F_DUPFD, 10)
            os.dup2(high_in, 3)
            os.dup2(high_out, 4)

        self._proc = subprocess.Popen(
            [browser, "--headless=new", "--no-sandbox", "--disable-gpu",
             "--disable-dev-shm-usage", "--no-first-run", "--disable-extensions",
             "--hide-scrollbars", "--force-color-profile=srgb",
             f"--user-data-dir={self._profile.name}", "--remote-debugging-pipe", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(3, 4), preexec_fn=fds_3_and_4)  # noqa: PLW1509 (a test's browser)
        os.close(to_child)
        os.close(from_child)
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict[str, Any]] = []
        self._session: str | None = None
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self._session = self.send("Target.attachToTarget", targetId=target,
                                  flatten=True)["sessionId"]
        self.send("Page.enable")

    def __enter__(self) -> DevTools:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            if self._proc.poll() is None:
                self._session = None
                self.send("Browser.close")
        except (OSError, RuntimeError, TimeoutError):
            pass
        finally:
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            os.close(self._write)
            os.close(self._read)
            self._profile.cleanup()

    # --- the protocol --------------------------------------------------------------------

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """A command's result (to the page's session once attached); raises on its error."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if self._session is not None:
            message["sessionId"] = self._session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            answer = self._receive(deadline)
            if answer is None:
                raise TimeoutError(f"chromium did not answer {method} in {self.timeout:g}s")
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                result: dict[str, Any] = answer.get("result", {})
                return result
            if "method" in answer:
                self._events.append(answer)

    def _receive(self, deadline: float) -> dict[str, Any] | None:
        """The next message, or None once ``deadline`` (monotonic) has passed."""
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._read], [], [], left)[0]:
                return None
            chunk = os.read(self._read, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed its DevTools pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    def wait_for(self, event: str, timeout: float) -> dict[str, Any] | None:
        """The page's next ``event`` (e.g. ``Page.loadEventFired``) within ``timeout``
        seconds, or None."""
        deadline = time.monotonic() + timeout
        while True:
            for i, e in enumerate(self._events):
                if e["method"] == event:
                    del self._events[: i + 1]
                    return e
            self._events.clear()
            message = self._receive(deadline)
            if message is None:
                return None
            if "method" in message:
                self._events.append(message)

    # --- what the tests do ---------------------------------------------------------------

    def emulate(self, width: int, height: int, mobile: bool = False, scale: float = 1.0
                ) -> None:
        """The viewport of a ``width`` x ``height`` screen (CSS pixels; ``scale`` device
        pixels each); ``mobile``: a phone's (the page's meta viewport applies)."""
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=scale, mobile=mobile)

    def navigate(self, url: str) -> None:
        """Load ``url`` and wait until it has loaded."""
        self._events.clear()
        self.send("Page.navigate", url=url)
        if self.wait_for("Page.loadEventFired", self.timeout) is None:
            raise TimeoutError(f"{url} did not load in {self.timeout:g}s")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-serialisable)."""
        answer = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in answer:
            raise RuntimeError(f"{expression}: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    def screenshot(self, path: Path, whole_page: bool = True) -> bytes:
        """A PNG of the whole page (or of the viewport only), written to ``path``."""
        data = base64.b64decode(self.send("Page.captureScreenshot", format="png",
                                          captureBeyondViewport=whole_page)["data"])
        path.write_bytes(data)
        return data
